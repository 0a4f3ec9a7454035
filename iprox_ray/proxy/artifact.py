"""A saved proxy: safetensors of its state (factors + untouched tensors) and a JSON manifest.

It is rebuilt from the target architecture (the saved config, whose layer count already reflects
layer extraction) plus the manifest's per-layer ranks, so a sketch actor loads exactly what the
proxy stage produced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from iprox_ray.models.loading import meta_model, random_init
from iprox_ray.proxy.compress import LayerPlan, apply_plan, balance_lowrank

WEIGHTS = "proxy.safetensors"
MANIFEST = "proxy.json"
# Proxies saved before this key existed hold the factors as IPSVD left them (unbalanced);
# they are balanced on load, so every proxy the product uses has one factor form.
FACTOR_FORM = "balanced"


def save_proxy(model: torch.nn.Module, folder: Path, plans: list[LayerPlan], info: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        # Tied weights share storage; safetensors refuses shared tensors, so store a copy.
        ptr = value.data_ptr()
        state[key] = value.detach().clone().contiguous() if ptr in seen else value.detach().contiguous()
        seen.add(ptr)
    save_file(state, str(folder / WEIGHTS))
    model.config.save_pretrained(str(folder))
    manifest = {**info, "factor_form": FACTOR_FORM, "layers": [p.as_dict() for p in plans]}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def proxy_plans(folder: Path) -> list[LayerPlan]:
    return [LayerPlan(**layer) for layer in read_manifest(folder)["layers"]]


def load_proxy(folder: Path, dtype: str = "float32", attn: str = "sdpa") -> torch.nn.Module:
    from transformers import AutoConfig

    model = random_init(AutoConfig.from_pretrained(str(folder)), seed=0, dtype=dtype, attn=attn)
    apply_plan(model, proxy_plans(folder))
    state = load_file(str(folder / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise RuntimeError(f"proxy at {folder} does not fit its architecture: "
                           f"missing {missing}, unexpected {unexpected}")
    if read_manifest(folder).get("factor_form") != FACTOR_FORM:
        balance_lowrank(model)
    return model.eval()


def meta_proxy(folder: Path) -> torch.nn.Module:
    """The proxy's module tree without weights (names and shapes for planning)."""
    from transformers import AutoConfig

    model = meta_model(AutoConfig.from_pretrained(str(folder)))
    apply_plan(model, proxy_plans(folder))
    return model
