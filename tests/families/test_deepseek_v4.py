"""The DeepSeek-V4 family.

DeepSeek-V4 (shared-KV attention with window + sink, CSA with the lightning indexer, HCA, grouped output, mHC,
sqrt-softplus / hash-routed / clamped-SwiGLU MoE, MTP) against transformers==5.23.0 as the independent oracle: a tiny
DeepseekV4ForCausalLM with random weights, saved, loaded by HybridLM.from_hf, gives the same logits; save_hf output
loads back in transformers; cached decode equals the full forward past the window and both compression ratios; the
cache holds exactly what the accounting says; the presets reproduce the published checkpoint totals."""

import json

import pytest
import torch
from harness.cache_bytes import assert_cache_bytes_match
from harness.cached_decode import assert_cached_decode_matches, cached_logits, split_steps
from harness.flops import assert_flops_match_counter, assert_params_counted
from harness.hf_parity import (
    assert_greedy_generate_matches,
    assert_logits_match,
    assert_round_trip,
    convert,
    hf_logits,
)
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from test_deepseek import hf_model as _hf_deepseek

from hybridlm import HybridLM, ModelConfig, get_config
from hybridlm.cli import main
from hybridlm.layers.mixers.compressed_attention import CompressedAttentionConfig
from hybridlm.layers.ffn.moe import MoEConfig
from hybridlm.analysis.cost_report import REFERENCE
from hybridlm.interop.hf.base import config_from_hf
from hybridlm.model.hyper import HyperConnection
from hybridlm.layers.ffn.moe import MoE

