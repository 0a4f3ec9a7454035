"""Probe collection for IPSVD: second moments of each targeted linear's inputs and output grads.

IPSVD needs only C_h = E[h hᵀ] and C_δ = E[δ δᵀ], so they are accumulated batch by batch
(fp64, d×d per module) instead of keeping token columns: memory no longer grows with the probe
budget (columns of 210 modules × 8192 tokens were 10 GB on a 135 M model). Modules that read the
same input tensor (q/k/v, gate/up) share one C_h.
"""

from __future__ import annotations

import torch
from torch import nn

from iprox_ray.models.loss import batch_token_loss

LOSS_TOKENS = ("all", "trainable")


class ProbeCollector:
    """Hooks that accumulate (C_h, C_δ) per module over ≤ max_columns token positions.

    Per sequence, k = max(1, max_columns // num_sequences) random positions are used, the same
    positions for h and δ. loss_tokens "all": the LM loss of every non-pad token (the paper),
    positions anywhere; "trainable": the loss the sketches use (assistant tokens), positions up to
    the last one that predicts a trained token (δ is zero after it).
    """

    def __init__(self, modules: list[tuple[str, nn.Module]], max_columns: int, num_sequences: int, seed: int,
                 loss_tokens: str = "all"):
        if loss_tokens not in LOSS_TOKENS:
            raise ValueError(f"loss_tokens must be one of {LOSS_TOKENS}, got {loss_tokens!r}")
        self.loss_tokens = loss_tokens
        self.per_sequence = max(1, max_columns // max(1, num_sequences))
        self.generator = torch.Generator().manual_seed(seed)
        self.input_of: dict[str, str] = {}  # module -> the module whose C_h it shares
        self.gram_h: dict[str, torch.Tensor] = {}
        self.gram_d: dict[str, torch.Tensor] = {}
        self.count = 0  # token positions accumulated (the same for every module)
        # id(input) -> (input, first module that read it) during one forward; holding the tensor
        # keeps its id from being reused by a later tensor of the same pass
        self._seen_inputs: dict[int, tuple[torch.Tensor, str]] = {}
        self._c_h: dict[str, torch.Tensor] = {}
        self._positions: tuple[torch.Tensor, torch.Tensor] | None = None
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in modules]

    @staticmethod
    def _add(grams: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> None:
        x = x.detach().double()
        grams[name] = grams[name] + x.T @ x if name in grams else x.T @ x

    def _hook(self, name: str):
        def forward(module, inputs, output):
            b_idx, t_idx = self._positions
            owner = self._seen_inputs.setdefault(id(inputs[0]), (inputs[0], name))[1]
            self.input_of.setdefault(name, owner)
            if owner == name:
                self._add(self.gram_h, name, inputs[0][b_idx, t_idx])
            output.register_hook(lambda g: self._add(self.gram_d, name, g[b_idx, t_idx]))

        return forward

    def _choose_positions(self, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b_all, t_all = [], []
        for b in range(allowed.shape[0]):
            valid = allowed[b].nonzero().flatten()
            pick = valid[torch.randperm(len(valid), generator=self.generator)[: self.per_sequence]]
            b_all.append(torch.full_like(pick, b))
            t_all.append(pick.sort().values)
        return torch.cat(b_all), torch.cat(t_all)

    def run(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            trainable: torch.Tensor | None = None) -> None:
        """One probe batch: the mean token loss of the batch, backpropagated to every module."""
        valid = attention_mask.bool()
        loss_mask, allowed = valid, valid
        if self.loss_tokens == "trainable":
            if trainable is None:
                raise ValueError("loss_tokens = 'trainable' needs the trainable mask")
            loss_mask = trainable.bool() & valid
            # position t predicts token t+1: only positions before the last trained token get a δ
            positions = torch.arange(valid.shape[1])
            last = torch.where(loss_mask.any(dim=1), (loss_mask * positions).argmax(dim=1), 0)
            allowed = valid & (positions[None, :] < last[:, None])
        self._positions = self._choose_positions(allowed)
        self.count += len(self._positions[0])
        device = next(model.parameters()).device
        # Activation gradients only: the graph starts at the embedding output, weights stay frozen.
        frozen = {p: p.requires_grad for p in model.parameters()}
        for p in frozen:
            p.requires_grad_(False)
        start = model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
        try:
            with torch.enable_grad():
                logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
                batch_token_loss(logits, input_ids.to(device), loss_mask.to(device)).backward()
        finally:
            self._seen_inputs = {}
            start.remove()
            for p, flag in frozen.items():
                p.requires_grad_(flag)

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    def moments(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(C_h [n, n], C_δ [m, m]) over the accumulated positions. Modules reading the same
        input get the same C_h object (callers may cache work on it); C_δ is handed over once."""
        n = max(self.count, 1)
        key = self.input_of[name]
        if key not in self._c_h:
            self._c_h[key] = self.gram_h.pop(key) / n
        return self._c_h[key], self.gram_d.pop(name) / n
