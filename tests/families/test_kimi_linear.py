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


@pytest.mark.parametrize("strength", [1.0, 8.0])  # sub-blocks factorised (decay <= 40 each) / elementwise
def test_channel_chunked_gradients_match_recurrent(strength):
    seqs, s0 = _channel_inputs(1, 37, 2, 8, 6, strength, seed=3)
    assert_gradients_match(gated_delta_rule_recurrent, gated_delta_rule_chunked, seqs, s0,
                           ["q", "k", "v", "g", "beta", "state"], atol=1e-9, rtol=1e-9, chunk_size=32, block_chunks=1)


def test_channel_chunked_one_sudden_forgetting():
    """One token that forgets everything (g = -1000 in every channel) in the middle of a chunk that otherwise
    decays slowly: the sub-block holding it takes the elementwise path, and nothing overflows."""
    seqs, s0 = _channel_inputs(1, 96, 2, 16, 8, 0.2, seed=4)
    q, k, v, g, beta = seqs
    g = g.clone()
    g[:, 40] = -1000.0
    o, _ = assert_forms_match(gated_delta_rule_recurrent, gated_delta_rule_chunked, (q, k, v, g, beta), s0,
                              atol=1e-10, rtol=1e-10)
    # nothing before the forgetting token reaches the outputs after it through the state
    o_cut, _ = gated_delta_rule_recurrent(*(x[:, 40:] for x in (q, k, v, g, beta)), initial_state=s0)
    torch.testing.assert_close(o[:, 40:], o_cut, atol=1e-10, rtol=1e-10)


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


# -- the model against transformers' KimiLinearForCausalLM (harness.hf_parity) -----------------------------------
V = 101
# Odd sizes on purpose: 5 layers (KKKL then one more KDA), 3 KDA heads x 16, 5 experts; the last MLA slot is not
# where transformers' default layer_types would put it.
TINY = {"vocab_size": V, "hidden_size": 48, "intermediate_size": 72, "moe_intermediate_size": 24,
        "num_hidden_layers": 5, "num_attention_heads": 3, "num_key_value_heads": 3, "kv_lora_rank": 16,
        "q_lora_rank": None, "qk_rope_head_dim": 8, "qk_nope_head_dim": 12, "v_head_dim": 10, "num_experts": 5,
        "num_experts_per_token": 2, "num_shared_experts": 1, "first_k_dense_replace": 1,
        "routed_scaling_factor": 2.446, "pad_token_id": None, "bos_token_id": 0, "eos_token_id": 1,
        "linear_attn_config": {"num_heads": 3, "head_dim": 16, "short_conv_kernel_size": 4,
                               "kda_layers": [1, 2, 3, 5], "full_attn_layers": [4]}}


def _hf_model():
    import transformers
    from harness.hf_parity import build_hf, randomise

    hf = build_hf(transformers.KimiLinearConfig(**TINY), seed=0)
    # transformers initialises the norms to 1, the routing bias to 0 and A_log / dt_bias to fixed ranges
    hf = randomise(hf, norm_names=("norm", "A_log", "dt_bias"))
    with torch.no_grad():
        for name, buf in hf.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(0.05 * torch.randn_like(buf))
    return hf


def test_matches_transformers_round_trip_cached_decode_and_generate(tmp_path):
    from harness.cached_decode import split_steps
    from harness.hf_parity import check_hf_parity

    hf = _hf_model()
    ids = torch.randint(0, V, (2, 77))  # > one 64-token KDA chunk, not a multiple of it
    res = check_hf_parity(hf, tmp_path, ids, atol=1e-5, cached_steps=split_steps(77, [9, 70]),
                          generate_prompt=ids[:1, :7], max_new_tokens=12)
    cfg = res.ours.config
    assert cfg.layer_mixers == list("KKKLK") and cfg.layer_ffns == list("DMMMM")
    assert type(res.back).__name__ == "KimiLinearForCausalLM"
    assert res.back.config.layer_types == hf.config.layer_types
    # the routing bias survives the round trip in float32
    got = res.ours.layers[1].ffn.expert_bias
    assert got.dtype == torch.float32 and torch.equal(got, hf.model.layers[1].mlp.gate.e_score_correction_bias)


def test_cached_decode_equals_transformers_cached_decode(tmp_path):
    """Both caches, fed the same pieces (a 9-token prefill, then single tokens), give the same logits."""
    from harness.cached_decode import cached_logits, split_steps
    from harness.hf_parity import convert

    hf = _hf_model()
    ours = convert(hf, tmp_path)
    ids = torch.randint(0, V, (1, 16))
    steps = split_steps(16, [9])
    got, cache = cached_logits(ours, ids, steps)
    parts, past = [], None
    with torch.no_grad():
        for a, b in steps:
            out = hf(input_ids=ids[:, a:b], past_key_values=past, use_cache=True)
            parts.append(out.logits)
            past = out.past_key_values
    torch.testing.assert_close(got, torch.cat(parts, 1), atol=1e-5, rtol=1e-5)
    assert cache.layers[0].state.dtype == torch.float32 and cache.layers[0].state.shape == (1, 3, 16, 16)


