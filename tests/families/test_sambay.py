"""SambaY (Phi-4-mini-flash): no port runs on CPU (reference/oracles.md), so every mechanism is held against a
first-principles computation written here: a layer-by-layer plain-torch reference (every layer on every position,
no cache, no context, no prefill skipping), the GMU and its memory tap by hand, differential attention as its two
softmaxes, YOCO prefill against the full computation, cached decode, the window-bounded cache, and the accounting
against FlopCounterMode and measured bytes."""

import math

import pytest
import torch
import torch.nn.functional as F
from harness.cache_bytes import assert_cache_bytes_match
from harness.cached_decode import assert_cached_decode_matches, split_steps
from harness.flops import assert_flops_match_counter
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hybridlm.ops.causal_conv import grouped_conv_form

from hybridlm.interop.checkpoint import save
from hybridlm.layers.context import ForwardContext
from hybridlm.model import ModelConfig
from hybridlm.model.model import HybridLM
from hybridlm.ops.selective_scan import selective_scan_recurrent
from hybridlm.presets import get_config

V = 256


@pytest.fixture(scope="module")
def sambay():
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-sambay")).eval()
    with torch.no_grad():  # lambdas and norms away from their init, so a wrong formula shows
        for name, p in model.named_parameters():
            if "lambda" in name or "norm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    return model


# -- the independent reference ------------------------------------------------------------------------------------
def ref_mamba(m, x):
    """Mamba-1 from its equations over the op's step-by-step recurrence: -> (out [B, T, D], y before the gate)."""
    E, R, N = m.d_inner, m.dt_rank, m.cfg.d_state
    xz = x @ m.in_proj.weight.T
    u, z = xz[..., :E], xz[..., E:]
    K = m.conv_weight.shape[1]
    up = F.pad(u.transpose(1, 2), (K - 1, 0))  # [B, E, K-1+T]
    conv = sum(up[:, :, j:j + u.shape[1]] * m.conv_weight[:, j, None] for j in range(K)) + m.conv_bias[:, None]
    u = F.silu(conv).transpose(1, 2)
    dbc = u @ m.x_proj.weight.T
    dt, B, C = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
    delta = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)
    y, _ = selective_scan_recurrent(u, delta, -torch.exp(m.A_log), B, C, m.D)
    return (y * F.silu(z)) @ m.out_proj.weight.T, y


def naive_diff_attention(a, x, layer, kv=None, window=None):
    """Differential attention as its definition, pair by pair, with an explicit [T, S] mask; kv: a cross layer's
    (k, v) [B, G, S, d]. -> (out [B, T, D], (k, v))."""
    c = a.cfg
    B, T, _ = x.shape
    H, G, d = c.num_heads, c.num_kv_heads, c.head_dim
    q = (x @ a.q_proj.weight.T + a.q_proj.bias).view(B, T, H, d).transpose(1, 2)
    if kv is None:
        k = (x @ a.k_proj.weight.T + a.k_proj.bias).view(B, T, G, d).transpose(1, 2)
        v = (x @ a.v_proj.weight.T + a.v_proj.bias).view(B, T, G, d).transpose(1, 2)
    else:
        k, v = kv
    S = k.shape[2]
    qp, kp = torch.arange(S - T, S)[:, None], torch.arange(S)[None, :]
    allowed = (kp <= qp) & ((qp - kp) < window if window else True)
    lam_init = 0.8 - 0.6 * math.exp(-0.3 * layer)
    lam = (torch.exp((a.lambda_q1 * a.lambda_k1).sum()) - torch.exp((a.lambda_q2 * a.lambda_k2).sum()) + lam_init)
    outs = []
    for p in range(H // 2):
        g = p // ((H // 2) // (G // 2))  # the KV pair this query pair reads (GQA)
        vv = torch.cat((v[:, 2 * g], v[:, 2 * g + 1]), -1)  # [B, S, 2d]
        soft = []
        for h, kh in ((2 * p, 2 * g), (2 * p + 1, 2 * g + 1)):
            s = q[:, h] @ k[:, kh].transpose(-1, -2) / math.sqrt(d)
            soft.append(s.masked_fill(~allowed, float("-inf")).softmax(-1) @ vv)  # [B, T, 2d]
        o = soft[0] - lam * soft[1]
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + a.subln.eps) * a.subln.weight * (1 - lam_init)
        outs.append(o)
    o = torch.cat(outs, -1)  # [B, T, H d]: pair p's 2d columns are heads 2p, 2p+1
    return o @ a.o_proj.weight.T + a.o_proj.bias, (k, v)


