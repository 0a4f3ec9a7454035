"""What Ray exposes: the embedded cluster (loopback, token auth), private temp dirs, Ray's version."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
import uuid

import pytest

from iprox_ray.execution.ray_cluster import private_dir, ray_temp_dir, require_ray, short_temp_dir

# A GCS client in a fresh process: it holds only the token its environment gives it.
GCS_PROBE = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"probe", None, timeout=5)
    print("ACCEPTED")
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
"""


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_fresh_private_dir_is_0700_whatever_the_umask(tmp_path):
    old = os.umask(0o000)
    try:
        path = private_dir(str(tmp_path / "fresh"))
    finally:
        os.umask(old)
    assert _mode(path) == 0o700
    assert private_dir(path) == path  # ours and private: taken again (a rerun on the same node)


def _replaced(tmp_path, taken: str, why: str, capsys) -> str:
    """private_dir on a name someone else holds: a fresh private folder beside it, and a note."""
    used = private_dir(taken)
    assert used != taken and os.path.dirname(used) == str(tmp_path) and _mode(used) == 0o700
    assert os.lstat(used).st_uid == os.getuid()
    note = capsys.readouterr().err
    assert why in note and f"using {used} instead" in note
    return used


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o707, 0o755])
def test_a_private_dir_open_to_others_is_never_used(tmp_path, mode, capsys):
    path = tmp_path / "open"
    path.mkdir()
    path.chmod(mode)
    _replaced(tmp_path, str(path), "open to other users", capsys)
    assert _mode(path) == mode and not list(path.iterdir())  # theirs, untouched


def test_a_symlink_or_a_file_is_never_followed(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    _replaced(tmp_path, str(tmp_path / "link"), "not a plain directory", capsys)
    (tmp_path / "file").write_text("")
    _replaced(tmp_path, str(tmp_path / "file"), "not a plain directory", capsys)
    assert not list(target.iterdir())


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a folder owned by another user")
def test_a_same_named_folder_of_another_user_is_never_used(tmp_path, capsys):
    path = tmp_path / "theirs"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)
    _replaced(tmp_path, str(path), "belongs to uid 65534", capsys)


def test_the_slurm_node_temp_dir_is_private_and_short():
    job = f"t{uuid.uuid4().hex[:8]}"
    path = short_temp_dir(job, 1, 0)
    try:
        assert path == f"/tmp/ipr-{job}-1-0" and _mode(path) == 0o700
        # Ray makes its temp dir 0777, so it gets a child of the private folder.
        assert os.path.dirname(ray_temp_dir(path)) == path
        # Room for Ray's session folder and socket names under the ~107-byte Unix socket limit.
        assert len(ray_temp_dir(path)) + len("/session_2026-12-02_20-50-28_222016_19516/sockets/raylet") < 100
    finally:
        os.rmdir(path)


@pytest.mark.parametrize("version, ok", [("2.51.1", False), ("1.13.0", False), ("2.52.0", True),
                                         ("2.60.0", True), ("3.0.0.dev0", True), ("nightly", False)])
def test_a_ray_without_token_auth_is_refused(version, ok):
    if ok:
        require_ray(version)
    else:
        with pytest.raises(RuntimeError, match="needs ray>=2.52"):
            require_ray(version)
    require_ray()  # the installed one


def _auth_inside(monkeypatch, tmp_path, env_mode: str | None, auth: str) -> dict:
    from iprox_ray.execution.ray_session import _local_cluster_env

    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    if env_mode is not None:
        monkeypatch.setenv("RAY_AUTH_MODE", env_mode)
    folder = private_dir(str(tmp_path / "ray"))
    with _local_cluster_env(auth, folder):
        seen = {key: os.environ.get(key) for key in keys}
        token = seen["RAY_AUTH_TOKEN_PATH"]
        if token:
            assert _mode(token) == 0o600 and len(open(token).read()) == 64
    after = {key: os.environ.get(key) for key in keys}
    assert after == {**dict.fromkeys(keys), "RAY_AUTH_MODE": env_mode}  # restored
    assert not os.listdir(folder)  # the token file is gone
    return seen


