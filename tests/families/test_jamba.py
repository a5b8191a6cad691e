"""The Jamba family (Mamba-1 with RMSNorm on dt / B / C, NoPE attention, softmax top-k MoE without renormalisation).

Oracle: transformers==5.23.0 JambaForCausalLM (its pure-torch Mamba path) with random weights, both ways: from_hf
logits, save_hf loaded back by transformers, cached decode against our full forward and against transformers' own
cached decode, greedy generate; the converter's refusals; the presets' totals against transformers' model built on
the meta device from the same config.json."""

import json

import pytest
import torch
from harness.cache_bytes import assert_cache_bytes_match
from harness.cached_decode import assert_cached_decode_matches, cached_logits, split_steps
from harness.flops import assert_flops_match_counter
from harness.hf_parity import build_hf, check_hf_parity, convert, hf_logits, max_diff, randomise

from hybridlm import AttentionConfig, HybridLM, MoEConfig, get_config
from hybridlm.interop.hf.jamba import config_from_jamba, config_to_jamba, period_of

transformers = pytest.importorskip("transformers")

# Odd sizes on purpose: 6 layers with attention at l % 4 == 1 (layers 1 and 5: "MAMMMA", not a whole period), MoE at
# l % 2 == 1, head_dim 10 != 44 / 4, conv kernel 3, d_state 6, dt_rank 5, biases on in_proj / out_proj; our Mamba chunk
# size is set to 8 below, which 41 tokens do not divide.
TINY = dict(vocab_size=97, hidden_size=44, intermediate_size=24, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=10, num_experts=5, num_experts_per_tok=2, attn_layer_period=4,
            attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1, mamba_d_state=6, mamba_d_conv=3,
            mamba_expand=2, mamba_dt_rank=5, mamba_conv_bias=True, mamba_proj_bias=True, rms_norm_eps=1e-5,
            pad_token_id=None)


def _hf_model(**over):
    cfg = transformers.JambaConfig(**{**TINY, **over})
    cfg._experts_implementation = "eager"  # its grouped matmul path is not what we compare against on CPU
    # HF starts norms at 1, A_log at log(1..N), D at 1 and the projections at std 0.02: move them all. Gain 0.5, not
    # 1: at gain 1 this stack amplifies rounding so much that both fp32 implementations sit 3-4e-5 from an fp64 run
    # (ours in fp64 against either), so no fp32 pair could agree to 1e-5; at 0.5 the routing still matters (below).
    return randomise(build_hf(cfg), norm_names=("norm", "A_log", "mamba.D", "dt_proj.bias"), matrix_gain=0.5)


def test_from_hf_and_back_match_transformers_and_its_cached_decode(tmp_path):
    hf = _hf_model()
    T, cut = 41, 13
    ids = torch.randint(0, 97, (2, T))
    res = check_hf_parity(hf, tmp_path, ids, atol=1e-5, round_trip=False)
    ours, ref = res.ours, res.ref
    cfg = ours.config
    assert cfg.layer_mixers == list("MAMMMA") and cfg.layer_ffns == list("DMDMDM")
    assert cfg.mixers["M"].inner_norms and cfg.mixers["A"].rope_dim == 0 and not cfg.zero_centered_norm
    assert not cfg.ffns["M"].norm_topk and cfg.ffns["M"].score_func == "softmax"
    cfg.mixers["M"].chunk_size = 8  # chunks that do not divide T, through the whole model
    err_logits = max_diff(hf_logits(ours, ids), ref)
    assert err_logits <= 1e-5

    # Renormalising the top-k gates (what Mixtral does) moves the logits far beyond the tolerance: the test sees that
    # transformers' Jamba does not.
    cfg.ffns["M"].norm_topk = True
    try:
        assert max_diff(hf_logits(ours, ids), ref) > 1e-2
    finally:
        cfg.ffns["M"].norm_topk = False

    # save_hf -> transformers loads it (per-expert tensors, as the published checkpoints) with the same logits.
    ours.save_hf(tmp_path / "ours")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert type(back).__name__ == "JambaForCausalLM"
    err_back = max_diff(hf_logits(back, ids), ref)
    assert err_back <= 1e-5
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert {k: saved[k] for k in TINY if k != "pad_token_id"} == {k: v for k, v in TINY.items() if k != "pad_token_id"}

    # Cached decode: a prefill of `cut` tokens then single steps, against our full forward and transformers' cache.
    steps = split_steps(T, [cut])
    cache = assert_cached_decode_matches(ours, ids, steps, ref=ref, atol=1e-5)
    got, _ = cached_logits(ours, ids, steps)
    with torch.no_grad():
        out = hf(input_ids=ids[:, :cut], use_cache=True)
        pkv, parts = out.past_key_values, [out.logits]
        for t in range(cut, T):
            out = hf(input_ids=ids[:, t:t + 1], past_key_values=pkv, use_cache=True)
            pkv = out.past_key_values
            parts.append(out.logits)
    err_cached = max_diff(got, torch.cat(parts, 1))
    assert err_cached <= 1e-5
    # the Mamba layers' cache is constant-size: the last K-1 = 2 pre-conv inputs and the [B, E, N] fp32 state
    assert cache.layers[0].conv.shape == (2, 88, 2) and cache.layers[0].state.shape == (2, 88, 6)
    assert cache.layers[0].state.dtype == torch.float32 and cache.layers[1].k.shape[2] == T

    # Greedy generate matches transformers' token for token.
    prompt = ids[:1, :7]
    with torch.no_grad():
        want = hf.generate(prompt, max_new_tokens=12, do_sample=False)
    assert torch.equal(ours.generate(prompt, max_new_tokens=12, temperature=0.0), want)
    print(f"jamba parity: logits {err_logits:.2e}, save_hf round trip {err_back:.2e}, "
          f"cached decode vs transformers' cached decode {err_cached:.2e}")


