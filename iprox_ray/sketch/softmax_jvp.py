"""A cheaper forward-mode rule for softmax, for JVPs through eager attention.

torch's own forward-AD rule for softmax recomputes exp(x - max) unfused. On attention scores with
masked entries (the dtype's minimum) that exp takes a slow path. On one CPU core, for
[16, 4, 128, 128], it measured 20 ms against 1.6 ms for the fused primal softmax.

This rule keeps the fused primal and forms the tangent from it:
    d softmax(x)[t] = s * (t - sum(s * t)),  with s = softmax(x).
That takes one multiply, one reduction and one fused multiply-subtract.

`CheapSoftmaxJvp` is a torch-function mode. Every softmax called on a dual tensor while the mode
is active takes this rule, whichever model calls it. No attention code is patched. Softmax on a
non-dual tensor is left alone.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class _SoftmaxWithJvp(torch.autograd.Function):
    @staticmethod
    def forward(x: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.softmax(x, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dim = inputs[1]
        ctx.save_for_forward(output)

    @staticmethod
    def jvp(ctx, x_t: torch.Tensor, _dim_t) -> torch.Tensor:
        (s,) = ctx.saved_tensors
        st = s * x_t
        return st.sub_(s * st.sum(ctx.dim, keepdim=True))

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - this rule serves forward mode only
        raise RuntimeError("the cheap softmax rule is forward-mode only; run reverse mode outside CheapSoftmaxJvp")


# Where each softmax entry point takes `dtype` positionally (F.softmax has `_stacklevel` before it).
_DTYPE_POSITION = {F.softmax: 3, torch.softmax: 2, torch.Tensor.softmax: 2}


def _call_parts(func, args, kwargs):
    """(input, dim, dtype) of a softmax call in any of its three spellings."""
    x = args[0]
    dim = kwargs["dim"] if "dim" in kwargs else (args[1] if len(args) > 1 else None)
    position = _DTYPE_POSITION[func]
    dtype = kwargs["dtype"] if "dtype" in kwargs else (args[position] if len(args) > position else None)
    return x, dim, dtype


class CheapSoftmaxJvp(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DTYPE_POSITION:
            x, dim, dtype = _call_parts(func, args, kwargs)
            # dim=None is softmax's legacy implicit dimension: left to torch.
            if dim is not None and isinstance(x, torch.Tensor) and fwAD.unpack_dual(x).tangent is not None:
                return _SoftmaxWithJvp.apply(x if dtype is None else x.to(dtype), dim)
        return func(*args, **kwargs)
