"""Kimi Linear: Kimi Delta Attention (the gated delta rule with one log decay per key channel, ops/gated_delta_rule.py,
and the `kda` mixer), NoPE MLA, and the kimi_linear Hugging Face format.

The op's recurrence is checked against transformers 5.23's torch recurrence (`recurrent_kimi_delta_attention`), its
chunked form against the recurrence (odd T, chunks that do not divide T, decays with no lower bound, gradients) and
against transformers' torch chunked form, and the scalar decay of Gated DeltaNet checked to be the special case (a
per-head g broadcast over the key channels)."""

import pytest
import torch
import torch.nn.functional as F
from harness.chunked import assert_forms_match, assert_gradients_match, assert_state_carry

from hybridlm.ops.gated_delta_rule import (
    gated_delta_rule_chunked,
    gated_delta_rule_recurrent,
    gated_delta_rule_step,
)

B, T, H, K, V = 2, 19, 3, 12, 10  # odd sizes on purpose


def _inputs(seed: int = 0, strong: bool = False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    # per-channel log decays, with no lower bound (some channels forget almost everything per token)
    g = -torch.rand(B, T, H, K, generator=gen) * (8.0 if strong else 1.0)
    beta = torch.rand(B, T, H, generator=gen)
    s0 = torch.randn(B, H, K, V, generator=gen)
    return q, k, v, g, beta, s0


def test_channel_decay_matches_transformers_recurrence():
    from transformers.models.kimi_linear.modeling_kimi_linear import recurrent_kimi_delta_attention

    q, k, v, g, beta, s0 = _inputs(strong=True)
    o, S = gated_delta_rule_recurrent(q, k, v, g, beta, initial_state=s0)
    o_hf, S_hf = recurrent_kimi_delta_attention(q, k, v, g, beta, initial_state=s0.clone(), output_final_state=True)
    torch.testing.assert_close(o, o_hf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(S, S_hf, atol=1e-5, rtol=1e-5)


def test_channel_decay_step_equals_recurrence():
    q, k, v, g, beta, s0 = _inputs(seed=1)
    o_ref, S_ref = gated_delta_rule_recurrent(q, k, v, g, beta, initial_state=s0)
    S, outs = s0, []
    for t in range(T):
        o, S = gated_delta_rule_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], S)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), o_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(S, S_ref, atol=1e-5, rtol=1e-5)


