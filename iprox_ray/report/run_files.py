"""What the report reads from a run directory: config, summaries, stage markers, fidelity files,
the targets, and what is still missing. Nothing here writes; the store is opened read-only.

Small files only: the streamed statistics over the store and the selections are in stats.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import zarr

from iprox_ray.execution.run_status import collect_status
from iprox_ray.spec.proxy import auto_checks_candidate, builds_proxy
from iprox_ray.store.layout import (
    MAIN_TARGET,
    POOL,
    PROXY_STAGE,
    WARMUP_STAGE,
    RunLayout,
    dedup_stage,
    flat_split,
    score_array,
    score_stage,
    select_stage,
    target_split,
)
from iprox_ray.store.sketch_store import SplitStore


def _json(path: Path) -> dict | None:
    """A JSON file's content, or None when it is absent or half-written (a live run)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass
class TargetFiles:
    """One target set: its score array in the store, its selection and its summary, where present."""

    name: str
    scores: str | None
    selection: Path | None
    select_info: dict | None
    summary: dict | None
    score_attrs: dict = field(default_factory=dict)

    @property
    def split(self) -> str:
        return target_split(self.name)


@dataclass
class RunFiles:
    layout: RunLayout
    config: dict
    summary: dict | None
    stages: dict[str, dict]
    targets: list[TargetFiles]
    fidelity: dict | None
    landmark_fidelity: dict | None
    status: dict
    root: zarr.Group | None
    missing: list[str]

    @property
    def spec(self) -> dict:
        return self.config.get("spec", {})

    @property
    def name(self) -> str:
        return str(self.spec.get("run", {}).get("name", self.layout.root.name))

    @property
    def finished(self) -> bool:
        return not self.missing

    def pool(self) -> SplitStore | None:
        if self.root is None or POOL not in self.root:
            return None
        return SplitStore.open(self.layout.store, POOL, mode="r")


def open_store(layout: RunLayout) -> zarr.Group | None:
    if not (layout.store / "zarr.json").exists():
        return None
    return zarr.open_group(str(layout.store), mode="r")


def _targets(layout: RunLayout, root: zarr.Group | None, summary: dict | None) -> list[TargetFiles]:
    names = list(dict.fromkeys([MAIN_TARGET, *layout.selection_names()]))
    out = []
    for name in names:
        array = score_array(name)
        scores = array if root is not None and array in root else None
        selection = layout.selection(name)
        own = summary if name == MAIN_TARGET else _json(layout.target_summary(name))
        out.append(TargetFiles(name, scores, selection if selection.exists() else None,
                               _json(layout.stage_done(select_stage(name))), own,
                               dict(root[array].attrs) if scores else {}))
    return out


def _fidelity_expected(spec: dict) -> tuple[bool, bool]:
    """(a proxy-vs-target report, a landmark section) the job's settings ask for before sketching."""
    enabled = bool(spec.get("fidelity", {}).get("enabled"))
    method = spec.get("proxy", {}).get("method", "none")
    landmarks = spec.get("scoring", {}).get("method") == "influence-distillation"
    # 'auto' always checks its candidate: that report is what chose the model
    return ((enabled and method != "none") or auto_checks_candidate(method, _has_checkpoints(spec)),
            enabled and landmarks)


def _has_checkpoints(spec: dict) -> bool:
    return bool(spec.get("sketch", {}).get("checkpoints"))


def _missing(run: RunFiles) -> list[str]:
    """What a finished run has and this one lacks, in pipeline order, in words."""
    layout, status, stages = run.layout, run.status, run.stages
    out = []
    if not layout.manifest(POOL).exists():
        out.append("the inputs have not been read yet (no manifest)")
    if WARMUP_STAGE not in stages:
        out.append("the warm-up has not finished")
    if PROXY_STAGE not in stages and builds_proxy(run.spec.get("proxy", {}).get("method", "none"),
                                                  _has_checkpoints(run.spec)):
        out.append("the proxy has not been built")
    want_report, want_landmarks = _fidelity_expected(run.spec)
    if want_report and run.fidelity is None:
        out.append("the fidelity report (fidelity.enabled) has not been written")
    if want_landmarks and run.landmark_fidelity is None:
        out.append("the fidelity report's landmark section has not been written")
    for split, s in status.get("splits", {}).items():
        if s["pending"]:
            failed = f", {len(s['failed'])} failed" if s["failed"] else ""
            out.append(f"{split}: {s['done']} of {s['shards']} shards sketched{failed}")
    if layout.manifest(POOL).exists() and dedup_stage(POOL) not in stages:
        out.append("duplicate ids have not been marked (dedup)")
    for t in run.targets:
        if score_stage(t.name) not in stages:
            out.append(f"target {t.name!r} has not been scored")
        elif t.selection is None:
            out.append(f"target {t.name!r} has no selection yet")
        elif t.summary is None:
            out.append(f"target {t.name!r} has no summary (the run stopped before its end)")
    return out


def read_run(run_dir: Path) -> RunFiles:
    layout = RunLayout(Path(run_dir))
    config = _json(layout.config)
    if config is None:
        raise FileNotFoundError(f"{run_dir} is not an iprox-ray run directory (no config.json)")
    summary = _json(layout.summary)
    stages = {p.stem: d for p in layout.stages_done() if (d := _json(p)) is not None}
    root = open_store(layout)
    run = RunFiles(layout, config, summary, stages, _targets(layout, root, summary), _json(layout.fidelity_report),
                   _json(layout.landmark_fidelity), collect_status(layout.root), root, [])
    run.missing = _missing(run)
    return run


def split_label(split: str) -> str:
    """`targets/main` or `targets-main` -> `target main`; `pool` stays."""
    flat = flat_split(split)
    return flat.replace("targets-", "target ", 1) if flat.startswith("targets-") else flat
