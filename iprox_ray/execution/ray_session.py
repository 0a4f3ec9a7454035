"""Start or join Ray: an embedded local cluster by default, an existing one by address.

The embedded cluster serves this process only, so nothing of it is reachable from elsewhere: every
listener on loopback, token auth on (a fresh secret per session, in a 0600 file), no dashboard,
and Ray's temp dir (sockets, logs) inside a folder only this user can enter.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import tempfile
from typing import Iterator

import ray
from ray._private import ray_constants

from iprox_ray.execution.ray_cluster import private_dir, ray_temp_dir, require_ray

AUTH_MODES = ("token", "disabled")


@contextlib.contextmanager
def ray_session(address: str = "local", num_cpus: int | None = None, auth: str = "token") -> Iterator[dict]:
    """Yields the cluster's resources. Leaves Ray running only if it was already running.

    `auth` (the cluster spec's `ray_auth`) applies to the embedded cluster; joining one by address,
    Ray's own settings (RAY_AUTH_MODE, the token) must match that cluster.
    """
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    require_ray(ray.__version__)
    if auth not in AUTH_MODES:
        raise ValueError(f"ray auth must be one of {AUTH_MODES}, not {auth!r}")
    kwargs = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
    with contextlib.ExitStack() as stack:
        if address == "local":
            # "local" always starts a fresh embedded cluster (never a stale /tmp/ray one).
            wanted = f"/tmp/ipr-ray-{os.getuid()}"
            folder = private_dir(wanted)
            if folder != wanted:  # a fresh folder of this session only: removed after it
                stack.callback(shutil.rmtree, folder, True)
            kwargs.update(num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1",
                          _temp_dir=ray_temp_dir(folder))
            stack.enter_context(_local_cluster_env(auth, folder))
        ray.init(address=address, **kwargs)
        stack.callback(ray.shutdown)  # runs before the environment is restored
        if address == "local":
            _check_loopback()
        yield ray.cluster_resources()


@contextlib.contextmanager
def _local_cluster_env(auth: str, folder: str) -> Iterator[None]:
    """The settings of one embedded cluster, for this process and the Ray processes it starts."""
    # Ray's switch for a one-machine cluster: without it Ray swaps 127.0.0.1 for the host's network
    # address and its gRPC servers listen on every interface.
    env = {ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0"}
    # A RAY_AUTH_MODE the user exported is an explicit choice and wins (the tests export "disabled");
    # otherwise the spec decides, and only ray_auth = "disabled" turns auth off.
    mode = os.environ.get("RAY_AUTH_MODE") or auth
    env["RAY_AUTH_MODE"] = mode
    token_file = None
    if mode.lower() == "token" and not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        # A fresh secret per session, rather than Ray's ~/.ray/auth_token (written with the umask).
        fd, token_file = tempfile.mkstemp(prefix="token-", dir=folder)  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        env["RAY_AUTH_TOKEN_PATH"] = token_file
    saved = {key: os.environ.get(key) for key in env}
    saved_cluster = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(env)
    ray_constants.ENABLE_RAY_CLUSTER = False  # read once at import; the driver must see the switch too
    _reload_ray_config()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        ray_constants.ENABLE_RAY_CLUSTER = saved_cluster
        _reload_ray_config()
        if token_file:
            os.unlink(token_file)


def _reload_ray_config() -> None:
    # Ray caches RAY_AUTH_MODE and the token per process; ray.init refreshes them the same way
    # when it turns token auth on by itself.
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _check_loopback() -> None:
    """Fail closed if a Ray version ignored the switch and put the node on a network address."""
    ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(ip).is_loopback:
        raise RuntimeError(f"the embedded Ray cluster came up on {ip}, not on loopback; refusing to use it")

