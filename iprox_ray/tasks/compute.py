"""The precision a sketch is computed in, resolved once: `sketch.autocast = "auto"` means bf16 on
a GPU and the weights' dtype on a CPU, so a run started on GPUs and resumed on CPUs would mix two
precisions in one store. The split's `precision` attribute records it when the split is created;
every later sketch (a resume, a worker, a target scored later) must resolve to the same, and each
completion marker records what its worker used (precision and device)."""

from __future__ import annotations

import torch

from iprox_ray.sketch.capture import _autocast_dtype
from iprox_ray.store.sketch_store import StoreMismatchError

AUTOCAST_BF16 = "bf16-autocast"


class PrecisionMismatchError(StoreMismatchError):
    """A resume (or a worker) would compute sketches in another precision than the store holds."""


def sketch_precision(weights_dtype: str, autocast: str, on_gpu: bool) -> str:
    """What a sketch is computed in: bf16 autocast where the sketcher turns it on, else the weights'
    dtype (the same rule as the sketcher's, sketch/capture.py)."""
    mixed = _autocast_dtype(torch.device("cuda" if on_gpu else "cpu"), autocast)
    return AUTOCAST_BF16 if mixed is not None else weights_dtype


def device_kind(on_gpu: bool) -> str:
    if on_gpu and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()})"
    return "cuda" if on_gpu else "cpu"


def compute_record(precision: str, on_gpu: bool) -> dict:
    """What a completion marker records about the worker that wrote the shard."""
    return {"precision": precision, "device": device_kind(on_gpu)}


def require_precision(have: str | None, want: str, what: str, fix: str) -> None:
    """Refuse to add rows computed in `want` to `what`, which holds rows computed in `have`."""
    if have is not None and have != want:
        raise PrecisionMismatchError(f"{what} holds sketches computed in {have}; this one would compute {want}: "
                                     f"mixing them in one store would make scores incomparable. {fix}")
