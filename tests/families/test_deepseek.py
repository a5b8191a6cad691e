"""The DeepSeek family: V3, V3.2 and Kimi-K2.

DeepSeek-V3 (MLA + DeepSeekMoE + MTP) against transformers==5.23.0 as the independent oracle: a tiny
DeepseekV3ForCausalLM with random weights, saved, loaded by HybridLM.from_hf, gives the same logits; save_hf
output loads back in transformers with the same logits; cached decode (absorbed MLA) equals the full forward;
the cache holds exactly kv_lora_rank + qk_rope_head_dim values per token and layer; the presets reproduce the
published totals; the accounting matches direct counts.

DeepSeek-V3.2 (MLA + DeepSeek Sparse Attention lightning indexer) against transformers==5.23.0's deepseek_v32 as
the oracle: a tiny DeepseekV32ForCausalLM with random weights and a small index_topk (so that sparsity changes the
logits), loaded by HybridLM.from_hf, gives the same logits; save_hf output loads back in transformers with the same
logits; cached decode (chunks, then absorbed single-token steps, each with the indexer's own key cache) equals the
full forward; the cache holds kv_lora_rank + qk_rope_head_dim + index_head_dim values per token and layer; the
accounting matches direct counts; the deepseek-v3.2 preset reproduces the published totals."""

import json

import pytest
import torch
from harness.cache_bytes import assert_cache_bytes_match, assert_layer_cache_bytes
from harness.cached_decode import assert_cached_decode_matches, cached_logits, split_steps
from harness.flops import assert_flops_match_counter, assert_params_counted
from harness.hf_parity import assert_logits_match, assert_round_trip, build_hf, convert, hf_logits, randomise

transformers = pytest.importorskip("transformers")

from hybridlm import HybridLM, MLAConfig, ModelConfig, MoEConfig, get_config
from hybridlm.cli import main
from hybridlm.analysis.cost_report import REFERENCE
from hybridlm.interop.hf.base import config_from_hf
from hybridlm.layers.mixers.mla import MLA
from hybridlm.layers.ffn.moe import MoE

V3_ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "original_max_position_embeddings": 32,
           "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}
# Odd sizes on purpose; 12 experts in 4 groups of 3 with 2 groups kept, so group limiting changes choices.
TINY = {"vocab_size": 101, "hidden_size": 48, "intermediate_size": 72, "moe_intermediate_size": 20,
        "num_hidden_layers": 3, "num_attention_heads": 3, "num_key_value_heads": 3, "n_shared_experts": 2,
        "n_routed_experts": 12, "kv_lora_rank": 24, "q_lora_rank": 20, "qk_rope_head_dim": 8, "v_head_dim": 12,
        "qk_nope_head_dim": 10, "n_group": 4, "topk_group": 2, "num_experts_per_tok": 3, "first_k_dense_replace": 1,
        "routed_scaling_factor": 2.5, "max_position_embeddings": 1280, "rope_parameters": V3_ROPE}
CASES = {
    "v3": {},  # query compression, interleaved RoPE, V3's YaRN (mscale 1 / 1: softmax scale x mscale^2)
    "no-q-lora": {  # V2-Lite style query (no compression); rotate-half RoPE without scaling
        "q_lora_rank": None, "rope_interleave": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000.0}},
    "yarn-mscale": {  # mscale != mscale_all_dim: cos/sin scaled too
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                            "original_max_position_embeddings": 32, "mscale": 0.9, "mscale_all_dim": 0.8}},
}
# V3.2: V3's tiny model plus the lightning indexer, with a small top-k so that the sparsity changes the logits.
TINY_V32 = {**TINY, "index_n_heads": 6, "index_head_dim": 16, "index_topk": 4}
T_V32 = 30


