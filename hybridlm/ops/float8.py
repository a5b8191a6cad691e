"""Float8 matmuls with one dynamic scale per tensor: the numerics of torchao's "tensorwise" float8 training
(docs/training.md, "Precision: fp8"), emulated so they run, and can be tested, anywhere.

Formats (torch dtypes; m = mantissa bits, u = 2^-(m+1) the relative rounding bound for normal values):
    E4M3 = float8_e4m3fn   max 448,   m = 3, u = 1/16, smallest normal 2^-6    (input, weight)
    E5M2 = float8_e5m2     max 57344, m = 2, u = 1/8,  smallest normal 2^-14   (gradients: more range)

Casting a tensor t (per-tensor dynamic scaling; torchao's amax_to_scale and to_fp8_saturated):
    s    = fp8_max / max(amax(|t|), 1e-12)     computed in fp64, stored as one fp32 scalar
    q    = fp8(clamp(t * s, -fp8_max, fp8_max))  round to nearest even, saturating
    t~   = q / s                               the dequantised value: |t - t~| <= u |t| while t*s is normal

The three matmuls of y = x W^T (x [M, I], W [O, I], dy [M, O]; leading dims of x are flattened into M):
    output       y  = E4M3~(x)  E4M3~(W)^T       [M, O]
    grad_input   dx = E5M2~(dy) E4M3~(W)         [M, I]
    grad_weight  dW = E5M2~(dy)^T E4M3~(x)       [O, I]
Each tensor is cast once with its own tensorwise scale and the same fp8 operand serves both matmuls it enters
(what torchao's tensorwise recipe does too). The bias is added in high precision. The emulation dequantises and
multiplies in fp32 (fp64 for fp64 inputs): products of fp8 values are exact there, so it differs from a float8
tensor-core matmul with fp32 accumulation only in summation order. It is for numerics, not speed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .precision import compute_dtype

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
AMAX_EPS = 1e-12  # an all-zero tensor gets a finite scale (fp8_max / 1e-12) and casts to zeros


def mantissa_bits(dtype: torch.dtype) -> int:
    """3 for E4M3, 2 for E5M2: the rounding bound of normal values is 2^-(bits + 1)."""
    if dtype == E4M3:
        return 3
    if dtype == E5M2:
        return 2
    raise ValueError(f"float8 dtype {dtype}: must be torch.float8_e4m3fn or torch.float8_e5m2")


def tensor_scale(t: Tensor, dtype: torch.dtype) -> Tensor:
    """-> the fp32 scalar s = fp8_max / max(amax |t|, 1e-12) that maps t's largest magnitude onto dtype's max."""
    mantissa_bits(dtype)  # validates dtype
    amax = t.detach().abs().amax().to(torch.float64)
    return (torch.finfo(dtype).max / amax.clamp_min(AMAX_EPS)).to(torch.float32)


def to_float8(t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """t (any float dtype, any shape) -> (q in dtype, same shape; s fp32 scalar) with t ~= q / s."""
    s = tensor_scale(t, dtype)
    fmax = torch.finfo(dtype).max
    # saturate explicitly: an amax clamped to 1e-12 or an inf elsewhere must not turn into NaN / inf in fp8
    q = (t.detach().to(torch.float32) * s).clamp(-fmax, fmax).to(dtype)
    return q, s


def from_float8(q: Tensor, s: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(q float8, s fp32 scalar) -> q / s in dtype (computed in fp32, fp64 for fp64)."""
    compute = torch.promote_types(dtype, torch.float32)
    return (q.to(compute) / s.to(compute)).to(dtype)


def fake_quantize(t: Tensor, dtype: torch.dtype) -> Tensor:
    """The round trip t -> float8 (one tensorwise scale) -> t's dtype: what the emulated matmuls multiply."""
    return from_float8(*to_float8(t, dtype), dtype=t.dtype)


class _Float8Matmul(torch.autograd.Function):
    """y = x W^T with the operand casts of the module docstring; saves the fp8 operands (1 byte an element) and
    their scales for the backward, not the high-precision tensors."""

    @staticmethod
    def forward(ctx, x_MI: Tensor, w_OI: Tensor) -> Tensor:
        cdt = compute_dtype(x_MI)
        xq_MI, sx = to_float8(x_MI, E4M3)
        wq_OI, sw = to_float8(w_OI, E4M3)
        ctx.save_for_backward(xq_MI, sx, wq_OI, sw)
        ctx.dtypes = (x_MI.dtype, w_OI.dtype, cdt)
        with torch.autocast(x_MI.device.type, enabled=False):  # the emulated product stays in cdt
            y_MO = from_float8(xq_MI, sx, cdt) @ from_float8(wq_OI, sw, cdt).T
        return y_MO.to(x_MI.dtype)

    @staticmethod
    def backward(ctx, dy_MO: Tensor) -> tuple[Tensor | None, Tensor | None]:
        xq_MI, sx, wq_OI, sw = ctx.saved_tensors
        x_dtype, w_dtype, cdt = ctx.dtypes
        gq_MO, sg = to_float8(dy_MO, E5M2)
        g_MO = from_float8(gq_MO, sg, cdt)
        dx = dw = None
        with torch.autocast(dy_MO.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                dx = (g_MO @ from_float8(wq_OI, sw, cdt)).to(x_dtype)  # [M, I]
            if ctx.needs_input_grad[1]:
                dw = (g_MO.T @ from_float8(xq_MI, sx, cdt)).to(w_dtype)  # [O, I]
        return dx, dw


def float8_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear(x, weight, bias) with the float8 tensorwise recipe (module docstring): x [..., I], weight [O, I],
    bias [O] (added in high precision) -> [..., O]. Differentiable in x, weight and bias."""
    if weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"float8_linear: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not fit "
                         f"(need x [..., I] and weight [O, I])")
    y = _Float8Matmul.apply(x.reshape(-1, x.shape[-1]), weight).reshape(*x.shape[:-1], weight.shape[0])
    return y if bias is None else y + bias.to(y.dtype)
