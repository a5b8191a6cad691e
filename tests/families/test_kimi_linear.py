"""Kimi Delta Attention's recurrence: the gated delta rule with one log decay per key channel (ops/gated_delta_rule.py).

Checked against transformers 5.23's torch recurrence (`recurrent_kimi_delta_attention`), and the scalar decay of
Gated DeltaNet checked to be the special case (a per-head g broadcast over the key channels)."""

import pytest
import torch

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
    with pytest.raises(NotImplementedError, match="per-channel"):
        gated_delta_rule_chunked(q, k, v, g, beta)


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