def hf_model(config_cls=None, tiny=None, **overrides):
    """A tiny transformers DeepSeek model (V3 by default; V3.2 and test_deepseek_v4 pass their own config class)."""
    model = build_hf((config_cls or transformers.DeepseekV3Config)(**{**(tiny or TINY), **overrides}), seed=0)
    randomise(model, matrix_gain=1.2)  # weights large enough that attention is peaked and RoPE / routing errors show
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn_like(b))
    return model.eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_from_hf_and_back_matches_transformers_and_cached_decode(case, tmp_path):
    hf = hf_model(**CASES[case])
    ids = torch.randint(0, 101, (2, 37))
    ours, ref = convert(hf, tmp_path / "hf", ids)
    assert ref.abs().max() > 1.0
    assert ours.config.layer_ffns == ["D", "M", "M"] and ours.config.mtp_depth == 0
    assert_logits_match(ours, ids, ref, atol=1e-4)
    assert_round_trip(ours, tmp_path / "ours", ids, ref, atol=1e-4)

    # Cached: a first chunk, a second chunk after a cached prefix (expanded form, explicit mask), then single-token
    # steps, which must run the absorbed form: kv_b_proj is never applied as a layer there (its weight is folded).
    expansions = []
    for b in ours.layers:
        b.mixer.kv_b_proj.register_forward_hook(lambda *_: expansions.append(1))
    steps = split_steps(37, [9, 20])
    prefill, cache = cached_logits(ours, ids, steps[:2])
    n_prefill = len(expansions)
    decode, _ = cached_logits(ours, ids, steps[2:], cache)
    assert n_prefill == 2 * 3 and len(expansions) == n_prefill
    assert (torch.cat([prefill, decode], 1) - ref).abs().max().item() <= 1e-4
    # The cache is the latent: kv_lora_rank + qk_rope_head_dim values per token per layer, nothing else.
    R, r = TINY["kv_lora_rank"], TINY["qk_rope_head_dim"]
    for layer in cache.layers:
        assert layer.c_kv.shape == (2, 37, R) and layer.k_rope.shape == (2, 37, r)
    assert_layer_cache_bytes(ours, cache, 37, batch=2, dtype_bytes=4, per_token=R + r)
    want = {"latent": 3 * 2 * 37 * (R + r) * 4}  # 3 layers, batch 2, 37 tokens, fp32
    assert cache.memory_by_kind() == ours.cache_bytes_by_kind(37, batch=2, dtype_bytes=4) == want


# per token and layer: V3 keeps kv_lora_rank + qk_rope_head_dim = 32 values, V3.2 also the indexer's 16-value key
@pytest.mark.parametrize("model_type, tiny, per_token", [pytest.param("deepseek_v3", TINY, 32, id="v3"),
                                                          pytest.param("deepseek_v32", TINY_V32, 48, id="v32")])
