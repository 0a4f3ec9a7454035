"""A saved proxy: safetensors of its state (factors + untouched tensors) and a JSON manifest.

It is rebuilt from the target architecture (config) + the manifest's per-layer ranks, so a sketch
actor loads exactly what the proxy stage produced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from iprox_ray.models.loading import random_init
from iprox_ray.proxy.compress import LayerPlan, apply_plan

WEIGHTS = "proxy.safetensors"
MANIFEST = "proxy.json"


def save_proxy(model: torch.nn.Module, folder: Path, plans: list[LayerPlan], info: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # Tied weights share storage; safetensors wants one copy each.
    seen: dict[int, str] = {}
    for key in list(state):
        ptr = state[key].data_ptr()
        if ptr in seen:
            state[key] = state[key].clone()
        seen[ptr] = key
    save_file(state, str(folder / WEIGHTS))
    model.config.save_pretrained(str(folder))
    manifest = {**info, "layers": [p.as_dict() for p in plans]}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def load_proxy(folder: Path, dtype: str = "float32", attn: str = "sdpa") -> torch.nn.Module:
    from transformers import AutoConfig

    manifest = read_manifest(folder)
    model = random_init(AutoConfig.from_pretrained(str(folder)), seed=0, dtype=dtype, attn=attn)
    apply_plan(model, [LayerPlan(**layer) for layer in manifest["layers"]])
    missing, unexpected = model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=False)
    if unexpected or [k for k in missing if k not in _tied_keys(model)]:
        raise RuntimeError(f"proxy at {folder} does not fit its architecture: missing {missing}, unexpected {unexpected}")
    return model.eval()


def _tied_keys(model: torch.nn.Module) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or []
    return set(tied if isinstance(tied, (list, tuple, set)) else tied.keys())
