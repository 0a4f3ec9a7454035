"""The launchers by name (launcher.py says what one is). Adding one: its module with a `Launcher`
subclass, and its line here; a job names it in `cluster.kind`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iprox_ray.registry import Registry
from iprox_ray.spec import SpecError

if TYPE_CHECKING:
    from iprox_ray.execution.launcher import Launcher, LockProbe

LAUNCHERS: Registry[type[Launcher]] = Registry("launcher", {
    "local": "iprox_ray.execution.launcher:LocalLauncher",
    "slurm": "iprox_ray.execution.slurm_launcher:SlurmLauncher",
})


def launcher_for(job) -> Launcher:
    """The job's launcher; an unknown `cluster.kind` is refused here, when the job is checked."""
    name = job.cluster.kind
    if name not in LAUNCHERS:
        raise SpecError(f"cluster.kind: unknown launcher {name!r} (known: {', '.join(LAUNCHERS.names)})")
    return LAUNCHERS.load(name)()


def every_launcher() -> list[Launcher]:
    """Every registered launcher: a run directory may have been locked, or run, by any of them."""
    return [LAUNCHERS.load(name)() for name in LAUNCHERS.names]


def lock_probes() -> tuple[LockProbe, ...]:
    return tuple(probe for launcher in every_launcher() for probe in launcher.lock_probes())
