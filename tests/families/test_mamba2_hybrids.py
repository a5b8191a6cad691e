"""The Mamba-2 formats: pure Mamba-2 (mamba2), NVIDIA Nemotron-H (nemotron_h) and IBM Granite 4.0-H
(granitemoehybrid), all on the one Mamba-2 mixer; Falcon-H1 (falcon_h1) refused with the reason.

Oracle: transformers==5.23.0 (its pure-torch Mamba-2 path) with random weights, on odd tiny configs with irregular
layer patterns, both ways: from_hf logits, save_hf loaded back by transformers, cached decode against our full
forward and against transformers' own cached decode, greedy generate; the converters' refusals; every preset's total
against transformers' model built on the meta device from the config.json we write."""

import json
import math

import pytest
import torch
from harness.cache_bytes import assert_cache_bytes_match
from harness.cached_decode import assert_cached_decode_matches, cached_logits, split_steps
from harness.hf_parity import build_hf, check_hf_parity, hf_logits, max_diff, randomise

from hybridlm import HybridLM, get_config
from hybridlm.interop.hf import checkpoint_total
from hybridlm.interop.hf.granite import config_from_granite, config_to_granite
from hybridlm.interop.hf.mamba2 import config_from_mamba2, config_to_mamba2
from hybridlm.interop.hf.nemotron_h import config_from_nemotron_h, config_to_nemotron_h
from hybridlm.layers.ffn.dense import DenseFFNConfig

transformers = pytest.importorskip("transformers")

T, CUT = 41, 13  # 41 tokens: SSD chunks of 8 do not divide it; a 13-token prefill, then single steps
# Odd sizes: heads of 10 (not d / heads), 3 or 2 groups, d_state 6, conv kernel 3, chunk 8, in/out projection
# biases; irregular layer patterns with one or two attention layers (transformers' hybrid cache needs one).
NEMOTRON = dict(vocab_size=97, hidden_size=44, num_attention_heads=4, num_key_value_heads=2, head_dim=10,
                intermediate_size=24, mamba_num_heads=6, mamba_head_dim=10, n_groups=3, ssm_state_size=6,
                conv_kernel=3, chunk_size=8, use_bias=True, use_conv_bias=True, layer_norm_epsilon=1e-5,
                layers_block_type=["linear_attention", "full_attention", "mlp", "linear_attention", "mlp",
                                   "linear_attention", "linear_attention", "full_attention"])
MAMBA2 = dict(vocab_size=97, hidden_size=20, expand=2, num_heads=4, head_dim=10, state_size=6, n_groups=2,
              num_hidden_layers=3, conv_kernel=3, chunk_size=8, use_bias=True, layer_norm_epsilon=1e-5)
GRANITE = dict(vocab_size=97, hidden_size=40, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
               layer_types=["mamba", "attention", "mamba", "mamba", "attention", "mamba"], num_local_experts=5,
               num_experts_per_tok=2, intermediate_size=16, shared_intermediate_size=12, mamba_n_heads=8,
               mamba_n_groups=2, mamba_d_state=6, mamba_d_conv=3, mamba_chunk_size=8, mamba_proj_bias=True,
               mamba_expand=2, embedding_multiplier=3.0, residual_multiplier=0.4, attention_multiplier=0.05,
               logits_scaling=2.5, rms_norm_eps=1e-5, pad_token_id=None)
CONFIGS = {"nemotron_h": (transformers.NemotronHConfig, NEMOTRON), "mamba2": (transformers.Mamba2Config, MAMBA2),
           "granitemoehybrid": (transformers.GraniteMoeHybridConfig, GRANITE)}


def _hf_model(model_type, dt_bias=(-1.0, 1.0), **over):
    cls, fields = CONFIGS[model_type]
    cfg = cls(**{**fields, **over})
    cfg._experts_implementation = "eager"  # Granite's grouped matmul is not what we compare against on CPU
    # HF starts norms at 1, A_log at log(1..H), D at 1: move them (gain 0.5 keeps fp32 rounding well under 1e-5
    # through the stack while the routing and the gates still matter). dt_bias ~ U(dt_bias): the default keeps
    # softplus(dt) above Nemotron-H's floor of 0.001, which transformers applies in its full forward only.
    hf = randomise(build_hf(cfg), norm_names=("norm", "A_log", ".D"), matrix_gain=0.5)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("dt_bias"):
                p.uniform_(*dt_bias)
    return hf


