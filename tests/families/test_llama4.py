"""The Llama 4 family (issue 5).

Llama 4: chunked local attention with interleaved RoPE (llama3 scaling) and weightless QK-norm, global
NoPE layers with attention-temperature tuning, top-1 sigmoid routing that scales the expert input, one shared
expert, dense/MoE interleaving. Oracle: transformers==5.23.0 Llama4ForCausalLM with random weights, both ways;
cached decode against the full forward; accounting against direct counts; presets against published totals."""

import json

import pytest
import torch
from harness.cache_bytes import assert_cache_bytes_match
from harness.cached_decode import assert_cached_decode_matches, split_steps
from harness.flops import assert_flops_match_counter, assert_params_counted
from harness.hf_parity import assert_logits_match, assert_round_trip, convert, hf_logits, max_diff

from hybridlm import AttentionConfig, HybridLM, ModelConfig, MoEConfig, get_config
from hybridlm.cli import main
from hybridlm.layers.ffn.dense import DenseFFNConfig
from hybridlm.core.rope import llama3_inv_freq

transformers = pytest.importorskip("transformers")

SCOUT_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 16.0, "low_freq_factor": 1.0,
              "high_freq_factor": 1.0, "original_max_position_embeddings": 8192}
# Odd sizes on purpose; 5 layers (RRRN + one more R), chunk 8 and floor_scale 4 so that T = 41 crosses five chunk
# boundaries and ten temperature steps. step 1 = Scout's family (MoE everywhere, QK-norm, llama3 RoPE scaling),
# step 2 = Maverick's (dense/MoE alternating, no QK-norm, no RoPE scaling).
TEXT = {"hidden_size": 44, "num_hidden_layers": 5, "num_attention_heads": 6, "num_key_value_heads": 2,
        "head_dim": 10, "num_local_experts": 3, "num_experts_per_tok": 1, "intermediate_size": 24,
        "intermediate_size_mlp": 36, "vocab_size": 97, "attention_chunk_size": 8, "floor_scale": 4}
