"""The MiniMax family (model_type minimax: lightning attention 7 : 1 softmax attention, MoE, post-norm residuals
scaled by alpha / beta).

The lightning attention op: the block form and the one-step decode against the token-by-token reference (odd T, a
block size that does not divide T, an initial state, gradients) and against transformers' own lightning block loop.
(fla-core's naive simple GLA, g = -slope and scale 1, matched it to 1e-5 when checked by hand; it is not a test
dependency, and the suite does not skip.) Hugging Face interop against
transformers==5.23.0: logits, the save_hf round trip, cached decode against the full forward and against
transformers' cached decode, greedy generate; the partial-RoPE discrepancy (transformers rotates the whole head);
accounting against FlopCounterMode; cache bytes."""

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from harness.cache_bytes import assert_cache_bytes_match
from harness.cached_decode import (
    assert_cached_decode_matches,
    assert_chunked_prefill_matches,
    cached_logits,
    split_steps,
)
from harness.chunked import assert_forms_match, assert_gradients_match, assert_state_carry, assert_steps_match
from harness.flops import assert_flops_match_counter, assert_params_counted
from harness.hf_parity import (
    assert_logits_match,
    assert_round_trip,
    build_hf,
    check_hf_parity,
    convert,
    hf_logits,
    max_diff,
    randomise,
)

from hybridlm import HybridLM, get_config
from hybridlm.interop.hf import checkpoint_total, config_from_hf
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
PUBLISHED = Path(__file__).resolve().parents[2] / "hybridlm" / "resources" / "published-configs.json"


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


def test_block_form_in_head_groups_matches_recurrent():
    """At blocks of 256 the block form takes 4 heads a pass (ops/lightning_attention.py): 6 heads run as 4 + 2."""
    seqs, s0, slope = make_inputs(1, 300, 6, 8, 4, seed=9)
    assert_forms_match(lightning_attention_recurrent, lightning_attention_chunked, seqs, s0, atol=1e-10,
                       ref_kw={"slope": slope}, slope=slope, block_size=256)


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
                           ["q", "k", "v", "state"], atol=1e-10)


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