def test_tied_embeddings_without_biases_and_fused_experts(tmp_path):
    """The other switches of the format: tied head, no conv / projection biases, every layer an MoE and the
    attention the first layer; and a checkpoint in transformers' fused in-memory expert layout."""
    from safetensors.torch import load_file, save_file
    hf = _hf_model(tie_word_embeddings=True, mamba_conv_bias=False, mamba_proj_bias=False, expert_layer_period=1,
                   expert_layer_offset=0, attn_layer_period=3, attn_layer_offset=0, num_hidden_layers=4)
    ids = torch.randint(0, 97, (1, 19))
    ours, ref = convert(hf, tmp_path / "hf", ids)
    assert ours.lm_head is None and ours.config.layer_mixers == list("AMMA") and ours.config.layer_ffns == ["M"] * 4
    assert max_diff(hf_logits(ours, ids), ref) <= 1e-5
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    for i in range(4):
        f = f"model.layers.{i}.feed_forward.experts."
        gate_up = [torch.cat((tensors.pop(f"{f}{e}.gate_proj.weight"), tensors.pop(f"{f}{e}.up_proj.weight")))
                   for e in range(5)]
        tensors[f + "gate_up_proj"] = torch.stack(gate_up)
        tensors[f + "down_proj"] = torch.stack([tensors.pop(f"{f}{e}.down_proj.weight") for e in range(5)])
    save_file(tensors, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    assert max_diff(hf_logits(HybridLM.from_hf(tmp_path / "hf").eval(), ids), ref) <= 1e-5


def test_checkpoint_missing_A_log_names_the_tensor(tmp_path):
    from safetensors.torch import load_file, save_file
    _hf_model().save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors.pop("model.layers.2.mamba.A_log")
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing \(1\): model\.layers\.2\.mamba\.A_log"):
        HybridLM.from_hf(tmp_path)


def test_config_fields_refused_or_mapped():
    def cfg(**over):
        return config_from_jamba({**TINY, "model_type": "jamba", **over})

    for field, value, match in (("hidden_act", "gelu", "hidden_act='gelu'"),
                                ("attention_dropout", 0.1, "attention_dropout=0.1"),
                                ("attn_layer_offset", 4, r"attn_layer_offset=4 must be in \[0, attn_layer_period=4\)"),
                                ("expert_layer_offset", 2, "expert_layer_offset=2"),
                                ("mamba_expand", 1.5, "mamba_expand=1.5")):
        with pytest.raises(ValueError, match=match):
            cfg(**{field: value})
    with pytest.raises(ValueError, match=r"missing field\(s\) \['intermediate_size'\]"):
        config_from_jamba({k: v for k, v in TINY.items() if k != "intermediate_size"})
    # transformers: one expert means the dense MLP everywhere; "auto" dt_rank is ceil(d / 16); head_dim defaults
    c = cfg(num_experts=1, mamba_dt_rank="auto", head_dim=None)
    assert c.layer_ffns == ["D"] * 6 and c.mixers["M"].dt_rank == 3 and c.mixers["A"].head_dim == 11
    assert set(c.ffns) == {"D"} and config_to_jamba(c)["num_experts"] == 1

    # What the format cannot hold is refused, naming why.
    good = cfg()
    assert period_of([False, True, False, False, False, True]) == (4, 1) and period_of([False] * 3) == (4, 3)
    bad = [("mixers", {"A": AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=10, rope_fraction=0.4,
                                            qk_norm=False)}, "attention must be NoPE"),
           ("ffns", {"M": MoEConfig(num_experts=5, top_k=2, expert_size=24, norm_topk=True)}, "without renormalis"),
           ("ffns", {"M": MoEConfig(num_experts=5, top_k=2, expert_size=16, norm_topk=False)}, "one intermediate_size"),
           ("ffn_pattern", "DMMDDM", "MoE layers must be every expert_layer_period"),
           ("zero_centered_norm", True, "zero_centered_norm=False")]
    for field, value, match in bad:
        value = {**getattr(good, field), **value} if isinstance(value, dict) else value
        with pytest.raises(ValueError, match=f"cannot be written as a Jamba checkpoint: .*{match}"):
            config_to_jamba(good.replace(**{field: value}))


