"""Token-budget batching: sort a shard's rows by length, pack them under a padded-token budget."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iprox_ray.corpus.encode import Encoded


@dataclass
class Batch:
    rows: np.ndarray  # positions of these rows in the caller's list
    input_ids: np.ndarray  # int64 [B, T], right-padded with pad_id
    attention_mask: np.ndarray  # int64 [B, T]
    trainable: np.ndarray  # bool [B, T]

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def plan_batches(lengths: list[int], token_budget: int, max_rows: int) -> list[list[int]]:
    """Group row positions so that rows × longest length ≤ token_budget (a lone row may exceed it).

    Deterministic: stable sort by length, so equal inputs give equal batches on every worker.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # sorted ascending: the newcomer is the longest
        if current and ((len(current) + 1) * longest > token_budget or len(current) >= max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def collate(encoded: list[Encoded], rows: list[int], pad_id: int) -> Batch:
    width = max(encoded[i].n_tokens for i in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attn = np.zeros((len(rows), width), dtype=np.int64)
    train = np.zeros((len(rows), width), dtype=bool)
    for b, i in enumerate(rows):
        n = encoded[i].n_tokens
        ids[b, :n] = encoded[i].input_ids
        attn[b, :n] = 1
        train[b, :n] = encoded[i].trainable
    return Batch(np.asarray(rows), ids, attn, train)


def make_batches(encoded: list[Encoded], token_budget: int, max_rows: int, pad_id: int) -> list[Batch]:
    plan = plan_batches([e.n_tokens for e in encoded], token_budget, max_rows)
    return [collate(encoded, rows, pad_id) for rows in plan]