CSA, HCA, SWA = "compressed_sparse_attention", "heavily_compressed_attention", "sliding_attention"
YARN = {"type": "yarn", "factor": 16, "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1}
# Odd sizes on purpose; window 8, CSA every 4 tokens (indexer keeps 3), HCA every 8, 2 hash-routed layers, every
# attention kind, so a 37-token sequence runs past the window and several compressed entries of each kind.
TINY = {"vocab_size": 97, "hidden_size": 48, "moe_intermediate_size": 24, "num_hidden_layers": 5,
        "num_attention_heads": 4, "head_dim": 32, "qk_rope_head_dim": 8, "q_lora_rank": 20, "n_routed_experts": 6,
        "num_experts_per_tok": 2, "o_groups": 2, "o_lora_rank": 12, "index_n_heads": 8, "index_head_dim": 16,
        "index_topk": 3, "sliding_window": 8, "layer_types": [SWA, CSA, HCA, CSA, HCA],
        "compress_rates": {CSA: 4, HCA: 8}, "mlp_layer_types": ["hash_moe", "hash_moe", "moe", "moe", "moe"],
        "max_position_embeddings": 1024, "rope_scaling": YARN, "routed_scaling_factor": 1.5}


def _hf_model(**overrides):
    """test_deepseek's tiny-model builder (norms jittered, matrices at 1.2 / sqrt(fan-in)), plus V4's vectors: sinks,
    compressor position biases and mHC biases / scales away from their zero / one init, and a real hash table."""
    model = _hf_deepseek(transformers.DeepseekV4Config, TINY, **overrides)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("sinks", "position_bias", "base")):
                p.normal_(0.0, 0.5)
            elif name.endswith("scale"):
                p.add_(0.2 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("tid2eid"):  # distinct experts per token (transformers' init is zeros)
                b.copy_(torch.rand(b.shape[0], TINY["n_routed_experts"]).argsort(-1)[:, :b.shape[1]])
    return model.eval()


def test_from_hf_and_back_matches_transformers_and_cached_decode(tmp_path):
    hf = _hf_model()
    ids = torch.randint(0, 97, (2, 37))
    ours, ref = convert(hf, tmp_path / "hf", ids)
    assert ref.abs().max() > 1.0
    assert ours.config.layer_mixers == list("SCHCH") and ours.config.layer_ffns == list("XXMMM")
    assert ours.config.hc_mult == 4 and ours.config.mtp_depth == 0  # transformers saves no MTP weights
    assert_logits_match(ours, ids, ref, atol=1e-4)
    assert_round_trip(ours, tmp_path / "ours", ids, ref, atol=1e-4)
    assert "layers.0.ffn.gate.tid2eid" in load_file(tmp_path / "ours" / "model.safetensors")  # DeepSeek's names

    # Cached: a first chunk, a second chunk after a cached prefix, then single-token steps, past the window (8) and
    # past several CSA (4) and HCA (8) windows; transformers' own cache agrees too.
    steps = split_steps(37, [11, 19])
    cache, hf_cache = ours.new_cache(), transformers.DynamicCache(config=hf.config)
    got, _ = cached_logits(ours, ids, steps, cache)
    with torch.no_grad():
        hf_parts = [hf(input_ids=ids[:, a:b], past_key_values=hf_cache, use_cache=True).logits for a, b in steps]
    assert (got - ref).abs().max().item() <= 1e-4
    assert (got - torch.cat(hf_parts, 1)).abs().max().item() <= 1e-4
    # bounded: the window keeps 7 vectors, the compressors their entries (37 // 4 = 9 CSA, 37 // 8 = 4 HCA)
    layer = cache.layers[1]
    assert layer.kv.shape[1] == 7 and layer.compressor.entries.shape[1] == 9 and layer.indexer.entries.shape[1] == 9
    assert cache.layers[2].compressor.entries.shape[1] == 4


def test_query_blocks_match_transformers_on_a_long_sequence(tmp_path):
    # 300 tokens: three query blocks of 128, each reaching back into the previous one's window keys; 75 CSA and 37 HCA
    # entries; then a cached prefill in two chunks that cut blocks differently, and decode steps.
    ids = torch.randint(0, 97, (1, 300))
    ours, ref = convert(_hf_model(index_topk=5), tmp_path, ids)
    assert_logits_match(ours, ids, ref, atol=1e-4)
    assert_cached_decode_matches(ours, ids, split_steps(300, [131, 297]), ref=ref)


def test_generate_matches_transformers_greedy(tmp_path):
    hf = _hf_model()
    ours = convert(hf, tmp_path)
    assert_greedy_generate_matches(ours, hf, torch.randint(0, 97, (1, 13)), max_new_tokens=20)


def test_hyper_connection_matches_transformers_and_is_doubly_stochastic():
    cfg = transformers.DeepseekV4Config(**TINY)
    theirs = transformers.models.deepseek_v4.modeling_deepseek_v4.DeepseekV4HyperConnection(cfg)
    ours = HyperConnection(4, 48, 20, 1e-6, 1e-6)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in (theirs.fn, theirs.base, theirs.scale):
            p.normal_(0.0, 0.5)
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(2, 5, 4, 48)
        post, comb, collapsed = theirs(x)
        u, post2, comb2 = ours(x)
    assert torch.allclose(u, collapsed, atol=1e-6) and torch.allclose(post2, post) and torch.allclose(comb2, comb)
    assert torch.allclose(comb2.sum(-1), torch.ones(2, 5, 4), atol=1e-3)  # rows ...
    assert torch.allclose(comb2.sum(-2), torch.ones(2, 5, 4), atol=1e-5)  # ... and columns sum to 1
    assert (post2 > 1).any()  # post is 2 sigmoid (DeepSeek's kernel), not sigmoid


@pytest.mark.parametrize("hash_layer", [0, 2])
def test_moe_matches_transformers_with_the_clamp_binding(hash_layer):
    cfg = transformers.DeepseekV4Config(**TINY)
    theirs = transformers.models.deepseek_v4.modeling_deepseek_v4.DeepseekV4SparseMoeBlock(cfg, hash_layer).eval()
    c = MoEConfig(num_experts=6, top_k=2, expert_size=24, shared_size=24, score_func="sqrtsoftplus",
                  routed_scale=1.5, swiglu_limit=10.0, hash_routing=hash_layer < 2)
    ours = MoE(c, 48, vocab_size=97).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0.0, 0.7)  # large: many gate / up pre-activations exceed the limit of 10
        state = {"router.weight": theirs.gate.weight, "gate_up_proj": theirs.experts.gate_up_proj,
                 "down_proj": theirs.experts.down_proj, "expert_bias": torch.zeros(6),
                 **{f"shared.{n}.weight": getattr(theirs.shared_experts, n).weight
                    for n in ("gate_proj", "up_proj", "down_proj")}}
        if c.hash_routing:
            theirs.gate.tid2eid.copy_(torch.rand(97, 6).argsort(-1)[:, :2])
            state["tid2eid"] = theirs.gate.tid2eid
        else:
            theirs.gate.e_score_correction_bias.normal_(0.0, 0.3)
            state["expert_bias"] = theirs.gate.e_score_correction_bias
        ours.load_state_dict(state)
        x, ids = torch.randn(2, 9, 48), torch.randint(0, 97, (2, 9))
        assert (theirs.shared_experts.up_proj(x).abs() > 10).any()
        want = theirs(x, input_ids=ids)
        got = ours(x, ids)
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
    if c.hash_routing:  # the experts are the table's, whatever the router says
        _, idx, _ = ours.route(x.reshape(-1, 48), ids.reshape(-1))
        assert torch.equal(idx, ours.tid2eid[ids.reshape(-1)])
        with pytest.raises(ValueError, match="hash-routed"):
            ours(x)