FAMILY = {1: {"interleave_moe_layer_step": 1, "use_qk_norm": True, "rope_parameters": SCOUT_ROPE},
          2: {"interleave_moe_layer_step": 2, "use_qk_norm": False,
              "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}}
VISION = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
          "image_size": 28, "patch_size": 14, "vision_output_dim": 16, "projector_input_dim": 16,
          "projector_output_dim": 16}


def _randomise(model):
    with torch.no_grad():  # HF initialises norms to 1 and weights at std 0.02: make every mechanism visible
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    return model.eval()


def _hf_model(step: int):
    return _randomise(transformers.Llama4ForCausalLM(transformers.Llama4TextConfig(**TEXT, **FAMILY[step])))


@pytest.mark.parametrize("step", [1, 2])
def test_from_hf_and_back_match_transformers_and_cache(step, tmp_path):
    ids = torch.randint(0, 97, (2, 41))
    ours, ref = convert(_hf_model(step), tmp_path / "hf", ids)
    cfg = ours.config
    assert cfg.layer_mixers == list("RRRNR") and cfg.mixers["R"].chunk_size == 8
    assert cfg.layer_ffns == (list("MMMMM") if step == 1 else list("DMDMD"))
    assert_logits_match(ours, ids, ref, atol=1e-4)

    # The test sees each mechanism: switching one off moves the logits far beyond the tolerance.
    for cfg_obj, field, off in ((cfg.mixers["R"], "chunk_size", None), (cfg.mixers["N"], "temperature_tuning", False),
                                (cfg.ffns["M"], "scale_input", False)):
        on = getattr(cfg_obj, field)
        setattr(cfg_obj, field, off)
        try:
            assert max_diff(hf_logits(ours, ids), ref) > 1e-2, field
        finally:
            setattr(cfg_obj, field, on)

    # Cached decode equals the full forward past chunk boundaries and temperature steps.
    cache = assert_cached_decode_matches(ours, ids, split_steps(41, [11]), ref=ref)
    assert cache.layers[0].k.shape[2] == 41 % 8 and cache.layers[3].k.shape[2] == 41  # chunk bounded, NoPE full

    back = assert_round_trip(ours, tmp_path / "ours", ids, ref, atol=1e-4)
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["moe_layers"] == ([0, 1, 2, 3, 4] if step == 1 else [1, 3])
    assert type(back).__name__ == "Llama4ForCausalLM"


def test_multimodal_checkpoint_loads_its_language_model(tmp_path):
    cfg = transformers.Llama4Config(text_config={**TEXT, **FAMILY[2], "num_hidden_layers": 4}, vision_config=VISION)
    hf = _randomise(transformers.Llama4ForConditionalGeneration(cfg))
    ids = torch.randint(0, 97, (1, 19))
    ours = convert(hf, tmp_path)
    assert_logits_match(ours, ids, hf_logits(hf.language_model, ids), atol=1e-4)


def test_bad_checkpoint_and_unwritable_config(tmp_path):
    from safetensors.torch import load_file, save_file

    from hybridlm.interop.hf import save as save_hf
    _hf_model(2).save_pretrained(tmp_path / "a")
    tensors = load_file(tmp_path / "a" / "model.safetensors")
    tensors.pop("model.layers.1.feed_forward.router.weight")
    save_file(tensors, tmp_path / "a" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing \(1\).*layers\.1\.feed_forward\.router\.weight"):
        HybridLM.from_hf(tmp_path / "a")
    with pytest.raises(ValueError, match="cannot be written as a Llama 4 checkpoint"):
        save_hf(HybridLM(get_config("tiny-attention")), tmp_path / "b", model_type="llama4_text")


def test_moe_scales_input_like_transformers():
    """Our MoE (both dispatch paths) against Llama4TextMoe, top-2 so that several experts add up."""
    from transformers.models.llama4.modeling_llama4 import Llama4TextMoe

    from hybridlm.layers.ffn.moe import MoE
    hf_cfg = transformers.Llama4TextConfig(hidden_size=20, intermediate_size=12, num_local_experts=5,
                                           num_experts_per_tok=2)
    ref = _randomise(Llama4TextMoe(hf_cfg))
    moe = MoE(MoEConfig(num_experts=5, top_k=2, expert_size=12, shared_size=12, score_func="sigmoid",
                        norm_topk=False, scale_input=True), 20)
    moe.init_weights(0.02)
    with torch.no_grad():
        moe.router.weight.copy_(ref.router.weight)
        moe.gate_up_proj.copy_(ref.experts.gate_up_proj.transpose(1, 2))
        moe.down_proj.copy_(ref.experts.down_proj.transpose(1, 2))
        for n in ("gate_proj", "up_proj", "down_proj"):
            getattr(moe.shared, n).weight.copy_(getattr(ref.shared_expert, n).weight)
        x = torch.randn(3, 7, 20)
        want = ref(x)[0].view(3, 7, 20)
        for impl in ("loop", "auto"):
            moe.impl = impl
            assert max_diff(moe(x), want) <= 1e-5


def test_llama3_rope_scaling_matches_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    for low, high in ((1.0, 1.0), (1.0, 4.0)):  # Scout's (no band) and Llama 3.1's (an interpolated band)
        rope = {**SCOUT_ROPE, "low_freq_factor": low, "high_freq_factor": high}
        hf_cfg = transformers.Llama4TextConfig(head_dim=128, rope_parameters=rope)
        want, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
        base = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float32) / 128))
        got = llama3_inv_freq(base, rope)
        assert torch.equal(got, want)
        assert not torch.equal(got, base)


