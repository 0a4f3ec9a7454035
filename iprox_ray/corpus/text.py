"""data.format = "text": plain documents, loss on every token after the first.

A document's tokens are its text's, with the tokenizer's BOS in front when it has one. A
document longer than max_length is cut into windows of at most max_length tokens that overlap
by one token: window k holds tokens [k(L-1), k(L-1)+L), so every token after the first is
trained in exactly one window, each with the token before it as context (the first token of a
window is context only). `data.text_windows = "first"` keeps window 0 (data.truncation =
"drop" quarantines longer documents instead); "all" makes each window a row of its own
(corpus/windows.py cuts them once per run, with ids `<doc id>#<k>`).
"""

from __future__ import annotations

import numpy as np

from iprox_ray.corpus.encode import Encoded, finish
from iprox_ray.corpus.rows import RowError, TextRow, parse_text_row, row_labels
from iprox_ray.corpus.tulu import bos_ids


def window_bounds(n_tokens: int, max_length: int) -> list[tuple[int, int]]:
    """[start, stop) of each window of a document of n_tokens (BOS included)."""
    if n_tokens <= max_length:
        return [(0, n_tokens)]
    step = max_length - 1
    return [(start, min(start + max_length, n_tokens)) for start in range(0, n_tokens - 1, step)]


def window_id(doc_id: str, k: int) -> str:
    return f"{doc_id}#{k}"


def parse_window(values: dict, spec) -> TextRow:
    """A row of a window file (corpus/windows.py): its cut tokens, or its document's error."""
    if values.get("error"):
        reason, _, detail = values["error"].partition(": ")
        raise RowError(reason, detail)
    return TextRow(str(values["id"]), values["text"], *row_labels(values, spec), tuple(values["input_ids"]))


class TextEncoder:
    """windows: "first" (a document is one row, truncated), "all" (a document is all its windows:
    `encode_all`), "cut" (the rows are windows already cut by corpus/windows.py)."""

    def __init__(self, tokenizer, max_length: int, truncation: str = "right", windows: str = "first"):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.windows = windows
        self.bos = bos_ids(tokenizer)
        self.parse = parse_window if windows == "cut" else parse_text_row

    def document_ids(self, text: str) -> np.ndarray:
        return np.asarray(self.bos + list(self.tokenizer(text, add_special_tokens=False)["input_ids"]), dtype=np.int64)

    def encode_row(self, row: TextRow) -> Encoded:
        if row.token_ids is not None:  # a window cut by corpus/windows.py
            ids = np.asarray(row.token_ids, dtype=np.int64)
        else:
            ids = self.document_ids(row.text)
        if not len(ids):
            raise RowError("empty-text", "the text has no token")
        return finish(ids, np.ones(len(ids), dtype=bool), self.max_length, self.truncation, "text")

    def encode(self, text: str) -> Encoded:
        return self.encode_row(TextRow("", text))

    def encode_all(self, row: TextRow) -> list[Encoded]:
        """Every row a document becomes: its windows under "all", else the one row."""
        if self.windows != "all":
            return [self.encode_row(row)]
        ids = self.document_ids(row.text)
        return [self.encode_row(TextRow(window_id(row.sample_id, k), row.text, token_ids=tuple(ids[a:b])))
                for k, (a, b) in enumerate(window_bounds(len(ids), self.max_length))]