# -- presets ----------------------------------------------------------------------------------------------------
# published-configs.json: "Computed 51.570B / 12.110B incl. embeddings" (Mini), "398.555B / 94.149B" (Large); the
# exact totals are the issue's. Each is also counted on transformers' own model built from the config we write.
TOTALS = {"jamba-1.5-mini": (51_570_323_328, 12.110, 11.573), "jamba-1.5-large": (398_555_145_696, 94.149, 93.076)}


@pytest.mark.parametrize("name", sorted(TOTALS))
def test_presets_reproduce_published_totals_and_transformers_count(name):
    cfg = get_config(name)
    m = HybridLM(cfg, device="meta")
    total, active, active_neither = TOTALS[name]
    assert m.num_params() == m.num_params_analytic() == total
    assert round(m.active_params() / 1e9, 3) == active
    assert round(m.active_params(embedding=False, head=False) / 1e9, 3) == active_neither
    with torch.device("meta"):
        hf = transformers.JambaForCausalLM(transformers.JambaConfig(**config_to_jamba(cfg)))
    assert sum(p.numel() for p in hf.parameters()) == total
    assert config_from_jamba({**config_to_jamba(cfg), "_name_or_path": name}) == cfg


def test_presets_match_published_hyperparameters():
    from hybridlm.analysis.cost_report import REFERENCE
    models = {m["name"]: m["fields"] for m in json.loads(REFERENCE.read_text())["models"]}
    for name, ref in (("jamba-1.5-mini", "Jamba-1.5-Mini"), ("jamba-1.5-large", "Jamba-1.5-Large")):
        written, fields = config_to_jamba(get_config(name)), models[ref]
        assert {k: written[k] for k in fields} == fields


def test_tiny_jamba_preset(tmp_path):
    """tiny-jamba: the Jamba layout at the tiny width with about tiny-hybrid's active parameters; cached decode
    (prefill in chunks, then steps) equals its full forward, the cache holds what cache_bytes says and the FLOP
    accounting equals torch's counter."""
    m = HybridLM(get_config("tiny-jamba")).eval()
    base = HybridLM(get_config("tiny-hybrid"), device="meta")
    print(f"active: tiny-jamba {m.active_params():,}, tiny-hybrid {base.active_params():,}")
    assert abs(m.active_params() / base.active_params() - 1) < 0.2
    assert m.config.layer_mixers == list("MMMMAMMM") and m.config.layer_ffns == list("DM" * 4)
    assert m.num_params() == m.num_params_analytic()
    assert_cached_decode_matches(m, torch.randint(0, 256, (2, 29)), split_steps(29, [11, 20]))
    assert_cache_bytes_match(m, 256, 37, batch=2, dtype_bytes=4, chunk=16, decode_steps=2, total=True)
    assert_flops_match_counter(m, 256, tokens=40, decode_at=40)
    # its checkpoint (the format chosen from its mixers alone) loads in transformers with the same logits
    from hybridlm.interop.hf import save_target
    assert save_target(m.config.replace(hf_model_type=None))[1] == "jamba"
    m.save_hf(tmp_path)
    ids = torch.randint(0, 256, (1, 23))
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert max_diff(hf_logits(back, ids), hf_logits(m, ids)) <= 1e-5
