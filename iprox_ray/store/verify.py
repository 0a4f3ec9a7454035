"""`iprox-ray verify`: re-read every finished shard, compare it with the digest in its completion
marker and, with repair, forget damaged shards so that the next run redoes only them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import zarr

from iprox_ray.store.atomic import read_json, remove_tree_inside
from iprox_ray.store.digest import StoreDamagedError
from iprox_ray.store.embedding_store import EmbeddingStore
from iprox_ray.store.layout import DOWNSTREAM_STAGES, RunLayout, shard_files
from iprox_ray.store.sketch_store import SCHEMA_VERSION, SplitStore

# Driver stages that read the shard stores: their results go stale when a shard is redone.


@dataclass
class Damage:
    stage: str
    shard: int
    group: str
    reason: str


@dataclass
class VerifyReport:
    checked: int = 0
    unverifiable: int = 0  # markers written before digests existed
    damaged: list[Damage] = field(default_factory=list)
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


def _rebuild_metadata(layout: RunLayout, folder: Path) -> None:
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
    for folder in _missing_group_metadata(layout.store):
        report.rebuilt_metadata.append(str(folder.relative_to(layout.root)))
        if repair:
            _rebuild_metadata(layout, folder)
    groups: dict = {}
    completions = layout.completions_root
    for stage_dir in sorted(completions.iterdir()) if completions.exists() else []:
        for marker in shard_files(stage_dir, ".json"):
            damage = _check(layout.store, stage_dir.name, marker, groups, report)
            if damage:
                report.damaged.append(damage)
                say(f"damaged: {damage.stage} shard {damage.shard} ({damage.group}): {damage.reason}")
    if repair and report.damaged:
        for damage in report.damaged:
            _forget_shard(layout.store, damage, layout)
        for path in sorted({d.group for d in report.damaged if _unopenable(layout.store, d.group)}):
            remove_tree_inside(layout.store, layout.store / path)
            report.removed_groups.append(path)
            for d in report.damaged:  # every marker of a removed group goes too
                if d.group == path:
                    for marker in shard_files(completions / d.stage, ".json"):
                        if (read_json(marker).get("group") or path) == path:
                            marker.unlink(missing_ok=True)
        for pattern in DOWNSTREAM_STAGES:
            for path in layout.stages_done(pattern):
                path.unlink(missing_ok=True)
    return report


def _unopenable(store: Path, path: str) -> bool:
    try:
        _open_group(store, path)
        return False
    except (FileNotFoundError, KeyError, ValueError):
        return True


def format_report(report: VerifyReport) -> str:
    lines = [f"verified {report.checked} finished shard(s); {len(report.damaged)} damaged"
             + (f"; {report.unverifiable} without a digest (written by an older version)" if report.unverifiable else "")]
    if report.rebuilt_metadata:
        lines.append(("rebuilt" if report.repaired else "missing") + " store metadata: "
                     + ", ".join(report.rebuilt_metadata))
    if report.damaged and report.repaired:
        lines.append(f"repaired: forgot {len(report.damaged)} shard(s)"
                     + (f" and removed group(s) {', '.join(report.removed_groups)}" if report.removed_groups else "")
                     + "; the next run redoes only them (and the scoring after them)")
    elif not report.ok:
        lines.append("run `iprox-ray verify RUN_DIR --repair` to forget the damaged shards, then rerun")
    return "\n".join(lines)
