"""Gated delta rule ops: the chunked and single-step forms against the token-by-token reference,
against transformers' torch implementation, and gradients of the chunked form."""

import pytest
import torch
import torch.nn.functional as F

from hybridlm.ops.gated_delta_rule import (
    gated_delta_rule,
    gated_delta_rule_chunked,
    gated_delta_rule_recurrent,
    gated_delta_rule_step,
)


def make_inputs(B, T, Hk, Hv, K, V, dtype=torch.float64, seed=0, with_state=True):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, Hk, K, generator=gen, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(B, T, Hk, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, T, Hv, V, generator=gen, dtype=dtype)
    g = F.logsigmoid(torch.randn(B, T, Hv, generator=gen, dtype=dtype))
    beta = torch.sigmoid(torch.randn(B, T, Hv, generator=gen, dtype=dtype))
    state = torch.randn(B, Hv, K, V, generator=gen, dtype=dtype) if with_state else None
    return q, k, v, g, beta, state


@pytest.mark.parametrize(
    "T,chunk,block_chunks",
    [(63, 16, 8), (75, 32, 2), (130, 64, 8), (130, 32, 1), (1, 64, 8), (5, 16, 8), (64, 64, 1)],
)
def test_chunked_matches_recurrent_float64(T, chunk, block_chunks):
    q, k, v, g, beta, s0 = make_inputs(2, T, 2, 4, 12, 20, seed=T)
    o_ref, s_ref = gated_delta_rule_recurrent(q, k, v, g, beta, initial_state=s0)
    o, s = gated_delta_rule_chunked(q, k, v, g, beta, initial_state=s0, chunk_size=chunk, block_chunks=block_chunks)
    assert o.shape == (2, T, 4, 20) and o.dtype == torch.float64
    assert s.shape == (2, 4, 12, 20)
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-10)


def test_chunked_strong_decay_and_custom_scale():
    # very negative log decays: exp(c_i - c_j) must neither overflow nor produce NaNs
    q, k, v, g, beta, s0 = make_inputs(1, 70, 1, 3, 8, 8, seed=1)
    g = g * 40.0
    o_ref, s_ref = gated_delta_rule_recurrent(q, k, v, g, beta, initial_state=s0, scale=0.3)
    o, s = gated_delta_rule_chunked(q, k, v, g, beta, initial_state=s0, scale=0.3, chunk_size=32)
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o, o_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=1e-10)


def test_chunked_float32_matches_transformers():
    qwen = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    q, k, v, g, beta, s0 = make_inputs(1, 100, 2, 4, 32, 16, dtype=torch.float32, seed=3)
    o_hf, s_hf = qwen.torch_chunk_gated_delta_rule(
        q, k, v, g, beta, chunk_size=64, initial_state=s0, output_final_state=True, use_qk_l2norm_in_kernel=False
    )
    o, s = gated_delta_rule_chunked(q, k, v, g, beta, initial_state=s0)
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    torch.testing.assert_close(o, o_hf, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, s_hf, rtol=1e-4, atol=1e-4)


def test_step_matches_recurrent():
    q, k, v, g, beta, s0 = make_inputs(2, 9, 2, 6, 8, 5, seed=4)
    o_ref, s_ref = gated_delta_rule_recurrent(q, k, v, g, beta, initial_state=s0)
    state, outs = s0, []
    for t in range(q.shape[1]):
        o_t, state = gated_delta_rule_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], state)
        outs.append(o_t)
    torch.testing.assert_close(torch.stack(outs, dim=1), o_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, s_ref, rtol=0, atol=1e-12)
    assert s0.abs().sum() > 0 and not torch.equal(state, s0)  # the caller's state is not updated in place


def test_chunked_state_carry_equals_whole():
    q, k, v, g, beta, s0 = make_inputs(1, 150, 2, 4, 16, 8, seed=5)
    o_all, s_all = gated_delta_rule_chunked(q, k, v, g, beta, initial_state=s0, chunk_size=32)
    t1 = 47
    o1, s1 = gated_delta_rule_chunked(q[:, :t1], k[:, :t1], v[:, :t1], g[:, :t1], beta[:, :t1], s0, chunk_size=32)
    o2, s2 = gated_delta_rule_chunked(q[:, t1:], k[:, t1:], v[:, t1:], g[:, t1:], beta[:, t1:], s1, chunk_size=32)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o_all, rtol=0, atol=1e-10)
    torch.testing.assert_close(s2, s_all, rtol=0, atol=1e-10)


def test_zero_initial_state_default_and_float32_io():
    q, k, v, g, beta, _ = make_inputs(1, 20, 1, 2, 8, 8, dtype=torch.float32, seed=6, with_state=False)
    o, s = gated_delta_rule_chunked(q, k, v, g, beta, chunk_size=16)
    o_ref, s_ref = gated_delta_rule_recurrent(q, k, v, g, beta)
    torch.testing.assert_close(o, o_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-5)
    o_d, s_d = gated_delta_rule(q, k, v, g, beta, chunk_size=16)  # CPU dispatch = chunked form
    torch.testing.assert_close(o_d, o, rtol=0, atol=0)
    torch.testing.assert_close(s_d, s, rtol=0, atol=0)
    bf = gated_delta_rule_chunked(q.bfloat16(), k.bfloat16(), v.bfloat16(), g, beta, chunk_size=16)
    assert bf[0].dtype == torch.bfloat16 and bf[1].dtype == torch.float32


def test_chunked_gradients_match_recurrent():
    q, k, v, g, beta, s0 = make_inputs(1, 21, 1, 2, 4, 3, seed=7)
    leaves = [x.clone().requires_grad_() for x in (q, k, v, g, beta, s0)]
    w_o = torch.randn(1, 21, 2, 3, dtype=torch.float64)
    w_s = torch.randn(1, 2, 4, 3, dtype=torch.float64)

    def grads(fn, **kw):
        o, s = fn(*leaves, **kw)
        return torch.autograd.grad((o * w_o).sum() + (s * w_s).sum(), leaves)

    g_ref = grads(gated_delta_rule_recurrent)
    g_chk = grads(gated_delta_rule_chunked, chunk_size=8, block_chunks=2)
    for name, a, b in zip("q k v g beta state".split(), g_chk, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=name)