def reference_forward(model, ids):
    """Every layer on every position, memory and KV handed on by hand."""
    x = model.embed(ids)
    memory = kv = None
    for i, block in enumerate(model.layers):
        mixer, kind = block.mixer, block.mixer.cfg.kind
        h = F.layer_norm(x, (x.shape[-1],), block.mixer_norm.weight, block.mixer_norm.bias, block.mixer_norm.eps)
        if kind == "mamba":
            y, m = ref_mamba(mixer, h)
            memory = m if mixer.cfg.memory_out else memory
        elif kind == "gmu":
            y = (F.silu(h @ mixer.in_proj.weight.T) * memory) @ mixer.out_proj.weight.T
        elif mixer.cfg.kv_source:
            y, _ = naive_diff_attention(mixer, h, i, kv=kv)
        else:
            y, pair = naive_diff_attention(mixer, h, i, window=mixer.cfg.sliding_window)
            kv = pair if mixer.cfg.kv_out else kv
        x = x + y
        n = block.ffn_norm
        h = F.layer_norm(x, (x.shape[-1],), n.weight, n.bias, n.eps)
        f = block.ffn
        x = x + (F.silu(h @ f.gate_proj.weight.T) * (h @ f.up_proj.weight.T)) @ f.down_proj.weight.T
    x = F.layer_norm(x, (x.shape[-1],), model.norm.weight, model.norm.bias, model.norm.eps)
    return x @ model.embed.weight.T


def test_forward_equals_the_layer_by_layer_reference(sambay):
    ids = torch.randint(0, V, (2, 90))  # past the 64-token window
    with torch.no_grad():
        got, ref = sambay(ids).logits, reference_forward(sambay, ids)
    assert (got - ref).abs().max().item() < 2e-5


def test_layout_of_the_presets():
    cfg = get_config("phi-4-mini-flash")
    assert "".join(cfg.layer_mixers) == "MS" * 8 + "WF" + "GX" * 7
    assert cfg.mixer(16).memory_out == "memory" and cfg.mixer(17).kv_out == "kv"
    assert cfg.mixer(17).sliding_window is None and cfg.mixer(1).sliding_window == 512
    assert all(cfg.mixer(i).kv_source == "kv" for i in range(19, 32, 2))
    assert "".join(get_config("tiny-samba").layer_mixers) == "MS" * 4


def test_phi_4_mini_flash_total_against_the_stated_3_8b():
    model = HybridLM(get_config("phi-4-mini-flash"), device="meta")
    n = model.num_params()
    assert n == model.num_params_analytic() == 3_852_562_944  # the count by hand: presets/sambay.py
    assert abs(n / 3.8e9 - 1) < 0.02  # model card: 3.8B


# -- the mechanisms by hand --------------------------------------------------------------------------------------
def test_gmu_output_and_memory_tap_by_hand(sambay):
    torch.manual_seed(1)
    w, g = sambay.layers[4].mixer, sambay.layers[6].mixer  # W (memory writer) and the first GMU
    x = torch.randn(2, 13, 128)
    ctx = ForwardContext(layer=4)
    out = w(x, 0, None, ctx)
    ref_out, y = ref_mamba(w, x)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ctx.get("memory"), y, atol=1e-5, rtol=1e-5)  # after the D skip, before the gate
    xg = torch.randn(2, 13, 128)
    m = ctx.get("memory")
    by_hand = torch.einsum("bte,de->btd", F.silu(torch.einsum("btd,ed->bte", xg, g.in_proj.weight)) * m,
                           g.out_proj.weight)
    torch.testing.assert_close(g(xg, 0, None, ctx), by_hand, atol=1e-5, rtol=1e-5)
    # a YOCO prefill runs it on the last positions alone: it reads the memory's last positions
    torch.testing.assert_close(g(xg[:, -1:], 12, None, ctx), by_hand[:, -1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [1, 5])  # the sliding-window layer and the full one
def test_differential_attention_equals_its_two_softmax_definition(sambay, layer):
    a = sambay.layers[layer].mixer
    x = torch.randn(2, 80, 128)
    with torch.no_grad():
        got = a(x, 0, None, ForwardContext(layer=layer))
        ref, _ = naive_diff_attention(a, x, layer, window=a.cfg.sliding_window)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_differential_attention_needs_even_heads_and_its_layer():
    mixers = get_config("tiny-sambay").to_dict()["mixers"]
    with pytest.raises(ValueError, match=r"differential.*even"):
        get_config("tiny-sambay").replace(mixers={**mixers, "S": {**mixers["S"], "num_heads": 3, "num_kv_heads": 1}})
    model = HybridLM(get_config("tiny-sambay"))
    with pytest.raises(ValueError, match="layer index"):
        model.layers[1].mixer(torch.randn(1, 4, 128))


def test_context_wiring_errors_name_the_layer():
    d = get_config("tiny-sambay").to_dict()
    with pytest.raises(ValueError, match=r"layer 6 \('G'\) reads 'memory'.*no earlier layer"):
        ModelConfig.from_dict({**d, "mixer_pattern": "MS MS MF GX"})
    bad = {**d["mixers"], "G": {**d["mixers"]["G"], "expand": 3}}
    with pytest.raises(ValueError, match=r"reads 'memory' as \('memory', 384\).*writes \('memory', 256\)"):
        ModelConfig.from_dict({**d, "mixers": bad})
    bad = {**d["mixers"], "F": {**d["mixers"]["F"], "sliding_window": 64}}
    with pytest.raises(ValueError, match="kv_out.*sliding_window"):
        ModelConfig.from_dict({**d, "mixers": bad})


# -- YOCO prefill, cached decode, the cache ------------------------------------------------------------------------
def test_yoco_prefill_skips_the_cross_decoder_and_equals_the_full_computation(sambay):
    ids = torch.randint(0, V, (2, 100))
    seen = []
    hooks = [b.register_forward_hook(lambda mod, args, out: seen.append(out.shape[1])) for b in sambay.layers[6:]]
    try:
        with torch.no_grad():
            full = sambay(ids).logits[:, -1]
        assert seen == [100, 100]
        seen.clear()
        got = sambay.prefill(ids, sambay.new_cache(), chunk=32)  # 4 chunks: only the last runs the suffix, once
    finally:
        for h in hooks:
            h.remove()
    assert sambay.stateless_from == 6 and seen == [1, 1]
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)