def test_scalar_decay_is_the_special_case():
    """Gated DeltaNet's one decay per head equals the per-channel form with that decay on every channel."""
    q, k, v, g, beta, s0 = _inputs(seed=2)
    g_head = g[..., 0]  # [B,T,H]
    g_chan = g_head[..., None].expand(B, T, H, K)
    o_s, S_s = gated_delta_rule_recurrent(q, k, v, g_head, beta, initial_state=s0)
    o_c, S_c = gated_delta_rule_recurrent(q, k, v, g_chan, beta, initial_state=s0)
    torch.testing.assert_close(o_c, o_s, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(S_c, S_s, atol=1e-6, rtol=1e-6)
    # and the scalar chunked form (Gated DeltaNet's fast path) agrees with both
    o_k, S_k = gated_delta_rule_chunked(q, k, v, g_head, beta, initial_state=s0, chunk_size=8)
    torch.testing.assert_close(o_k, o_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(S_k, S_c, atol=1e-5, rtol=1e-5)
    o1, S1 = gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], g_head[:, 0], beta[:, 0], s0)
    o2, S2 = gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], g_chan[:, 0], beta[:, 0], s0)
    torch.testing.assert_close(o2, o1, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(S2, S1, atol=1e-6, rtol=1e-6)


def test_bad_decay_shape_names_g():
    q, k, v, g, beta, _ = _inputs()
    with pytest.raises(ValueError, match="g has shape"):
        gated_delta_rule_recurrent(q, k, v, g[..., :5], beta)


def _channel_inputs(B, T, H, K, V, strength, seed=0, dtype=torch.float64, hk=None):
    """(q, k, v, g, beta) with per-channel log decays in [-strength, 0), then an initial state."""
    gen = torch.Generator().manual_seed(seed)
    hk = hk or H
    q = F.normalize(torch.randn(B, T, hk, K, generator=gen, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(B, T, hk, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    g = -torch.rand(B, T, H, K, generator=gen, dtype=dtype) * strength
    beta = torch.rand(B, T, H, generator=gen, dtype=dtype)
    return (q, k, v, g, beta), torch.randn(B, H, K, V, generator=gen, dtype=dtype)


# (T, chunk, decay strength): odd T, chunks that do not divide T, chunk sizes with 1, 2 and 4 sub-blocks, and
# decays of up to 8, 40 and 200 per token (a chunk of 64 then decays by thousands: any exp(-c) factor overflows)
@pytest.mark.parametrize(("T", "chunk", "strength"), [(19, 8, 1.0), (77, 64, 8.0), (101, 32, 40.0), (130, 64, 200.0),
                                                      (45, 24, 8.0)])
def test_channel_chunked_matches_recurrent(T, chunk, strength):
    seqs, s0 = _channel_inputs(2, T, 3, 12, 10, strength, seed=T)
    assert_forms_match(gated_delta_rule_recurrent, gated_delta_rule_chunked, seqs, s0, atol=1e-10, rtol=1e-10,
                       chunk_size=chunk)
    assert_forms_match(gated_delta_rule_recurrent, gated_delta_rule_chunked, seqs, None, atol=1e-10, rtol=1e-10,
                       chunk_size=chunk, block_chunks=1)  # zero start state, one chunk per block


def test_channel_chunked_float32_grouped_heads_and_state_carry():
    """float32 against the float64 recurrence with strong decays; grouped q/k heads (Hv = 2 Hk); and the state
    carried across two calls."""
    seqs, s0 = _channel_inputs(1, 150, 4, 16, 8, 20.0, seed=5, hk=2)
    want, S_want = gated_delta_rule_recurrent(*seqs, initial_state=s0)
    got, S = gated_delta_rule_chunked(*(x.float() for x in seqs), initial_state=s0.float())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(S.double(), S_want, atol=2e-5, rtol=1e-4)
    assert_state_carry(gated_delta_rule_chunked, seqs, s0, split=70, atol=1e-10, chunk_size=32)


def test_channel_chunked_gradients_match_recurrent():
    seqs, s0 = _channel_inputs(1, 37, 2, 8, 6, 8.0, seed=3)
    assert_gradients_match(gated_delta_rule_recurrent, gated_delta_rule_chunked, seqs, s0,
                           "q k v g beta state".split(), atol=1e-9, rtol=1e-9, chunk_size=32, block_chunks=1)


def test_channel_chunked_matches_transformers_chunked():
    from transformers.models.kimi_linear.modeling_kimi_linear import chunk_kimi_delta_attention

    (q, k, v, g, beta), s0 = _channel_inputs(2, 70, 3, 16, 12, 1.0, seed=9, dtype=torch.float32)
    o_hf, S_hf = chunk_kimi_delta_attention(q, k, v, g, beta, initial_state=s0.clone(), output_final_state=True)
    o, S = gated_delta_rule_chunked(q, k, v, g, beta, initial_state=s0)
    torch.testing.assert_close(o, o_hf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(S, S_hf, atol=1e-5, rtol=1e-5)


def test_mla_without_rope_matches_kimi_linear_attention():
    """Kimi Linear's full-attention layers: MLA with use_rope=False against transformers' KimiLinearAttention."""
    from transformers import KimiLinearConfig
    from transformers.models.kimi_linear.modeling_kimi_linear import KimiLinearAttention

    from hybridlm.layers.mixers.mla import MLA, MLAConfig

    hf_cfg = KimiLinearConfig(hidden_size=48, num_attention_heads=3, num_key_value_heads=3, kv_lora_rank=16,
                              q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=12, v_head_dim=10,
                              num_hidden_layers=1)
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    ref = KimiLinearAttention(hf_cfg, layer_idx=0).eval()
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ours = MLA(MLAConfig(num_heads=3, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=12, qk_rope_head_dim=8,
                         v_head_dim=10, use_rope=False), d_model=48)
    ours.load_state_dict({n: p.detach() for n, p in ref.state_dict().items()})
    x = torch.randn(2, 13, 48)
    mask = torch.full((13, 13), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        expected, _ = ref(x, attention_mask=mask)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x, pos0=7), expected, atol=1e-5, rtol=1e-5)  # no position enters