def test_published_layout_comes_from_the_one_indexed_lists():
    """The checkpoint's config.json has no layer_types: the 1-indexed full_attn_layers give KKKL x 6 then KKL, not
    transformers' default (full attention at 0-indexed 4, 8, ...); a layer_types that disagrees is refused."""
    import json
    from pathlib import Path

    from hybridlm import get_config
    from hybridlm.interop.hf.kimi_linear import config_from_hf, config_to_hf

    published = Path(__file__).resolve().parents[2] / "hybridlm" / "resources" / "published-configs.json"
    fields = next(m["fields"] for m in json.loads(published.read_text())["models"]
                  if m["fields"].get("model_type") == "kimi_linear")
    cfg = config_from_hf(fields)
    assert [i for i, x in enumerate(cfg.layer_mixers) if x == "L"] == [3, 7, 11, 15, 19, 23, 26]
    assert cfg.layer_ffns == ["D"] + ["M"] * 26
    assert cfg.mixers == get_config("kimi-linear-48b-a3b").mixers and cfg.ffns == get_config("kimi-linear-48b-a3b").ffns
    assert config_to_hf(cfg)["linear_attn_config"]["full_attn_layers"] == fields["linear_attn_config"]["full_attn_layers"]
    default = ["full_attention" if i and i % 4 == 0 else "linear_attention" for i in range(27)]
    with pytest.raises(ValueError, match="layer_types disagrees with linear_attn_config.full_attn_layers"):
        config_from_hf({**fields, "layer_types": default})
    with pytest.raises(ValueError, match="mla_use_nope"):
        config_from_hf({**fields, "mla_use_nope": False})


def test_full_scale_preset_reproduces_the_published_total():
    """Kimi-Linear-48B-A3B: HF safetensors total 49,122,681,728 = parameters + 26 x 256 selection biases; the
    caveats' 48.368B without embeddings and 2.729B / 3.484B active (without / with embedding and head)."""
    from hybridlm import HybridLM, get_config
    from hybridlm.interop.hf import checkpoint_total

    cfg = get_config("kimi-linear-48b-a3b")
    m = HybridLM(cfg, device="meta")
    assert checkpoint_total(cfg) == 49_122_681_728
    assert m.num_params() == 49_122_681_728 - 26 * 256
    assert round((m.num_params() - 2 * 163_840 * 2304) / 1e9, 3) == 48.368
    assert round(m.active_params(embedding=False, head=False) / 1e9, 3) == 2.729
    assert round(m.active_params() / 1e9, 3) == 3.484
    assert m.num_params() == sum(p.numel() for p in m.parameters())


def test_tiny_preset_accounting_cache_and_decode(tmp_path):
    """tiny-kimi-linear: comparable active parameters to tiny-hybrid; cached decode (chunks then steps) equals its
    full forward; the cache holds what cache_bytes says; the FLOP accounting equals torch's counter; save_hf then
    from_hf gives the same logits."""
    from harness.cache_bytes import assert_cache_bytes_match
    from harness.cached_decode import assert_cached_decode_matches, split_steps
    from harness.flops import assert_flops_match_counter, assert_params_counted

    from hybridlm import HybridLM, get_config
    from hybridlm.analysis.compare import default_presets
    from hybridlm.analysis.families import full_scale_of, lab_of

    assert "tiny-kimi-linear" in default_presets()  # joins compare --quick / --budget large by its name
    assert (lab_of("tiny-kimi-linear"), full_scale_of("tiny-kimi-linear")) == ("Kimi (Moonshot AI)",
                                                                             "kimi-linear-48b-a3b")
    torch.manual_seed(0)
    m = HybridLM(get_config("tiny-kimi-linear")).eval()
    base = HybridLM(get_config("tiny-hybrid"), device="meta")
    assert abs(m.active_params() / base.active_params() - 1) < 0.2
    assert m.num_params() == m.num_params_analytic()
    assert_params_counted([b.mixer for b in m.layers])
    assert_cached_decode_matches(m, torch.randint(0, 256, (2, 29)), split_steps(29, [11, 20]))
    assert_cache_bytes_match(m, 256, 37, batch=2, dtype_bytes=4, chunk=16, decode_steps=2, total=True)
    assert_flops_match_counter(m, 256, tokens=64, decode_at=64)  # one whole 64-token KDA chunk
    m.save_hf(tmp_path)
    back = HybridLM.from_hf(tmp_path).eval()
    ids = torch.randint(0, 256, (1, 19))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, m(ids).logits)
