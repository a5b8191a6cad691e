"""DeepSeek-V3.2 (MLA + DeepSeek Sparse Attention lightning indexer) against transformers==5.23.0's deepseek_v32 as
the oracle: a tiny DeepseekV32ForCausalLM with random weights and a small index_topk (so that sparsity changes the
logits), loaded by HybridLM.from_hf, gives the same logits; save_hf output loads back in transformers with the same
logits; cached decode (chunks, then absorbed single-token steps, each with the indexer's own key cache) equals the
full forward; the cache holds kv_lora_rank + qk_rope_head_dim + index_head_dim values per token and layer; the
accounting matches direct counts; the deepseek-v3.2 preset reproduces the published totals."""

import pytest
import torch
from flops import counted_flops

transformers = pytest.importorskip("transformers")

from test_deepseek import _hf_model as _hf_model_v3
from test_deepseek import _logits

from hybridlm import HybridLM, MLAConfig, get_config
from hybridlm.cost import REFERENCE
from hybridlm.hf import config_from_hf

ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "original_max_position_embeddings": 32,
        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}
TINY = {"vocab_size": 101, "hidden_size": 48, "intermediate_size": 72, "moe_intermediate_size": 20,
        "num_hidden_layers": 3, "num_attention_heads": 3, "num_key_value_heads": 3, "n_shared_experts": 2,
        "n_routed_experts": 12, "kv_lora_rank": 24, "q_lora_rank": 20, "qk_rope_head_dim": 8, "v_head_dim": 12,
        "qk_nope_head_dim": 10, "n_group": 4, "topk_group": 2, "num_experts_per_tok": 3, "first_k_dense_replace": 1,
        "routed_scaling_factor": 2.5, "max_position_embeddings": 1280, "rope_parameters": ROPE,
        "index_n_heads": 6, "index_head_dim": 16, "index_topk": 4}
T = 30


def _hf_model(**overrides):
    return _hf_model_v3(transformers.DeepseekV32Config, TINY, **overrides)


