"""Worker side of the sketch stage: one shard in, its rows' sketches written to the store.

Runs inside an executor worker (a Ray actor holding the proxy replica, or the driver itself).
With several checkpoints the worker holds one model per checkpoint and writes one sketch array
per checkpoint; pool rows get Adam-aware features when the spec asks, target rows never do.

Memory per worker (fp32 on CPU): the model(s); per batch (B rows x T tokens, budget B·T):
activations for the backward ~ B·T·(hidden·c·layers) as in any training step, logits only at
loss positions (n_loss_tokens x vocab), projected inputs B·T·k_in per Kronecker module (dense
kinds keep the module inputs B·T·d_in and build B·d_out·d_in per-sample gradients one module at a
time), and the [B, D] sketch. Nothing scales with the shard beyond its [rows, D] output.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.formats import EncodingSettings
from iprox_ray.execution.task import Resources, ShardRef
from iprox_ray.models.optimizer_state import load_adam_state
from iprox_ray.sketch.capture import HookSketcher
from iprox_ray.sketch.factory import make_sketcher
from iprox_ray.spec import SketchSpec, SourceSpec
from iprox_ray.store.atomic import atomic_write_parquet
from iprox_ray.store.layout import POOL, shard_file
from iprox_ray.store.sketch_store import NONFINITE, NOT_SKETCHED, OK, QUARANTINED, SplitStore, checkpoint_array
from iprox_ray.tasks.compute import compute_record, require_precision, sketch_precision
from iprox_ray.tasks.model_ref import ModelRef
from iprox_ray.tasks.worker import ShardWorker, WorkerState


@dataclass(frozen=True)
class SplitInputs:
    """Where one split's rows come from and go to."""

    split: str
    source: SourceSpec
    manifest_paths: tuple[Path, Path]
    quarantine_dir: Path


@dataclass
class CheckpointSketchers:
    """One checkpoint's sketchers: plain gradients (targets) and the pool's (Adam-aware when asked;
    the same object as `plain` otherwise)."""

    plain: HookSketcher
    adam: HookSketcher


@dataclass
class SketchState:
    worker: WorkerState
    compute: dict  # the precision and device this worker sketches in (tasks/compute.py)
    sketchers: list[CheckpointSketchers]  # one per checkpoint
    stores: dict[str, SplitStore]  # by stage


