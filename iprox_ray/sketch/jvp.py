"""JVP embeddings (Influence Distillation, docs/methods.md §5 step 1), batched and padding-aware.

For T random Gaussian tangents v_j over the parameters of the first B transformer blocks, the
forward-mode derivative J·v_j of the hidden state leaving block B, optionally through the
model's final norm (as the official code reads it: logits with lm_head = identity), read at each
sample's last real token or averaged over its real tokens; the T outputs are concatenated
(T·d_model) and randomly projected to `dim` dimensions (entries N(0,1)/sqrt(dim)). Blocks and the
final norm are found by name patterns; the forward pass stops at block B (a hook raises), so the
rest of the model and the LM head never run. Softmax takes a cheaper forward-mode rule
(softmax_jvp.py) than torch's own.

Tangents and the projection derive from (seed, parameter name): identical in every worker.
Memory: T copies of the first B blocks' parameters (the tangents) + one forward's activations
(twice: primal and tangent).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import functional_call

from iprox_ray.models.patterns import find_modules, select_blocks
from iprox_ray.sketch.embedding_kind import EmbeddingKind
from iprox_ray.sketch.projection import derive_seed, projection_matrix
from iprox_ray.sketch.softmax_jvp import CheapSoftmaxJvp

if TYPE_CHECKING:
    from iprox_ray.spec.scoring import EmbedSpec

# The [scoring.embed] fields that decide a JVP embedding, in the order the store's settings and the
# stage fingerprint have always listed them (a new order would change recorded fingerprints).
JVP_SETTINGS = ("blocks", "block_patterns", "tangents", "readout", "final_norm", "dim", "seed")


class _Stop(Exception):
    def __init__(self, output):
        super().__init__("stop after the last embedded block")
        self.output = output


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last real token (works for left or right padding)."""
    positions = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=1)


def gaussian_tangent(seed: int, name: str, j: int, like: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, name, f"tangent-{j}"))
    return torch.randn(like.shape, generator=gen, dtype=torch.float32).to(like.device, like.dtype)


def final_norm(model: nn.Module, patterns: list[str], blocks: list[tuple[str, nn.Module]]) -> nn.Module | None:
    """The one module matching `patterns` outside every block (None when patterns is empty)."""
    if not patterns:
        return None
    inside = tuple(f"{name}." for name, _ in blocks)
    found = [(n, m) for n, m in find_modules(model, patterns) if not n.startswith(inside)]
    if len(found) != 1:
        raise ValueError(f"embed.final_norm {patterns} must match one module outside the blocks; "
                         f"matched {[n for n, _ in found]}")
    return found[0][1]


class JvpEmbedder:
    def __init__(self, model: nn.Module, block_patterns: list[str], n_blocks: int, n_tangents: int,
                 dim: int, seed: int, cheap_softmax: bool = True, readout: str = "last",
                 norm_patterns: list[str] | None = None):
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")  # fused SDPA kernels have no forward-AD rule
        self.model = model
        self.cheap_softmax = cheap_softmax  # False: torch's own softmax rule (the reference, for benchmarks)
        blocks = select_blocks(model, block_patterns)
        self.blocks = blocks[: min(n_blocks, len(blocks))]
        if readout not in ("last", "mean"):
            raise ValueError(f"unknown JVP readout {readout!r}")
        self.readout = readout
        self.norm = final_norm(model, norm_patterns or [], blocks)
        prefixes = tuple(f"{name}." for name, _ in self.blocks)
        self.params = {n: p for n, p in model.named_parameters() if n.startswith(prefixes)}
        if not self.params:
            raise ValueError(f"blocks {[n for n, _ in self.blocks]} hold no parameters")
        self.tangents = [{n: gaussian_tangent(seed, n, j, p.detach()) for n, p in self.params.items()}
                         for j in range(n_tangents)]
        self.d_model = model.get_input_embeddings().embedding_dim
        device = next(model.parameters()).device
        self.projection = projection_matrix(seed, "jvp-embedding", "out", dim, n_tangents * self.d_model).to(device)

    @property
    def dim(self) -> int:
        return self.projection.shape[0]

    def close(self) -> None:
        self.tangents = []

    def block_output_tangents(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T·d_model]: J·v_j of the block-B hidden state (through the final norm if set), read out."""
        input_ids, attention_mask = self._on_device(input_ids, attention_mask)
        outs = []
        with torch.no_grad(), (CheapSoftmaxJvp() if self.cheap_softmax else contextlib.nullcontext()):
            for tangent in self.tangents:
                with fwAD.dual_level():
                    duals = {n: fwAD.make_dual(p, tangent[n]) for n, p in self.params.items()}
                    hidden = self._hidden_after_last_block(input_ids, attention_mask, duals)
                    if self.norm is not None:
                        hidden = self.norm(hidden)
                    outs.append(read_out(fwAD.unpack_dual(hidden).tangent, attention_mask, self.readout))
        return torch.cat(outs, dim=1)

    def forward_to_last_block(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The block-B hidden state by a plain forward (no AD): the JVP's cost floor, for benchmarks."""
        with torch.no_grad():
            return self._hidden_after_last_block(*self._on_device(input_ids, attention_mask), {})

    def _on_device(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(self.projection.device) for t in tensors)

    def _hidden_after_last_block(self, input_ids, attention_mask, params: dict) -> torch.Tensor:
        # The stop hook lives only for this call: the same model may serve full forward passes.
        handle = self.blocks[-1][1].register_forward_hook(_raise_output)
        try:
            functional_call(self.model, params, (), {"input_ids": input_ids, "attention_mask": attention_mask,
                                                     "use_cache": False}, strict=False)
        except _Stop as stop:
            return stop.output
        finally:
            handle.remove()
        raise RuntimeError("the last embedded block did not run")  # pragma: no cover - the hook always fires

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, dim] float32 embeddings."""
        return self.block_output_tangents(input_ids, attention_mask) @ self.projection.T


def read_out(tangent: torch.Tensor, attention_mask: torch.Tensor, readout: str) -> torch.Tensor:
    """[B, T, d] -> [B, d] fp32: the last real token's row, or the mean over real tokens."""
    if readout == "last":
        rows = torch.arange(tangent.shape[0], device=tangent.device)
        return tangent[rows, last_token_index(attention_mask)].float()
    weights = attention_mask.float() / attention_mask.sum(1, keepdim=True).clamp(min=1).float()
    return (tangent.float() * weights[..., None]).sum(1)


def _raise_output(module, inputs, output):
    raise _Stop(output[0] if isinstance(output, (tuple, list)) else output)


class JvpKind(EmbeddingKind):
    name = "jvp"
    needs_eager_attention = True  # forward-mode AD has no rule for fused attention kernels (SDPA, flash)

    def make(self, model: nn.Module, spec: EmbedSpec) -> JvpEmbedder:
        return JvpEmbedder(model, spec.block_patterns, spec.blocks, spec.tangents, spec.dim, spec.seed,
                           readout=spec.readout, norm_patterns=spec.final_norm)

    def settings(self, spec: EmbedSpec) -> dict:
        return {k: getattr(spec, k) for k in JVP_SETTINGS}

    def fingerprint_keys(self) -> tuple[str, ...]:
        return tuple(f"scoring.embed.{k}" for k in JVP_SETTINGS)

    def dim(self, spec: EmbedSpec, meta_model: Callable[[], nn.Module]) -> int:
        return spec.dim  # the random projection's width, whatever the model
