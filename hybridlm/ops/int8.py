"""Weight-only int8 with one scale per output channel, symmetric: the format of vLLM's ExpertsInt8, in which Jamba 1.5
is served (docs/quantize.md). For a weight W [R, C] of y = x W^T (R output channels, C inputs):

    s_r   = max_c |W_rc| / 127                    one fp32 scale per row (output channel) r
    Q_rc  = round(W_rc / s_r)  in [-127, 127]     int8; symmetric, so -128 is never used
    W~_rc = Q_rc s_r                              the dequantised weight: |W_rc - W~_rc| <= s_r / 2

A row of zeros gets s_r = 0 and Q = 0, and dequantises to zeros exactly. Leading dimensions are batch dimensions:
W [..., R, C] -> Q [..., R, C] int8 and s [..., R] fp32 (MoE experts: [E, 2I, D] -> scales [E, 2I]).
The matmul is emulated: dequantise to the activation's dtype, then an ordinary matmul (vLLM's kernel instead
scales the int8 x activation product per output channel; the two differ only in fp rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor

QMAX = 127


def quantize_rows(w_RC: Tensor) -> tuple[Tensor, Tensor]:
    """W [..., R, C] (any float dtype) -> (Q [..., R, C] int8, s [..., R] fp32), one symmetric scale per row."""
    w = w_RC.to(torch.promote_types(w_RC.dtype, torch.float32))  # fp32 (fp64 stays fp64 until the scale is stored)
    s_R = w.abs().amax(-1) / QMAX
    # a zero row: divide by 1 instead of 0 (its weights are 0, so Q = 0), and keep s = 0
    q_RC = torch.round(w / torch.where(s_R > 0, s_R, 1.0).unsqueeze(-1)).clamp_(-QMAX, QMAX)
    return q_RC.to(torch.int8), s_R.to(torch.float32)


def dequantize_rows(q_RC: Tensor, s_R: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """(Q [..., R, C] int8, s [..., R]) -> W~ = Q s [..., R, C] in `dtype`, computed in fp32 (fp64 for fp64) and
    rounded once."""
    compute = torch.promote_types(dtype, torch.float32)
    return (q_RC.to(compute) * s_R.to(compute).unsqueeze(-1)).to(dtype)

