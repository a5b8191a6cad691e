"""The FLOP count tests hold the analytic accounting against: what torch's FlopCounterMode sees in one no-grad
forward, with SDPA on its math backend and the MoE experts on their per-expert loop and the short convs as grouped convs (the counter has no formula for
the fused kernels or for torch._grouped_mm)."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hybridlm.ops.causal_conv import grouped_conv_form


def counted_flops(model, ids: torch.Tensor, cache=None) -> int:
    moes = [m for m in model.modules() if hasattr(m, "impl")]
    impls = [m.impl for m in moes]
    for m in moes:
        m.impl = "loop"
    try:
        with sdpa_kernel(SDPBackend.MATH), grouped_conv_form(), FlopCounterMode(display=False) as fc, torch.no_grad():
            model(ids, cache=cache)
    finally:
        for m, impl in zip(moes, impls):
            m.impl = impl
    return fc.get_total_flops()


def assert_flops_match_counter(model, vocab: int, tokens: int = 40, decode_at: int = 40) -> None:
    """A `tokens`-token forward counts model.forward_flops(tokens, causal_skip=False) (the counter counts SDPA densely:
    it cannot see the mask), and one decode step after a (decode_at - 1)-token prefill counts
    model.decode_flops(decode_at)."""
    # forward_flops is tokens x a per-token mean (a float): equal up to its last bit
    assert counted_flops(model, torch.randint(0, vocab, (1, tokens))) == \
        pytest.approx(model.forward_flops(tokens, causal_skip=False), rel=1e-14, abs=0)
    cache = model.new_cache()
    model.prefill(torch.randint(0, vocab, (1, decode_at - 1)), cache)
    assert counted_flops(model, torch.randint(0, vocab, (1, 1)), cache) == model.decode_flops(decode_at)


def assert_params_counted(mixers) -> None:
    """Each mixer's analytic num_params() equals its parameters' element count."""
    for mixer in mixers:
        assert mixer.num_params() == sum(p.numel() for p in mixer.parameters())
