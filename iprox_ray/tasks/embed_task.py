"""Worker side of the embed stage: one shard in, its rows' embeddings written to the store.

Kinds are looked up by name in sketch/embedding_kinds.py (`jvp`: Influence Distillation's
forward-mode embeddings; `rds`: RDS+ pooled final hidden states). Bad rows are recorded by the
sketch stage's quarantine; here they are only flagged (written = 2) so that nothing downstream
mistakes a zero row for an embedding.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from iprox_ray.corpus.batching import make_batches
from iprox_ray.corpus.formats import EncodingSettings
from iprox_ray.execution.task import Resources, ShardRef
from iprox_ray.sketch.embedding_kind import Embedder
from iprox_ray.sketch.embedding_kinds import embedding_kind
from iprox_ray.spec import SourceSpec
from iprox_ray.spec.scoring import EmbedSpec
from iprox_ray.store.embedding_store import NONFINITE, OK, SKIPPED, EmbeddingStore
from iprox_ray.tasks.compute import compute_record
from iprox_ray.tasks.model_ref import ModelRef
from iprox_ray.tasks.worker import ShardWorker, WorkerState


@dataclass(frozen=True)
class EmbedInputs:
    split: str
    kind: str  # an embedding kind's name (sketch/embedding_kinds.py)
    source: SourceSpec
    manifest_paths: tuple[Path, Path]


def make_embedder(kind: str, model: torch.nn.Module, spec: EmbedSpec) -> Embedder:
    """The worker's embedder of kind `kind`; `iprox-ray plan` and the fidelity report build theirs here too."""
    return embedding_kind(kind).make(model, spec)


@dataclass
class EmbedState:
    worker: WorkerState
    compute: dict  # embeddings run in the weights' dtype
    embedders: dict[str, Embedder]  # by kind
    stores: dict[str, EmbeddingStore]  # by stage


@dataclass
class EmbedShardTask(ShardWorker):
    name: str
    resources: Resources
    splits: dict[str, EmbedInputs]  # by stage name
    embed: EmbedSpec
    model: ModelRef
    tokenizer_dir: Path
    encodings: dict[str, EncodingSettings]  # by stage: how its rows become tokens (data.format)
    store_path: Path
    _state: EmbedState | None = field(default=None, repr=False)

    def setup(self) -> None:
        worker = self.start_worker()
        kinds = sorted({v.kind for v in self.splits.values()})
        # One model serves every kind here: eager attention for all when one kind needs it (jvp).
        eager = any(embedding_kind(kind).needs_eager_attention for kind in kinds)
        model = (dataclasses.replace(self.model, attn="eager") if eager else self.model).load()
        if worker.use_gpu:
            model = model.to("cuda")
        self._state = EmbedState(
            worker=worker,
            compute=compute_record(self.model.dtype, worker.use_gpu),
            embedders={kind: make_embedder(kind, model, self.embed) for kind in kinds},
            stores={k: EmbeddingStore.open(self.store_path, v.kind, v.split) for k, v in self.splits.items()},
        )

    def teardown(self) -> None:
        if self._state is not None:
            for embedder in self._state.embedders.values():
                embedder.close()
        self._state = None

    def process(self, ref: ShardRef) -> dict:
        start = time.perf_counter()
        st = self._state
        inputs = self.splits[ref.stage]
        store = st.stores[ref.stage]
        embedder = st.embedders[inputs.kind]
        rows = self.read_rows(st.worker, ref)
        n = st.worker.manifests[ref.stage].shards[ref.shard].n_rows
        matrix = np.zeros((n, store.dim), dtype=np.float32)
        written = np.full(n, SKIPPED, dtype=np.uint8)
        local = np.asarray(rows.local_rows, dtype=np.int64)
        tokens = nonfinite = 0
        for batch in make_batches(rows.encoded, self.embed.token_budget, self.embed.max_batch_rows, st.worker.pad_id):
            out = embedder.embed(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
            values = out.cpu().numpy()
            finite = np.isfinite(values).all(axis=1)
            target = local[batch.rows]
            matrix[target] = np.where(finite[:, None], values, 0.0)
            written[target] = np.where(finite, OK, NONFINITE)
            tokens += batch.n_tokens
            nonfinite += int((~finite).sum())
        record = store.write_shard(ref.shard, matrix, written)  # durable before the marker is written
        return {"group": store.location, **record, "rows": n, "embedded": len(rows.encoded) - nonfinite,
                "nonfinite": nonfinite, "skipped": n - len(rows.encoded), "tokens": tokens,
                "seconds": time.perf_counter() - start, "compute": st.compute}