# -- accounting -------------------------------------------------------------------------------------------------
def _tiny(dtype=torch.float32) -> HybridLM:
    """A small Llama-4-shaped model built directly (chunk 8, NoPE every 4th layer, Maverick-style interleaving)."""
    scaling = {k: v for k, v in SCOUT_ROPE.items() if k != "rope_theta"}
    local = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=12, rope_theta=500000.0, qk_norm=True,
                            qk_norm_weight=False, chunk_size=8, rope_interleaved=True, rope_scaling=scaling)
    nope = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=12, rope_fraction=0.0, qk_norm=False,
                           temperature_tuning=True, floor_scale=4)
    cfg = ModelConfig(vocab_size=97, d_model=40, num_layers=4, mixer_pattern="RRRN", ffn_pattern="DM*2",
                      mixers={"R": local, "N": nope},
                      ffns={"D": DenseFFNConfig(intermediate_size=56),
                            "M": MoEConfig(num_experts=4, top_k=1, expert_size=24, shared_size=24,
                                           score_func="sigmoid", norm_topk=False, scale_input=True)},
                      norm_eps=1e-5, zero_centered_norm=False, hf_model_type="llama4_text")
    m = HybridLM(cfg).to(dtype).eval()
    return m


@pytest.mark.parametrize("dtype, nbytes", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_cache_bytes_equal_memory_after_prefill(dtype, nbytes):
    m = _tiny(dtype)
    # then one token at a time (78 .. 81), through the block boundary at 80
    assert_cache_bytes_match(m, 97, 77, batch=2, dtype_bytes=nbytes, chunk=30, decode_steps=4)


def test_flops_match_flop_counter_and_brute_force():
    m = _tiny()
    attn = m.layers[0].mixer
    for L in range(1, 30):
        seen = [((t - 1) // 8 == (q - 1) // 8) for q in range(1, L + 1) for t in range(1, q + 1)]
        assert attn.mean_keys(L) == pytest.approx(sum(seen) / L)
        assert attn.keys_seen(L) == sum((t - 1) // 8 == (L - 1) // 8 for t in range(1, L + 1))
        assert attn.cache_tokens(L) == L % 8
    assert_params_counted([attn])  # weightless QK-norm: no parameters
    assert m.num_params_analytic() == m.num_params()

    # the counter counts SDPA densely (it cannot see the mask): causal_skip=False
    assert_flops_match_counter(m, 97, tokens=37, decode_at=40)  # decode: chunk layers see 8 keys, NoPE 40


def test_config_mistakes_name_the_field():
    def build(**kw):
        c = AttentionConfig(num_heads=2, num_kv_heads=1, head_dim=8, **kw)
        c.validate("mixers['R']", 16)
    with pytest.raises(ValueError, match=r"mixers\['R'\]\.chunk_size=8: cannot be combined with sliding_window=4"):
        build(chunk_size=8, sliding_window=4)
    with pytest.raises(ValueError, match=r"chunk_size=0"):
        build(chunk_size=0)
    with pytest.raises(ValueError, match=r"qk_norm_weight=False: needs qk_norm=True"):
        build(qk_norm=False, qk_norm_weight=False)
    with pytest.raises(ValueError, match=r"rope_scaling=.*only \{'rope_type': 'llama3'"):
        build(rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match=r"rope_scaling=.*missing \['high_freq_factor'"):
        build(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "original_max_position_embeddings": 8192})
    with pytest.raises(ValueError, match=r"floor_scale=0"):
        build(temperature_tuning=True, floor_scale=0)
    tiny = _tiny().config
    assert ModelConfig.from_dict(json.loads(tiny.to_json())) == tiny


def test_tiny_llama4_preset_on_the_harness():
    """The family's tiny preset through the harness: cached decode, cache bytes after prefill and decode, FLOPs."""
    m = HybridLM(get_config("tiny-llama4")).eval()
    assert_cached_decode_matches(m, torch.randint(0, 256, (2, 29)), split_steps(29, [11, 20]))
    assert_cache_bytes_match(m, 256, 37, batch=2, dtype_bytes=4, chunk=16, decode_steps=2, total=True)
    assert_flops_match_counter(m, 256, tokens=40, decode_at=40)


# -- presets ----------------------------------------------------------------------------------------------------
# published-configs.json: Maverick's decoder total 400,711,848,960 is quoted directly (third-party inventory: decoder
# + vision&projector 871,932,416 = HF safetensors 401,583,781,376). Scout's checkpoint total 108,641,793,536 includes
# the same vision tower + projector (identical vision_config, same 4096 -> 5120 projector): 107,769,861,120 text,
# the caveat's 107.770B. Active figures: the caveats' 17.173B / 17.185B with embedding and head, Scout 15.104B without.
PUBLISHED = {
    "llama4-scout-17b-16e": {"total": 108_641_793_536 - 871_932_416, "text_b": 107.770, "active_b": 17.173,
                             "active_neither_b": 15.104, "stated": "109B"},
    "llama4-maverick-17b-128e": {"total": 400_711_848_960, "text_b": 400.712, "active_b": 17.185, "stated": "400B"},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_reproduce_published_totals(name):
    m = HybridLM(get_config(name), device="meta")
    want = PUBLISHED[name]
    assert m.num_params() == m.num_params(mtp=False) == m.num_params_analytic() == want["total"]
    assert round(m.num_params() / 1e9, 3) == want["text_b"]
    assert round(m.active_params() / 1e9, 3) == want["active_b"]
    if "active_neither_b" in want:
        assert round(m.active_params(embedding=False, head=False) / 1e9, 3) == want["active_neither_b"]


def test_presets_match_published_hyperparameters():
    from hybridlm.analysis.cost_report import REFERENCE
    models = {m["name"]: m["fields"] for m in json.loads(REFERENCE.read_text())["models"]}
    for name, ref in (("llama4-scout-17b-16e", "Llama-4-Scout-17B-16E (text part)"),
                      ("llama4-maverick-17b-128e", "Llama-4-Maverick-17B-128E (text part)")):
        f, cfg = models[ref], get_config(name)
        r, n, moe = cfg.mixers["R"], cfg.mixers["N"], cfg.ffns["M"]
        assert (cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.max_seq_len, cfg.norm_eps, cfg.tie_embeddings) == (
            f["vocab_size"], f["hidden_size"], f["num_hidden_layers"], f["max_position_embeddings"], f["rms_norm_eps"],
            f["tie_word_embeddings"])
        assert (r.num_heads, r.num_kv_heads, r.head_dim, r.rope_theta, r.chunk_size, r.qk_norm) == (
            f["num_attention_heads"], f["num_key_value_heads"], f["head_dim"], f["rope_theta"],
            f["attention_chunk_size"], f["use_qk_norm"])
        assert r.rope_scaling == f["rope_scaling"]
        assert n.temperature_tuning == f["attn_temperature_tuning"] and not n.rope_dim
        assert [i for i, x in enumerate(cfg.layer_mixers) if x == "N"] == list(
            range(f["no_rope_layer_interval"] - 1, 48, f["no_rope_layer_interval"]))
        assert (moe.num_experts, moe.top_k, moe.expert_size, moe.shared_size) == (
            f["num_local_experts"], f["num_experts_per_tok"], f["intermediate_size"], f["intermediate_size"])
        step = f["interleave_moe_layer_step"]
        assert [i for i, x in enumerate(cfg.layer_ffns) if x == "M"] == list(range(step - 1, 48, step))
        if step > 1:
            assert cfg.ffns["D"].intermediate_size == f["intermediate_size_mlp"]


def test_cost_command(capsys):
    assert main(["cost", "llama4-maverick-17b-128e", "--context", "8K,128K,1M"]) == 0
    out = capsys.readouterr().out
    assert "400.712B" in out and "17.185B" in out and "chunk 8192" in out and "NoPE" in out
    m = HybridLM(get_config("llama4-maverick-17b-128e"), device="meta")
    # 12 global NoPE layers keep every token; 36 chunked layers keep only the current 8192-token block
    per_token = 2 * 8 * 128 * 2
    assert m.cache_bytes(131_072 + 100) == (12 * (131_072 + 100) + 36 * 100) * per_token
