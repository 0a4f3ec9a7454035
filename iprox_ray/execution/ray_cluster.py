"""A Ray cluster inside one allocation: node 0 runs the head (and the driver), the others join it.

Nodes meet through a rendezvous folder on the shared filesystem: the head writes `head.json`
(its address) and, with token auth, an `auth_token` file readable only by the user; workers wait
for them. Every daemon runs `ray start --block` in its own process group, so stopping it ends
exactly the daemons this node started (never `ray stop`, which ends every Ray on the machine).
Ports are probed free on the node; temp dirs are short (Unix socket paths are limited to ~107
bytes) and private (Ray's sockets and logs live there); the dashboard is off, and the dashboard
agent listens on the node's own address.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from iprox_ray.store.atomic import atomic_write_json

MIN_RAY = (2, 52)  # token auth (RAY_AUTH_MODE) arrived in 2.52; an older Ray ignores it and runs open


@dataclass(frozen=True)
class RayNode:
    """One node of the allocation, as seen from inside it."""

    rank: int
    num_nodes: int
    rendezvous: Path  # shared folder, unique to this job attempt
    node_ip: str
    num_cpus: int
    num_gpus: int | None = None  # None: Ray detects (CUDA_VISIBLE_DEVICES set by SLURM)
    auth: str = "token"  # token | disabled (RAY_AUTH_MODE)
    temp_dir: str = field(default="")  # private folder (short_temp_dir); Ray's temp dir is its child

    @property
    def head_file(self) -> Path:
        return self.rendezvous / "head.json"

    @property
    def token_file(self) -> Path:
        return self.rendezvous / "auth_token"

    @property
    def done_file(self) -> Path:
        return self.rendezvous / "done.json"


def node_ip(mode: str, rank: int) -> str:
    """`loopback`: 127.0.0.(2+rank), several nodes on one machine (Ray rewrites 127.0.0.1);
    `auto`: the address this node's hostname resolves to; anything else is taken literally."""
    if mode == "loopback":
        return f"127.0.0.{2 + rank}"
    if mode == "auto":
        return socket.gethostbyname(socket.gethostname())
    return mode


def free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def require_ray(version: str | None = None) -> None:
    """Refuse a Ray without token auth (the version of the installed wheel unless given)."""
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("ray")
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or tuple(map(int, found.groups())) < MIN_RAY:
        raise RuntimeError(f"iprox-ray needs ray>={MIN_RAY[0]}.{MIN_RAY[1]} (token authentication); "
                           f"found ray {version}")


def private_dir(path: str) -> str:
    """Create `path` with mode 0700, or accept an existing one only if it is a real directory of
    ours that nobody else can enter: it sits in a shared /tmp and will hold Ray's sockets. When
    the name is taken by something else (another user's folder, a symlink, a folder open to
    others), a fresh private folder beside it is used instead, and said; returns the folder used."""
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # whatever the umask
    except FileExistsError:
        pass
    problem = _not_private(path)
    if problem is None:
        return path
    fresh = tempfile.mkdtemp(prefix=f"{os.path.basename(path)}-", dir=os.path.dirname(path))  # mode 0700
    print(f"note: {path} {problem}; using {fresh} instead (it will not be trusted or touched)", file=sys.stderr)
    return fresh


def _not_private(path: str) -> str | None:
    st = os.lstat(path)  # lstat: a symlink planted by someone else is refused, never followed
    if not stat.S_ISDIR(st.st_mode):
        return "exists and is not a plain directory (a symlink?)"
    if st.st_uid != os.getuid():
        return f"belongs to uid {st.st_uid}, not to this user (uid {os.getuid()})"
    if st.st_mode & 0o077:
        return f"is open to other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def ray_temp_dir(private: str) -> str:
    # Ray chmods its temp dir to 0777 (for sharing between users): give it a child of a private one.
    return os.path.join(private, "r")


def short_temp_dir(job_id: str, attempt: int, rank: int) -> str:
    """This node's private folder (created now) for Ray's temp dir; short for Ray's socket paths."""
    return private_dir(f"/tmp/ipr-{job_id}-{attempt}-{rank}")


