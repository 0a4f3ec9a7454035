"""Conversation -> token ids + trainable-token mask, through the tokenizer's own chat template.

Only assistant turns are trained on: per assistant message, the tokens the template renders
for it after its generation prompt, up to and including its end-of-turn marker (not the
separator after it). Templates with `{% generation %}` markers give that span themselves
(transformers' assistant mask); for any other template the spans are measured and checked by
`chat_spans.TurnLocator`, which says precisely what is trained and why it is exact.
A token is trained when its characters overlap a span (as transformers does).

Per-row failures are quarantined, never raised past the row: the template's own error
(`raise_exception`, e.g. "Conversation roles must alternate") is `template-error`, a rendering
that fails a consistency check is `template-mismatch`.
Truncation policy: `right` keeps the first max_length tokens; `drop` quarantines longer rows.
A row left with no trainable token is quarantined either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from iprox_ray.corpus.chat_spans import TurnLocator
from iprox_ray.corpus.rows import RowError

GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class Encoded:
    input_ids: np.ndarray  # int64 [T]
    trainable: np.ndarray  # bool [T]: token t is a training target (predicted from t-1)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


def _template_error(exc: Exception) -> RowError:
    # jinja's TemplateError (raise_exception) carries the template's own message; say the type otherwise.
    from jinja2 import TemplateError

    text = str(exc) if isinstance(exc, TemplateError) else f"{type(exc).__name__}: {exc}"
    return RowError("template-error", text)


class ChatEncoder:
    def __init__(self, tokenizer, max_length: int, truncation: str = "right"):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; give a tokenizer folder that has one")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.native_mask = bool(GENERATION_TAG.search(tokenizer.chat_template))
        added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()]
        self.locator = TurnLocator(self._render, added)

    def encode(self, messages: list[dict[str, str]]) -> Encoded:
        ids, mask = self._native(messages) if self.native_mask else self._by_spans(messages)
        if len(ids) > self.max_length:
            if self.truncation == "drop":
                raise RowError("too-long", f"{len(ids)} tokens > max_length {self.max_length}")
            ids, mask = ids[: self.max_length], mask[: self.max_length]
        mask = mask.copy()
        if len(mask):
            mask[0] = False  # the first token has no prediction
        if not mask.any():
            raise RowError("no-trainable-tokens", f"no assistant token within {len(ids)} tokens")
        return Encoded(ids, mask)

    def _native(self, messages):
        try:
            out = self.tokenizer.apply_chat_template(
                messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
        except Exception as exc:  # the template's failure on this row, whatever it raised
            raise _template_error(exc) from None
        ids = np.asarray(out["input_ids"], dtype=np.int64)
        return ids, np.asarray(out["assistant_masks"], dtype=bool)

    def _render(self, messages, generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as exc:  # the template's failure on this row, whatever it raised
            raise _template_error(exc) from None

    def _by_spans(self, messages):
        text, spans = self.locator.spans(messages)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        mask = np.zeros(len(ids), dtype=bool)
        for lo, hi in spans:
            mask |= (offsets[:, 1] > lo) & (offsets[:, 0] < hi)
        return ids, mask
