"""Conversation -> token ids + trainable-token mask, through the tokenizer's own chat template.

Only assistant tokens are trained on. Templates with `{% generation %}` markers give the mask
directly; for any other template the assistant spans are found by rendering prefixes, which needs
the template to be prefix-consistent (checked, not assumed).
Truncation policy: `right` keeps the first max_length tokens; `drop` quarantines longer rows.
A row left with no trainable token is quarantined either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iprox_ray.corpus.rows import RowError


@dataclass
class Encoded:
    input_ids: np.ndarray  # int64 [T]
    trainable: np.ndarray  # bool [T]: token t is a training target (predicted from t-1)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


class ChatEncoder:
    def __init__(self, tokenizer, max_length: int, truncation: str = "right"):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; give a tokenizer folder that has one")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.native_mask = "generation" in tokenizer.chat_template

    def encode(self, messages: list[dict[str, str]]) -> Encoded:
        ids, mask = self._native(messages) if self.native_mask else self._by_prefix(messages)
        if len(ids) > self.max_length:
            if self.truncation == "drop":
                raise RowError("too-long", f"{len(ids)} tokens > max_length {self.max_length}")
            ids, mask = ids[: self.max_length], mask[: self.max_length]
        mask = mask.copy()
        mask[0] = False  # the first token has no prediction
        if not mask.any():
            raise RowError("no-trainable-tokens", f"no assistant token within {len(ids)} tokens")
        return Encoded(ids, mask)

    def _native(self, messages):
        out = self.tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = np.asarray(out["input_ids"], dtype=np.int64)
        return ids, np.asarray(out["assistant_masks"], dtype=bool)

    def _render(self, messages, generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def _by_prefix(self, messages):
        text = self._render(messages, False)
        spans = []
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            before = self._render(messages[:i], True) if i else ""
            upto = self._render(messages[: i + 1], False)
            if not (text.startswith(before) and text.startswith(upto)):
                raise ValueError("chat template is not prefix-consistent; add {% generation %} markers to it")
            # The separator the template puts between turns is not the assistant's output.
            spans.append((len(before), len(upto.rstrip())))
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        starts = np.asarray([start for start, _ in enc["offset_mapping"]])
        mask = np.zeros(len(ids), dtype=bool)
        for lo, hi in spans:
            mask |= (starts >= lo) & (starts < hi)
        return ids, mask
