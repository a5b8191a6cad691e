"""The FLOP count tests hold the analytic accounting against: what torch's FlopCounterMode sees in one no-grad
forward, with SDPA on its math backend and the MoE experts on their per-expert loop (the counter has no formula for
the fused kernels or for torch._grouped_mm)."""

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def counted_flops(model, ids: torch.Tensor, cache=None) -> int:
    moes = [m for m in model.modules() if hasattr(m, "impl")]
    impls = [m.impl for m in moes]
    for m in moes:
        m.impl = "loop"
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
            model(ids, cache=cache)
    finally:
        for m, impl in zip(moes, impls):
            m.impl = impl
    return fc.get_total_flops()