@dataclass
class SketchShardTask(ShardWorker):
    name: str
    resources: Resources
    splits: dict[str, SplitInputs]  # by stage name
    sketch: SketchSpec
    models: list[ModelRef]  # one per checkpoint
    adam_states: list[Path | None]  # per checkpoint; used for pool rows when sketch.optimizer != none
    tokenizer_dir: Path
    encodings: dict[str, EncodingSettings]  # by stage: how its rows become tokens (data.format)
    store_path: Path
    # Optional row subset per stage: {stage: {shard: local rows}}; a stage absent here sketches
    # every row. Valid rows outside the subset get metadata only (written = NOT_SKETCHED).
    only_rows: dict[str, dict[int, tuple[int, ...]]] | None = None
    precision: str = "float32"  # what the store's splits hold (tasks/compute.py); a worker computing
    # anything else refuses its shards
    _state: SketchState | None = field(default=None, repr=False)

    def setup(self) -> None:
        worker = self.start_worker()
        mine = sketch_precision(self.models[0].dtype, self.sketch.autocast, worker.use_gpu)
        require_precision(self.precision, mine, "the store", "This worker's device differs from the run's "
                          "(a node without a GPU?): give every worker the same kind of device.")
        train_split = any(v.split == POOL for v in self.splits.values())
        sketchers = []
        for ref, state_path in zip(self.models, self.adam_states):
            model = ref.load()
            if worker.use_gpu:
                model = model.to("cuda")
            state = None
            if self.sketch.optimizer != "none" and train_split:
                state = load_adam_state(state_path, model)  # before the sketchers freeze the weights
            plain = make_sketcher(model, self.sketch)
            adam = plain if state is None else make_sketcher(model, self.sketch, state)
            sketchers.append(CheckpointSketchers(plain, adam))
        self._state = SketchState(
            worker=worker,
            compute=compute_record(mine, worker.use_gpu),
            sketchers=sketchers,
            stores={k: SplitStore.open(self.store_path, v.split) for k, v in self.splits.items()},
        )

    def teardown(self) -> None:
        if self._state is not None:
            for pair in self._state.sketchers:
                for sketcher in {id(pair.plain): pair.plain, id(pair.adam): pair.adam}.values():
                    sketcher.close()
        self._state = None

    def process(self, ref: ShardRef) -> dict:
        start, cpu_start = time.perf_counter(), time.process_time()
        st = self._state
        inputs = self.splits[ref.stage]
        shard_id = ref.shard
        shard = st.worker.manifests[ref.stage].shards[shard_id]
        rows = self.read_rows(st.worker, ref)
        n = shard.n_rows
        pool = inputs.split == POOL  # targets stay plain gradients
        sketchers = [pair.adam if pool else pair.plain for pair in st.sketchers]
        dim = sketchers[0].dim
        sketches = [np.zeros((n, dim), dtype=np.float32) for _ in sketchers]  # the store picks the disk dtype
        columns = {
            "sample_id": np.full(n, "", dtype=object),
            "domain": np.full(n, "", dtype=object),
            "subtask": np.full(n, "", dtype=object),
            "n_tokens": np.zeros(n, np.int32),
            "written": np.full(n, QUARANTINED, np.uint8),
        }
        for c in range(len(sketchers)):
            columns[checkpoint_array("loss", c)] = np.full(n, np.nan, np.float32)
            columns[checkpoint_array("sketch_norm", c)] = np.zeros(n, np.float32)
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
        for batch in make_batches(encoded, self.sketch.token_budget, self.sketch.max_batch_rows, st.worker.pad_id):
            tensors = [torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.trainable)]
            target = local[batch.rows]
            ok = np.ones(len(target), dtype=bool)
            for c, sketcher in enumerate(sketchers):
                out = sketcher.sketch(*tensors)
                values = out.sketch.cpu().numpy()
                norms = np.linalg.norm(values, axis=1)
                finite = out.finite.cpu().numpy()
                safe = np.where(finite & (norms > 0), norms, 1.0)
                # Unit rows (the store quantises them: fp16 or int8) keep full relative precision; the
                # norm is kept apart in fp32.
                sketches[c][target] = np.where(finite[:, None], values / safe[:, None], 0)
                columns[checkpoint_array("sketch_norm", c)][target] = np.where(finite, norms, 0)
                columns[checkpoint_array("loss", c)][target] = out.loss.cpu().numpy()
                ok &= finite
            for c in range(len(sketchers)):  # a row bad at any checkpoint is bad at all of them
                sketches[c][target[~ok]] = 0
                columns[checkpoint_array("sketch_norm", c)][target[~ok]] = 0
            columns["written"][target] = np.where(ok, OK, NONFINITE)
            tokens += batch.n_tokens
            nonfinite += int((~ok).sum())
        store = st.stores[ref.stage]
        record = store.write_shard(shard_id, sketches, columns)  # durable before the marker is written
        if rows.quarantine:
            atomic_write_parquet(shard_file(inputs.quarantine_dir, shard_id), rows.quarantine_table())
        domains: dict[str, int] = {}
        for conv in rows.conversations:
            domains[conv.domain] = domains.get(conv.domain, 0) + 1
        return {
            "group": store.location,
            **record,
            "rows": n,
            "sketched": len(encoded),
            "kept": len(rows.conversations) - nonfinite,
            "quarantined": len(rows.quarantine),
            "nonfinite": nonfinite,
            "tokens": tokens,
            "seconds": time.perf_counter() - start,
            # CPU seconds of the worker process: unlike wall seconds, not stretched by other work on
            # the machine (what `iprox-ray plan`'s predictions are checked against)
            "cpu_seconds": time.process_time() - cpu_start,
            "domains": domains,
            "compute": st.compute,
            **peak_memory(),
        }


def peak_memory() -> dict:
    """Peak resident memory of this worker process so far (and GPU memory where used), MiB."""
    info = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        info["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return info
