"""Model and tokenizer folders: checked up front, and fingerprinted so that a resume notices
weights swapped in place (one store must never be sketched by two models)."""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
SAMPLE_BYTES = 1 << 20  # hashed at the start, middle and end of every weight file


class ModelFilesError(FileNotFoundError):
    pass


def has_weight_files(folder: Path) -> bool:
    return any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir())


def check_model_folder(folder: Path, what: str, needs_weights: bool) -> None:
    """A clear error naming what is missing (transformers would treat the path as a hub repo id)."""
    if not folder.is_dir():
        raise ModelFilesError(f"{what} folder {folder} does not exist (or is not a folder)")
    if not (folder / "config.json").is_file():
        raise ModelFilesError(f"{what} folder {folder} has no config.json")
    if needs_weights and not has_weight_files(folder):
        raise ModelFilesError(f"{what} folder {folder} has no weight files ({', '.join(WEIGHT_SUFFIXES)}); "
                              "give a folder with weights, or model.init = 'random'")


def check_tokenizer_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelFilesError(f"tokenizer folder {folder} does not exist (or is not a folder)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFilesError(f"tokenizer folder {folder} has none of {', '.join(TOKENIZER_FILES)}")


def _sample_hash(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for offset in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
            fh.seek(offset)
            h.update(fh.read(SAMPLE_BYTES))
    return h.hexdigest()


def folder_fingerprint(folder: Path) -> dict:
    """Per file: size and a content hash (whole file for small ones, samples of weight files).

    mtime is recorded but not compared: a copy of the same files is the same model."""
    files = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        sampled = path.suffix in WEIGHT_SUFFIXES and stat.st_size > 3 * SAMPLE_BYTES
        digest = _sample_hash(path, stat.st_size) if sampled else hashlib.sha256(path.read_bytes()).hexdigest()
        files[path.name] = {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest, "sampled": sampled}
    return files


def fingerprint_changes(old: dict, new: dict) -> list[str]:
    """What differs between two folder fingerprints, as short phrases."""
    changes = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is None:
            changes.append(f"{name} added")
        elif b is None:
            changes.append(f"{name} removed")
        elif (a["size"], a["sha256"]) != (b["size"], b["sha256"]):
            changes.append(f"{name} changed")
    return changes
