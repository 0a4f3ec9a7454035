"""Random projections derived from (global seed, module name, role): every actor, restart and later
query regenerates exactly the same matrices, so none is ever stored or shipped."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: str) -> int:
    digest = hashlib.blake2b(f"{seed}|{'|'.join(names)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def projection_matrix(
    seed: int, module: str, role: str, k: int, d: int, kind: str = "gaussian"
) -> torch.Tensor:
    """A [k, d] float32 matrix with E[PᵀP] = I (entries of variance 1/k), made on the CPU.

    Generated on the CPU so it is identical whatever device later uses it.
    """
    gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, module, role))
    if kind == "gaussian":
        mat = torch.randn(k, d, generator=gen, dtype=torch.float32)
    elif kind == "rademacher":
        mat = torch.randint(0, 2, (k, d), generator=gen, dtype=torch.int8).float().mul_(2).sub_(1)
    else:
        raise ValueError(f"unknown projection kind {kind!r}")
    return mat.div_(k**0.5)
