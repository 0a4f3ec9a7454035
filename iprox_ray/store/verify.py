"""`iprox-ray verify`: re-read every finished shard and every array the driver wrote, compare them
with the digests their markers recorded (and the chunk files they listed) and, with repair,
forget what is damaged so that the next run redoes only that (and what was computed from it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import zarr

from iprox_ray.store.atomic import atomic_write_bytes, read_json, remove_tree_inside
from iprox_ray.store.chunks import missing_keys
from iprox_ray.store.digest import StoreDamagedError
from iprox_ray.store.driver_arrays import check_digest
from iprox_ray.store.embedding_store import EmbeddingStore
from iprox_ray.store.layout import LANDMARKS_STAGE, MAIN_TARGET, RunLayout, select_stage, shard_files
from iprox_ray.store.markers import forget_downstream
from iprox_ray.store.sketch_store import SCHEMA_VERSION, SplitStore


@dataclass
class Damage:
    stage: str
    shard: int | None  # None: an array the driver wrote (`group` is its path)
    group: str
    reason: str

    def describe(self) -> str:
        what = f"shard {self.shard} ({self.group})" if self.shard is not None else f"({self.group})"
        return f"{self.stage} {what}: {self.reason}"


@dataclass
class VerifyReport:
    checked: int = 0
    arrays: int = 0  # driver-written arrays checked
    unverifiable: int = 0  # markers written before digests existed
    damaged: list[Damage] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)  # what to run afterwards, one line each
    rebuilt_metadata: list[str] = field(default_factory=list)
    removed_groups: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.rebuilt_metadata


def _open_group(store: Path, path: str) -> SplitStore | EmbeddingStore:
    group = zarr.open_group(str(store / path), mode="r+")
    cls = EmbeddingStore if "kind" in group.attrs else SplitStore
    return cls(group, int(group.attrs["rows_per_shard"]), int(group.attrs["n_shards"]))


def _missing_group_metadata(store: Path) -> list[Path]:
    """Folders above some array or group that lost their own zarr.json."""
    if not store.exists():
        return []
    holders = {p.parent for p in store.rglob("zarr.json")}
    missing = set()
    for folder in holders:
        for parent in [folder, *folder.parents]:
            if parent == store.parent:
                break
            if not (parent / "zarr.json").exists():
                missing.add(parent)
    if any(store.iterdir()) and not (store / "zarr.json").exists():
        missing.add(store)
    return sorted(missing)


def _group_records(layout: RunLayout) -> dict[str, str]:
    """{group path: its zarr.json} from the copies the sharded stages keep (groups/<stage>.json)."""
    folder = layout.group_records
    out = {}
    for record in sorted(folder.glob("*.json")) if folder.exists() else []:
        info = read_json(record)
        out[info["group"]] = info["zarr_json"]
    return out


def _rebuild_metadata(layout: RunLayout, folder: Path, records: dict[str, str]) -> None:
    kept = records.get(str(folder.relative_to(layout.store))) if folder != layout.store else None
    if kept is not None:  # a split or embedding group: its own metadata, attributes and all
        atomic_write_bytes(folder / "zarr.json", kept.encode())
        return
    group = zarr.open_group(str(folder), mode="a")  # writes zarr.json, keeps what lies under it
    if folder == layout.store:
        fingerprint = read_json(layout.config).get("fingerprint") if layout.config.exists() else None
        group.attrs.update({"schema_version": SCHEMA_VERSION, "config_fingerprint": fingerprint})


def _check(store: Path, stage: str, marker: Path, groups: dict, report: VerifyReport) -> Damage | None:
    try:
        info = read_json(marker)
    except (OSError, json.JSONDecodeError) as exc:
        return Damage(stage, int(marker.stem), "?", f"unreadable marker: {exc}")
    shard, path, want = int(marker.stem), info.get("group"), info.get("digest")
    if not path or not want:
        report.unverifiable += 1
        return None
    report.checked += 1
    missing = missing_keys(store, info.get("chunks") or [])
    if missing:
        return Damage(stage, shard, path, f"chunk file {store.name}/{missing[0]} is missing")
    try:
        if path not in groups:
            groups[path] = _open_group(store, path)
        have = groups[path].stored_digest(shard)
    except StoreDamagedError as exc:
        return Damage(stage, shard, path, f"cannot be read: {exc.detail}")
    except (FileNotFoundError, KeyError, ValueError) as exc:
        return Damage(stage, shard, path, f"group cannot be opened: {exc!r}")
    return None if have == want else Damage(stage, shard, path, f"digest {have} != marker's {want}")


def _forget_shard(store: Path, damage: Damage, layout: RunLayout) -> None:
    """Drop the shard's stored chunks (reads give fill values again) and its marker."""
    try:
        split = _open_group(store, damage.group)
        for name in split.array_names():
            arr = split.group[name]
            coords = (damage.shard,) + (0,) * (arr.ndim - 1)
            (store / damage.group / name / arr.metadata.encode_chunk_key(coords)).unlink(missing_ok=True)
    except (FileNotFoundError, KeyError, ValueError):
        pass  # the whole group goes (see verify_run)
    layout.completion(damage.stage, damage.shard).unlink(missing_ok=True)


