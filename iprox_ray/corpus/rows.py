"""Turn a raw row into a conversation with a stable id, or say precisely why it cannot be used."""

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


def content_id(messages: list[dict[str, str]]) -> str:
    payload = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return "h" + hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()


def parse_row(values: dict[str, Any], spec: SourceSpec) -> Conversation:
    messages = _messages_from_row(values, spec)
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("no-assistant", "conversation has no assistant message")
    # An empty system message is harmless (common in exports); an empty turn is not.
    messages = [m for m in messages if m["role"] != "system" or m["content"].strip()]
    empty = [m["role"] for m in messages if not m["content"].strip()]
    if empty:
        raise RowError("empty-text", f"empty {'/'.join(empty)} message")
    if spec.id_column:
        if values.get(spec.id_column) in (None, ""):
            raise RowError("missing-column", f"id column {spec.id_column!r} is missing or empty")
        sample_id = str(values[spec.id_column])
    else:
        sample_id = content_id(messages)

    def label(column: str | None) -> str:
        return "" if not column or values.get(column) is None else str(values[column])

    return Conversation(sample_id, messages, label(spec.domain_column), label(spec.subtask_column))
