"""Pure path builders for everything a run writes. No I/O here: the layout is the contract.

Two kinds of names: files under the run directory (`RunLayout`, absolute paths) and the stage and
array names inside it (module functions: marker names under stages/ and completions/, and array
paths inside store.zarr).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POOL = "pool"
MAIN_TARGET = "main"  # the target set of the job file; `iprox-ray score` adds others by name


def target_split(name: str) -> str:
    return f"targets/{name}"


def _flat(split: str) -> str:
    return split.replace("/", "-")


def flat_split(split: str) -> str:
    """A split as one path component (`targets/main` -> `targets-main`)."""
    return _flat(split)


def shard_file(folder: Path, shard_id: int, suffix: str = ".parquet") -> Path:
    """One shard's file in a per-shard folder (quarantine records, completion markers)."""
    return folder / f"{shard_id:06d}{suffix}"


def shard_files(folder: Path, suffix: str = ".parquet") -> list[Path]:
    """Every shard's file in such a folder, in shard order (other files there are not shards)."""
    return sorted(folder.glob(f"[0-9]*{suffix}")) if folder.exists() else []


@dataclass(frozen=True)
class RunLayout:
    root: Path

    # run-level files
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def lock(self) -> Path:
        return self.root / "LOCK"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def store(self) -> Path:
        return self.root / "store.zarr"

    @property
    def report(self) -> Path:
        """The self-contained HTML report (`iprox-ray report`, also written at the end of a run)."""
        return self.root / "report.html"

    # inputs
    @property
    def manifest_dir(self) -> Path:
        return self.root / "manifest"

    def manifest(self, split: str) -> Path:
        return self.manifest_dir / f"{_flat(split)}.parquet"

    def manifest_info(self, split: str) -> Path:
        return self.manifest_dir / f"{_flat(split)}.json"

    def manifest_splits(self) -> list[str]:
        """The flat names of the splits with a frozen manifest."""
        folder = self.manifest_dir
        return sorted(p.stem for p in folder.glob("*.parquet")) if folder.exists() else []

    def windows_dir(self, split: str) -> Path:
        """data.text_windows = "all": the split's documents cut into window rows (NNNNNN.parquet,
        one per document shard) and the documents' own manifest."""
        return self.root / "windows" / _flat(split)

    def window_documents(self, split: str) -> tuple[Path, Path]:
        """The manifest (table, info) of the documents the windows were cut from."""
        folder = self.windows_dir(split)
        return folder / "documents.parquet", folder / "documents.json"

    @property
    def render_record(self) -> Path:
        """What a chat template reads besides the row, fixed at the run's first encode (the clock)."""
        return self.root / "render.json"

    @property
    def quarantine_root(self) -> Path:
        return self.root / "quarantine"

    def quarantine_dir(self, split: str) -> Path:
        return self.quarantine_root / _flat(split)

    def quarantine_shard(self, split: str, shard_id: int) -> Path:
        return shard_file(self.quarantine_dir(split), shard_id)

    def duplicates(self, split: str) -> Path:
        return self.quarantine_dir(split) / "duplicates.parquet"

    def preflight_rows(self, split: str) -> Path:
        """The quarantine records of a split whose checked rows were all unusable."""
        return self.root / "preflight" / f"{_flat(split)}.parquet"

    @property
    def quarantine_all(self) -> Path:
        return self.root / "quarantine.parquet"

    # model artifacts
    @property
    def warmup_dir(self) -> Path:
        return self.root / "warmup"

    @property
    def proxy_dir(self) -> Path:
        return self.root / "proxy"

    @property
    def fidelity_dir(self) -> Path:
        return self.root / "fidelity"

    @property
    def fidelity_report(self) -> Path:
        return self.fidelity_dir / "report.json"

    @property
    def fidelity_scatter(self) -> Path:
        return self.fidelity_dir / "scatter.png"

    @property
    def landmark_fidelity(self) -> Path:
        return self.fidelity_dir / "landmarks.json"

    # progress, as plain files you can `ls`
    @property
    def completions_root(self) -> Path:
        return self.root / "completions"

    def completions(self, stage: str) -> Path:
        return self.completions_root / stage

    def completion(self, stage: str, shard_id: int) -> Path:
        return shard_file(self.completions(stage), shard_id, ".json")

    @property
    def group_records(self) -> Path:
        return self.root / "groups"

    def group_record(self, stage: str) -> Path:
        """The store group a sharded stage writes and a copy of its zarr.json (what `verify --repair`
        puts back if it is lost)."""
        return self.group_records / f"{stage}.json"

    @property
    def file_hashes(self) -> Path:
        """Cache of input files' full hashes by (path, size, mtime_ns, inode): a resume re-reads no
        unchanged weight file."""
        return self.root / "cache" / "file-hashes.json"

    @property
    def errors_dir(self) -> Path:
        """Full tracebacks of unexpected errors (the CLI prints one line and this path)."""
        return self.root / "errors"

    def failures(self, stage: str) -> Path:
        return self.root / "failures" / stage

    def inflight(self, stage: str) -> Path:
        return self.root / "inflight" / stage

    @property
    def stages_dir(self) -> Path:
        return self.root / "stages"

    def stage_done(self, stage: str) -> Path:
        return self.stages_dir / f"{stage}.json"

    def stages_done(self, pattern: str = "*") -> list[Path]:
        folder = self.stages_dir
        return sorted(folder.glob(f"{pattern}.json")) if folder.exists() else []

    # cluster bookkeeping: submitted SLURM jobs, Ray rendezvous folders, per-group locks
    @property
    def slurm_jobs(self) -> Path:
        return self.root / "slurm" / "jobs"

    def rendezvous(self, job_id: str, attempt: int) -> Path:
        return self.root / "slurm" / "rendezvous" / f"{job_id}-{attempt}"

    @property
    def array_groups(self) -> Path:
        return self.manifest_dir / "array-groups.json"

    def group_lock(self, group: int) -> Path:
        return self.root / "locks" / f"group-{group:04d}"

    def group_locks(self) -> list[Path]:
        return sorted((self.root / "locks").glob("group-*"))

    # outputs
    def selection_dir(self, name: str) -> Path:
        return self.root / "selections" / name

    def selection_names(self) -> list[str]:
        """The targets with a selections/<name>/ folder."""
        folder = self.root / "selections"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.exists() else []

    def selection(self, name: str) -> Path:
        return self.selection_dir(name) / "selection.parquet"

    def subset(self, name: str) -> Path:
        """The selected rows themselves; the subset writer adds the inputs' format suffix
        (.parquet, .jsonl) or writes a saved-dataset folder of this name."""
        return self.selection_dir(name) / "selected"

    def score_plot(self, name: str) -> Path:
        return self.selection_dir(name) / "scores.png"

    def target_record(self, name: str) -> Path:
        """The settings a target name is bound to (`iprox-ray score`)."""
        return self.selection_dir(name) / "target.json"

    def target_summary(self, name: str) -> Path:
        return self.selection_dir(name) / "summary.json"


