"""Model and tokenizer folders: checked up front, and fingerprinted so that a resume notices
weights swapped or edited in place (one store must never be sketched by two models). Every byte of
every file is hashed (a sampled hash missed two flipped bytes between its windows); the hashes are
cached by (path, size, mtime_ns, inode), so only a changed file is read again."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
RACY_NS = 2_000_000_000  # files modified this recently are always hashed again


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


class FileHashCache:
    """Full-content hashes of files, remembered by (path, size, mtime_ns, inode): a resume does not
    re-read gigabytes of unchanged weights, while any write to a file (new mtime) or a replaced file
    (new inode) is hashed again. `entries()` is what this process used (saved by the caller)."""

    def __init__(self, entries: dict[str, str] | None = None):
        self._known = dict(entries or {})
        self._used: dict[str, str] = {}

    @staticmethod
    def _key(path: Path, stat) -> str:
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = self._key(path, stat)
        digest = self._known.get(key)
        if digest is None:
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        # A file written moments ago may be written again within the same timestamp tick (as git's
        # "racy" index entries): such a hash is not remembered.
        if time.time_ns() - stat.st_mtime_ns > RACY_NS:
            self._used[key] = digest
        return digest

    def entries(self) -> dict[str, str]:
        return dict(self._used)


def files_fingerprint(paths: list[Path], cache: FileHashCache | None = None) -> dict:
    """Per file (by name): size and the sha256 of its whole content.

    mtime is recorded but not compared: a copy of the same files is the same model."""
    cache = cache or FileHashCache()
    files = {}
    for path in sorted(paths):
        stat = path.stat()
        files[path.name] = {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": cache.sha256(path)}
    return files


def folder_fingerprint(folder: Path, cache: FileHashCache | None = None) -> dict:
    """Every (non-hidden) file of a folder, as files_fingerprint."""
    return files_fingerprint([p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")], cache)


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
