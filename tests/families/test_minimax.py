"""The MiniMax family (model_type minimax: lightning attention 7 : 1 softmax attention, MoE, post-norm residuals
scaled by alpha / beta).

The lightning attention op: the block form and the one-step decode against the token-by-token reference (odd T, a
block size that does not divide T, an initial state, gradients), against transformers' own lightning block loop and
against fla-core's naive simple GLA (g = -slope, scale 1) when it is installed. Hugging Face interop against
transformers==5.23.0: logits, the save_hf round trip, cached decode against the full forward and against
transformers' cached decode, greedy generate; the partial-RoPE discrepancy (transformers rotates the whole head);
accounting against FlopCounterMode; cache bytes."""

import functools
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from harness.chunked import assert_forms_match, assert_gradients_match, assert_state_carry, assert_steps_match

from hybridlm.layers.mixers.lightning import alibi_slopes, lightning_slopes
from hybridlm.ops.lightning_attention import (
    lightning_attention_chunked,
    lightning_attention_recurrent,
    lightning_attention_step,
)

try:
    import transformers
except ImportError:  # the op tests below do not need it
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not installed")


# -- the op (harness.chunked) ------------------------------------------------------------------------------------
def make_inputs(B, T, H, K, V, dtype=torch.float64, seed=0, with_state=True):
    """(q, k, v) as MiniMax feeds them (after SiLU), the initial state, and slopes spanning fast to slow decay."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.nn.functional.silu(torch.randn(B, T, H, K, generator=gen, dtype=dtype)) for _ in range(2))
    v = torch.nn.functional.silu(torch.randn(B, T, H, V, generator=gen, dtype=dtype))
    state = torch.randn(B, H, K, V, generator=gen, dtype=dtype) if with_state else None
    slope = torch.tensor(alibi_slopes(H), dtype=dtype) * 0.7
    return (q, k, v), state, slope


@pytest.mark.parametrize("T,block", [(63, 16), (75, 32), (130, 256), (1, 8), (64, 64), (37, 5)])
def test_block_form_matches_recurrent_float64(T, block):
    seqs, s0, slope = make_inputs(2, T, 3, 12, 20, seed=T)
    o, s = assert_forms_match(lightning_attention_recurrent, lightning_attention_chunked, seqs, s0, atol=1e-10,
                              ref_kw={"slope": slope}, slope=slope, block_size=block)
    assert o.shape == (2, T, 3, 20) and o.dtype == torch.float64 and s.shape == (2, 3, 12, 20)


def test_step_and_state_carry_match_recurrent():
    seqs, s0, slope = make_inputs(2, 9, 4, 8, 5, seed=1)
    ref = functools.partial(lightning_attention_recurrent, slope=slope)
    state = assert_steps_match(ref, functools.partial(lightning_attention_step, slope=slope), seqs, s0, atol=1e-12)
    assert not torch.equal(state, s0)  # the caller's state is not updated in place
    seqs, s0, slope = make_inputs(1, 150, 2, 8, 8, seed=2)
    assert_state_carry(functools.partial(lightning_attention_chunked, slope=slope), seqs, s0, split=47, atol=1e-10,
                       block_size=32)


def test_block_form_gradients_match_recurrent():
    seqs, s0, slope = make_inputs(1, 21, 2, 4, 3, seed=3)
    assert_gradients_match(functools.partial(lightning_attention_recurrent, slope=slope),
                           functools.partial(lightning_attention_chunked, slope=slope, block_size=8), seqs, s0,
                           "q k v state".split(), atol=1e-10)


def test_float32_io_zero_state_and_bad_shapes():
    (q, k, v), _, slope = make_inputs(1, 20, 2, 8, 8, dtype=torch.float32, seed=4, with_state=False)
    o, s = lightning_attention_chunked(q.bfloat16(), k.bfloat16(), v.bfloat16(), slope=slope, block_size=8)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    o_ref, _ = lightning_attention_recurrent(q, k, v, slope=slope)
    torch.testing.assert_close(o.float(), o_ref, atol=5e-2, rtol=5e-2)
    with pytest.raises(ValueError, match="slope must have one value per head"):
        lightning_attention_chunked(q, k, v, slope=slope[:1])
    with pytest.raises(ValueError, match=r"initial_state must be \[B, H, K, V\]"):
        lightning_attention_chunked(q, k, v, torch.zeros(1, 2, 8, 7), slope=slope)


def test_slopes_follow_minimax():
    # powers of 2: 2^(-8 (h + 1) / H); otherwise ALiBi's interleave (8 heads, then every other one of 16)
    assert alibi_slopes(4) == [2.0 ** (-2 * (h + 1)) for h in range(4)]
    assert alibi_slopes(12) == alibi_slopes(8) + alibi_slopes(16)[0:8:2]
    got = lightning_slopes(8, 3, 7)
    torch.testing.assert_close(got, torch.tensor(alibi_slopes(8)) * (1 - 3 / 6 + 1e-5))
    assert lightning_slopes(8, 6, 7).max() < 1e-5  # the last layer barely decays
    with pytest.raises(ValueError, match="outside"):
        lightning_slopes(8, 7, 7)


def test_block_form_matches_transformers_lightning_loop():
    """transformers' MiniMaxLightningAttention block loop (its decay buffers and matmuls) on the same q, k, v."""
    mm = pytest.importorskip("transformers.models.minimax.modeling_minimax")
    cfg = transformers.MiniMaxConfig(hidden_size=32, num_attention_heads=4, head_dim=8, num_hidden_layers=4,
                                     block_size=16, layer_types=["linear_attention"] * 4)
    layer = mm.MiniMaxLightningAttention(cfg, layer_idx=1).eval()
    x = torch.randn(2, 45, 32)  # 45 = 2 full blocks of 16 and a tail of 13
    with torch.no_grad():
        want = layer(x, None, None)[0]
        qkv = torch.nn.functional.silu(layer.qkv_proj(x)).view(2, 45, 4, 24)
        q, k, v = qkv.split(8, dim=-1)
        o, _ = lightning_attention_chunked(q, k, v, slope=layer.slope_rate.view(4), block_size=16)
        got = layer.out_proj(torch.sigmoid(layer.output_gate(x)) * layer.norm(o.reshape(2, 45, 32)))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _fla_naive():
    """fla-core's fla/ops/simple_gla/naive.py loaded by file path (the package imports triton; this file does not)."""
    spec = importlib.util.find_spec("fla")
    if spec is None or importlib.util.find_spec("einops") is None:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "ops" / "simple_gla" / "naive.py"
    if not path.is_file():
        return None
    mod_spec = importlib.util.spec_from_file_location("fla_simple_gla_naive", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def test_recurrent_matches_fla_naive_simple_gla():
    naive = _fla_naive()
    if naive is None:
        pytest.skip("fla-core (and einops) not installed")
    (q, k, v), s0, slope = make_inputs(1, 40, 3, 8, 6, dtype=torch.float32, seed=5)
    g = (-slope).expand(1, 40, 3).contiguous()  # log decay per token and head
    want, s_want = naive.naive_recurrent_simple_gla(q, k, v, g, scale=1.0, initial_state=s0)
    got, s_got = lightning_attention_chunked(q, k, v, s0, slope=slope, block_size=16)
    torch.testing.assert_close(got, want.to(got.dtype), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_got, s_want, atol=1e-5, rtol=1e-5)
    assert math.isfinite(got.abs().max().item())