def _hf_cached(hf, ids, cut):
    """transformers' own cached decode: a prefill of `cut` tokens, then single steps."""
    mamba = isinstance(hf, transformers.Mamba2ForCausalLM)  # keeps its cache as `cache_params`
    key = "cache_params" if mamba else "past_key_values"
    with torch.no_grad():
        out = hf(input_ids=ids[:, :cut], use_cache=True)
        cache, parts = getattr(out, key), [out.logits]
        for t in range(cut, ids.shape[1]):
            out = hf(input_ids=ids[:, t:t + 1], use_cache=True, **{key: cache})
            cache = getattr(out, key)
            parts.append(out.logits)
    return torch.cat(parts, 1)


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_from_hf_and_back_match_transformers_and_its_cached_decode(model_type, tmp_path):
    hf = _hf_model(model_type)
    ids = torch.randint(0, 97, (2, T))
    res = check_hf_parity(hf, tmp_path, ids, atol=1e-5, generate_prompt=ids[:1, :7], max_new_tokens=12)
    ours, ref, back = res.ours, res.ref, res.back
    err_logits, err_back = max_diff(res.logits, ref), max_diff(hf_logits(back, ids), ref)
    assert type(back) is type(hf) and err_back <= 1e-5

    # Cached decode: a prefill then single steps, against our full forward (ref) and transformers' cached decode.
    steps = split_steps(T, [CUT])
    cache = assert_cached_decode_matches(ours, ids, steps, ref=ref, atol=1e-5)
    err_cached = max_diff(cached_logits(ours, ids, steps)[0], _hf_cached(hf, ids, CUT))
    assert err_cached <= 1e-5
    cfg = ours.config
    m = next(i for i, x in enumerate(cfg.layer_mixers) if x == "M")
    c = cfg.mixers["M"]
    conv = c.num_heads * c.head_dim + 2 * c.n_groups * c.d_state
    assert cache.layers[m].conv.shape == (2, conv, c.conv_kernel - 1)  # the last K-1 pre-conv inputs
    assert cache.layers[m].state.shape == (2, c.num_heads, c.head_dim, c.d_state)
    assert cache.layers[m].state.dtype == torch.float32
    print(f"{model_type} parity: logits {err_logits:.2e}, save_hf round trip {err_back:.2e}, cached decode vs "
          f"transformers' cached decode {err_cached:.2e}")

    # What each format maps to, and a mechanism the test must see.
    if model_type == "nemotron_h":
        assert cfg.layer_mixers == list("MA-M-MMA") and cfg.layer_ffns == list("--D-D---")
        assert cfg.mixers["M"].time_step_limit == (0.001, math.inf)  # transformers' clamp, not the config's
        assert cfg.ffns["D"].activation == "relu2" and cfg.mixers["A"].rope_dim == 0
        saved = json.loads((tmp_path / "ours" / "config.json").read_text())
        assert saved["layers_block_type"] == NEMOTRON["layers_block_type"]
        assert saved["hybrid_override_pattern"] == "M*-M-MM*"
    elif model_type == "granitemoehybrid":
        assert cfg.layer_mixers == list("MAMMAM") and cfg.layer_ffns == ["M"] * 6
        assert (cfg.embedding_multiplier, cfg.residual_multiplier, cfg.logits_scaling) == (3.0, 0.4, 2.5)
        cfg.embedding_multiplier = 1.0  # the multipliers are seen
        try:
            assert max_diff(hf_logits(ours, ids), ref) > 1e-2
        finally:
            cfg.embedding_multiplier = 3.0
    else:
        assert cfg.layer_mixers == ["M"] * 3 and cfg.layer_ffns == ["-"] * 3  # no attention, its own cache
        norm = ours.layers[0].mixer.norm
        norm.norm_before_gate = True  # the gate before the grouped norm is seen
        try:
            assert max_diff(hf_logits(ours, ids), ref) > 1e-2
        finally:
            norm.norm_before_gate = False


