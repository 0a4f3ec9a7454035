"""A trainer-independent Adam(W) state format: one safetensors file + one JSON file.

  optimizer.safetensors  exp_avg.<param name>, exp_avg_sq.<param name> (fp32, parameter shapes)
  optimizer.json         {"format": "iprox-ray-adam-v1", "step", "betas", "eps", "lr", "weight_decay"}

Names are the model's `named_parameters()` names, so the state is portable across trainers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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
        state = cls(0, tuple(group["betas"]), group["eps"], group.get("initial_lr", group["lr"]), group.get("weight_decay", 0.0))
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