def auth_env(node: RayNode) -> dict[str, str]:
    """The variables every Ray process of this cluster (daemons, driver, workers) needs."""
    if node.auth == "disabled":
        return {"RAY_AUTH_MODE": "disabled"}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(node.token_file)}


def _ray_command() -> list[str]:
    script = Path(sys.executable).with_name("ray")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


class RayDaemon:
    """`ray start --block` in its own process group; stop() ends that group only."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(_ray_command() + ["start", "--block", *args], env={**os.environ, **env},
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        # Ray drains for up to 30 s on SIGTERM; at the end of a job nothing is left worth draining.
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


def _common_args(node: RayNode) -> list[str]:
    ip = node.node_ip
    args = [
        f"--node-ip-address={ip}",
        f"--num-cpus={node.num_cpus}",
        f"--temp-dir={ray_temp_dir(node.temp_dir)}",
        f"--dashboard-agent-listen-port={free_port(ip)}",
        f"--metrics-export-port={free_port(ip)}",
        "--disable-usage-stats",
    ]
    if node.num_gpus is not None:
        args.append(f"--num-gpus={node.num_gpus}")
    return args


def _wait_port(ip: str, port: int, daemon: RayDaemon, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not daemon.alive():
            raise RuntimeError(f"ray head exited early; see {daemon.log}")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((ip, port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"ray head did not open {ip}:{port} in {timeout_s:.0f} s; see {daemon.log}")


def start_head(node: RayNode, timeout_s: float = 120) -> tuple[RayDaemon, str]:
    """Start the head daemon; publish its address (and token) in the rendezvous folder."""
    require_ray()
    node.rendezvous.mkdir(parents=True, exist_ok=True)
    if node.auth != "disabled":
        fd = os.open(node.token_file, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    port = free_port(node.node_ip)
    args = ["--head", f"--port={port}", "--include-dashboard=false", *_common_args(node)]
    daemon = RayDaemon(args, auth_env(node), node.rendezvous / f"ray-node-{node.rank}.log")
    address = f"{node.node_ip}:{port}"
    _wait_port(node.node_ip, port, daemon, timeout_s)
    atomic_write_json(node.head_file, {"address": address, "host": socket.gethostname(), "pid": os.getpid()})
    return daemon, address


def read_head(node: RayNode, timeout_s: float = 300) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if node.head_file.exists():
            return json.loads(node.head_file.read_text())["address"]
        if node.done_file.exists():
            raise RuntimeError("the driver finished before this node joined")
        time.sleep(0.5)
    raise TimeoutError(f"no ray head appeared in {node.rendezvous} within {timeout_s:.0f} s")


def run_worker(node: RayNode, poll_s: float = 1.0) -> int:
    """Join the head and serve until the driver says it is done (or the daemon dies)."""
    require_ray()
    address = read_head(node)
    daemon = RayDaemon([f"--address={address}", *_common_args(node)], auth_env(node),
                       node.rendezvous / f"ray-node-{node.rank}.log")
    try:
        while daemon.alive() and not node.done_file.exists():
            time.sleep(poll_s)
        return 0 if node.done_file.exists() else 1
    finally:
        daemon.stop()
        shutil.rmtree(node.temp_dir, ignore_errors=True)


def wait_for_nodes(expected: int, timeout_s: float = 300) -> None:
    """In the driver: block until `expected` Ray nodes are alive."""
    import ray

    deadline = time.time() + timeout_s
    while True:
        alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        if alive >= expected:
            return
        if time.time() > deadline:
            raise TimeoutError(f"only {alive} of {expected} Ray nodes joined within {timeout_s:.0f} s")
        time.sleep(0.5)


def finish(node: RayNode, daemon: RayDaemon, status: str) -> None:
    """Tell the workers to leave, then stop the head."""
    atomic_write_json(node.done_file, {"status": status, "at": time.time()})
    daemon.stop()
    shutil.rmtree(node.temp_dir, ignore_errors=True)