def test_from_hf_and_back_matches_transformers_and_cached_decode(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path / "hf")
    torch.manual_seed(1)
    ids = torch.randint(0, 101, (2, T))
    ref = _logits(hf, ids)
    assert ref.abs().max() > 1.0
    for layer in hf.model.layers:  # dense (top-k >= T) logits differ: the sparsity matters in this test
        layer.self_attn.indexer.index_topk = 10_000
    assert (_logits(hf, ids) - ref).abs().max().item() > 1e-2

    ours = HybridLM.from_hf(tmp_path / "hf").eval()
    mla = ours.config.mixers["L"]
    assert ours.config.hf_model_type == "deepseek_v32" and ours.config.layer_ffns == ["D", "M", "M"]
    assert (mla.index_n_heads, mla.index_head_dim, mla.index_topk, mla.rope_interleaved) == (6, 16, 4, True)
    assert (_logits(ours, ids) - ref).abs().max().item() <= 1e-4

    ours.save_hf(tmp_path / "ours")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert type(back).__name__ == "DeepseekV32ForCausalLM" and back.config.index_topk == 4
    assert (_logits(back, ids) - ref).abs().max().item() <= 1e-4

    # Cached: a first chunk, a second chunk after a cached prefix, then absorbed single-token steps; the same steps
    # through transformers' own cache agree too. (An exact tie in the indexer scores, e.g. two keys whose every
    # head's ReLU is 0, is broken by torch.topk in a shape-dependent way, so with unlucky inputs cached and full
    # passes can pick different keys, in transformers as here; these inputs have no tie at the top-k boundary.)
    cache, hf_cache = ours.new_cache(), transformers.DynamicCache(config=hf.config)
    for layer in hf.model.layers:
        layer.self_attn.indexer.index_topk = 4
    steps = [(0, 9), (9, 17)] + [(t, t + 1) for t in range(17, T)]
    with torch.no_grad():
        parts = [ours(ids[:, a:b], cache=cache).logits for a, b in steps]
        hf_parts = [hf(input_ids=ids[:, a:b], past_key_values=hf_cache, use_cache=True).logits for a, b in steps]
    assert (torch.cat(parts, 1) - ref).abs().max().item() <= 1e-4
    assert (torch.cat(parts, 1) - torch.cat(hf_parts, 1)).abs().max().item() <= 1e-4
    R, r, Di = TINY["kv_lora_rank"], TINY["qk_rope_head_dim"], TINY["index_head_dim"]
    for b, layer in zip(ours.layers, cache.layers):
        assert layer.index_k.shape == (2, T, Di)
        assert layer.memory_bytes() == 2 * T * (R + r + Di) * 4 == b.mixer.cache_bytes(T, 2, 4)
    want = {"latent": 3 * 2 * T * (R + r + Di) * 4}
    assert cache.memory_by_kind() == ours.cache_bytes_by_kind(T, batch=2, dtype_bytes=4) == want
    # Both attention forms give the same sparse result.
    for b in ours.layers:
        b.mixer.absorb = "always"
    assert (_logits(ours, ids) - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dtype, nbytes", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_analytic_cache_bytes_equal_memory_after_prefill(dtype, nbytes):
    torch.manual_seed(0)
    m = HybridLM(config_from_hf({**TINY, "model_type": "deepseek_v32"})).to(dtype).eval()
    cache = m.new_cache()
    m.prefill(torch.randint(0, 101, (2, 77)), cache, chunk=32)
    assert cache.memory_by_kind() == m.cache_bytes_by_kind(77, batch=2, dtype_bytes=nbytes, state_bytes=4)
    with torch.no_grad():
        m(torch.randint(0, 101, (2, 1)), cache=cache)
    assert cache.memory_bytes() == m.cache_bytes(78, batch=2, dtype_bytes=nbytes) == 3 * 2 * 78 * (32 + 16) * nbytes


def test_accounting_matches_counts():
    torch.manual_seed(0)
    # top-k above the context: the masked dense computation the counter sees is exactly the sparse count
    m = HybridLM(config_from_hf({**TINY, "model_type": "deepseek_v32", "index_topk": 64})).eval()

    assert counted_flops(m, torch.randint(0, 101, (1, 40))) == m.forward_flops(40, causal_skip=False)
    cache = m.new_cache()
    m.prefill(torch.randint(0, 101, (1, 39)), cache)
    assert counted_flops(m, torch.randint(0, 101, (1, 1)), cache) == m.decode_flops(40)
    mla = m.layers[0].mixer
    assert mla.num_params() == sum(p.numel() for p in mla.parameters())
    # sparse counts: attention over at most index_topk keys, the indexer over every causal key
    c = mla.cfg.__class__(**{**mla.cfg.__dict__, "index_topk": 4})
    from hybridlm.mixers.mla import MLA
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


def test_preset_matches_published_hyperparameters():
    import json
    entry = next(e for e in json.loads(REFERENCE.read_text())["models"] if e["name"].startswith("DeepSeek-V3.2-Exp"))
    ours = config_from_hf(entry["fields"])
    preset = get_config("deepseek-v3.2")
    assert ours.mixers == preset.mixers and ours.layer_ffns == preset.layer_ffns
    assert {k: v for k, v in ours.ffns["M"].__dict__.items() if k != "bias_update_rate"} == \
        {k: v for k, v in preset.ffns["M"].__dict__.items() if k != "bias_update_rate"}  # a training setting
    assert (ours.num_layers, ours.d_model, ours.vocab_size, ours.mtp_depth, ours.max_seq_len) == (
        preset.num_layers, preset.d_model, preset.vocab_size, preset.mtp_depth, preset.max_seq_len)


def test_indexer_learns_from_its_kl_loss_only():
    # V3.2's sparse stage: KL(main attention on the selected keys || softmax(index scores)); the indexer's input is
    # detached, so the KL trains the indexer only and the LM loss never reaches it.
    cfg = config_from_hf({**TINY, "model_type": "deepseek_v32", "index_topk": 6})
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
