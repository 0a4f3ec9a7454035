"""SLURM job bookkeeping as plain files, and job states from squeue / scontrol.

Every submitted job gets `RUN/slurm/jobs/<job id>.json` (role, array task, log folder); a job
that starts (or restarts after a requeue) adds its attempt there. `status` reads these files and
asks SLURM for the live state; without SLURM commands the state reads "unknown".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from iprox_ray.store.atomic import atomic_write_json, read_json

# States in which a job holds (or will again hold) its resources.
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                 "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


def record_submission(folder: Path, job_id: str, info: dict) -> None:
    path = folder / f"{job_id}.json"
    known = read_json(path) if path.exists() else {}  # the job may already have recorded its start
    atomic_write_json(path, {**known, **info, "job_id": job_id, "submitted_at": time.time()})


def record_attempt(folder: Path) -> None:
    """Called inside a running job: note this attempt (SLURM_RESTART_COUNT counts requeues)."""
    job_id = current_job_id()
    if not job_id:
        return
    path = folder / f"{job_id}.json"
    info = read_json(path) if path.exists() else {"job_id": job_id}
    attempts = info.setdefault("attempts", [])
    attempts.append({"restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")), "started_at": time.time(),
                     "nodes": os.environ.get("SLURM_JOB_NODELIST")})
    atomic_write_json(path, info)


def current_job_id() -> str | None:
    """The job id as squeue shows it: array tasks as ARRAYID_TASK."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def read_submissions(folder: Path) -> list[dict]:
    if not folder.exists():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            out.append(read_json(path))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: r.get("submitted_at", 0))


NOT_KNOWN = "unknown (not known to SLURM any more)"


def job_state(job_id: str) -> str:
    """State of one job (array tasks as ID_TASK, which scontrol accepts); 'unknown ...' if SLURM cannot say."""
    if shutil.which("scontrol") is None:
        return "unknown (no scontrol here)"
    try:
        proc = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    if proc.returncode != 0:
        return NOT_KNOWN if "invalid job id" in proc.stderr.lower() else f"unknown ({proc.stderr.strip()[-200:]})"
    for item in proc.stdout.split():
        key, _, value = item.partition("=")
        if key == "JobState":
            return value
    return "unknown (no JobState in scontrol's answer)"


def job_states(job_ids: list[str]) -> dict[str, str]:
    return {j: job_state(j) for j in job_ids}


def slurm_owner_gone(owner: dict) -> str | None:
    """Lock probe: the owner's SLURM job has ended (squeue/scontrol say so); None if unsure."""
    job = owner.get("slurm_job_id")
    if not job or shutil.which("scontrol") is None:
        return None
    state = job_state(str(job))
    if state == NOT_KNOWN:  # scontrol answered: the job ended long ago
        return f"SLURM job {job} is no longer known to SLURM"
    if state.startswith("unknown"):
        return None
    if state in ACTIVE_STATES:
        return None
    return f"SLURM job {job} is {state}"
