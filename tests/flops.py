"""The FLOP count tests hold the analytic accounting against: what torch's FlopCounterMode sees in one no-grad
forward, with SDPA on its math backend (the fused kernels are opaque to the counter)."""

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def counted_flops(model, ids: torch.Tensor, cache=None) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
        model(ids, cache=cache)
    return fc.get_total_flops()
