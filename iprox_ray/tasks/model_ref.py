"""A picklable reference to the model a worker should hold: a HF folder or a saved proxy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from iprox_ray.models.loading import load_config, load_pretrained, meta_model
from iprox_ray.proxy.artifact import load_proxy, meta_proxy, read_manifest


@dataclass(frozen=True)
class ModelRef:
    kind: str  # hf | proxy
    path: Path
    dtype: str = "float32"
    attn: str = "sdpa"

    def load(self) -> torch.nn.Module:
        if self.kind == "proxy":
            return load_proxy(self.path, self.dtype, self.attn)
        return load_pretrained(self.path, self.dtype, self.attn)

    def meta(self) -> torch.nn.Module:
        """Same module tree on the meta device: names and shapes without weights."""
        return meta_proxy(self.path) if self.kind == "proxy" else meta_model(load_config(self.path))

    def identity(self) -> dict:
        """What the store records about the sketched model (no paths: a store must not depend on
        where its run directory lives)."""
        info = {"kind": self.kind}
        if self.kind == "proxy":
            info["proxy_fingerprint"] = read_manifest(self.path).get("fingerprint")
        return info
