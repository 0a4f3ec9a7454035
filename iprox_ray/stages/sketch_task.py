"""Worker side of the sketch stage: one shard in, its rows' sketches written to the store.

Runs inside an executor worker (a Ray actor holding the proxy replica, or the driver itself).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.encode import ChatEncoder
from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.shard_reader import read_shard
from iprox_ray.execution.task import Resources, ShardRef
from iprox_ray.models.loading import load_tokenizer
from iprox_ray.sketch.kronecker import KroneckerSketcher
from iprox_ray.spec import SketchSpec, SourceSpec
from iprox_ray.stages.model_ref import ModelRef
from iprox_ray.store.atomic import atomic_write_parquet
from iprox_ray.store.sketch_store import NONFINITE, NOT_SKETCHED, OK, QUARANTINED, SplitStore


@dataclass(frozen=True)
class SplitInputs:
    """Where one split's rows come from and go to."""

    split: str
    source: SourceSpec
    manifest_paths: tuple[Path, Path]
    quarantine_dir: Path


@dataclass
class SketchShardTask:
    name: str
    resources: Resources
    splits: dict[str, SplitInputs]  # by stage name
    sketch: SketchSpec
    model: ModelRef
    tokenizer_dir: Path
    max_length: int
    truncation: str
    store_path: Path
    # Optional row subset per stage: {stage: {shard: local rows}}; a stage absent here sketches
    # every row. Valid rows outside the subset get metadata only (written = NOT_SKETCHED).
    only_rows: dict[str, dict[int, tuple[int, ...]]] | None = None
    _state: dict = field(default_factory=dict, repr=False)

    def setup(self) -> None:
        torch.set_num_threads(self.resources.threads)
        tokenizer = load_tokenizer(self.tokenizer_dir)
        model = self.model.load()
        if torch.cuda.is_available() and self.resources.gpus:
            model = model.to("cuda")
        s = self.sketch
        self._state = {
            "encoder": ChatEncoder(tokenizer, self.max_length, self.truncation),
            "pad_id": tokenizer.pad_token_id,
            "sketcher": KroneckerSketcher(model, s.modules, s.proj_in, s.proj_out, s.seed, s.projection),
            "manifests": {k: Manifest.load(*v.manifest_paths) for k, v in self.splits.items()},
            "stores": {k: SplitStore.open(self.store_path, v.split) for k, v in self.splits.items()},
        }

    def teardown(self) -> None:
        sketcher = self._state.get("sketcher")
        if sketcher is not None:
            sketcher.close()
        self._state = {}

    def process(self, ref: ShardRef) -> dict:
        start = time.perf_counter()
        st = self._state
        inputs = self.splits[ref.stage]
        shard_id = ref.shard
        shard = st["manifests"][ref.stage].shards[shard_id]
        rows = read_shard(inputs.split, shard, inputs.source, st["encoder"])
        n = shard.n_rows
        dim = st["sketcher"].dim
        sketch = np.zeros((n, dim), dtype=np.float16)
        columns = {
            "sample_id": np.full(n, "", dtype=object),
            "domain": np.full(n, "", dtype=object),
            "subtask": np.full(n, "", dtype=object),
            "n_tokens": np.zeros(n, np.int32),
            "loss": np.full(n, np.nan, np.float32),
            "sketch_norm": np.zeros(n, np.float32),
            "written": np.full(n, QUARANTINED, np.uint8),
        }
        for q in rows.quarantine:
            columns["sample_id"][q["row"] - shard.row_start] = q["sample_id"]
        local = np.asarray(rows.local_rows, dtype=np.int64)
        for i, conv in enumerate(rows.conversations):
            columns["sample_id"][local[i]] = conv.sample_id
            columns["domain"][local[i]] = conv.domain
            columns["subtask"][local[i]] = conv.subtask
            columns["n_tokens"][local[i]] = rows.encoded[i].n_tokens
        tokens = nonfinite = 0
        subset = (self.only_rows or {}).get(ref.stage)
        if subset is not None:
            wanted = set(subset.get(shard_id, ()))
            keep = np.asarray([i for i, row in enumerate(local) if int(row) in wanted], dtype=np.int64)
            columns["written"][local] = NOT_SKETCHED
        else:
            keep = np.arange(len(local))
        encoded = [rows.encoded[i] for i in keep]
        local = local[keep]
        for batch in make_batches(encoded, self.sketch.token_budget, self.sketch.max_batch_rows, st["pad_id"]):
            out = st["sketcher"].sketch(
                torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask), torch.from_numpy(batch.trainable)
            )
            target = local[batch.rows]
            values = out.sketch.cpu().numpy()
            norms = np.linalg.norm(values, axis=1)
            finite = out.finite.cpu().numpy()
            safe = np.where(finite & (norms > 0), norms, 1.0)
            # Unit rows in fp16 keep full relative precision; the norm is kept apart in fp32.
            sketch[target] = np.where(finite[:, None], values / safe[:, None], 0).astype(np.float16)
            columns["sketch_norm"][target] = np.where(finite, norms, 0)
            columns["loss"][target] = out.loss.cpu().numpy()
            columns["written"][target] = np.where(finite, OK, NONFINITE)
            tokens += batch.n_tokens
            nonfinite += int((~finite).sum())
        st["stores"][ref.stage].write_shard(shard_id, sketch, columns)
        if rows.quarantine:
            atomic_write_parquet(inputs.quarantine_dir / f"{shard_id:06d}.parquet", rows.quarantine_table())
        domains: dict[str, int] = {}
        for conv in rows.conversations:
            domains[conv.domain] = domains.get(conv.domain, 0) + 1
        return {
            "rows": n,
            "sketched": len(encoded),
            "kept": len(rows.conversations) - nonfinite,
            "quarantined": len(rows.quarantine),
            "nonfinite": nonfinite,
            "tokens": tokens,
            "seconds": time.perf_counter() - start,
            "domains": domains,
        }