# -- Hugging Face interop (harness.hf_parity) ------------------------------------------------------------------
# Power-of-2 heads and RoPE on the whole head: where transformers and the published model agree. Blocks of 8 so the
# 23-token inputs cross two blocks and end in a tail; residual scales away from 1 so a wrong mapping shows.
TINY = dict(hidden_size=48, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=24, num_local_experts=5, num_experts_per_tok=2, vocab_size=101, block_size=8,
            layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
            full_attn_alpha_factor=1.3, full_attn_beta_factor=0.8, linear_attn_alpha_factor=1.7,
            linear_attn_beta_factor=1.1, mlp_alpha_factor=1.2, mlp_beta_factor=0.9,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def _hf_model(gain=None, **over):
    torch.manual_seed(0)
    hf = build_hf(transformers.AutoConfig.for_model("minimax", **{**TINY, **over}), seed=None)
    return randomise(hf, matrix_gain=gain)


def _hf_cached_logits(hf, ids, steps, positions=True):
    """transformers' own cached decode over the same pieces (its MiniMaxCache: the lightning state and the KV). Its
    default positions come from cache.get_seq_length(), which reads layer 0's KV: with a lightning layer first (the
    published layout) that is 0 at every step, so RoPE restarts at 0; positions=True passes the true ones."""
    cache, parts = None, []
    with torch.no_grad():
        for a, b in steps:
            kw = {"position_ids": torch.arange(a, b)[None].expand(ids.shape[0], -1)} if positions else {}
            out = hf(input_ids=ids[:, a:b], past_key_values=cache, use_cache=True, **kw)
            cache, parts = out.past_key_values, parts + [out.logits]
    return torch.cat(parts, 1)


@needs_transformers
def test_from_hf_round_trip_cached_decode_and_generate_match_transformers(tmp_path):
    hf = _hf_model()  # seeds the generator: the ids below are fixed too
    ids = torch.randint(0, 101, (2, 23))
    steps = split_steps(23, [11])  # a cached chunk after the prefix, then single tokens
    res = check_hf_parity(hf, tmp_path, ids, atol=1e-5, cached_steps=steps, generate_prompt=ids[:1, :7],
                          max_new_tokens=12)
    cfg = res.ours.config
    assert cfg.layer_mixers == ["L", "L", "A", "L"] and cfg.postnorm
    assert cfg.mixer_residual_scale == {"L": [1.7, 1.1], "A": [1.3, 0.8]} and cfg.ffn_residual_scale == {"M": [1.2, 0.9]}
    assert type(res.back).__name__ == "MiniMaxForCausalLM"
    ours_cached, _ = cached_logits(res.ours, ids, steps)
    assert max_diff(ours_cached, _hf_cached_logits(hf, ids, steps)) <= 1e-5
    # transformers 5.23's default decode positions are wrong here (see _hf_cached_logits): its cached logits then
    # leave its own full forward, ours do not
    assert max_diff(_hf_cached_logits(hf, ids, steps, positions=False), res.ref) > 1e-6


@needs_transformers
def test_partial_rope_follows_the_published_model_not_transformers(tmp_path):
    """rotary_dim < head_dim: transformers rotates the whole head anyway, hybridlm rotates rotary_dim dims as MiniMax's
    code does. The logits then differ from transformers', and equal it once our config rotates the whole head."""
    hf = _hf_model(gain=2.0, rotary_dim=8)  # peaked attention, so where RoPE applies shows in the logits
    ids = torch.randint(0, 101, (1, 23))
    ours, ref = convert(hf, tmp_path / "hf", ids)
    attn = ours.config.mixers["A"]
    assert attn.rope_dim == 8 and attn.head_dim == 16
    assert max_diff(hf_logits(ours, ids), ref) > 1e-2  # logits up to ~7 at this gain: 1e-4 is float32's noise
    full = HybridLM(ours.config.replace(mixers={**ours.config.to_dict()["mixers"],
                                                "A": {**ours.config.to_dict()["mixers"]["A"], "rope_fraction": 1.0}}))
    full.load_state_dict(ours.state_dict())
    assert_logits_match(full.eval(), ids, ref, atol=1e-4)
    ours.save_hf(tmp_path / "ours")  # the round trip keeps rotary_dim, which transformers stores and ignores
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["rotary_dim"] == 8
    assert HybridLM.from_hf(tmp_path / "ours").config.mixers["A"].rope_dim == 8


@needs_transformers
def test_transformers_slopes_differ_from_minimax_for_non_power_of_2_heads():
    """MiniMax interpolates ALiBi's slopes for 6 heads; transformers uses 2^(-8 (h+1) / 6). For 4 heads they agree
    (up to transformers' 1e-5 in the depth factor's denominator)."""
    mm = pytest.importorskip("transformers.models.minimax.modeling_minimax")

    def hf_slopes(heads):
        cfg = transformers.MiniMaxConfig(hidden_size=8 * heads, num_attention_heads=heads, head_dim=8,
                                         num_hidden_layers=3, layer_types=["linear_attention"] * 3)
        return mm.MiniMaxLightningAttention(cfg, layer_idx=1).slope_rate.view(heads)

    torch.testing.assert_close(hf_slopes(4), lightning_slopes(4, 1, 3), rtol=1e-5, atol=0)
    assert (hf_slopes(6) - lightning_slopes(6, 1, 3)).abs().max() > 1e-2
    torch.testing.assert_close(lightning_slopes(6, 1, 3),
                               torch.tensor(alibi_slopes(4) + alibi_slopes(8)[0:4:2]) * (0.5 + 1e-5))


@needs_transformers
def test_non_power_of_2_heads_match_transformers_given_minimax_slopes(tmp_path):
    """6 heads: with MiniMax's interpolated slopes (and depth factor) put into transformers' decay buffers, the two
    models agree; the slopes are the only difference."""
    hf = _hf_model(num_attention_heads=6, num_key_value_heads=2, head_dim=8)
    for i, layer in enumerate(hf.model.layers):
        attn = layer.self_attn
        if hasattr(attn, "slope_rate"):
            rate = lightning_slopes(6, i, 4).view(6, 1, 1)
            for name, value in zip(("slope_rate", "query_decay", "key_decay", "diagonal_decay"),
                                   (rate, *attn.decay_factors(rate))):
                getattr(attn, name).copy_(value)
    ids = torch.randint(0, 101, (1, 23))
    ours, ref = convert(hf, tmp_path / "hf", ids)
    assert ours.config.mixers["L"].num_heads == 6
    assert_logits_match(ours, ids, ref, atol=1e-5)


@needs_transformers
def test_tiny_minimax_saved_loads_in_transformers(tmp_path):
    """Our preset written by save_hf (tied head, alpha 2, blocks of 64, 70 tokens: a block and a tail) gives
    transformers' MiniMaxForCausalLM our logits, once RoPE covers the whole head (where the two agree)."""
    cfg = get_config("tiny-minimax")
    mixers = cfg.to_dict()["mixers"]
    mixers["A"]["rope_fraction"] = 1.0
    torch.manual_seed(0)
    model = HybridLM(cfg.replace(mixers=mixers)).eval()
    ids = torch.randint(0, 256, (1, 70))
    back = assert_round_trip(model, tmp_path, ids, hf_logits(model, ids), atol=1e-5)
    assert back.config.tie_word_embeddings and back.config.block_size == 64 and back.config.mlp_alpha_factor == 2.0


@needs_transformers
def test_save_refuses_what_the_format_cannot_hold(tmp_path):
    cfg = get_config("tiny-minimax")
    with pytest.raises(ValueError, match="postnorm must be true"):
        HybridLM(cfg.replace(postnorm=False), device="meta").save_hf(tmp_path / "a")
    bad = cfg.to_dict()["mixers"]
    bad["A"]["qk_norm"] = True
    with pytest.raises(ValueError, match="attention must be plain GQA"):
        HybridLM(cfg.replace(mixers=bad), device="meta").save_hf(tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- the presets, accounting, cache --------------------------------------------------------------------------
def test_minimax_m1_reproduces_the_published_config_and_total():
    published = json.loads(PUBLISHED.read_text())["models"]
    fields = next(m for m in published if "MiniMax-M1" in m["hf_repo"])["fields"]
    cfg = get_config("minimax-text-01")
    assert cfg.name == "minimax-m1"
    lin, att, moe = cfg.mixers["L"], cfg.mixers["A"], cfg.ffns["M"]
    assert [1 if x == "A" else 0 for x in cfg.layer_mixers] == fields["attn_type_list"]
    assert (cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.max_seq_len) == (
        fields["vocab_size"], fields["hidden_size"], fields["num_hidden_layers"], fields["max_position_embeddings"])
    assert (att.num_heads, att.num_kv_heads, att.head_dim, att.rope_dim, att.rope_theta) == (
        fields["num_attention_heads"], fields["num_key_value_heads"], fields["head_dim"], fields["rotary_dim"],
        fields["rope_theta"])
    assert (lin.num_heads, lin.head_dim, lin.block_size) == (64, 128, 256)
    assert (moe.num_experts, moe.top_k, moe.expert_size, moe.shared_size) == (
        fields["num_local_experts"], fields["num_experts_per_tok"], fields["intermediate_size"],
        fields["shared_intermediate_size"])
    assert cfg.postnorm == fields["postnorm"] and cfg.norm_eps == fields["rms_norm_eps"]
    for scale in (cfg.mixer_residual_scale["L"], cfg.mixer_residual_scale["A"], cfg.ffn_residual_scale["M"]):
        assert scale == [pytest.approx(fields["layernorm_mlp_alpha"], rel=1e-15), 1.0]
    model = HybridLM(cfg, device="meta")
    assert model.num_params() == model.num_params_analytic() == 456_089_655_296
    assert checkpoint_total(cfg) == 456_089_655_296  # the checkpoint stores parameters only
    assert round(model.active_params(embedding=False, head=False) / 1e9, 1) == 45.9  # the model card's active


def test_original_config_field_names_are_read():
    """MiniMax's own config.json spellings (attn_type_list, layernorm_*_alpha, rotary_dim, rope_theta) give the
    preset's config."""
    published = json.loads(PUBLISHED.read_text())["models"]
    fields = next(m for m in published if "MiniMax-M1" in m["hf_repo"])["fields"]
    got = config_from_hf(fields)
    want = get_config("minimax-m1")
    for name in ("mixer_pattern", "mixers", "ffns", "postnorm", "vocab_size", "d_model", "norm_eps", "max_seq_len"):
        assert got.to_dict()[name] == want.to_dict()[name], name
    for name in ("mixer_residual_scale", "ffn_residual_scale"):  # the file's alpha is (2 x 80)^(1/4) printed
        a, b = getattr(got, name), getattr(want, name)
        assert a.keys() == b.keys() and all(math.isclose(x, y, rel_tol=1e-15) for k in a for x, y in zip(a[k], b[k]))


def test_tiny_minimax_accounting_and_cache():
    model = HybridLM(get_config("tiny-minimax")).eval()
    assert_params_counted(b.mixer for b in model.layers)
    assert_flops_match_counter(model, 256, tokens=70, decode_at=70)  # 70 = a full 64-block and a tail of 6
    cache = assert_cache_bytes_match(model, 256, context=70, chunk=32, decode_steps=2, total=True)
    assert cache.memory_by_kind()["recurrent"] == 2 * 6 * 4 * 32 * 32 * 4  # 6 lightning layers' fp32 states
    ids = torch.randint(0, 256, (1, 80))
    assert_cached_decode_matches(model, ids, split_steps(80, [64, 77]), atol=1e-5)
    assert_chunked_prefill_matches(model, ids, chunk=24)


def test_lightning_needs_its_layer_and_the_residual_scales_are_checked():
    model = HybridLM(get_config("tiny-minimax"))
    with pytest.raises(ValueError, match="needs its layer index"):
        model.layers[0].mixer(torch.zeros(1, 3, 128))
    cfg = get_config("tiny-minimax")
    with pytest.raises(ValueError, match=r"mixer_residual_scale\['X'\].*names no mixer"):
        cfg.replace(mixer_residual_scale={"X": [1.0, 1.0]})
    with pytest.raises(ValueError, match=r"ffn_residual_scale\['M'\].*two finite numbers"):
        cfg.replace(ffn_residual_scale={"M": [1.0]})
    with pytest.raises(ValueError, match="residual_multiplier.*must be 1.0 with postnorm"):
        cfg.replace(residual_multiplier=0.5)


def test_the_cpu_tile_does_not_change_the_output():
    """A checkpoint's block_size of 256 runs in 64-token tiles (Lightning.CPU_BLOCK): the same outputs as the op at
    256 and at the tile, and minimax-m1 keeps its published 256 in the config."""
    from hybridlm.layers.mixers.lightning import Lightning, LightningConfig
    assert HybridLM(get_config("minimax-m1"), device="meta").layers[0].mixer.block == 64
    assert get_config("minimax-m1").mixers["L"].block_size == 256
    (q, k, v), s0, slope = make_inputs(1, 300, 2, 8, 8, dtype=torch.float64, seed=7)
    o256, s256 = lightning_attention_chunked(q, k, v, s0, slope=slope, block_size=256)
    o64, s64 = lightning_attention_chunked(q, k, v, s0, slope=slope, block_size=64)
    torch.testing.assert_close(o64, o256, atol=1e-10, rtol=0)
    torch.testing.assert_close(s64, s256, atol=1e-10, rtol=0)
    assert Lightning(LightningConfig(num_heads=2, head_dim=8, block_size=32), 16).block == 32  # a smaller block stays
