"""Probe collection for IPSVD: input and output-gradient columns of each targeted linear."""

from __future__ import annotations

import torch
from torch import nn

from iprox_ray.sketch.loss import batch_token_loss


class ProbeCollector:
    """Hooks that keep ≤ max_columns (h, δ) token columns per module, fp32.

    Per sequence, k = max(1, max_columns // num_sequences) random valid positions are kept,
    the same positions for h and δ.
    """

    def __init__(self, modules: list[tuple[str, nn.Module]], max_columns: int, num_sequences: int, seed: int):
        self.max_columns = max_columns
        self.per_sequence = max(1, max_columns // max(1, num_sequences))
        self.generator = torch.Generator().manual_seed(seed)
        self.h: dict[str, list[torch.Tensor]] = {name: [] for name, _ in modules}
        self.delta: dict[str, list[torch.Tensor]] = {name: [] for name, _ in modules}
        self._positions: tuple[torch.Tensor, torch.Tensor] | None = None
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in modules]

    def _hook(self, name: str):
        def forward(module, inputs, output):
            b_idx, t_idx = self._positions
            self.h[name].append(inputs[0][b_idx, t_idx].detach().float())
            output.register_hook(lambda g: self.delta[name].append(g[b_idx, t_idx].detach().float()))

        return forward

    def _choose_positions(self, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b_all, t_all = [], []
        for b in range(attention_mask.shape[0]):
            valid = attention_mask[b].nonzero().flatten()
            pick = valid[torch.randperm(len(valid), generator=self.generator)[: self.per_sequence]]
            b_all.append(torch.full_like(pick, b))
            t_all.append(pick.sort().values)
        return torch.cat(b_all), torch.cat(t_all)

    def run(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """LM loss (mean over every non-pad token of the batch, not only assistant tokens)."""
        self._positions = self._choose_positions(attention_mask)
        device = next(model.parameters()).device
        with torch.enable_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            batch_token_loss(logits, input_ids.to(device), attention_mask.to(device).bool()).backward()
        model.zero_grad(set_to_none=True)

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    def columns(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(H [n, N], Δ [m, N]) with N ≤ max_columns."""
        h = torch.cat(self.h[name])[: self.max_columns]
        d = torch.cat(self.delta[name])[: self.max_columns]
        return h.T.contiguous(), d.T.contiguous()
