"""Shared machinery for the typed job spec: strict sections, TOML loading, readable errors."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

# A name that becomes one path component: no separators, and never only dots ('.', '..').
SAFE_NAME = r"^[A-Za-z0-9._-]+$"


def is_safe_name(name: str) -> bool:
    return bool(re.fullmatch(SAFE_NAME, name)) and set(name) != {"."}


def _safe_name(name: str) -> str:
    if not is_safe_name(name):
        raise ValueError(f"{name!r} must match {SAFE_NAME} and not be only dots")
    return name


SafeName = Annotated[str, AfterValidator(_safe_name)]


class SpecError(ValueError):
    """A job spec or cluster profile that cannot be used; the message names the key path."""


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem (one line in all for a single one), naming its key path."""
    lines = []
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        else:
            reason = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {reason}")
    if len(lines) == 1:
        return f"invalid spec {source}: {lines[0]}"
    return "\n".join([f"invalid spec {source}:", *(f"  {line}" for line in lines)])


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise SpecError(f"spec file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise SpecError(f"{path} is a folder, not a spec file: give the job's .toml file") from exc
    except PermissionError as exc:
        raise SpecError(f"cannot read spec file {path}: permission denied") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                        "TOML files are UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path} is not valid TOML: {exc}") from exc


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as TOML when it can be."""
    if "=" not in assignment:
        raise SpecError(f"override {assignment!r} must look like key.path=value")
    key, raw = assignment.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"override {assignment!r}: {part} is not a table")
    node[parts[-1]] = value


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(data: Any) -> str:
    """Short stable hash of JSON-able data (sorted keys)."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]


def diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config trees."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += diff_keys(a, b, f"{prefix}{key}.")
        elif canonical_json(a) != canonical_json(b):
            keys.append(f"{prefix}{key}")
    return keys
