"""Run-directory lock: one live run per directory; a stale lock is reported, never broken silently.

The lock file appears complete (hard link of a fully written file) and names its owner with a
random nonce. A takeover renames the lock to a private name and re-reads it: only the process
that moved the very lock it judged dead goes on, so two processes judging one owner dead can
never both hold the lock. Release removes the lock only while it still carries our nonce.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
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


def _restart_count() -> int:
    """How many times SLURM has restarted (requeued) this job; 0 outside SLURM or on the first start."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def owner_info(nonce: str) -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart": _restart_count(),
        "since": time.time(),
        "nonce": nonce,
    }


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunLock:
    """Exclusive lock file holding host, pid, SLURM job id and a nonce of its owner.

    A lock is taken over only when its owner is provably gone, and the takeover is reported:
    same host and a dead pid; the same SLURM job restarted since the lock was written (a requeue:
    SLURM starts it again only once its previous run has ended); or a probe's evidence (e.g.
    scontrol says the owner's SLURM job has ended). A lock of the same job and the same start (two
    `run`s, or `run` and `score`, inside one allocation) is a live owner. Anything else needs
    `force` (the CLI's --break-lock), because a live run may own it.
    """

    def __init__(self, path: Path, force: bool = False, report=print, probes: tuple[OwnerProbe, ...] = ()):
        self.path = path
        self.force = force
        self.report = report
        self.probes = probes
        self.nonce = uuid.uuid4().hex
        self.held = False

    def owner(self) -> dict | None:
        return _read(self.path)

    def gone_reason(self, info: dict) -> str | None:
        """Why the owner is known to be dead, or None when it may be alive."""
        if info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1))):
            return f"pid {info.get('pid')} no longer runs on {info.get('host')}"
        for probe in self.probes:
            reason = probe(info)
            if reason:
                return reason
        return None

    def is_stale(self, info: dict) -> bool:
        return self.gone_reason(info) is not None

    def is_own_requeue(self, info: dict) -> bool:
        """This SLURM job was requeued after the owner wrote the lock: the owner was its previous run."""
        job = os.environ.get("SLURM_JOB_ID")
        before = info.get("slurm_restart")
        return (bool(job) and info.get("slurm_job_id") == job and isinstance(before, int)
                and before < _restart_count())

    def _try_create(self) -> bool:
        """Create the lock with its owner already written; False if a lock exists."""
        tmp = self.path.with_name(f".{self.path.name}.{self.nonce}.new")
        tmp.write_text(json.dumps(owner_info(self.nonce)))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create, then write
            return self._create_exclusive()
        finally:
            tmp.unlink(missing_ok=True)

    def _create_exclusive(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(owner_info(self.nonce), fh)
        return True

    def _remove_if(self, nonce: str | None) -> bool:
        """Remove the lock only if it still carries `nonce`; put back anything else we moved."""
        moved = self.path.with_name(f".{self.path.name}.{self.nonce}.old")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return False
        info = _read(moved) or {}
        if info.get("nonce") == nonce:
            moved.unlink(missing_ok=True)
            return True
        try:  # not the lock we meant: restore it unless a new one appeared meanwhile
            os.link(moved, self.path)
        except FileExistsError:
            pass
        moved.unlink(missing_ok=True)
        return False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            if self._try_create():
                self.held = True
                return
            owner = self.owner()
            if owner is None:  # removed, or an old-format lock being written: look again
                time.sleep(0.05)
                owner = self.owner() or {}
            why = "forced" if self.force else (
                f"SLURM job {owner.get('slurm_job_id')} was requeued since (restart {owner.get('slurm_restart')} -> "
                f"{_restart_count()}): its previous run has ended" if self.is_own_requeue(owner) else self._gone(owner))
            if not why:
                raise RunLockedError(
                    f"run directory {self.path.parent} is in use by another run ({describe_owner(owner)}); "
                    "if you are sure that run is dead, rerun with --break-lock")
            if self._remove_if(owner.get("nonce")):
                self.report(f"taking over the lock of {self.path.parent} ({why}): was {describe_owner(owner)}")
        raise RunLockedError(f"could not take the lock of {self.path.parent}: other processes keep taking it")

    def _gone(self, info: dict) -> str | None:
        reason = self.gone_reason(info)
        return f"its owner is gone: {reason}" if reason else None

    def break_now(self) -> dict | None:
        """Remove whatever lock is there (the CLI's --break-lock, applied once); returns its owner."""
        owner = self.owner()
        if owner is not None and self._remove_if(owner.get("nonce")):
            self.report(f"broke the lock of {self.path.parent}: was {describe_owner(owner)}")
            return owner
        return None

    def still_held(self) -> bool:
        return self.held and (self.owner() or {}).get("nonce") == self.nonce

    def release(self) -> None:
        if self.held:
            if not self._remove_if(self.nonce):
                self.report(f"warning: the lock of {self.path.parent} was taken over while this run held it")
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
