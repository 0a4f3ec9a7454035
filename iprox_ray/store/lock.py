"""Run-directory lock: one live run per directory; a stale lock is reported, never broken silently."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Callable

# Extra evidence that a lock's owner is gone (e.g. its SLURM job ended): owner info -> reason or None.
OwnerProbe = Callable[[dict], "str | None"]


class RunLockedError(RuntimeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_owner(info: dict) -> str:
    job = f", SLURM job {info['slurm_job_id']}" if info.get("slurm_job_id") else ""
    return f"host {info.get('host')}, pid {info.get('pid')}{job}, since {time.ctime(info.get('since', 0))}"


def owner_info() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "since": time.time(),
    }


class RunLock:
    """Exclusive lock file created with O_EXCL. Holds host, pid and SLURM job id of the owner.

    A lock is taken over only when its owner is provably gone, and the takeover is reported:
    same host and a dead pid; the same SLURM job id (a requeued job resuming itself); or a probe's
    evidence (e.g. squeue says the owner's SLURM job has ended). Anything else needs `force` (the
    CLI's --break-lock), because a live run may own it.
    """

    def __init__(self, path: Path, force: bool = False, report=print, probes: tuple[OwnerProbe, ...] = ()):
        self.path = path
        self.force = force
        self.report = report
        self.probes = probes
        self.held = False

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def gone_reason(self, info: dict) -> str | None:
        """Why the owner is known to be dead, or None when it may be alive."""
        if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1))):
            return f"pid {info.get('pid')} no longer runs on {info.get('host')}"
        for probe in self.probes:
            reason = probe(info)
            if reason:
                return reason
        return None

    def _gone(self, info: dict) -> str | None:
        reason = self.gone_reason(info)
        return f"its owner is gone: {reason}" if reason else None

    def is_stale(self, info: dict) -> bool:
        return self.gone_reason(info) is not None

    def is_own_requeue(self, info: dict) -> bool:
        job = os.environ.get("SLURM_JOB_ID")
        return bool(job) and info.get("slurm_job_id") == job and info.get("pid") != os.getpid()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = self.owner() or {}
            why = "forced" if self.force else (
                "the same SLURM job, requeued" if self.is_own_requeue(owner) else self._gone(owner))
            if why:
                self.report(f"taking over the lock of {self.path.parent} ({why}): was {describe_owner(owner)}")
                self.path.unlink(missing_ok=True)
                return self.acquire()
            raise RunLockedError(
                f"run directory {self.path.parent} is in use by another run ({describe_owner(owner)}); "
                "if you are sure that run is dead, rerun with --break-lock"
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(owner_info(), fh)
        self.held = True

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
