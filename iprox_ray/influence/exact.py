"""Exact per-example gradients (batch size 1, no projection): the ground truth sketches are judged by.

One flat fp32 buffer holds the gradient of every trained parameter; each parameter's `.grad`
is a view into it, so a row's backward accumulates in place and nothing is allocated per row
(fresh memory is slow to touch on some VMs; see shared platform notes). The token embedding
and the LM head (tied to it in most chat models) are left out: they are vocab-sized, sparse in
a row's gradient, and no sketch covers them.

`ExactLess` turns those gradients into LESS scores (mean cosine to the target rows) for several
parameter subsets at once, holding only one [P] target direction per subset.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from iprox_ray.models.loss import per_sample_loss


def trained_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every parameter full fine-tuning trains, the token embedding and LM head aside."""
    skip = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        skip.add(id(head.weight))
    seen, out = set(), []
    for name, p in model.named_parameters():
        if id(p) not in skip and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


class ExactGradients:
    """Flat per-example gradients of `trained_parameters(model)` at batch size 1."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.params = trained_parameters(model)
        if any(p.dtype != torch.float32 for _, p in self.params):
            raise ValueError("exact gradients need an fp32 model (call model.float() first)")
        device = self.params[0][1].device
        self.spans: dict[str, slice] = {}
        offset = 0
        for name, p in self.params:
            self.spans[name] = slice(offset, offset + p.numel())
            offset += p.numel()
        self.flat = torch.zeros(offset, dtype=torch.float32, device=device)
        for name, p in self.params:
            p.requires_grad_(True)
            p.grad = self.flat[self.spans[name]].view_as(p)

    def release(self) -> None:
        """Give the model back as it was: frozen, no gradient buffers."""
        for _, p in self.params:
            p.grad = None
            p.requires_grad_(False)

    @property
    def size(self) -> int:
        return self.flat.numel()

    def subset_spans(self, names: Iterable[str]) -> list[slice]:
        """The flat spans of the named parameters."""
        return [self.spans[name] for name in names]

    @staticmethod
    def norm(g: torch.Tensor, spans: list[slice]) -> torch.Tensor:
        return torch.stack([torch.linalg.vector_norm(g[s]) for s in spans]).norm()

    def row(self, input_ids: np.ndarray, trainable: np.ndarray) -> tuple[torch.Tensor, float]:
        """(the row's flat gradient — a view, overwritten by the next call —, its loss)."""
        ids = torch.as_tensor(input_ids, device=self.flat.device).long().unsqueeze(0)
        mask = torch.as_tensor(trainable, device=self.flat.device).bool().unsqueeze(0)
        self.flat.zero_()
        with torch.enable_grad():
            loss = per_sample_loss(self.model(input_ids=ids).logits, ids, mask).sum()
            loss.backward()
        return self.flat, float(loss.detach())


class ExactLess:
    """Exact LESS scores for parameter subsets: cos(g_i[S], mean_j unit(t_j[S])).

    `subsets` maps a label to parameter names; each label's direction is zero outside its own
    parameters, so a pool row's dot product needs no masking."""

    def __init__(self, grads: ExactGradients, subsets: dict[str, list[str]]):
        self.grads = grads
        self.spans = {k: grads.subset_spans(names) for k, names in subsets.items()}
        self._sums = {k: torch.zeros_like(grads.flat) for k in self.spans}
        self._used = 0
        self._directions: dict[str, torch.Tensor] | None = None

    @property
    def directions(self) -> dict[str, torch.Tensor]:
        """Mean unit target gradient per subset (zero outside the subset's parameters)."""
        if self._directions is None:
            self._directions = {k: v / max(self._used, 1) for k, v in self._sums.items()}
        return self._directions

    def add_target(self, g: torch.Tensor) -> bool:
        """Add one target row's flat gradient to the unit directions; False if it is not finite."""
        if not torch.isfinite(g).all():
            return False
        self._used += 1
        for k, spans in self.spans.items():
            scale = float(1.0 / self.grads.norm(g, spans).clamp_min(1e-30))
            for s in spans:
                self._sums[k][s].add_(g[s], alpha=scale)
        self._directions = None
        return True

    def fit_target(self, rows: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
        """Accumulate the unit target directions; returns how many target rows were usable."""
        for ids, trainable in rows:
            self.add_target(self.grads.row(ids, trainable)[0])
        if not self._used:
            raise ValueError("no target row has a finite gradient")
        return self._used

    def score_gradient(self, g: torch.Tensor) -> dict[str, float]:
        """{subset: exact LESS score} of one pool row's flat gradient; NaN if it is not finite."""
        out = {}
        for k, spans in self.spans.items():
            norm = self.grads.norm(g, spans)
            out[k] = float(g @ self.directions[k] / norm) if torch.isfinite(norm) and norm > 0 else float("nan")
        return out

    def score(self, ids: np.ndarray, trainable: np.ndarray) -> tuple[dict[str, float], float]:
        """({subset: exact LESS score}, loss) of one pool row."""
        g, loss = self.grads.row(ids, trainable)
        return self.score_gradient(g), loss


def exact_less_scores(model: nn.Module, pool, target) -> np.ndarray:
    """Exact LESS scores over every trained parameter of `pool` rows (Encoded) against `target`.

    Memory: two fp32 copies of the trained parameters (gradient buffer, target direction)."""
    grads = ExactGradients(model)
    try:
        less = ExactLess(grads, {"all": [n for n, _ in grads.params]})
        less.fit_target((e.input_ids, e.trainable) for e in target)
        return np.asarray([less.score(e.input_ids, e.trainable)[0]["all"] for e in pool])
    finally:
        grads.release()