def test_mtp_checkpoint_layout_round_trip(tmp_path):
    cfg = get_config("tiny-deepseek-v4")
    torch.manual_seed(0)
    a = HybridLM(cfg).eval()
    a.save_hf(tmp_path)
    names = load_file(tmp_path / "model.safetensors")
    assert {"mtp.0.e_proj.weight", "mtp.0.h_proj.weight", "mtp.0.hc_head_fn", "mtp.0.attn.attn_sink",
            "mtp.0.hc_attn_fn", "hc_head_fn", "layers.1.attn.indexer.compressor.ape"} <= set(names)
    b = HybridLM.from_hf(tmp_path).eval()
    ids = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        out_a, out_b = a(ids, labels=ids), b(ids, labels=ids)
    assert torch.equal(out_a.logits, out_b.logits) and torch.equal(out_a.mtp_logits, out_b.mtp_logits)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # drops mtp.*
    assert (hf_logits(hf, ids) - out_a.logits).abs().max().item() <= 1e-4


def test_quantised_or_wrong_checkpoints_are_refused_clearly(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    tensors = load_file(f)
    save_file({**tensors, "model.layers.0.attn.wq_a.scale": torch.ones(1, 1)}, f)
    with pytest.raises(ValueError, match="quantised weights"):
        HybridLM.from_hf(tmp_path)
    del tensors["model.layers.3.attn.indexer.wq_b.weight"]
    save_file(tensors, f)
    with pytest.raises(ValueError, match=r"missing \(1\): layers.3.attn.indexer.wq_b.weight"):
        HybridLM.from_hf(tmp_path)


@pytest.mark.parametrize("dtype, nbytes", [(torch.float32, 4), (torch.bfloat16, 2)])
@pytest.mark.parametrize("context", [7, 8, 13, 37])
def test_analytic_cache_bytes_equal_memory_after_prefill(dtype, nbytes, context):
    m = HybridLM(config_from_hf({**TINY, "model_type": "deepseek_v4"})).to(dtype).eval()
    cache = assert_cache_bytes_match(m, 97, context, batch=2, dtype_bytes=nbytes, chunk=5, by_kind=False, total=True)
    assert set(cache.memory_by_kind()) == {"compressed"} == set(m.cache_bytes_by_kind(context))


def test_flops_match_flop_counter_and_accounting_matches_counts():
    # index_topk >= every entry count: the dense computation here then equals the analytic (sparse) count
    m = HybridLM(config_from_hf({**TINY, "model_type": "deepseek_v4", "sliding_window": 64, "index_topk": 64})).eval()
    assert_flops_match_counter(m, 97, tokens=40, decode_at=40)
    assert_params_counted([b.mixer for b in m.layers])
    assert m.num_params_analytic() == m.num_params()


def test_causal_flops_follow_the_window_and_the_top_k():
    mixer = HybridLM(get_config("deepseek-v4-flash"), device="meta").layers[2].mixer  # CSA: window 128, top-512
    assert mixer.keys_seen(100) == 100 + 25 and mixer.keys_seen(10_000) == 128 + 512
    brute = sum(mixer.keys_seen(t) for t in range(1, 5000))
    assert mixer._sum_keys(4999)[0] == brute


# -- presets -----------------------------------------------------------------------------------------------
def _checkpoint_ints(m) -> int:  # tid2eid tables and score-routed selection biases: buffers here
    return sum(b.numel() for n, b in m.named_buffers()
               if n.endswith("tid2eid") or (n.endswith("expert_bias") and not m.get_submodule(n[:-12]).cfg.hash_routing))


@pytest.mark.parametrize("preset, main, with_mtp, hf_total, active", [
    # published-configs.json: Flash "284B" = 284.332B main stack, 290.942B with MTP, HF total 290,944,616,402;
    # active 13.800B / 13.270B / 12.741B (embedding+head / head / neither)
    ("deepseek-v4-flash", 284.332, 290.942, 290_944_616_402, [13.800, 13.270, 12.741]),
    # Pro "1.6T" = 1.5730T main, 1.5988T with MTP, HF total 1,598,839,674,782; active 49.779B / 48.852B / 47.926B
    ("deepseek-v4-pro", 1572.997, 1598.837, 1_598_839_674_782, [49.779, 48.852, 47.926]),
])
def test_presets_reproduce_published_totals(preset, main, with_mtp, hf_total, active):
    m = HybridLM(get_config(preset), device="meta")
    assert round(m.num_params(mtp=False) / 1e9, 3) == main and round(m.num_params() / 1e9, 3) == with_mtp
    assert m.num_params() + _checkpoint_ints(m) == hf_total
    got = [m.active_params(), m.active_params(embedding=False), m.active_params(embedding=False, head=False)]
    assert [round(g / 1e9, 3) for g in got] == active
    assert m.num_params_analytic() == m.num_params()


@pytest.mark.parametrize("preset, name", [("deepseek-v4-flash", "DeepSeek-V4-Flash"), ("deepseek-v4-pro", "DeepSeek-V4-Pro")])
def test_presets_match_published_hyperparameters(preset, name):
    fields = next(m["fields"] for m in json.loads(REFERENCE.read_text())["models"] if m["name"] == name)
    from_fields, cfg = config_from_hf(fields), get_config(preset)  # DeepSeek's own (legacy) config fields
    assert from_fields.layer_mixers == cfg.layer_mixers and from_fields.layer_ffns == cfg.layer_ffns
    assert all(from_fields.mixers[k] == cfg.mixers[k] for k in from_fields.mixers)
    strip = lambda c: {k: v for k, v in vars(c).items() if k != "bias_update_rate"}  # bias_update_rate: training
    assert all(strip(from_fields.ffns[k]) == strip(cfg.ffns[k]) for k in cfg.ffns)
    for f in ("vocab_size", "d_model", "mtp_depth", "max_seq_len", "hc_mult", "hc_sinkhorn_iters", "norm_eps"):
        assert getattr(from_fields, f) == getattr(cfg, f), f


def test_cache_at_1m_is_a_few_percent_of_v32():
    flash, v32 = (HybridLM(get_config(n), device="meta") for n in ("deepseek-v4-flash", "deepseek-v3.2"))
    L = 1024 ** 2
    # per token: 21 CSA layers x (512/4 + 128/4) + 20 HCA layers x 512/128 = 3440 values, vs 61 x (576 + 128)
    assert abs(flash.cache_bytes(L) / (3440 * L * 2) - 1) < 1e-3
    assert 0.07 < flash.cache_bytes(L) / v32.cache_bytes(L) < 0.09  # DeepSeek's stated ~7% (Flash)


# -- config mistakes, CLI ------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, match", [
    ({"compression": "sparse"}, "compression"),
    ({"o_groups": 3}, "o_groups"),
    ({"rope_dim": 7}, "rope_dim"),
    ({"compression": "csa", "index_head_dim": 4}, "index_head_dim"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4}}, "rope_scaling"),
    ({"sliding_window": 0}, "sliding_window"),
])
def test_attention_config_errors_name_the_field(change, match):
    base = {"num_heads": 4, "head_dim": 32, "rope_dim": 8, "q_lora_rank": 16, "o_groups": 2, "o_lora_rank": 8}
    cfg = {"vocab_size": 50, "d_model": 32, "num_layers": 1, "mixer_pattern": "A", "ffn_pattern": "M",
           "mixers": {"A": CompressedAttentionConfig(**{**base, **change})},
           "ffns": {"M": MoEConfig(num_experts=4, top_k=2, expert_size=8)}, "zero_centered_norm": False}
    with pytest.raises(ValueError, match=match):
        ModelConfig(**cfg)


