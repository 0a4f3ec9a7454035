"""A trainer-independent Adam(W) state format: one safetensors file + one JSON file.

  optimizer.safetensors  exp_avg.<param name>, exp_avg_sq.<param name> (fp32, parameter shapes)
  optimizer.json         {"format": "iprox-ray-adam-v1", "step", "betas", "eps", "lr", "weight_decay"}

Names are the model's `named_parameters()` names, so the state is portable across trainers.

Importers: `import_torch_optimizer` reads the torch.save'd optimizer state_dict that transformers'
Trainer (`optimizer.pt`) and accelerate (`optimizer.bin`) write. Such a file indexes parameters
by position (0..n-1 over the param groups in order), so the names are recovered from the model:
either all trainable parameters in `named_parameters()` order (one group: accelerate, plain
torch), or the Trainer's two groups (weight-decayed first, then the rest). The candidate whose
group sizes and every tensor shape match the file is used; no match, or two different matches,
is an error that names the problem (pass `names=` to settle it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "iprox-ray-adam-v1"


@dataclass
class AdamState:
    step: int
    betas: tuple[float, float]
    eps: float
    lr: float
    weight_decay: float
    exp_avg: dict[str, torch.Tensor] = field(default_factory=dict)
    exp_avg_sq: dict[str, torch.Tensor] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"exp_avg.{k}": v.float().contiguous() for k, v in self.exp_avg.items()}
        tensors.update({f"exp_avg_sq.{k}": v.float().contiguous() for k, v in self.exp_avg_sq.items()})
        save_file(tensors, str(folder / "optimizer.safetensors"))
        meta = {"format": FORMAT, "step": self.step, "betas": list(self.betas), "eps": self.eps,
                "lr": self.lr, "weight_decay": self.weight_decay}
        (folder / "optimizer.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "AdamState":
        meta = json.loads((folder / "optimizer.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder}/optimizer.json is not {FORMAT}")
        tensors = load_file(str(folder / "optimizer.safetensors"))
        state = cls(meta["step"], tuple(meta["betas"]), meta["eps"], meta["lr"], meta["weight_decay"])
        for key, value in tensors.items():
            kind, _, name = key.partition(".")
            (state.exp_avg if kind == "exp_avg" else state.exp_avg_sq)[name] = value
        return state

    @classmethod
    def from_torch(cls, optimizer: torch.optim.Optimizer, names: dict[int, str]) -> "AdamState":
        """From a live torch Adam/AdamW; `names` maps id(param) -> parameter name."""
        group = optimizer.param_groups[0]
        state = cls(0, tuple(group["betas"]), group["eps"], group.get("initial_lr", group["lr"]),
                    group.get("weight_decay", 0.0))
        for group in optimizer.param_groups:
            for param in group["params"]:
                slot = optimizer.state.get(param)
                if not slot:
                    continue
                name = names[id(param)]
                state.step = int(slot["step"])
                state.exp_avg[name] = slot["exp_avg"].detach().float().cpu()
                state.exp_avg_sq[name] = slot["exp_avg_sq"].detach().float().cpu()
        return state


def adam_state_files(path: Path) -> list[Path]:
    """The files an Adam state at `path` is read from: an iprox-ray state folder's two files, a
    Trainer/accelerate optimizer.pt/.bin inside a folder, or that file itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    if (path / "optimizer.json").is_file():
        return [path / "optimizer.json", path / "optimizer.safetensors"]
    for candidate in ("optimizer.pt", "optimizer.bin"):
        if (path / candidate).is_file():
            return [path / candidate]
    raise FileNotFoundError(f"{path} holds neither optimizer.json ({FORMAT}) nor optimizer.pt/.bin")


def load_adam_state(path: Path, model: nn.Module | None = None) -> AdamState:
    """An iprox-ray state folder, or a Trainer/accelerate optimizer file (needs the model)."""
    files = adam_state_files(Path(path))
    if files[0].name == "optimizer.json":
        return AdamState.load(files[0].parent)
    path = files[0]
    if model is None:
        raise ValueError(f"importing {path} needs the model, to map parameter indices to names")
    return import_torch_optimizer(path, model)


def import_torch_optimizer(path: Path, model: nn.Module, names: list[str] | None = None) -> AdamState:
    """Import a torch Adam/AdamW state_dict file (Trainer `optimizer.pt`, accelerate `optimizer.bin`)."""
    saved = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or "state" not in saved or "param_groups" not in saved:
        raise ValueError(f"{path} is not a torch optimizer state_dict (no 'state'/'param_groups')")
    groups = saved["param_groups"]
    indices = [i for g in groups for i in g["params"]]
    shapes = {i: tuple(slot["exp_avg"].shape) for i, slot in saved["state"].items() if "exp_avg" in slot}
    if not shapes:
        raise ValueError(f"{path} holds no Adam moments (exp_avg/exp_avg_sq): not an Adam-type optimizer?")
    params = dict(model.named_parameters())
    if names is not None:
        candidates = {"given": list(names)}
    else:
        candidates = _name_orders(model, [len(g["params"]) for g in groups])
    matches = {}
    for label, order in candidates.items():
        if len(order) == len(indices) and all(
            i not in shapes or tuple(params[n].shape) == shapes[i] for i, n in zip(indices, order)
        ):
            matches[label] = order
    distinct = {tuple(o) for o in matches.values()}
    if len(distinct) != 1:
        tried = ", ".join(f"{k} ({len(v)} names)" for k, v in candidates.items())
        problem = "no parameter order matches" if not distinct else "several parameter orders match"
        raise ValueError(f"{path}: {problem} the file's {len(indices)} parameters in {len(groups)} group(s) "
                         f"(tried {tried}); pass names= explicitly")
    order = next(iter(matches.values()))
    first = groups[0]
    state = AdamState(0, tuple(first["betas"]), first["eps"], first.get("initial_lr", first["lr"]),
                      first.get("weight_decay", 0.0))
    for i, name in zip(indices, order):
        slot = saved["state"].get(i)
        if not slot or "exp_avg" not in slot:
            continue  # never stepped (e.g. no gradient reached it)
        state.step = max(state.step, int(slot["step"]))
        state.exp_avg[name] = slot["exp_avg"].float()
        state.exp_avg_sq[name] = slot["exp_avg_sq"].float()
    return state


# The Trainer's no-decay rule (transformers 5: Trainer.get_decay_parameter_names).
_NO_DECAY = [re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")]


def _name_orders(model: nn.Module, group_sizes: list[int]) -> dict[str, list[str]]:
    layer_norms = {f"{m}.{p}" if m else p for m, mod in model.named_modules()
                   if isinstance(mod, nn.LayerNorm) for p, _ in mod.named_parameters(recurse=False)}
    orders = {}
    every = [n for n, _ in model.named_parameters()]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if trainable:
        orders["trainable named_parameters"] = trainable
    if trainable != every:  # e.g. a model loaded for inference: nothing marked trainable any more
        orders["all named_parameters"] = every
    for trainable in list(orders.values()):
        if len(group_sizes) == 2:
            decay = [n for n in trainable if n not in layer_norms and not any(r.search(n.lower()) for r in _NO_DECAY)]
            rest = [n for n in trainable if n not in set(decay)]
            if [len(decay), len(rest)] == group_sizes:
                orders[f"Trainer decay groups ({len(trainable)} params)"] = decay + rest
    return orders
