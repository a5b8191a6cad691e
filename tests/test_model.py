"""The model: attention against a naive reference, cached decode against a full forward, cache memory,
generation and sampling, losses."""

import math

import pytest
import torch

from hybridlm import AttentionConfig, GatedDeltaNetConfig, HybridLM, ModelConfig, MoEConfig, get_config
from hybridlm.mixers.attention import Attention
from hybridlm.rope import rope_cos_sin


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


def _tiny(pattern="GGGA GA", ffn="M*6", **over):
    return ModelConfig(
        vocab_size=97, d_model=40, num_layers=6, mixer_pattern=pattern, ffn_pattern=ffn,
        mixers={"G": GatedDeltaNetConfig(num_qk_heads=2, num_v_heads=4, head_k_dim=8, head_v_dim=6, chunk_size=8),
                "A": AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=12, rope_fraction=0.5, output_gate=True),
                "S": AttentionConfig(num_heads=2, num_kv_heads=1, head_dim=12, sliding_window=6)},
        ffns={"M": MoEConfig(num_experts=5, top_k=2, expert_size=16, shared_size=12, shared_gate=True, aux_loss_coef=0.01),
              "D": __import__("hybridlm").DenseFFNConfig(intermediate_size=30)},
        mtp_depth=1, **over)


@pytest.mark.parametrize("pattern, ffn", [("GGGA GA", "M*6"), ("GSGA S*2", "D M*2 D*3"), ("G*6", "M*6")])
def test_cached_decode_equals_full_forward(pattern, ffn):
    model = HybridLM(_tiny(pattern, ffn)).eval()
    ids = torch.randint(0, 97, (2, 41))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        steps = [model(ids[:, :19], cache=cache).logits]
        steps += [model(ids[:, t:t + 1], cache=cache).logits for t in range(19, 41)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)
    assert cache.pos == 41


def test_chunked_prefill_equals_one_piece():
    model = HybridLM(_tiny()).eval()
    ids = torch.randint(0, 97, (1, 50))
    c1, c2 = model.new_cache(), model.new_cache()
    torch.testing.assert_close(model.prefill(ids, c1, chunk=7), model.prefill(ids, c2, chunk=1000), atol=1e-4, rtol=1e-4)


def test_cache_memory_linear_constant_attention_grows_exactly():
    model = HybridLM(_tiny()).eval()
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


def test_generate_greedy_equals_argmax_of_full_forward():
    model = HybridLM(_tiny()).eval()
    prompt = torch.randint(0, 97, (2, 9))
    out = model.generate(prompt, max_new_tokens=6)
    assert out.shape == (2, 15) and torch.equal(out[:, :9], prompt)
    with torch.no_grad():
        for t in range(9, 15):  # each new token is the argmax of a full forward over what came before
            assert torch.equal(model(out[:, :t]).logits[:, -1].argmax(-1), out[:, t])


def test_stop_tokens_and_streaming():
    model = HybridLM(_tiny()).eval()
    prompt = torch.randint(0, 97, (1, 5))
    free = model.generate(prompt, max_new_tokens=8)
    stop = int(free[0, 7])  # the third generated token
    streamed = list(model.stream(prompt, max_new_tokens=8, stop_tokens=[stop]))
    first = next(i for i, t in enumerate(free[0, 5:].tolist()) if t == stop)
    assert [int(t) for t in streamed] == free[0, 5:5 + first + 1].tolist()


def test_sampling_filters():
    from hybridlm.generate import sample_next
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {0, 1}
    draws = {int(sample_next(logits, 1.0, top_p=0.7, generator=g)) for _ in range(200)}
    assert draws == {0, 1}  # 0.5 < 0.7 so token 1 is needed; 0.8 >= 0.7 so token 2 is not
    assert int(sample_next(logits, 0.0)) == 0
    with pytest.raises(ValueError, match="top_p=1.5"):
        sample_next(logits, 1.0, top_p=1.5)


def test_loss_parts_and_bad_inputs():
    model = HybridLM(_tiny())
    ids = torch.randint(0, 97, (2, 12))
    out = model(ids, labels=ids)
    ce = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 97), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.ce_loss, ce)
    torch.testing.assert_close(out.loss, out.ce_loss + out.aux_loss + 0.3 * out.mtp_loss
                               + model.mtp.block.ffn.aux_loss)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    with pytest.raises(ValueError, match=r"ids outside \[0, vocab_size=97\)"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match=r"input_ids must be \[batch, time\]"):
        model(torch.tensor([1, 2]))


def test_meta_build_then_init_is_finite():
    model = HybridLM(get_config("tiny-hybrid"), device="meta")
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    model.init_weights(seed=1)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model(torch.randint(0, 256, (1, 70))).logits).all()