@pytest.mark.parametrize("change, match", [
    ({"hc_mult": 0}, "hc_mult"), ({"hc_eps": 0.0}, "hc_eps"), ({"hc_sinkhorn_iters": 0}, "hc_sinkhorn_iters")])
def test_model_config_errors_name_the_field(change, match):
    with pytest.raises(ValueError, match=match):
        get_config("tiny-deepseek-v4").replace(**change)


def test_moe_config_errors_name_the_field():
    with pytest.raises(ValueError, match="hash_routing"):
        MoEConfig(num_experts=8, top_k=2, expert_size=8, n_groups=2, hash_routing=True).validate("ffns['X']", 16)
    with pytest.raises(ValueError, match="swiglu_limit"):
        MoEConfig(num_experts=8, top_k=2, expert_size=8, swiglu_limit=-1.0).validate("ffns['X']", 16)


def test_config_json_round_trip():
    cfg = get_config("deepseek-v4-flash")
    assert ModelConfig.from_json(cfg.to_json()) == cfg


def test_tiny_preset_trains_its_loss_falls_and_it_exports(tmp_path):
    out = tmp_path / "run"
    main(["train", "tiny-deepseek-v4", "--steps", "40", "--seq-len", "64", "--batch-size", "4", "--lr", "3e-3",
          "--warmup-steps", "5", "--corpus-max-bytes", "200000", "--out", str(out), "--log-every", "1",
          "--eval-every", "0", "--no-progress"])
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    # the trained checkpoint exports with its moved selection biases (deepseek_v4 holds them) and reloads exactly
    assert main(["export", str(out), str(tmp_path / "hf")]) == 0
    from hybridlm.interop.checkpoint import Checkpoint
    trained, exported = Checkpoint.open(out).load_model().eval(), HybridLM.from_hf(tmp_path / "hf").eval()
    assert any(b.ffn.expert_bias.any() for b in trained.layers if not b.ffn.cfg.hash_routing)
    ids = torch.randint(0, 256, (1, 50))
    assert torch.equal(hf_logits(trained, ids), hf_logits(exported, ids))


