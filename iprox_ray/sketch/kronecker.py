"""Per-sample gradient sketches through one batched backward, never materialising gradients.

For a linear layer with inputs x_t and output gradients δ_t, a sample's weight gradient is
G = Σ_t δ_t x_tᵀ, so its Kronecker-projected sketch is P_out G P_inᵀ = Σ_t (P_out δ_t)(P_in x_t)ᵀ.
Forward hooks project x_t, tensor hooks on the outputs project δ_t; weights never require grad,
so the backward computes activation gradients only (the physical floor of this computation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from iprox_ray.models.selection import linear_dims, select_modules
from iprox_ray.sketch.loss import per_sample_loss
from iprox_ray.sketch.projection import projection_matrix


@dataclass(frozen=True)
class ModuleSketch:
    name: str
    d_out: int
    d_in: int
    k_out: int
    k_in: int

    @property
    def dim(self) -> int:
        return self.k_out * self.k_in


@dataclass
class SketchOutput:
    sketch: torch.Tensor  # float32 [B, D]
    loss: torch.Tensor  # float32 [B]
    finite: torch.Tensor  # bool [B]: loss and sketch are finite


class KroneckerSketcher:
    """Owns hooks on a model; `sketch(batch)` returns one row per sample."""

    def __init__(
        self,
        model: nn.Module,
        patterns: list[str],
        k_in: int,
        k_out: int,
        seed: int,
        kind: str = "gaussian",
    ):
        self.model = model
        self.device = next(model.parameters()).device
        for param in model.parameters():
            param.requires_grad_(False)
        self.modules = select_modules(model, patterns)
        self.layout: list[ModuleSketch] = []
        self._p_in: dict[str, torch.Tensor] = {}
        self._p_out: dict[str, torch.Tensor] = {}
        for name, module in self.modules:
            d_out, d_in = linear_dims(module)
            self.layout.append(ModuleSketch(name, d_out, d_in, k_out, k_in))
            self._p_in[name] = projection_matrix(seed, name, "in", k_in, d_in, kind).to(self.device)
            self._p_out[name] = projection_matrix(seed, name, "out", k_out, d_out, kind).to(self.device)
        self._inputs: dict[str, list[torch.Tensor]] = {}
        self._sketches: dict[str, torch.Tensor] = {}
        self._token_mask: torch.Tensor | None = None
        self._handles = [model.get_input_embeddings().register_forward_hook(_require_grad)]
        for name, module in self.modules:
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))

    @property
    def dim(self) -> int:
        return sum(m.dim for m in self.layout)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled():
                return
            x = inputs[0].float() * self._token_mask  # padding contributes nothing
            self._inputs.setdefault(name, []).append(x @ self._p_in[name].T)
            output.register_hook(lambda grad: self._backward(name, grad))

        return hook

    def _backward(self, name: str, grad: torch.Tensor) -> None:
        x_proj = self._inputs[name].pop()  # hooks fire in reverse call order
        g_proj = grad.float() @ self._p_out[name].T
        sketch = torch.einsum("bto,bti->boi", g_proj, x_proj).flatten(1)
        previous = self._sketches.get(name)
        self._sketches[name] = sketch if previous is None else previous + sketch

    def sketch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, trainable: torch.Tensor) -> SketchOutput:
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        trainable = trainable.to(self.device)
        self._token_mask = attention_mask.unsqueeze(-1).float()
        self._inputs.clear()
        self._sketches.clear()
        try:
            with torch.enable_grad():
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
                loss = per_sample_loss(logits, input_ids, trainable)
                loss.sum().backward()
            rows = torch.cat([self._sketches[m.name] for m in self.layout], dim=1)
        finally:
            self._inputs.clear()
            self._token_mask = None
        finite = torch.isfinite(loss) & torch.isfinite(rows).all(dim=1)
        return SketchOutput(rows.detach(), loss.detach().float(), finite)


def _require_grad(module, inputs, output):
    # Weights are frozen; gradients must still flow back through the activations.
    if torch.is_grad_enabled() and not output.requires_grad:
        return output.requires_grad_(True)
    return output
