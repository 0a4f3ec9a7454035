"""Proxy baselines that are not low-rank: layer extraction, and the decoder-layer lookup it needs."""

from __future__ import annotations

import numpy as np
from torch import nn

LAYER_LIST_SUFFIXES = ("layers", "h", "blocks", "decoder_layers")


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList holding the decoder blocks: its length is config.num_hidden_layers.

    Found by shape and name, never by attribute path, so Llama (`model.layers`) and GPT-2
    (`transformer.h`) alike work.
    """
    n_layers = model.config.num_hidden_layers
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == n_layers
        and name.rsplit(".", 1)[-1] in LAYER_LIST_SUFFIXES
    ]
    if len(found) != 1:
        raise ValueError(f"cannot identify the decoder layer list (candidates: {[n for n, _ in found]})")
    return found[0]


def layers_to_keep(n_layers: int, rho: float) -> list[int]:
    """round((1−ρ)·L) layers: split the stack into that many contiguous blocks, keep each block's first."""
    keep = max(1, round((1.0 - rho) * n_layers))
    return [int(block[0]) for block in np.array_split(np.arange(n_layers), keep)]


def extract_layers(model: nn.Module, keep: list[int]) -> None:
    """Keep only the listed decoder layers, in place; the config and layer indices follow."""
    name, layers = find_decoder_layers(model)
    kept = nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):  # HF attention uses it to address the KV cache
                module.layer_idx = new_index
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, kept)
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