@pytest.mark.parametrize("dtype, nbytes", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_analytic_cache_bytes_equal_memory_after_prefill(dtype, nbytes, model_type, tiny, per_token):
    torch.manual_seed(0)
    m = HybridLM(config_from_hf({**tiny, "model_type": model_type})).to(dtype).eval()
    cache = assert_cache_bytes_match(m, 101, 77, batch=2, dtype_bytes=nbytes, chunk=32, state_bytes=4,
                                     decode_steps=1)
    assert cache.memory_bytes() == 3 * 2 * 78 * per_token * nbytes


def test_absorbed_equals_expanded_on_whole_sequences():
    c = MLAConfig(num_heads=3, kv_lora_rank=24, q_lora_rank=20, qk_nope_head_dim=10, qk_rope_head_dim=8,
                  v_head_dim=12, rope_scaling="yarn", yarn_factor=40.0, yarn_original_max_position=32,
                  yarn_mscale=1.0, yarn_mscale_all_dim=1.0)
    c.validate("L", 48)
    torch.manual_seed(0)
    mla = MLA(c, 48)
    mla.init_weights(0.3, 0.3)
    x = torch.randn(2, 29, 48)
    outs = {}
    for mode in ("never", "always"):
        mla.absorb = mode
        with torch.no_grad():
            cache = mla.new_cache()
            outs[mode] = torch.cat([mla(x[:, :11], 0, cache), mla(x[:, 11:], 11, cache)], 1)  # prefix + chunk
            assert (outs[mode] - mla(x)).abs().max() <= 1e-5
    assert (outs["never"] - outs["always"]).abs().max() <= 1e-5


def test_group_limited_routing_matches_transformers():
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter
    hf_cfg = transformers.DeepseekV3Config(**TINY)
    torch.manual_seed(0)
    router = DeepseekV3TopkRouter(hf_cfg)
    with torch.no_grad():
        router.weight.normal_(0, 0.5)
        router.e_score_correction_bias.copy_(0.1 * torch.randn(12))
    moe_cfg = config_from_hf({**TINY, "model_type": "deepseek_v3"}).ffns["M"]
    assert (moe_cfg.n_groups, moe_cfg.topk_groups, moe_cfg.shared_size) == (4, 2, 40)
    moe = MoE(moe_cfg, 48)
    with torch.no_grad():
        moe.router.weight.copy_(router.weight)
        moe.expert_bias.copy_(router.e_score_correction_bias)
    x = torch.randn(500, 48)
    _, ref_w, ref_idx = router(x)
    _, idx, gates = moe.route(x)
    ref_order, order = ref_idx.sort(-1), idx.sort(-1)
    assert torch.equal(order.values, ref_order.values)
    assert torch.allclose(gates.gather(1, order.indices), ref_w.gather(1, ref_order.indices), atol=1e-6)
    # Group limiting matters here: without it some tokens pick other experts.
    moe.cfg = MoEConfig(**{**moe_cfg.__dict__, "n_groups": 1, "topk_groups": 1})
    assert not torch.equal(moe.route(x)[1].sort(-1).values, order.values)
    # The bias only selects: the gates are the unbiased scores of the chosen experts (renormalised, scaled).
    scores = torch.sigmoid(x @ router.weight.T)
    chosen = scores.gather(1, idx)
    assert torch.allclose(gates, 2.5 * chosen / chosen.sum(-1, keepdim=True), atol=1e-6)


def test_mtp_checkpoint_layout_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = config_from_hf({**TINY, "model_type": "deepseek_v3", "num_nextn_predict_layers": 1})
    assert (cfg.mtp_depth, cfg.mtp_mixer, cfg.mtp_ffn) == (1, "L", "M")
    m = HybridLM(cfg).eval()
    m.save_hf(tmp_path)
    from safetensors import safe_open
    keys = set(safe_open(str(tmp_path / "model.safetensors"), "pt").keys())
    mtp = {k[len("model.layers.3."):] for k in keys if k.startswith("model.layers.3.")}
    assert {"enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight", "shared_head.head.weight",
            "embed_tokens.weight", "self_attn.kv_b_proj.weight", "mlp.gate.e_score_correction_bias"} <= mtp
    back = HybridLM.from_hf(tmp_path).eval()
    assert back.mtp is not None
    ids = torch.randint(0, 101, (1, 23))
    with torch.no_grad():
        a, b = m(ids, labels=ids), back(ids, labels=ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.mtp_logits, b.mtp_logits)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # ignores the MTP layer
    assert (hf_logits(hf, ids) - a.logits).abs().max().item() <= 1e-4


def test_flops_match_flop_counter():
    torch.manual_seed(0)
    m = HybridLM(config_from_hf({**TINY, "model_type": "deepseek_v3"})).eval()
    assert_flops_match_counter(m, 101, tokens=40, decode_at=40)  # decode: the absorbed form
    assert_params_counted([m.layers[0].mixer])


# -- DeepSeek-V3.2: the lightning indexer ---------------------------------------------------------------------
def _hf_model_v32(**overrides):
    return hf_model(transformers.DeepseekV32Config, TINY_V32, **overrides)


def test_v32_from_hf_and_back_matches_transformers_and_cached_decode(tmp_path):
    hf = _hf_model_v32()
    torch.manual_seed(1)
    ids = torch.randint(0, 101, (2, T_V32))
    ours, ref = convert(hf, tmp_path / "hf", ids)
    assert ref.abs().max() > 1.0
    for layer in hf.model.layers:  # dense (top-k >= T) logits differ: the sparsity matters in this test
        layer.self_attn.indexer.index_topk = 10_000
    assert (hf_logits(hf, ids) - ref).abs().max().item() > 1e-2

    mla = ours.config.mixers["L"]
    assert ours.config.hf_model_type == "deepseek_v32" and ours.config.layer_ffns == ["D", "M", "M"]
    assert (mla.index_n_heads, mla.index_head_dim, mla.index_topk, mla.rope_interleaved) == (6, 16, 4, True)
    assert_logits_match(ours, ids, ref, atol=1e-4)
    back = assert_round_trip(ours, tmp_path / "ours", ids, ref, atol=1e-4)
    assert type(back).__name__ == "DeepseekV32ForCausalLM" and back.config.index_topk == 4

    # Cached: a first chunk, a second chunk after a cached prefix, then absorbed single-token steps; the same steps
    # through transformers' own cache agree too. (An exact tie in the indexer scores, e.g. two keys whose every
    # head's ReLU is 0, is broken by torch.topk in a shape-dependent way, so with unlucky inputs cached and full
    # passes can pick different keys, in transformers as here; these inputs have no tie at the top-k boundary.)
    cache, hf_cache = ours.new_cache(), transformers.DynamicCache(config=hf.config)
    for layer in hf.model.layers:
        layer.self_attn.indexer.index_topk = 4
    steps = split_steps(T_V32, [9, 17])
    got, _ = cached_logits(ours, ids, steps, cache)
    with torch.no_grad():
        hf_parts = [hf(input_ids=ids[:, a:b], past_key_values=hf_cache, use_cache=True).logits for a, b in steps]
    assert (got - ref).abs().max().item() <= 1e-4
    assert (got - torch.cat(hf_parts, 1)).abs().max().item() <= 1e-4
    R, r, Di = TINY["kv_lora_rank"], TINY["qk_rope_head_dim"], TINY_V32["index_head_dim"]
    for layer in cache.layers:
        assert layer.index_k.shape == (2, T_V32, Di)
    assert_layer_cache_bytes(ours, cache, T_V32, batch=2, dtype_bytes=4, per_token=R + r + Di)
    want = {"latent": 3 * 2 * T_V32 * (R + r + Di) * 4}
    assert cache.memory_by_kind() == ours.cache_bytes_by_kind(T_V32, batch=2, dtype_bytes=4) == want
    # Both attention forms give the same sparse result.
    for b in ours.layers:
        b.mixer.absorb = "always"
    assert (hf_logits(ours, ids) - ref).abs().max().item() <= 1e-4


def test_v32_accounting_matches_counts():
    torch.manual_seed(0)
    # top-k above the context: the masked dense computation the counter sees is exactly the sparse count
    m = HybridLM(config_from_hf({**TINY_V32, "model_type": "deepseek_v32", "index_topk": 64})).eval()
    assert_flops_match_counter(m, 101, tokens=40, decode_at=40)
    mla = m.layers[0].mixer
    assert_params_counted([mla])
    # sparse counts: attention over at most index_topk keys, the indexer over every causal key
    c = mla.cfg.__class__(**{**mla.cfg.__dict__, "index_topk": 4})
    from hybridlm.layers.mixers.mla import MLA
    sparse = MLA(c, 48)
    assert sparse.keys_seen(40) == 4 and sparse.keys_seen(3) == 3
    assert sparse.mean_keys(8) == (1 + 2 + 3 + 4 * 5) / 8
    dense_keys = 2 * 3 * (18 + 12)
    assert sparse.decode_flops(40) - sparse.decode_flops(39) == 2 * 6 * 17  # attention capped, indexer grows
    assert sparse.flops_per_token(8) - sparse._proj_flops() == dense_keys * 26 / 8 + 2 * 6 * 17 * 4.5


def test_indexer_config_errors_name_the_field():
    for change, match in [({"index_n_heads": -1}, "index_n_heads"), ({"index_topk": 0}, "index_topk"),
                          ({"index_head_dim": 4}, "index_head_dim"), ({"q_lora_rank": None}, "q_lora_rank")]:
        with pytest.raises(ValueError, match=match):
            MLAConfig(num_heads=2, **{"index_n_heads": 4, "index_head_dim": 16, "qk_rope_head_dim": 8, **change}
                      ).validate("mixers.L", 48)
    MLAConfig(num_heads=2, q_lora_rank=None).validate("mixers.L", 48)  # no indexer: V2-Lite style still fine


def test_deepseek_v32_preset_reproduces_published_totals():
    m = HybridLM(get_config("deepseek-v3.2"), device="meta")
    v3 = HybridLM(get_config("deepseek-v3"), device="meta")
    V, D = m.config.vocab_size, m.config.d_model
    mla = m.config.mixers["L"]
    assert (mla.index_n_heads, mla.index_head_dim, mla.index_topk) == (64, 128, 2048)
    per_layer = 1536 * 64 * 128 + 7168 * 128 + 2 * 128 + 7168 * 64
    assert round(per_layer / 1e6, 2) == 13.96  # caveat: 13.96M per layer
    assert m.num_params(mtp=False) - v3.num_params(mtp=False) == 61 * per_layer
    assert abs(61 * per_layer / 1e9 - 0.851) < 1e-3  # caveat '0.851B' (0.8515B: truncated, not rounded)
    assert round(m.num_params(mtp=False) / 1e9, 3) == 671.878  # caveat: main model 671.878B
    assert m.num_params() - v3.num_params() == 62 * per_layer  # + 14M in the MTP layer
    bias = sum(b.numel() for n, b in m.named_buffers() if n.endswith("expert_bias"))
    assert m.num_params() + 2 * V * D + bias == 685_355_329_792  # HF safetensors total (DeepSeek-V3.2, logical)
    # caveat: the indexer is always active
    assert m.active_params() - v3.active_params() == 61 * per_layer
    assert m.num_params_analytic() == m.num_params()
    assert m.cache_bytes_by_kind(8192) == {"latent": 61 * (576 + 128) * 8192 * 2}


def test_v32_preset_matches_published_hyperparameters():
    import json
    entry = next(e for e in json.loads(REFERENCE.read_text())["models"] if e["name"].startswith("DeepSeek-V3.2-Exp"))
    ours = config_from_hf(entry["fields"])
    preset = get_config("deepseek-v3.2")
    assert ours.mixers == preset.mixers and ours.layer_ffns == preset.layer_ffns
    assert {k: v for k, v in ours.ffns["M"].__dict__.items() if k != "bias_update_rate"} == \
        {k: v for k, v in preset.ffns["M"].__dict__.items() if k != "bias_update_rate"}  # a training setting
    assert (ours.num_layers, ours.d_model, ours.vocab_size, ours.mtp_depth, ours.max_seq_len) == (
        preset.num_layers, preset.d_model, preset.vocab_size, preset.mtp_depth, preset.max_seq_len)


def test_v32_indexer_learns_from_its_kl_loss_only():
    # V3.2's sparse stage: KL(main attention on the selected keys || softmax(index scores)); the indexer's input is
    # detached, so the KL trains the indexer only and the LM loss never reaches it.
    cfg = config_from_hf({**TINY_V32, "model_type": "deepseek_v32", "index_topk": 6})
    cfg = cfg.replace(mixers={k: {**v.__dict__, "index_loss_coef": 1.0} for k, v in cfg.mixers.items()})
    torch.manual_seed(0)
    m = HybridLM(cfg).train()
    ids = torch.randint(0, 101, (2, 30))
    out = m(ids, labels=ids)
    mixers = [b.mixer for b in m.layers]
    kl = torch.stack([mx.aux_loss for mx in mixers]).sum()
    idx = {id(p) for mx in mixers for p in mx.indexer.parameters()}
    grads = torch.autograd.grad(kl, list(m.parameters()), allow_unused=True)
    touched = {id(p) for p, g in zip(m.parameters(), grads) if g is not None and g.abs().sum() > 0}
    assert touched and touched <= idx
    grads = torch.autograd.grad(out.ce_loss, list(m.parameters()), allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for p, g in zip(m.parameters(), grads) if id(p) in idx)
    opt = torch.optim.Adam([p for mx in mixers for p in mx.indexer.parameters()], lr=1e-2)
    kls = []
    for _ in range(30):
        m(ids, labels=ids)
        kl = torch.stack([mx.aux_loss for mx in mixers]).sum()
        kls.append(float(kl.detach()))
        opt.zero_grad()
        kl.backward()
        opt.step()
    assert kls[-1] < 0.7 * kls[0]


def test_tiny_deepseek_preset_on_the_harness():
    """The family's tiny preset through the harness: cached decode, cache bytes after prefill and decode, FLOPs."""
    m = HybridLM(get_config("tiny-deepseek")).eval()
    assert_cached_decode_matches(m, torch.randint(0, 256, (2, 29)), split_steps(29, [11, 20]))
    assert_cache_bytes_match(m, 256, 37, batch=2, dtype_bytes=4, chunk=16, decode_steps=2, total=True)
    assert_flops_match_counter(m, 256, tokens=40, decode_at=40)


# -- presets -----------------------------------------------------------------------------------------------
def _bias_floats(m) -> int:  # e_score_correction_bias: a checkpoint tensor, a buffer here (not a parameter)
    return sum(b.numel() for n, b in m.named_buffers() if n.endswith("expert_bias"))


def test_deepseek_v3_preset_reproduces_published_totals():
    m = HybridLM(get_config("deepseek-v3"), device="meta")
    V, D = m.config.vocab_size, m.config.d_model
    # published-configs.json caveats: '671B' = 671.026B main model incl. embedding+head, excl. MTP; MTP unique 11.610B.
    assert round(m.num_params(mtp=False) / 1e9, 3) == 671.026
    assert round((m.num_params() - m.num_params(mtp=False)) / 1e9, 3) == 11.610
    # HF safetensors total (685B): + the MTP layer's own copies of embedding and head, + the 59 bias vectors.
    assert m.num_params() + 2 * V * D + _bias_floats(m) == 684_489_845_504
    assert _bias_floats(m) == 59 * 256
    # active: 37.552B with embedding and head, 36.626B with one of them, 35.699B with neither
    got = [m.active_params(), m.active_params(embedding=False), m.active_params(embedding=False, head=False)]
    assert [round(g / 1e9, 3) for g in got] == [37.552, 36.626, 35.699]
    assert m.num_params_analytic() == m.num_params()


def test_kimi_k2_preset_reproduces_published_totals():
    m = HybridLM(get_config("kimi-k2"), device="meta")
    assert m.mtp is None
    assert m.num_params() + _bias_floats(m) == 1_026_408_232_448  # HF safetensors logical total
    # caveat: active 32.862B incl. embedding+head (its sum of rounded parts; exactly 32.8615B), 30.513B without
    assert round(m.active_params(embedding=False, head=False) / 1e9, 3) == 30.513
    assert abs(m.active_params() / 1e9 - 32.862) < 1e-3


@pytest.mark.parametrize("preset, prefix", [("deepseek-v3", "DeepSeek-V3 ("), ("kimi-k2", "Kimi-K2")])
def test_presets_match_published_hyperparameters(preset, prefix):
    fields = next(m["fields"] for m in json.loads(REFERENCE.read_text())["models"] if m["name"].startswith(prefix))
    fields = {**fields, "model_type": "deepseek_v3", "rope_parameters": {
        **{k: v for k, v in fields["rope_scaling"].items() if k != "type"}, "rope_type": "yarn",
        "rope_theta": fields["rope_theta"]}}
    from_fields, cfg = config_from_hf(fields), get_config(preset)
    assert from_fields.mixers == cfg.mixers and from_fields.layer_ffns == cfg.layer_ffns
    assert {k: v for k, v in from_fields.ffns["M"].__dict__.items() if k != "bias_update_rate"} == \
        {k: v for k, v in cfg.ffns["M"].__dict__.items() if k != "bias_update_rate"}
    assert (from_fields.vocab_size, from_fields.d_model, from_fields.mtp_depth, from_fields.max_seq_len) == \
        (cfg.vocab_size, cfg.d_model, cfg.mtp_depth, cfg.max_seq_len)


def test_cost_cli(capsys):
    assert main(["cost", "deepseek-v3", "--context", "8K,128K"]) == 0
    out = capsys.readouterr().out
    assert "671.026B" in out and "682.636B" in out and "37.552B" in out and "MLA 128q" in out
    m = HybridLM(get_config("deepseek-v3"), device="meta")
    assert m.cache_bytes_by_kind(8192) == {"latent": 61 * 576 * 8192 * 2}


# -- config ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, match", [
    ({"qk_rope_head_dim": 7}, "qk_rope_head_dim=7"),
    ({"q_lora_rank": 0}, "q_lora_rank=0"),
    ({"kv_lora_rank": 0}, "kv_lora_rank=0"),
    ({"rope_scaling": "ntk"}, "rope_scaling='ntk'"),
    ({"rope_scaling": "yarn", "yarn_factor": 0.0}, "yarn_factor=0.0"),
])
def test_mla_config_errors_name_the_field(change, match):
    with pytest.raises(ValueError, match=match):
        MLAConfig(**{"num_heads": 2, **change}).validate("mixers['L']", 64)


@pytest.mark.parametrize("change, match", [
    ({"n_groups": 5}, "n_groups=5"),
    ({"n_groups": 4, "topk_groups": 5}, "topk_groups=5"),
    ({"n_groups": 4, "topk_groups": 1, "top_k": 4}, "top_k=4"),
])
def test_moe_group_errors_name_the_field(change, match):
    with pytest.raises(ValueError, match=match):
        MoEConfig(**{"num_experts": 12, "top_k": 2, "expert_size": 8, **change}).validate("ffns['M']", 64)


def test_config_json_round_trip():
    cfg = get_config("deepseek-v3")
    again = ModelConfig.from_dict(json.loads(cfg.to_json()))
    assert again.mixers == cfg.mixers and again.ffns == cfg.ffns and again.layer_ffns == cfg.layer_ffns