def verify_run(run_dir: Path, repair: bool = False, say=print) -> VerifyReport:
    layout = RunLayout(Path(run_dir))
    if not layout.config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    report = VerifyReport(repaired=repair)
    records = _group_records(layout)
    for folder in _missing_group_metadata(layout.store):
        report.rebuilt_metadata.append(str(folder.relative_to(layout.root)))
        if repair:
            _rebuild_metadata(layout, folder, records)
    groups: dict = {}
    completions = layout.completions_root
    for stage_dir in sorted(completions.iterdir()) if completions.exists() else []:
        for marker in shard_files(stage_dir, ".json"):
            damage = _check(layout.store, stage_dir.name, marker, groups, report)
            if damage:
                report.damaged.append(damage)
    for marker in layout.stages_done():
        for path, digest in (read_json(marker).get("arrays") or {}).items():
            report.arrays += 1
            reason = check_digest(layout.store, path, digest)
            if reason:
                report.damaged.append(Damage(marker.stem, None, path, reason))
    for damage in report.damaged:
        say(f"damaged: {damage.describe()}")
    report.rerun = sorted({_rerun_hint(layout, d.stage) for d in report.damaged})
    if repair and report.damaged:
        _repair(layout, report)
    return report


def _repair(layout: RunLayout, report: VerifyReport) -> None:
    completions = layout.completions_root
    shards = [d for d in report.damaged if d.shard is not None]
    if shards or any(d.stage == LANDMARKS_STAGE for d in report.damaged):
        forget_downstream(layout)  # before the shards: a crash in between must not leave them standing
    for damage in shards:
        _forget_shard(layout.store, damage, layout)
    for path in sorted({d.group for d in shards if _unopenable(layout.store, d.group)}):
        remove_tree_inside(layout.store, layout.store / path)
        report.removed_groups.append(path)
        for d in shards:  # every marker of a removed group goes too
            if d.group == path:
                for marker in shard_files(completions / d.stage, ".json"):
                    if (read_json(marker).get("group") or path) == path:
                        marker.unlink(missing_ok=True)
    for damage in report.damaged:
        if damage.shard is None:  # the stage that wrote the array is redone (and the selection after it)
            layout.stage_done(damage.stage).unlink(missing_ok=True)
            if damage.stage.startswith("score-"):
                layout.stage_done(select_stage(damage.stage[len("score-"):])).unlink(missing_ok=True)


def _target_of(stage: str) -> str | None:
    """The target a stage belongs to (None: the pool's or the run's)."""
    for prefix in ("score-", "select-"):
        if stage.startswith(prefix):
            return stage[len(prefix):]
    if "-targets-" in stage:
        return stage.split("-targets-", 1)[1]
    return None


def _rerun_hint(layout: RunLayout, stage: str) -> str:
    target = _target_of(stage)
    if target is None or target == MAIN_TARGET or stage == LANDMARKS_STAGE:
        return f"`iprox-ray run` with the run's job (--run-dir {layout.root}) redoes {stage}"
    record = layout.target_record(target)
    paths = " ".join(read_json(record).get("paths", [])) if record.exists() else "FILE..."
    return f"`iprox-ray score {layout.root} --target {paths} --name {target}` redoes {stage}"


def _unopenable(store: Path, path: str) -> bool:
    try:
        _open_group(store, path)
        return False
    except (FileNotFoundError, KeyError, ValueError):
        return True


def format_report(report: VerifyReport) -> str:
    lines = [f"verified {report.checked} finished shard(s) and {report.arrays} array(s) the driver wrote; "
             f"{len(report.damaged)} damaged"
             + (f"; {report.unverifiable} without a digest (written by an older version)"
                if report.unverifiable else "")]
    if report.rebuilt_metadata:
        lines.append(("rebuilt" if report.repaired else "missing") + " store metadata: "
                     + ", ".join(report.rebuilt_metadata))
    if report.damaged and report.repaired:
        lines.append(f"repaired: forgot {len(report.damaged)} damaged item(s)"
                     + (f" and removed group(s) {', '.join(report.removed_groups)}" if report.removed_groups else "")
                     + "; the next run redoes only them (and the scoring after them):")
        lines += [f"  {hint}" for hint in report.rerun]
    elif not report.ok:
        lines.append("run `iprox-ray verify RUN_DIR --repair` to forget what is damaged, then rerun:")
        lines += [f"  {hint}" for hint in report.rerun]
    return "\n".join(lines)