def test_token_auth_is_the_default_with_a_fresh_private_token(monkeypatch, tmp_path):
    seen = _auth_inside(monkeypatch, tmp_path, None, "token")
    assert seen["RAY_AUTH_MODE"] == "token" and seen["RAY_AUTH_TOKEN_PATH"]
    assert seen["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def test_auth_is_off_only_when_asked_for(monkeypatch, tmp_path):
    assert _auth_inside(monkeypatch, tmp_path, None, "disabled")["RAY_AUTH_MODE"] == "disabled"
    # An exported RAY_AUTH_MODE is an explicit choice and wins over the spec, either way.
    seen = _auth_inside(monkeypatch, tmp_path, "disabled", "token")
    assert seen["RAY_AUTH_MODE"] == "disabled" and not seen["RAY_AUTH_TOKEN_PATH"]
    assert _auth_inside(monkeypatch, tmp_path, "token", "disabled")["RAY_AUTH_MODE"] == "token"


def test_an_unknown_auth_mode_is_refused():
    from iprox_ray.execution.ray_session import ray_session

    with pytest.raises(ValueError, match="ray auth"):
        with ray_session("local", num_cpus=1, auth="none"):
            pass


def _listening(pid: int) -> set[tuple]:
    """(address, port) of the TCP sockets a process listens on; IPv4-mapped IPv6 as IPv4."""
    import psutil

    out = set()
    try:
        conns = psutil.Process(pid).net_connections("inet")
    except psutil.NoSuchProcess:  # an idle worker that just left
        return out
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN:
            ip = ipaddress.ip_address(conn.laddr.ip)
            out.add((getattr(ip, "ipv4_mapped", None) or ip, conn.laddr.port))
    return out


@pytest.mark.slow
def test_the_embedded_cluster_is_loopback_only_with_token_auth(monkeypatch):
    import psutil
    import ray

    from iprox_ray.execution.ray_session import ray_session

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # conftest turns auth off for the other tests
    with ray_session("local", num_cpus=1):
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        gcs = ray._private.worker.global_worker.node.gcs_address
        assert gcs.startswith("127.0.0.1:")

        @ray.remote
        def node_ip():
            return ray.util.get_node_ip_address()

        assert ray.get(node_ip.remote()) == "127.0.0.1"
        ray_processes = psutil.Process().children(recursive=True)
        gcs_pids = [p.pid for p in ray_processes if p.name() == "gcs_server"]
        assert len(gcs_pids) == 1
        gcs_sockets = _listening(gcs_pids[0])
        assert int(gcs.rsplit(":", 1)[1]) in {port for _, port in gcs_sockets}
        assert all(ip.is_loopback for ip, _ in gcs_sockets), gcs_sockets
        # Nor does any other Ray process (raylet, agents, workers, this driver) listen elsewhere.
        everything = set().union(*(_listening(p.pid) for p in [psutil.Process(), *ray_processes]))
        assert all(ip.is_loopback for ip, _ in everything), everything

        token_file = os.environ["RAY_AUTH_TOKEN_PATH"]
        assert _mode(token_file) == 0o600
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        for env, verdict in [({"RAY_AUTH_MODE": "disabled"}, "REFUSED AuthenticationError"),
                             ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, "REFUSED AuthenticationError"),
                             ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_file}, "ACCEPTED")]:
            probe = subprocess.run([sys.executable, "-c", GCS_PROBE, gcs], env={**clean, **env},
                                   capture_output=True, text=True, timeout=60)
            assert probe.stdout.startswith(verdict), (env, probe.stdout, probe.stderr[-2000:])
    assert not ray.is_initialized() and not os.path.exists(token_file)
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
