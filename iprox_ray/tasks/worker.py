"""What the sketch and embed workers set up alike: the worker's threads and device, the
tokenizer, each stage's encoder and frozen manifest, and the reading of one shard's rows.

Both tasks are ShardTasks (execution/task.py): built on the driver, pickled to a worker, set up
once there. Their state after setup() is typed (WorkerState and the task's own fields), not a
dict, so a missing setup fails by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from iprox_ray.corpus.formats import EncodingSettings, build_encoder
from iprox_ray.corpus.manifest import Manifest
from iprox_ray.corpus.shard_reader import ShardRows, read_shard
from iprox_ray.execution.task import Resources, ShardRef
from iprox_ray.models.loading import load_tokenizer
from iprox_ray.spec import SourceSpec


@dataclass
class WorkerState:
    """What every shard of every stage the task serves reads, set up once per worker."""

    use_gpu: bool
    pad_id: int
    encoders: dict  # by stage: the row encoder of its data.format
    manifests: dict[str, Manifest]  # by stage


class ShardWorker:
    """Mixin of the two worker tasks. The task declares `resources`, `tokenizer_dir`, `encodings`
    (by stage) and `splits` (by stage: objects with `split`, `source`, `manifest_paths`)."""

    resources: Resources
    tokenizer_dir: Path
    encodings: dict[str, EncodingSettings]
    splits: dict

    def start_worker(self) -> WorkerState:
        torch.set_num_threads(self.resources.threads)
        tokenizer = load_tokenizer(self.tokenizer_dir)
        return WorkerState(
            use_gpu=bool(torch.cuda.is_available() and self.resources.gpus),
            pad_id=tokenizer.pad_token_id,
            encoders={k: build_encoder(v, tokenizer) for k, v in self.encodings.items()},
            manifests={k: Manifest.load(*v.manifest_paths) for k, v in self.splits.items()},
        )

    def read_rows(self, worker: WorkerState, ref: ShardRef) -> ShardRows:
        """The shard's rows, encoded (quarantined ones recorded, not raised)."""
        inputs = self.splits[ref.stage]
        source: SourceSpec = inputs.source
        return read_shard(inputs.split, worker.manifests[ref.stage].shards[ref.shard], source,
                          worker.encoders[ref.stage])
