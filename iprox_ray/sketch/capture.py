"""The hook machinery every sketcher shares: one batched forward, one activation-only backward.

For each selected linear-like module the forward hook sees its input x [B, T, d_in] and the
backward sees its output gradient δ [B, T, d_out]; a subclass turns (x, δ) into per-sample
features; an optional `VectorBlock` (vectors.py) adds the exact per-sample gradients of norm
weights and biases in the last columns. What makes the hot path cheap:
- weights never require grad, so the backward computes activation gradients only;
- the graph starts at the first sketched modules: a module output with no grad-requiring
  ancestor becomes a leaf, so no input gradient is computed below the first sketched layer
  (embedding and first-layer input gradients would be pure waste);
- the LM head sees only the positions whose next token carries loss, so logits are
  [n_loss_tokens, V], not [B, T, V] (padding and prompt positions cost nothing there).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from iprox_ray.models.loss import gathered_loss
from iprox_ray.models.patterns import linear_dims, select_modules

# The re-projection's seed name: one SRHT of the whole linears' block (derive_seed(seed, this, ...)).
REPROJECT_NAME = "linears-block"


@dataclass
class SketchOutput:
    sketch: torch.Tensor  # float32 [B, D]
    loss: torch.Tensor  # float32 [B]
    finite: torch.Tensor  # bool [B]: loss and sketch are finite


class HookSketcher:
    """Base class: owns the hooks; subclasses implement `_capture` and `_accumulate`."""

    def __init__(self, model: nn.Module, patterns: list[str], autocast: str = "auto", vectors=None,
                 expand_lowrank: bool = False, reproject=None):
        self.model = model
        self.reproject = reproject  # a DenseProjector of the whole linears' block, or None
        self.device = next(model.parameters()).device
        for param in model.parameters():
            param.requires_grad_(False)
        self.modules = select_modules(model, patterns, expand_lowrank)
        self.dims = {name: linear_dims(module) for name, module in self.modules}
        self.autocast = _autocast_dtype(self.device, autocast)
        self._stash: dict[str, list] = {}
        self._rows: torch.Tensor | None = None  # [B, D] accumulator of the current batch
        self._token_mask: torch.Tensor | None = None  # [B, T, 1] float, 1 on real tokens
        self._keep: torch.Tensor | None = None  # [B, T] bool: positions whose logits are needed
        self._leaves: list[torch.Tensor] = []
        self._replaying = False
        self._handles = [m.register_forward_hook(self._forward_hook(n, self._capture, self._backward))
                         for n, m in self.modules]
        self.vectors = vectors(model, self.modules) if vectors is not None else None
        if self.vectors is not None:
            self._handles += [m.register_forward_hook(self._forward_hook(n, self._keep_input, self._vector_backward))
                              for n, m in self.vectors.modules]
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self._gather_logits = head is not None
        if head is not None:
            self._handles.append(head.register_forward_pre_hook(self._gather_head_input))

    # -- subclass interface -------------------------------------------------------------
    @property
    def matrix_dim(self) -> int:
        """Columns of the linears' sketch (the first columns of every row)."""
        raise NotImplementedError

    @property
    def linear_dim(self) -> int:
        """Columns the linears take in a finished row: the block, or its re-projection."""
        return self.reproject.k if self.reproject is not None else self.matrix_dim

    @property
    def dim(self) -> int:
        return self.linear_dim + (self.vectors.dim if self.vectors is not None else 0)

    def _capture(self, name: str, x: torch.Tensor):
        """Forward: what to keep of the (masked-later) input x [B, T, d_in] for the backward."""
        raise NotImplementedError

    def _accumulate(self, name: str, kept, grad: torch.Tensor, rows: torch.Tensor) -> None:
        """Backward: add this module's features of the batch into rows [B, D] in place."""
        raise NotImplementedError

    def _finish(self, rows: torch.Tensor) -> torch.Tensor:
        """After the backward: a last per-row transform (e.g. a constant feature offset)."""
        return rows

    # -- machinery ------------------------------------------------------------------------
    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward_hook(self, name: str, capture, backward):
        def hook(module, inputs, output):
            if self._rows is None or self._replaying:  # outside sketch(), or a vector-gradient replay
                return None
            replaced = None
            if not output.requires_grad:
                # Nothing upstream needs a gradient: start the graph here.
                replaced = output = output.detach().requires_grad_(True)
                self._leaves.append(output)
            with self._full_precision():  # projections stay fp32 under bf16 autocast
                kept = capture(name, inputs[0])
            self._stash.setdefault(name, []).append(kept)
            output.register_hook(lambda grad: backward(name, grad))
            return replaced

        return hook

    def _backward(self, name: str, grad: torch.Tensor) -> None:
        kept = self._stash[name].pop()  # a module called twice is unwound in reverse order
        self._accumulate(name, kept, grad, self._rows[:, : self.matrix_dim])
        key = self.vectors.bias_keys.get(name) if self.vectors is not None else None
        if key is not None:
            self.vectors.add(key, self.masked(grad.float()).sum(dim=1), self._rows[:, self.matrix_dim :])

    def _keep_input(self, name: str, x: torch.Tensor):
        return x.detach()

    def _vector_backward(self, name: str, grad: torch.Tensor) -> None:
        x = self._stash[name].pop()
        module = self.vectors.module_by_name[name]
        self._replaying = True  # the replay calls the module again: its hooks must stay quiet
        try:
            with self._full_precision():
                grads = self.vectors.module_gradients(name, module, x, self.masked(grad.float()))
        finally:
            self._replaying = False
        for key, g in grads.items():
            self.vectors.add(key, g, self._rows[:, self.matrix_dim :])

    def _gather_head_input(self, module, args):
        if self._rows is None or self._keep is None:
            return None
        hidden = args[0]
        return (hidden[self._keep].unsqueeze(0),) + tuple(args[1:])

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, ...] with padding positions zeroed (they must contribute nothing)."""
        mask = self._token_mask.to(x.dtype)  # [B, T, 1]
        return x * (mask if x.ndim == 3 else mask.view(*mask.shape[:2], *([1] * (x.ndim - 2))))

    def sketch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, trainable: torch.Tensor) -> SketchOutput:
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        trainable = trainable.to(self.device).bool() & attention_mask.bool()
        self._token_mask = attention_mask.unsqueeze(-1).float()
        # Position t predicts token t+1: its logits matter only if token t+1 is trainable.
        keep = torch.zeros_like(trainable)
        keep[:, :-1] = trainable[:, 1:]
        self._keep = keep if self._gather_logits else None
        self._rows = torch.zeros(input_ids.shape[0], self.matrix_dim + self.dim - self.linear_dim, device=self.device)
        self._stash.clear()
        self._leaves = []
        try:
            with torch.enable_grad(), self._autocast_context():
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
                loss = gathered_loss(logits, input_ids, keep, gathered=self._gather_logits)
            if self._leaves:
                torch.autograd.grad(loss.sum(), self._leaves, allow_unused=True)
            rows = self._reprojected(self._finish(self._rows))
        finally:
            self._stash.clear()
            self._leaves = []
            self._rows = self._token_mask = self._keep = None
        loss = loss.detach().float()
        finite = torch.isfinite(loss) & torch.isfinite(rows).all(dim=1)
        return SketchOutput(rows.detach(), loss, finite)

    def _reprojected(self, rows: torch.Tensor) -> torch.Tensor:
        """The linears' block re-projected (an SRHT of the whole block, sketch.reproject_dim)."""
        if self.reproject is None:
            return rows
        block = self.reproject.project(REPROJECT_NAME, rows[:, : self.matrix_dim])
        return torch.cat([block, rows[:, self.matrix_dim :]], dim=1)

    def _full_precision(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, enabled=False)

    def _autocast_context(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)


def _autocast_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    """bf16 autocast on GPU ('auto' or 'bf16'); fp32 on CPU (bf16 matmuls are slow there)."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode in ("auto", "bf16"):
        return torch.bfloat16
    raise ValueError(f"unknown autocast mode {mode!r}")