# Stage names: the marker stages/<stage>.json, and completions/<stage>/ for sharded stages.
def sketch_stage(split: str) -> str:
    return f"sketch-{_flat(split)}"


# The sketch batches' token budget a run chose for `sketch.token_budget = "auto"` (kept for its resumes).
SKETCH_BUDGET_STAGE = "sketch-budget"


def embed_stage(kind: str, split: str) -> str:
    return f"embed-{kind}-{_flat(split)}"


def dedup_stage(split: str) -> str:
    return f"dedup-{_flat(split)}"


def preflight_stage(split: str) -> str:
    return f"preflight-{_flat(split)}"


def windows_stage(split: str) -> str:
    return f"windows-{_flat(split)}"


def score_stage(target_name: str) -> str:
    return f"score-{target_name}"


def select_stage(target_name: str) -> str:
    return f"select-{target_name}"


# Stages a repaired store invalidates (they read what the sharded stages wrote).
DOWNSTREAM_STAGES = (dedup_stage("*"), score_stage("*"), select_stage("*"))


# Arrays inside store.zarr.
LANDMARKS = "landmarks/pool"


def embedding_group(kind: str, split: str) -> str:
    return f"embeddings/{kind}/{split}"


def score_array(target_name: str) -> str:
    """One aggregated score per pool row."""
    return f"scores/{target_name}"


def score_columns(target_name: str) -> str:
    """Per-subtask scores, [rows, subtasks], when there is more than one subtask."""
    return f"score_columns/{target_name}"


def score_candidates(target_name: str) -> str:
    """Round-robin: each target example's best k rows."""
    return f"score_candidates/{target_name}"


def first_order_scores(target_name: str) -> str:
    """The first-order scores, kept when the second-order term rewrites score_array."""
    return f"scores_first_order/{target_name}"


def target_arrays(target_name: str) -> tuple[str, ...]:
    """Every array the score stage may write for a target, whatever the method."""
    return (score_array(target_name), score_columns(target_name), score_candidates(target_name),
            first_order_scores(target_name))


def target_stages(target_name: str) -> tuple[str, ...]:
    """The per-target stage markers (beside the target split's own sketch/embed/dedup/preflight)."""
    return (score_stage(target_name), select_stage(target_name))


def split_stages(split: str, embed_kinds: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The stage markers a split's own passes write."""
    return (sketch_stage(split), *(embed_stage(kind, split) for kind in embed_kinds), dedup_stage(split),
            preflight_stage(split), windows_stage(split))


# Run-level (unsharded) stages.
WARMUP_STAGE = "warmup"
PROXY_STAGE = "proxy"
PROXY_CHOICE_STAGE = "proxy-choice"  # proxy.method = 'auto': the fidelity verdict and the model chosen
LANDMARKS_STAGE = "landmarks"