def test_tied_rope_dense_and_published_spellings(tmp_path):
    """The other switches: a tied mamba2 head; Granite with RoPE attention and no experts (the shared MLP alone)
    and transformers' in-memory expert names; Nemotron-H's `backbone.` prefix and legacy config spellings."""
    from safetensors.torch import load_file, save_file
    ids = torch.randint(0, 97, (1, 19))
    for model_type, over in (("mamba2", dict(tie_word_embeddings=True)),
                             ("granitemoehybrid", dict(position_embedding_type="rope", num_local_experts=0))):
        hf = _hf_model(model_type, **over)
        res = check_hf_parity(hf, tmp_path / model_type, ids, atol=1e-5)
        assert max_diff(hf_logits(res.back, ids), res.ref) <= 1e-5
    assert res.ours.config.layer_ffns == ["D"] * 6 and res.ours.config.mixers["A"].rope_dim == 10

    hf = _hf_model("nemotron_h")
    hf.save_pretrained(tmp_path / "nv")
    path = tmp_path / "nv"
    tensors = load_file(path / "model.safetensors")  # transformers writes NVIDIA's `backbone.`; try its own `model.`
    assert "backbone.embeddings.weight" in tensors
    tensors = {k.replace("backbone.", "model.", 1): v for k, v in tensors.items()}
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((path / "config.json").read_text())
    types = cfg.pop("layers_block_type")
    cfg["hybrid_override_pattern"] = "".join({"linear_attention": "M", "full_attention": "*", "mlp": "-"}[t]
                                             for t in types)
    cfg["mamba_n_groups"] = cfg.pop("n_groups")
    (path / "config.json").write_text(json.dumps(cfg))
    ours = HybridLM.from_hf(path).eval()
    assert max_diff(hf_logits(ours, ids), hf_logits(hf, ids)) <= 1e-5


def test_nemotron_h_dt_floor_is_its_full_forward(tmp_path):
    """transformers' Nemotron-H clamps dt to >= time_step_min (0.001) in its full forward and not in its one-token
    decode. With dt_bias low enough that the floor bites, ours follows the full forward in both paths: our cached
    decode equals our (and transformers') full forward, while transformers' cached decode leaves it."""
    hf = _hf_model("nemotron_h", dt_bias=(-9.0, -6.0))
    ids = torch.randint(0, 97, (2, T))
    res = check_hf_parity(hf, tmp_path, ids, atol=1e-5, round_trip=False, cached_steps=split_steps(T, [CUT]))
    drift = max_diff(_hf_cached(hf, ids, CUT), res.ref)
    c = res.ours.config.mixers["M"]
    c.time_step_limit = (0.0, math.inf)
    try:
        unclamped = max_diff(hf_logits(res.ours, ids), res.ref)
    finally:
        c.time_step_limit = (0.001, math.inf)
    print(f"nemotron_h dt floor: transformers' cached decode vs its full forward {drift:.2e}; ours unclamped vs "
          f"transformers' full forward {unclamped:.2e}")
    assert drift > 1e-5 and unclamped > 1e-5


@pytest.mark.parametrize(("model_type", "tensor"), [("nemotron_h", "backbone.layers.3.mixer.A_log"),
                                                    ("mamba2", "backbone.layers.1.mixer.A_log"),
                                                    ("granitemoehybrid", "model.layers.2.mamba.A_log")])
def test_checkpoint_missing_A_log_names_the_tensor(model_type, tensor, tmp_path):
    from safetensors.torch import load_file, save_file
    _hf_model(model_type).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors.pop(tensor)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"missing \(1\): {tensor.replace('.', '[.]')}"):
        HybridLM.from_hf(tmp_path)


