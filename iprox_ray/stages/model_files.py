"""The job's model folders: present before anything starts, and unchanged across resumes."""

from __future__ import annotations

from pathlib import Path

from iprox_ray.models.fingerprint import (
    check_model_folder,
    check_tokenizer_folder,
    fingerprint_changes,
    folder_fingerprint,
)
from iprox_ray.spec import JobSpec
from iprox_ray.stages.inputs import check_data_formats


def model_folders(job: JobSpec) -> dict[str, tuple[Path, bool]]:
    """name -> (folder, needs weights) for every model folder the job reads."""
    model = job.model
    folders = {"model": (job.resolve_path(model.path), model.init == "pretrained")}
    if job.warmup.checkpoint:
        folders["warmup.checkpoint"] = (job.resolve_path(job.warmup.checkpoint), True)
    if job.proxy.method == "model" and job.proxy.model_path:
        folders["proxy.model_path"] = (job.resolve_path(job.proxy.model_path), True)
    return folders


def tokenizer_folder(job: JobSpec) -> Path:
    return job.resolve_path(job.model.tokenizer or job.model.path)


def check_model_files(job: JobSpec) -> None:
    """Before anything starts: the model folders, and each split's data.format with this tokenizer."""
    for name, (folder, weights) in model_folders(job).items():
        check_model_folder(folder, name, weights)
    check_tokenizer_folder(tokenizer_folder(job))
    check_data_formats(job)


def input_fingerprints(job: JobSpec) -> dict:
    prints = {name: folder_fingerprint(folder) for name, (folder, _) in model_folders(job).items()}
    prints["tokenizer"] = folder_fingerprint(tokenizer_folder(job))
    return prints


def changed_inputs(old: dict, new: dict) -> list[str]:
    """'model: model.safetensors changed'-style phrases; empty when nothing the run read changed."""
    out = []
    for name in sorted(set(old) & set(new)):
        out += [f"{name}: {change}" for change in fingerprint_changes(old[name], new[name])]
    return out
