"""The generic families (tiny-attention, tiny-gdn, tiny-hybrid: Gated DeltaNet + gated / sliding-window attention):
attention against a naive reference, cached decode and chunked prefill against a full forward, cache memory."""

import math

import pytest
import torch
from harness.cache_bytes import assert_cache_bytes_match
from harness.cached_decode import assert_cached_decode_matches, assert_chunked_prefill_matches, split_steps
from harness.flops import assert_flops_match_counter
from harness.tiny import tiny_config

from hybridlm import AttentionConfig, HybridLM, get_config
from hybridlm.layers.mixers.attention import Attention
from hybridlm.core.rope import rope_cos_sin


def naive_attention(mod: Attention, x, pos0=0):
    """Explicit softmax attention with repeated KV heads, written independently of SDPA."""
    c = mod.cfg
    B, T, _ = x.shape
    H, G, d = c.num_heads, c.num_kv_heads, c.head_dim
    q = mod.q_proj(x)
    if c.output_gate:
        q, gate = q.view(B, T, H, 2 * d).chunk(2, -1)
    q = q.reshape(B, T, H, d)
    k, v = mod.k_proj(x).view(B, T, G, d), mod.v_proj(x).view(B, T, G, d)
    if c.qk_norm:
        q, k = mod.q_norm(q), mod.k_norm(k)
    if c.rope_dim:
        cos, sin = rope_cos_sin(torch.arange(pos0, pos0 + T), c.rope_dim, c.rope_theta, x.dtype)
        def rot(t):  # rotate pairs (i, i + rd/2) explicitly
            r, h = c.rope_dim, c.rope_dim // 2
            a, b = t[..., :h], t[..., h:r]
            cs, sn = cos[None, :, None, :h], sin[None, :, None, :h]
            return torch.cat((a * cs - b * sn, b * cs + a * sn, t[..., r:]), -1)
        q, k = rot(q), rot(k)
    k, v = k.repeat_interleave(H // G, 2), v.repeat_interleave(H // G, 2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(d)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = j <= i
    if c.sliding_window:
        allowed &= (i - j) < c.sliding_window
    o = torch.einsum("bhts,bshd->bthd", scores.masked_fill(~allowed, float("-inf")).softmax(-1), v).reshape(B, T, H * d)
    if c.output_gate:
        o = o * torch.sigmoid(gate.reshape(B, T, H * d))
    return mod.o_proj(o)


@pytest.mark.parametrize("cfg", [
    AttentionConfig(num_heads=6, num_kv_heads=2, head_dim=10, rope_fraction=0.4, output_gate=True),
    AttentionConfig(num_heads=4, num_kv_heads=4, head_dim=12, rope_fraction=1.0, qk_norm=False, sliding_window=5),
    AttentionConfig(num_heads=4, num_kv_heads=1, head_dim=8, rope_fraction=0.0),  # NoPE, MQA
])
def test_attention_matches_naive_and_cached(cfg):
    cfg.validate("a", 36)
    mod = Attention(cfg, 36, zero_centered=False)
    for p in mod.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 23, 36)
    full = mod(x)
    torch.testing.assert_close(full, naive_attention(mod, x), atol=1e-5, rtol=1e-5)
    cache = mod.new_cache()
    parts = [mod(x[:, :7], 0, cache)] + [mod(x[:, t:t + 1], t, cache) for t in range(7, 15)] + [mod(x[:, 15:], 15, cache)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    if cfg.sliding_window:
        assert cache.k.shape[2] == cfg.sliding_window - 1  # bounded by the window


@pytest.mark.parametrize("pattern, ffn", [("GGGA GA", "M*6"), ("GSGA S*2", "D M*2 D*3"), ("G*6", "M*6")])
def test_cached_decode_equals_full_forward(pattern, ffn):
    model = HybridLM(tiny_config(pattern, ffn)).eval()
    ids = torch.randint(0, 97, (2, 41))
    cache = assert_cached_decode_matches(model, ids, split_steps(41, [19]), atol=1e-4, rtol=1e-4)
    assert cache.pos == 41


def test_chunked_prefill_equals_one_piece():
    model = HybridLM(tiny_config()).eval()
    assert_chunked_prefill_matches(model, torch.randint(0, 97, (1, 50)), chunk=7)


def test_cache_memory_linear_constant_attention_grows_exactly():
    model = HybridLM(tiny_config()).eval()
    cfg = model.config
    attn = cfg.mixers["A"]
    n_attn = cfg.layer_mixers.count("A")
    sizes = []
    for T in (5, 17, 40):
        cache = model.new_cache()
        model.prefill(torch.randint(0, 97, (3, T)), cache)
        by = cache.memory_by_kind()
        assert by["kv"] == n_attn * 2 * 3 * attn.num_kv_heads * attn.head_dim * T * 4  # K and V, fp32
        sizes.append(by["recurrent"])
    assert sizes[0] == sizes[1] == sizes[2]
    g = cfg.mixers["G"]
    per_layer = 3 * (g.num_v_heads * g.head_k_dim * g.head_v_dim + (2 * 2 * 8 + 4 * 6) * (g.conv_kernel - 1)) * 4
    assert sizes[0] == cfg.layer_mixers.count("G") * per_layer


# -- the generic presets on the harness ---------------------------------------------------------------------------
GENERIC = ["tiny-attention", "tiny-gdn", "tiny-hybrid"]


@pytest.mark.parametrize("preset", GENERIC)
def test_preset_cached_decode_and_cache_bytes(preset):
    model = HybridLM(get_config(preset)).eval()
    V = model.config.vocab_size
    assert_cached_decode_matches(model, torch.randint(0, V, (2, 29)), split_steps(29, [11, 20]), atol=1e-4, rtol=1e-4)
    assert_cache_bytes_match(model, V, 37, batch=2, dtype_bytes=4, chunk=16, decode_steps=2, total=True)


def test_attention_preset_flops_match_flop_counter():
    # (Gated DeltaNet's analytic count models the recurrence, not the chunked algorithm the counter sees: only
    # attention-only models are held to the counter exactly here.)
    assert_flops_match_counter(HybridLM(get_config("tiny-attention")).eval(), 256, tokens=40, decode_at=40)


def test_full_kv_cache_appends_in_place():
    """Without a window the cache writes into a buffer grown 256 tokens at a time: decode steps reuse it (no copy
    of the cache per step), and what it returns equals the copying path (autograd on)."""
    from hybridlm.layers.mixers.attention import KVCache
    fast, slow = KVCache(), KVCache()
    k, v = torch.randn(2, 3, 300, 8), torch.randn(2, 3, 300, 5)
    with torch.no_grad():
        fast.append(k[:, :, :100], v[:, :, :100])
        ptr = fast._buf[0].data_ptr()
        for t in range(100, 300):
            got = fast.append(k[:, :, t:t + 1], v[:, :, t:t + 1])
            if t < KVCache.GROW - 1:
                assert fast._buf[0].data_ptr() == ptr  # within the first 256 tokens: the same buffer
    assert fast._buf[0].shape[2] == 512 and fast.memory_bytes() == 2 * 3 * 300 * (8 + 5) * 4  # the tokens held
    slow.append(k[:, :, :299], v[:, :, :299])
    want = slow.append(k[:, :, 299:], v[:, :, 299:])
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and got[2] == want[2] == 0