def test_cached_decode_equals_the_full_forward(sambay):
    ids = torch.randint(0, V, (2, 90))
    cache = assert_cached_decode_matches(sambay, ids, split_steps(90, cuts=(37, 70), singles_from=70), atol=2e-5)
    # the self-decoder's window layers stay bounded, the one full layer holds every token, the readers nothing
    kinds = [(b.mixer.cfg.kind, getattr(b.mixer.cfg, "sliding_window", None)) for b in sambay.layers]
    for (kind, window), layer in zip(kinds, cache.layers):
        if kind == "attention" and window:
            assert layer.k.shape[2] == window - 1
        elif kind == "attention" and layer is not None:
            assert layer.k.shape[2] == 90
    assert cache.layers[6] is None and cache.layers[7] is None


def test_greedy_generate_equals_argmax_of_full_forwards(sambay):
    ids = torch.randint(0, V, (1, 20))
    out = sambay.generate(ids, max_new_tokens=6)
    seq = ids
    for _ in range(6):
        with torch.no_grad():
            seq = torch.cat((seq, sambay(seq).logits[:, -1:].argmax(-1)), 1)
    assert torch.equal(out, seq)


# -- accounting ----------------------------------------------------------------------------------------------------
def test_params_flops_and_cache_bytes(sambay):
    assert sambay.num_params() == sambay.num_params_analytic()
    for b in sambay.layers:
        assert b.mixer.num_params() == sum(p.numel() for p in b.mixer.parameters())
    assert_flops_match_counter(sambay, V, tokens=70, decode_at=70)
    # a YOCO prefill: the self-decoder on all 70 positions (the counter sees SDPA densely), the cross-decoder as one
    # decode step at position 70, one head row; prefill_flops is the same sum with the causal mask skipped
    pre, suf = sambay.layers[:6], sambay.layers[6:]

    def prefill(causal_skip):
        return (70 * sum(b.mixer.flops_per_token(70, causal_skip) + b.ffn.flops_per_token() for b in pre)
                + sum(b.mixer.decode_flops(70) + b.ffn.flops_per_token() for b in suf) + sambay.head_flops())
    with sdpa_kernel(SDPBackend.MATH), grouped_conv_form(), FlopCounterMode(display=False) as fc:
        sambay.prefill(torch.randint(0, V, (1, 70)), sambay.new_cache())
    assert fc.get_total_flops() == prefill(False)
    assert sambay.prefill_flops(70) == prefill(True)
    # against the same stack run on every position: 6 of 8 layers here; 18 of 32 in Phi-4-mini-flash at 32K
    for model, T, bound in ((sambay, 70, 0.8), (HybridLM(get_config("phi-4-mini-flash"), device="meta"), 32768, 0.6)):
        every = T * model.flops_per_token(T, head=False) + model.head_flops()
        assert model.prefill_flops(T) < bound * every
    assert_cache_bytes_match(sambay, V, context=100, chunk=48, decode_steps=2, total=True)
    # the one full layer is the only cache that grows with the context: 2 (k, v) x 2 heads x 32 x 2 bytes per token
    c1, c2 = sambay.cache_bytes_by_kind(1000), sambay.cache_bytes_by_kind(2000)
    assert c2["kv"] - c1["kv"] == 1000 * 2 * 2 * 32 * 2 and c1["recurrent"] == c2["recurrent"]


def test_checkpoint_round_trip_in_hybridlms_format(sambay, tmp_path):
    from hybridlm.interop.specs import load_model
    ids = torch.randint(0, V, (1, 30))
    save(tmp_path / "run", 1, model_state=sambay.state_dict(), optim_state={"state": {}, "param_groups": []},
         trainer={"scheduler": {"step": 1}}, model_config_json=sambay.config.to_json(), train_config={},
         rng={"cpu": torch.get_rng_state()[None]})
    loaded = load_model(str(tmp_path / "run"))[0].eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, sambay(ids).logits)
    with pytest.raises(ValueError, match="has no Hugging Face format"):
        sambay.save_hf(tmp_path / "hf")
