"""Conversation -> token ids + trainable-token mask, through a chat template (data.format
"chat": the tokenizer's own; "template": one given as a file).

Only assistant turns are trained on: per assistant message, the tokens the template renders
for it after its generation prompt, up to and including its end-of-turn marker (not the
separator after it). Templates with `{% generation %}` markers give that span themselves
(transformers' assistant mask); for any other template the spans are measured and checked by
`chat_spans.TurnLocator`, which says precisely what is trained and why it is exact.
A token is trained when its characters overlap a span (as transformers does).

Per-row failures are quarantined, never raised past the row: the template's own error
(`raise_exception`, e.g. "Conversation roles must alternate") is `template-error`, a rendering
that fails a consistency check is `template-mismatch`, a system message the template drops or
refuses under data.system_prompt = "keep" is `system-prompt` (corpus/system_prompt.py).
Truncation policy: `right` keeps the first max_length tokens; `drop` quarantines longer rows.
A row left with no trainable token is quarantined either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iprox_ray.corpus import system_prompt
from iprox_ray.corpus.chat_spans import TurnLocator
from iprox_ray.corpus.rows import Conversation, RowError, parse_row
from iprox_ray.corpus.template_render import TemplateRenderer
from iprox_ray.spec.base import SpecError


class DataFormatError(SpecError):
    """The job's data.format cannot be used with this tokenizer or template (one line, names the key)."""


@dataclass
class Encoded:
    input_ids: np.ndarray  # int64 [T]
    trainable: np.ndarray  # bool [T]: token t is a training target (predicted from t-1)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


def finish(ids: np.ndarray, mask: np.ndarray, max_length: int, truncation: str, what: str) -> Encoded:
    """Truncation, the first token's missing prediction, and the no-trainable-token check: the
    same for every format."""
    if len(ids) > max_length:
        if truncation == "drop":
            raise RowError("too-long", f"{len(ids)} tokens > max_length {max_length}")
        ids, mask = ids[:max_length], mask[:max_length]
    mask = mask.copy()
    if len(mask):
        mask[0] = False  # the first token has no prediction
    if not mask.any():
        raise RowError("no-trainable-tokens", f"no {what} token within {len(ids)} tokens")
    return Encoded(np.asarray(ids, dtype=np.int64), mask)


def chat_template_of(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return template.get("default")
    return template or None


def token_mask(offsets: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Tokens (by character offsets [n, 2]) that overlap any of the character spans."""
    mask = np.zeros(len(offsets), dtype=bool)
    for lo, hi in spans:
        mask |= (offsets[:, 1] > lo) & (offsets[:, 0] < hi)
    return mask


class ChatEncoder:
    def __init__(self, tokenizer, max_length: int, truncation: str = "right", template: str | None = None,
                 system: str = "keep", now: str | None = None):
        template = template or chat_template_of(tokenizer)
        if not template:
            raise DataFormatError(
                f"data.format: the tokenizer ({getattr(tokenizer, 'name_or_path', '') or 'given'}) has no chat "
                'template; for a base model use data.format = "tulu" (the open-instruct / LESS format), '
                '"template" with data.template_file, or "text" for plain text')
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.system = system
        self.renderer = TemplateRenderer(tokenizer, template, now)
        self.native_mask = self.renderer.native_mask
        added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()]
        self.locator = TurnLocator(self.renderer.render, added)
        self.system_policy = system_prompt.template_policy(self.renderer.render) if system == "keep" else None

    parse = staticmethod(parse_row)

    def encode_row(self, row: Conversation) -> Encoded:
        return self.encode(row.messages)

    def encode(self, messages: list[dict[str, str]]) -> Encoded:
        messages = system_prompt.apply(self.system, messages)
        if self.system_policy is not None:
            system_prompt.check_row(self.renderer.render, messages, self.system_policy)
        ids, mask = self.renderer.tokens_and_mask(messages) if self.native_mask else self._by_spans(messages)
        return finish(ids, mask, self.max_length, self.truncation, "assistant")

    def _by_spans(self, messages):
        text, spans = self.locator.spans(messages)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        return np.asarray(enc["input_ids"], dtype=np.int64), token_mask(offsets, spans)