def test_cost_cli_prints_v4(tmp_path):
    main(["cost", "deepseek-v4-flash", "--context", "1M", "--json", str(tmp_path / "cost.json")])
    report = json.loads((tmp_path / "cost.json").read_text())
    model = report["models"][0]
    assert model["params"]["total_without_mtp"] == HybridLM(get_config("deepseek-v4-flash"), device="meta").num_params(
        mtp=False)
    assert "CSA" in model["layout"] and "HCA" in model["layout"]


# -- training the indexer (DeepSeek-V3.2's sparse-stage KL objective) ----------------------------------------
def test_index_kl_loss_against_kl_div():
    from hybridlm.ops.index_loss import index_kl_loss
    torch.manual_seed(0)
    index, target = torch.randn(2, 5, 7), torch.rand(2, 5, 7)
    selected = torch.rand(2, 5, 7) > 0.4
    selected[0, 0] = False  # a query with nothing selected does not count
    want = []
    for b in range(2):
        for t in range(5):
            s = selected[b, t]
            if s.any():
                p = target[b, t][s] / target[b, t][s].sum()
                want.append(torch.nn.functional.kl_div(index[b, t][s].log_softmax(-1), p, reduction="sum"))
    assert torch.allclose(index_kl_loss(index, target, selected), torch.stack(want).mean(), atol=1e-6)
    # zero exactly when the indexer's distribution over the selected keys is the target's
    assert index_kl_loss(target.log(), target, selected).abs() < 1e-6