def test_what_the_formats_refuse(tmp_path):
    nem = {**NEMOTRON, "model_type": "nemotron_h"}
    for over, match in (({"layers_block_type": ["linear_attention", "moe", "full_attention"]}, "'moe' .* non-gated"),
                        ({"mlp_hidden_act": "silu"}, "mlp_hidden_act='silu'"),
                        ({"sliding_window": 64}, "sliding_window=64"),
                        ({"time_step_limit": [0.0]}, "time_step_limit=.* two numbers")):
        with pytest.raises(ValueError, match=match):
            config_from_nemotron_h({**nem, **over})
    with pytest.raises(ValueError, match=r"hidden_size \* expand = 40 must equal num_heads \* head_dim = 30"):
        config_from_mamba2({**MAMBA2, "num_heads": 3, "model_type": "mamba2"})
    with pytest.raises(ValueError, match="attention_bias=True"):
        config_from_granite({**GRANITE, "attention_bias": True})
    # falcon_h1: recognised and refused, naming the layout (parallel attention + Mamba-2 in every layer)
    cfg = transformers.FalconH1Config(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, mamba_d_ssm=64, mamba_n_heads=4, mamba_d_state=8)
    cfg.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="falcon_h1.*attention and Mamba-2 in parallel"):
        HybridLM.from_hf(tmp_path)

    # What a format cannot hold is refused when writing, naming why.
    good = config_from_nemotron_h(nem)
    with pytest.raises(ValueError, match="Nemotron-H checkpoint: .*relu2"):
        config_to_nemotron_h(good.replace(ffns={"D": DenseFFNConfig(intermediate_size=24)}))
    mixers = good.to_dict()["mixers"]
    mixers["M"]["time_step_limit"] = [0.0, 9.0]
    with pytest.raises(ValueError, match=r"Nemotron-H checkpoint: .*\(low > 0, inf\)"):
        config_to_nemotron_h(good.replace(mixers=mixers))
    with pytest.raises(ValueError, match="mamba2 checkpoint: every layer must be a Mamba-2 mixer with no FFN"):
        config_to_mamba2(good)
    with pytest.raises(ValueError, match="Granite 4.0-H checkpoint: every layer must be"):
        config_to_granite(good)


def test_tiny_mamba2_hybrid_preset(tmp_path):
    """tiny-mamba2-hybrid: Nemotron-H's mix at the tiny width with about tiny-hybrid's active parameters; cached
    decode equals its full forward; save_hf splits each block into two Nemotron-H layers that transformers loads
    with the same logits."""
    torch.manual_seed(0)
    m = HybridLM(get_config("tiny-mamba2-hybrid")).eval()
    base = HybridLM(get_config("tiny-hybrid"), device="meta")
    print(f"active: tiny-mamba2-hybrid {m.active_params():,}, tiny-hybrid {base.active_params():,}")
    assert abs(m.active_params() / base.active_params() - 1) < 0.1
    assert m.num_params() == m.num_params_analytic()
    ids = torch.randint(0, 256, (2, 29))
    assert_cached_decode_matches(m, ids, split_steps(29, [11, 20]))
    assert_cache_bytes_match(m, 256, 37, batch=2, dtype_bytes=4, chunk=16, decode_steps=2, total=True)
    m.save_hf(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["hybrid_override_pattern"] == "M-M-M-*-M-M-M-*-" and not saved["tie_word_embeddings"]
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert max_diff(hf_logits(back, ids), hf_logits(m, ids)) <= 1e-5


# -- presets ----------------------------------------------------------------------------------------------------
# Each total is the parameters of transformers' own model built on the meta device from the config.json we write
# (the published cards round them: 8.1B, 46.8B, 56.3B, 8.89B, 12.3B, 2.7B, 7.29B, 32.2B).
TOTALS = {"nemotron-h-8b": 8_100_852_736, "nemotron-h-47b": 46_791_554_816, "nemotron-h-56b": 56_324_350_464,
          "nemotron-nano-9b-v2": 8_888_227_328, "nemotron-nano-12b-v2": 12_310_001_152,
          "mamba2-2.7b": 2_702_599_680, "mamba-codestral-7b": 7_285_403_648,
          "granite-4.0-h-small": 32_207_337_984}
WRITERS = {"nemotron_h": config_to_nemotron_h, "mamba2": config_to_mamba2, "granitemoehybrid": config_to_granite}
READERS = {"nemotron_h": config_from_nemotron_h, "mamba2": config_from_mamba2, "granitemoehybrid": config_from_granite}


@pytest.mark.parametrize("name", sorted(TOTALS))
def test_presets_reproduce_published_totals_and_transformers_count(name):
    cfg = get_config(name)
    m = HybridLM(cfg, device="meta")
    assert m.num_params() == m.num_params_analytic() == checkpoint_total(cfg) == TOTALS[name]
    written = WRITERS[cfg.hf_model_type](cfg)
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**written))
    assert sum(p.numel() for p in hf.parameters()) == TOTALS[name]
    back = READERS[cfg.hf_model_type]({**written, "_name_or_path": name})  # the config reads back as it was
    plan = ("mixer_pattern", "ffn_pattern")
    assert (back.layer_mixers, back.layer_ffns) == (cfg.layer_mixers, cfg.layer_ffns)
    assert {k: v for k, v in back.to_dict().items() if k not in plan} == {
        k: v for k, v in cfg.to_dict().items() if k not in plan}
