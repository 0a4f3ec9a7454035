"""Everything a job reads besides its data: present before anything starts, and unchanged across
resumes (model, tokenizer, warm-up checkpoint, proxy model, sketch checkpoints and Adam states)."""

from __future__ import annotations

import json
from pathlib import Path

from iprox_ray.models.fingerprint import (
    FileHashCache,
    ModelFilesError,
    check_model_folder,
    check_tokenizer_folder,
    files_fingerprint,
    fingerprint_changes,
    folder_fingerprint,
)
from iprox_ray.models.loading import load_config, meta_model
from iprox_ray.models.optimizer_state import adam_state_files
from iprox_ray.models.patterns import select_modules
from iprox_ray.spec import JobSpec, SpecError
from iprox_ray.store.atomic import atomic_write_json, read_json
from iprox_ray.tasks.inputs import check_data_formats


def model_folders(job: JobSpec) -> dict[str, tuple[Path, bool]]:
    """key path -> (folder, needs weights) for every model folder the job reads."""
    model = job.model
    folders = {"model": (job.resolve_path(model.path), model.init == "pretrained")}
    if job.warmup.checkpoint:
        folders["warmup.checkpoint"] = (job.resolve_path(job.warmup.checkpoint), True)
    if job.proxy.method == "model" and job.proxy.model_path:
        folders["proxy.model_path"] = (job.resolve_path(job.proxy.model_path), True)
    for i, c in enumerate(job.sketch.checkpoints):
        folders[f"sketch.checkpoints[{i}].model"] = (job.resolve_path(c.model), True)
    return folders


def adam_states(job: JobSpec) -> dict[str, Path]:
    """key path -> Adam state path for every state the sketch reads (none without sketch.optimizer);
    the warm-up's own state is a product of the run, not an input."""
    spec = job.sketch
    if spec.optimizer == "none":
        return {}
    if spec.checkpoints:
        return {f"sketch.checkpoints[{i}].optimizer": job.resolve_path(c.optimizer)
                for i, c in enumerate(spec.checkpoints) if c.optimizer}
    return {"sketch.optimizer_state": job.resolve_path(spec.optimizer_state)} if spec.optimizer_state else {}


def tokenizer_folder(job: JobSpec) -> Path:
    return job.resolve_path(job.model.tokenizer or job.model.path)


def check_model_files(job: JobSpec) -> None:
    """One-line errors, before any work, for every missing model part or Adam state."""
    spec = job.sketch
    if spec.checkpoints and job.proxy.method not in ("none", "auto"):  # auto falls back to the checkpoints' models
        raise SpecError("sketch.checkpoints sketch the checkpoints' own models: set proxy.method = 'none' or 'auto'")
    for name, (folder, weights) in model_folders(job).items():
        check_model_folder(folder, name, weights)
    check_tokenizer_folder(tokenizer_folder(job))
    if spec.optimizer != "none":
        for i, c in enumerate(spec.checkpoints):
            if c.optimizer is None:
                raise SpecError(f"sketch.checkpoints[{i}].optimizer: needed when sketch.optimizer = "
                                f"{spec.optimizer!r} (the Adam state of that checkpoint)")
        warmup_trains = job.warmup.enabled and not job.warmup.checkpoint
        if not spec.checkpoints and not spec.optimizer_state and not warmup_trains:
            raise SpecError(f"sketch.optimizer = {spec.optimizer!r} needs an Adam state: set sketch.optimizer_state, "
                            "or let the warm-up train (warmup.enabled = true, no warmup.checkpoint)")
    for name, path in adam_states(job).items():
        try:
            adam_state_files(path)
        except FileNotFoundError as exc:
            raise ModelFilesError(f"{name}: no Adam state at {path} ({exc})") from None
    check_module_patterns(job)
    check_data_formats(job)


def sketched_model_folder(job: JobSpec) -> Path:
    """The folder of the architecture the sketch stage reads (a proxy keeps its target's names)."""
    if job.sketch.checkpoints:
        return job.resolve_path(job.sketch.checkpoints[0].model)
    if job.proxy.method == "model" and job.proxy.model_path:
        return job.resolve_path(job.proxy.model_path)
    return job.resolve_path(job.model.path)


def check_module_patterns(job: JobSpec) -> None:
    """sketch.modules must match a linear of the model: checked on the meta-device architecture,
    before the warm-up and the proxy are paid for."""
    model = meta_model(load_config(sketched_model_folder(job)))
    try:
        select_modules(model, job.sketch.modules)
    except ValueError as exc:
        raise SpecError(f"sketch.modules: {exc}") from None


def input_fingerprints(job: JobSpec, cache_file: Path | None = None) -> dict:
    """Full-content fingerprints of every input file; hashes are reused from (and saved to)
    `cache_file` for files whose path, size, mtime and inode are unchanged."""
    cache = FileHashCache(_read_cache(cache_file))
    prints = {name: folder_fingerprint(folder, cache) for name, (folder, _) in model_folders(job).items()}
    prints["tokenizer"] = folder_fingerprint(tokenizer_folder(job), cache)
    for name, path in adam_states(job).items():
        prints[name] = files_fingerprint(adam_state_files(path), cache)
    if cache_file is not None and cache_file.parent.parent.exists():
        atomic_write_json(cache_file, cache.entries())
    return prints


def _read_cache(path: Path | None) -> dict:
    try:
        return read_json(path) if path is not None and path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # a damaged cache only costs a re-read


def changed_inputs(old: dict, new: dict) -> list[str]:
    """'model: model.safetensors changed'-style phrases; empty when nothing the run read changed.
    An input the old run did not read (or no longer reads) is a config change, refused elsewhere."""
    out = []
    for name in sorted(set(old) & set(new)):
        out += [f"{name}: {change}" for change in fingerprint_changes(old[name], new[name])]
    return out
