"""Done shards whose chunk files are gone: the next run redoes them (sketch, embed) after dropping
what was computed from them; `iprox-ray score`, which never re-sketches the pool, refuses."""

from __future__ import annotations

import sys

from iprox_ray.execution.context import RunContext
from iprox_ray.execution.task import ShardRef
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.store.digest import StoreDamagedError
from iprox_ray.store.markers import ShardMarkers, forget_downstream


def _describe(stage: str, shard: int, keys: list[str]) -> str:
    more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    return f"{stage} shard {shard}: its chunk file store.zarr/{keys[0]}{more} is missing"


def redo_lost_shards(ctx: RunContext, stage: str, markers: ShardMarkers) -> int:
    """Forget the done shards (of this run part) with a lost chunk file, so that they are redone;
    returns how many."""
    owns = ctx.shard_filter
    lost = markers.lost_chunks(ctx.layout.store, None if owns is None else (lambda s: owns(ShardRef(stage, s))))
    if not lost:
        return 0
    for shard, keys in sorted(lost.items()):
        print(f"{_describe(stage, shard, keys)}; redoing the shard", file=sys.stderr, flush=True)
    ctx.guard("forget shards whose chunks are lost")
    forget_downstream(ctx.layout)  # first: a crash in between must not leave them standing
    for shard in lost:
        markers.forget(shard)
    return len(lost)


def require_intact(ctx: RunContext, stage: str, markers: ShardMarkers) -> None:
    """Refuse to read a split whose done shards lost a chunk file (it would read as padding)."""
    lost = markers.lost_chunks(ctx.layout.store)
    if lost:
        shard, keys = min(lost.items())
        count = f" ({len(lost)} shard(s) in all)" if len(lost) > 1 else ""
        raise StoreDamagedError(f"{_describe(stage, shard, keys)}{count}; run `iprox-ray verify RUN_DIR --repair`, "
                                "then `iprox-ray run` with the run's job to redo those shards")


def record_group(ctx: RunContext, stage: str, store) -> None:
    """Keep a copy of the zarr.json of the group (split or embedding store) a sharded stage writes:
    `verify --repair` puts it back, byte for byte, if it is lost."""
    path = ctx.layout.group_record(stage)
    record = {"group": store.location, "zarr_json": (ctx.layout.store / store.location / "zarr.json").read_text()}
    if not path.exists() or read_json(path) != record:
        atomic_write_json(path, record)