def test_indexer_learns_from_its_loss_only():
    cfg = get_config("tiny-deepseek-v4")
    assert cfg.mixers["C"].index_loss_coef > 0
    torch.manual_seed(0)
    m = HybridLM(cfg).train()
    ids = torch.randint(0, 256, (2, 96))
    csa = [b.mixer for b in m.layers if b.mixer.indexer is not None]
    out = m(ids, labels=ids)
    kl = torch.stack([mx.aux_loss for mx in csa]).sum()
    assert kl > 0 and out.aux_loss is not None and out.aux_loss >= kl
    idx_params = {id(p) for mx in csa for p in mx.indexer.parameters()}
    grads = torch.autograd.grad(kl, list(m.parameters()), allow_unused=True)
    touched = {id(p) for p, g in zip(m.parameters(), grads) if g is not None and g.abs().sum() > 0}
    assert touched and touched <= idx_params  # the KL reaches the indexer only (its input is detached)
    grads = torch.autograd.grad(out.ce_loss, list(m.parameters()), allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for p, g in zip(m.parameters(), grads) if id(p) in idx_params)

    opt = torch.optim.Adam([p for mx in csa for p in mx.indexer.parameters()], lr=1e-2)
    first = None
    for _ in range(30):
        m(ids, labels=ids)
        kl = torch.stack([mx.aux_loss for mx in csa]).sum()
        first = float(kl.detach()) if first is None else first
        opt.zero_grad()
        kl.backward()
        opt.step()
    assert float(kl.detach()) < 0.7 * first
    m.eval()
    with torch.no_grad():
        m(ids)
    assert all(mx.aux_loss is None for mx in csa)  # only training forwards compute it


def test_indexer_ties_at_the_cut_off_go_to_the_earliest_entries():
    from hybridlm.layers.mixers.compressor import Indexer
    ix = Indexer(16, 8, 2, 8, ratio=4, topk=3, norm_eps=1e-6)
    positions = torch.tensor([40, 41])  # 10 complete entries for both queries
    index = torch.tensor([[[0.5, 0.0, 0.0, 0.9, 0.0, 0.0, -0.2, 0.0, 0.0, 0.0, 7.0, 7.0]] * 2])  # 2 future entries
    top, valid = ix.select(index, positions)
    assert sorted(top[0, 0][valid[0, 0]].tolist()) == [0, 1, 3]  # 0.9, 0.5, then the earliest of the zeros
    # the same query with only its complete entries (a cached step) picks the same ones
    top2, valid2 = ix.select(index[..., :10], positions)
    assert sorted(top2[0, 0][valid2[0, 0]].tolist()) == [0, 1, 3]
    # fewer complete entries than top-k: all of them, the rest invalid
    top3, valid3 = ix.select(index[..., :10], torch.tensor([6, 9]))
    assert sorted(top3[0, 0][valid3[0, 0]].tolist()) == [0] and sorted(top3[0, 1][valid3[0, 1]].tolist()) == [0, 1]
