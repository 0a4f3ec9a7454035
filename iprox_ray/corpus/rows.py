"""Turn a raw row into a conversation (or a plain text) with a stable id, or say precisely why it
cannot be used."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from iprox_ray.spec import SourceSpec

ROLES = {"system", "user", "assistant"}


class RowError(ValueError):
    """A bad row: `reason` is a short category, the message has the detail."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    messages: list[dict[str, str]]
    domain: str = ""
    subtask: str = ""


@dataclass(frozen=True)
class TextRow:
    """A plain-text row (data.format = "text"); `token_ids` when its window was cut already."""

    sample_id: str
    text: str
    domain: str = ""
    subtask: str = ""
    token_ids: tuple[int, ...] | None = None


def _text(value: Any, column: str) -> str:
    if value is None:
        raise RowError("missing-column", f"{column} is null")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RowError("non-utf8", f"{column}: {exc.reason} at byte {exc.start}") from None
    if not isinstance(value, str):
        raise RowError("bad-type", f"{column} must be text, got {type(value).__name__}")
    return value


def _messages_from_row(values: dict[str, Any], spec: SourceSpec) -> list[dict[str, str]]:
    if spec.messages_column in values and values[spec.messages_column] is not None:
        raw = values[spec.messages_column]
        if not isinstance(raw, (list, tuple)) or not raw:
            raise RowError("bad-messages", f"{spec.messages_column} must be a non-empty list")
        messages = []
        for i, msg in enumerate(raw):
            if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
                raise RowError("bad-messages", f"message {i} lacks role/content")
            role = _text(msg["role"], f"{spec.messages_column}[{i}].role")
            if role not in ROLES:
                raise RowError("bad-messages", f"message {i} has unknown role {role!r}")
            messages.append({"role": role, "content": _text(msg["content"], f"{spec.messages_column}[{i}].content")})
        return messages
    missing = [c for c in (spec.prompt_column, spec.response_column) if values.get(c) is None]
    if missing:
        raise RowError(
            "missing-column",
            f"row has neither {spec.messages_column!r} nor {' / '.join(map(repr, missing))}",
        )
    messages = []
    if spec.system_column and values.get(spec.system_column):
        messages.append({"role": "system", "content": _text(values[spec.system_column], spec.system_column)})
    messages.append({"role": "user", "content": _text(values[spec.prompt_column], spec.prompt_column)})
    messages.append({"role": "assistant", "content": _text(values[spec.response_column], spec.response_column)})
    return messages


def content_id(messages: list[dict[str, str]] | str) -> str:
    payload = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return "h" + hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()


def row_labels(values: dict[str, Any], spec: SourceSpec) -> tuple[str, str]:
    def label(column: str | None) -> str:
        return "" if not column or values.get(column) is None else str(values[column])

    return label(spec.domain_column), label(spec.subtask_column)


def _row_id(values: dict[str, Any], spec: SourceSpec, content) -> str:
    if not spec.id_column:
        return content_id(content)
    if values.get(spec.id_column) in (None, ""):
        raise RowError("missing-column", f"id column {spec.id_column!r} is missing or empty")
    return str(values[spec.id_column])


def parse_text_row(values: dict[str, Any], spec: SourceSpec) -> TextRow:
    if values.get(spec.text_column) is None:
        raise RowError("missing-column", f"row has no {spec.text_column!r}")
    text = _text(values[spec.text_column], spec.text_column)
    if not text.strip():
        raise RowError("empty-text", f"empty {spec.text_column}")
    return TextRow(_row_id(values, spec, text), text, *row_labels(values, spec))


def parse_row(values: dict[str, Any], spec: SourceSpec) -> Conversation:
    messages = _messages_from_row(values, spec)
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("no-assistant", "conversation has no assistant message")
    # An empty system message is harmless (common in exports); an empty turn is not.
    messages = [m for m in messages if m["role"] != "system" or m["content"].strip()]
    empty = [m["role"] for m in messages if not m["content"].strip()]
    if empty:
        raise RowError("empty-text", f"empty {'/'.join(empty)} message")
    return Conversation(_row_id(values, spec, messages), messages, *row_labels(values, spec))
