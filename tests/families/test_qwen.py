"""The Qwen family (qwen3_next, qwen3_5_moe, qwen3_5: Gated DeltaNet + gated attention + MoE).

Hugging Face interop against transformers==5.23.0 as the independent oracle: a tiny model built by transformers with
random weights, saved, loaded by HybridLM.from_hf, must give the same logits; and what save_hf writes must load back in
transformers with the same logits; cached decode against the full forward. The gated delta rule op (Gated DeltaNet's
recurrence): the chunked and single-step forms against the token-by-token reference, against transformers' torch
implementation, and gradients of the chunked form."""

import json

import pytest
import torch
import torch.nn.functional as F
from harness.cached_decode import assert_cached_decode_matches, split_steps
from harness.chunked import assert_forms_match, assert_gradients_match, assert_state_carry, assert_steps_match
from harness.hf_parity import (
    assert_logits_match,
    assert_round_trip,
    build_hf,
    check_hf_parity,
    convert,
    hf_logits,
    randomise,
)

from hybridlm import HybridLM
from hybridlm.ops.gated_delta_rule import (
    gated_delta_rule,
    gated_delta_rule_chunked,
    gated_delta_rule_recurrent,
    gated_delta_rule_step,
)

try:
    import transformers
except ImportError:  # the op tests below do not need it
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not installed")

# Odd sizes on purpose: 5 layers (the pattern is not a whole number of GGGA groups), GVA ratio 3.
TEXT = dict(hidden_size=48, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            linear_num_key_heads=2, linear_num_value_heads=6, linear_key_head_dim=8, linear_value_head_dim=12,
            num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24, shared_expert_intermediate_size=40,
            intermediate_size=72, vocab_size=101, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                   "partial_rotary_factor": 0.25})
VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=48)


def _hf_model(kind: str):
    if kind == "qwen3_next":
        hf = build_hf(transformers.AutoConfig.for_model("qwen3_next", **TEXT), seed=None)
    else:
        hf = build_hf(transformers.AutoConfig.for_model(kind, text_config=TEXT, vision_config=VISION),
                      transformers.AutoModelForImageTextToText, seed=None)
    # HF initialises norms to identity and A_log/dt_bias to fixed values: randomise all
    return randomise(hf, norm_names=("norm", "A_log", "dt_bias"))


@needs_transformers
@pytest.mark.parametrize("kind", ["qwen3_next", "qwen3_5_moe", "qwen3_5"])
def test_from_hf_and_back_matches_transformers(kind, tmp_path):
    hf = _hf_model(kind)
    ids = torch.randint(0, 101, (2, 77))  # > one GDN chunk, not a multiple of it
    ours, ref = convert(hf, tmp_path / "hf", ids)
    assert ours.config.layer_mixers == ["G", "G", "G", "A", "G"]
    assert_logits_match(ours, ids, ref, atol=1e-4)
    assert_round_trip(ours, tmp_path / "ours", ids, ref, atol=1e-4)


@needs_transformers
def test_sharded_checkpoint_and_cached_decode(tmp_path):
    hf = _hf_model("qwen3_next")
    ours = convert(hf, tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    ids = torch.randint(0, 101, (1, 20))
    assert_cached_decode_matches(ours, ids, split_steps(20, [9]), ref=hf_logits(hf, ids))


@needs_transformers
def test_whole_parity_check_with_greedy_generate(tmp_path):
    """harness.hf_parity.check_hf_parity in one call: logits, save_hf round trip, cached decode, greedy generate."""
    ids = torch.randint(0, 101, (1, 23))
    res = check_hf_parity(_hf_model("qwen3_next"), tmp_path, ids, cached_steps=split_steps(23, [9]),
                          generate_prompt=ids[:, :7], max_new_tokens=12)
    assert type(res.back).__name__ == "Qwen3NextForCausalLM" and res.cache is not None


def _break(tmp_path, edit):
    from safetensors.torch import load_file, save_file
    hf = _hf_model("qwen3_next")
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})


