"""A sketch worker's memory from the model's config alone, and the largest token budget that fits
a worker's share: what `sketch.token_budget = "auto"` and a plan without the weights use, so no
run has to load or time a model to size its batches.

Per batch of `tokens` padded tokens in rows of `length`, the sketch pass (sketch/capture.py: one
fp32 forward keeping what the activation-only backward needs, logits at loss positions only)
holds, per token and layer, a few copies of the residual stream and attention outputs (hidden),
of the keys and values (kv_dim), of the MLP's gate/up/activation (intermediate) and, with eager
attention, each head's weights over the row (heads x length); per loss token, the logits, their
log-softmax and gradient (vocab); and a fixed amount for the sketcher's buffers. The coefficients
are floats per unit fitted to the peak resident growth of the sketch pass measured on this machine
(bench/micro/activation_memory.py: random-init Llama shapes that move one term at a time, and the
SmolLM2-135M shape; bench/RESULTS.md "token budget"), then rounded up: the model is meant to
over-predict, never under.

Predicted worker peak = the worker's base (its interpreter and imports) + the model(s) it holds
(and Adam moments) + the activations above at `budget` tokens in rows of `data.max_length` with
every token carrying loss (an upper bound for any data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from iprox_ray.models.loading import DTYPES
from iprox_ray.models.patterns import linear_dims
from iprox_ray.sketch.factory import sketched_modules
from iprox_ray.sketch.kinds import kind_for
from iprox_ray.spec import JobSpec, SketchSpec, SpecError

# Floats (fp32: 4 bytes) per token per layer, per unit of each width; per loss token per vocab
# entry. Least squares on the 17 measured points gave hidden 7.3, kv 9.3, intermediate 3.05,
# vocab 4.01, eager 1.4 and 49 MiB fixed (hidden and kv move together in the grid, so their split
# is loose); these values predict every point high, by 1.09-1.76 (bench/RESULTS.md "token budget").
PER_HIDDEN = 9.0
PER_KV = 7.0
PER_INTERMEDIATE = 3.0
PER_VOCAB = 4.0
PER_HEAD_POSITION = {"eager": 2.0, "sdpa": 0.0}  # sdpa on CPU keeps no B x heads x L x L weights
FIXED_BYTES = 192 << 20  # the sketcher's projections and buffers, allocator slack
FLOAT_BYTES = 4  # calibrated in fp32; bf16 autocast on GPU holds less (over-predicted, never under)
SAFETY = 0.8  # of a worker's share the prediction may fill (allocator slack, Ray's daemons, the driver)
ROUND_TO = 256  # budgets are multiples of this (a plan made minutes earlier names the same number)
GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """The widths a transformer's activation memory scales with."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a transformers config (Llama/Qwen/Mistral/Gemma names, GPT-2's n_* names, or a
        multimodal config's text_config)."""
        text = getattr(config, "text_config", None)
        if text is not None and _first(text, "hidden_size") is not None:
            config = text
        hidden = _first(config, "hidden_size", "n_embd", "d_model")
        layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
        heads = _first(config, "num_attention_heads", "n_head")
        if hidden is None or layers is None or heads is None:
            raise ValueError(f"cannot read the hidden size, layers and heads of a {type(config).__name__}")
        head_dim = _first(config, "head_dim") or hidden // heads
        kv = _first(config, "num_key_value_heads") or heads
        intermediate = _first(config, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
        return cls(int(layers), int(hidden), int(intermediate), int(heads), int(kv * head_dim), int(config.vocab_size))


def _first(config, *names):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def bytes_per_token(shape: ModelShape, length: int, loss_share: float = 1.0, attn: str = "sdpa") -> float:
    """Activation bytes one padded token adds to a batch whose rows are `length` tokens long, when
    `loss_share` of the tokens carry loss (1.0: an upper bound for any data); `attn` the model's
    attention implementation (eager keeps each head's weights over the row)."""
    layer = (PER_HIDDEN * shape.hidden + PER_KV * shape.kv_dim + PER_INTERMEDIATE * shape.intermediate
             + PER_HEAD_POSITION.get(attn, PER_HEAD_POSITION["eager"]) * shape.heads * length)
    return FLOAT_BYTES * (shape.layers * layer + PER_VOCAB * shape.vocab * loss_share)


def activation_bytes(shape: ModelShape, tokens: int, length: int, loss_share: float = 1.0, attn: str = "sdpa") -> int:
    """Peak resident growth of one sketch batch of `tokens` padded tokens (rows of `length`)."""
    return int(FIXED_BYTES + tokens * bytes_per_token(shape, length, loss_share, attn))


@dataclass(frozen=True)
class PeakModel:
    """One sketch worker's predicted peak at a budget: fixed bytes plus bytes a padded token."""

    fixed_bytes: int  # base + models + the sketcher's batch buffers + FIXED_BYTES
    model_bytes: int  # the models alone (with Adam moments where used)
    bytes_per_token: float  # activations at rows of max_length, every token carrying loss
    max_length: int

    def peak(self, budget: int) -> int:
        """A batch never holds less than one row, whatever the budget (a lone row may exceed it)."""
        return int(self.fixed_bytes + self.bytes_per_token * max(budget, self.max_length))


def peak_model(job: JobSpec, model: nn.Module, config, base_bytes: int) -> PeakModel:
    """The peak model of a worker sketching `model` (a meta-device or loaded module; `config` its
    transformers config, or the target's for a proxy: an upper bound) on top of `base_bytes`."""
    params = sum(p.numel() for p in model.parameters())
    adam = 2 * FLOAT_BYTES * params if job.sketch.optimizer != "none" else 0  # both moments, fp32
    model_bytes = max(1, len(job.sketch.checkpoints)) * (params * DTYPES[job.model.dtype].itemsize + adam)
    per_token, per_batch = sketcher_extras(model, job.sketch)
    length = job.data.max_length
    return PeakModel(base_bytes + model_bytes + per_batch + FIXED_BYTES, model_bytes,
                     bytes_per_token(ModelShape.from_config(config), length, attn=job.model.attn_implementation)
                     + per_token, length)


def sketcher_extras(model: nn.Module, spec: SketchSpec) -> tuple[float, int]:
    """(bytes a token, bytes a batch) the spec's sketcher holds beyond the model's activations:
    the kind says how many floats (Kronecker: each module's projected input, k_in a token; a dense
    kind: one module's per-sample gradients, for every row of a batch, and the SRHT's padded copy)."""
    modules = [(name, *linear_dims(m)) for name, m in sketched_modules(model, spec)]
    per_token, per_batch = kind_for(spec).held_floats(spec, modules)
    return float(per_token * FLOAT_BYTES), int(per_batch * FLOAT_BYTES)


@dataclass(frozen=True)
class BudgetChoice:
    token_budget: int
    predicted_peak_bytes: int  # one worker at this budget (base + models + activations)
    share_bytes: int
    model_bytes: int
    bytes_per_token: float
    source: str
    limit: str  # what stopped it: "memory" or "rows" (max_batch_rows x max_length holds no more)

    def record(self) -> dict:
        return {"auto": True, **asdict(self)}

    def describe(self) -> str:
        why = ("every batch's rows fit (sketch.max_batch_rows x data.max_length)" if self.limit == "rows" else
               f"{SAFETY:.0%} of {self.share_bytes / GIB:.1f} GiB")
        return (f"{self.token_budget} tokens: predicted worker peak {self.predicted_peak_bytes / GIB:.2f} GiB "
                f"(models {self.model_bytes / GIB:.2f} GiB, {self.bytes_per_token / 2**20:.2f} MiB a token) "
                f"within {why}; share from {self.source}")


def choose_budget(model: PeakModel, share_bytes: int, source: str, max_rows: int) -> BudgetChoice:
    """The largest budget (a multiple of ROUND_TO, at most max_rows x max_length) whose predicted
    peak fits SAFETY of a worker's `share_bytes` (`source` says where that figure comes from).
    SpecError when not even one row of max_length fits."""
    room = SAFETY * share_bytes - model.fixed_bytes
    length = model.max_length
    if room < model.bytes_per_token * length:
        need = model.peak(length) / SAFETY
        raise SpecError(
            f"sketch.token_budget = 'auto': one row of data.max_length = {length} tokens needs a worker share of "
            f"about {need / GIB:.1f} GiB (models {model.model_bytes / GIB:.1f} GiB), but a sketch worker gets "
            f"{share_bytes / GIB:.1f} GiB ({source}); give each worker more memory (fewer workers "
            "per node, cluster.slurm.mem_gb) or shorter rows, or set sketch.token_budget")
    ceiling = max_rows * length
    fit = int(room // model.bytes_per_token)
    budget, limit = (ceiling, "rows") if fit >= ceiling else (fit, "memory")
    if limit == "memory" and budget >= ROUND_TO:
        budget -= budget % ROUND_TO
    budget = max(16, budget)
    return BudgetChoice(budget, model.peak(budget), share_bytes, model.model_bytes, model.bytes_per_token,
                        source, limit)