@needs_transformers
def test_bad_checkpoints_list_the_tensors(tmp_path):
    _break(tmp_path / "a", lambda t: t.pop("model.layers.3.self_attn.k_proj.weight"))
    with pytest.raises(ValueError, match=r"missing \(1\).*layers\.3\.self_attn\.k_proj\.weight"):
        HybridLM.from_hf(tmp_path / "a")

    _break(tmp_path / "b", lambda t: t.update({"model.layers.0.extra.weight": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"unexpected \(1\).*model\.layers\.0\.extra\.weight"):
        HybridLM.from_hf(tmp_path / "b")

    _break(tmp_path / "c", lambda t: t.update({"model.norm.weight": torch.zeros(47)}))
    with pytest.raises(ValueError, match=r"mis-shaped \(1\).*norm\.weight: checkpoint \(47,\) vs model \(48,\)"):
        HybridLM.from_hf(tmp_path / "c")


@needs_transformers
def test_bad_directories(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        HybridLM.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type='llama' is not supported"):
        HybridLM.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_next", **TEXT}))
    with pytest.raises(ValueError, match="no model.safetensors"):
        HybridLM.from_hf(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="only safetensors are read"):
        HybridLM.from_hf(tmp_path)


@needs_transformers
def test_save_refuses_what_the_qwen_format_cannot_hold(tmp_path):
    from hybridlm import MoEConfig, get_config
    cfg = get_config("tiny-hybrid")
    moe = MoEConfig(num_experts=8, top_k=2, expert_size=128, shared_size=128, shared_gate=True,
                    n_groups=4, topk_groups=2)
    model = HybridLM(cfg.replace(ffns={"M": moe}), device="meta")
    with pytest.raises(ValueError, match="cannot be written as a Qwen HF checkpoint: MoE must use softmax"):
        model.save_hf(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


# -- the gated delta rule op (harness.chunked) ---------------------------------------------------------------------
def make_inputs(B, T, Hk, Hv, K, V, dtype=torch.float64, seed=0, with_state=True):
    """(q, k, v, g, beta) as the sequence inputs, then the initial state."""
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, Hk, K, generator=gen, dtype=dtype), dim=-1)
    k = F.normalize(torch.randn(B, T, Hk, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, T, Hv, V, generator=gen, dtype=dtype)
    g = F.logsigmoid(torch.randn(B, T, Hv, generator=gen, dtype=dtype))
    beta = torch.sigmoid(torch.randn(B, T, Hv, generator=gen, dtype=dtype))
    state = torch.randn(B, Hv, K, V, generator=gen, dtype=dtype) if with_state else None
    return (q, k, v, g, beta), state


@pytest.mark.parametrize(
    "T,chunk,block_chunks",
    [(63, 16, 8), (75, 32, 2), (130, 64, 8), (130, 32, 1), (1, 64, 8), (5, 16, 8), (64, 64, 1)],
)
def test_chunked_matches_recurrent_float64(T, chunk, block_chunks):
    seqs, s0 = make_inputs(2, T, 2, 4, 12, 20, seed=T)
    o, s = assert_forms_match(gated_delta_rule_recurrent, gated_delta_rule_chunked, seqs, s0, atol=1e-10,
                              chunk_size=chunk, block_chunks=block_chunks)
    assert o.shape == (2, T, 4, 20) and o.dtype == torch.float64
    assert s.shape == (2, 4, 12, 20)


def test_chunked_strong_decay_and_custom_scale():
    # very negative log decays: exp(c_i - c_j) must neither overflow nor produce NaNs
    (q, k, v, g, beta), s0 = make_inputs(1, 70, 1, 3, 8, 8, seed=1)
    g = g * 40.0
    o, _ = assert_forms_match(gated_delta_rule_recurrent, gated_delta_rule_chunked, (q, k, v, g, beta), s0,
                              atol=1e-10, ref_kw={"scale": 0.3}, scale=0.3, chunk_size=32)
    assert torch.isfinite(o).all()


def test_chunked_float32_matches_transformers():
    qwen = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    (q, k, v, g, beta), s0 = make_inputs(1, 100, 2, 4, 32, 16, dtype=torch.float32, seed=3)
    o_hf, s_hf = qwen.torch_chunk_gated_delta_rule(
        q, k, v, g, beta, chunk_size=64, initial_state=s0, output_final_state=True, use_qk_l2norm_in_kernel=False
    )
    o, s = gated_delta_rule_chunked(q, k, v, g, beta, initial_state=s0)
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    torch.testing.assert_close(o, o_hf, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, s_hf, rtol=1e-4, atol=1e-4)


def test_step_matches_recurrent():
    seqs, s0 = make_inputs(2, 9, 2, 6, 8, 5, seed=4)
    state = assert_steps_match(gated_delta_rule_recurrent, gated_delta_rule_step, seqs, s0, atol=1e-12)
    assert s0.abs().sum() > 0 and not torch.equal(state, s0)  # the caller's state is not updated in place


def test_chunked_state_carry_equals_whole():
    seqs, s0 = make_inputs(1, 150, 2, 4, 16, 8, seed=5)
    assert_state_carry(gated_delta_rule_chunked, seqs, s0, split=47, atol=1e-10, chunk_size=32)


def test_zero_initial_state_default_and_float32_io():
    (q, k, v, g, beta), _ = make_inputs(1, 20, 1, 2, 8, 8, dtype=torch.float32, seed=6, with_state=False)
    o, s = assert_forms_match(gated_delta_rule_recurrent, gated_delta_rule_chunked, (q, k, v, g, beta), None,
                              atol=1e-5, rtol=1e-5, chunk_size=16)
    o_d, s_d = gated_delta_rule(q, k, v, g, beta, chunk_size=16)  # CPU dispatch = chunked form
    torch.testing.assert_close(o_d, o, rtol=0, atol=0)
    torch.testing.assert_close(s_d, s, rtol=0, atol=0)
    bf = gated_delta_rule_chunked(q.bfloat16(), k.bfloat16(), v.bfloat16(), g, beta, chunk_size=16)
    assert bf[0].dtype == torch.bfloat16 and bf[1].dtype == torch.float32


def test_chunked_gradients_match_recurrent():
    seqs, s0 = make_inputs(1, 21, 1, 2, 4, 3, seed=7)
    assert_gradients_match(gated_delta_rule_recurrent, gated_delta_rule_chunked, seqs, s0,
                           "q k v g beta state".split(), atol=1e-10, chunk_size=8, block_chunks=2)
