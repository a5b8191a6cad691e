"""Titans' neural memory op (hybridlm/ops/titans_memory.py): the chunked form and the one-step decode against the
token-by-token reference, a one-layer linear memory against a closed form derived here by hand, the surprise
against autograd of the stated loss, and the FLOP accounting against torch's FlopCounterMode."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import math

from hybridlm.ops.titans_memory import (chunked_flops, memory_params, mlp, step_flops, titans_memory_chunked,
                                        titans_memory_recurrent, titans_memory_step, token_loss)

B, T, H, DK, DV = 2, 19, 3, 5, 4  # odd sizes: 19 tokens are no multiple of the chunks below
DIMS = [(DK, DV), (DK, 7, DV), (DK, 6, 3, DV)]  # L_M = 1, 2, 3


def _inputs(dims, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    q, k = F.normalize(r(B, T, H, DK), dim=-1), F.normalize(r(B, T, H, DK), dim=-1)
    v = r(B, T, H, DV)
    u = lambda: torch.rand(B, T, H, generator=g, dtype=dtype)  # noqa: E731
    eta, theta, alpha = u(), 0.3 * u(), 0.2 * u()  # modest rates: a deep memory stays bounded over 19 steps
    P = memory_params(dims)
    state = torch.stack((0.3 * r(B, H, P), 0.3 * r(B, H, P), 0.1 * r(B, H, P)), 2)  # W0 != W: mid-chunk state
    return (q, k, v, eta, theta, alpha), state


@pytest.mark.parametrize("dims", DIMS)
def test_chunk_size_one_is_the_per_token_rule(dims):
    seqs, state = _inputs(dims)
    state[:, :, 0] = state[:, :, 1]  # at chunk size 1 the chunk-start weights are the current weights
    y_ref, s_ref = titans_memory_recurrent(*seqs, state, dims, chunk_size=1)
    y, s = titans_memory_chunked(*seqs, state, dims, chunk_size=1)
    torch.testing.assert_close(y, y_ref, atol=1e-13, rtol=0)  # float64: equal up to the order of the sums
    torch.testing.assert_close(s, s_ref, atol=1e-13, rtol=0)


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("chunk,offset", [(4, 0), (8, 3), (64, 0)])
def test_chunked_and_step_match_the_reference_on_the_chunk_grid(dims, chunk, offset):
    seqs, state = _inputs(dims)
    y_ref, s_ref = titans_memory_recurrent(*seqs, state, dims, chunk_size=chunk, offset=offset)
    y, s = titans_memory_chunked(*seqs, state, dims, chunk_size=chunk, offset=offset)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(s, s_ref, atol=1e-12, rtol=0)
    # split anywhere: the state and the offset carry the grid
    y1, s1 = titans_memory_chunked(*(x[:, :7] for x in seqs), state, dims, chunk_size=chunk, offset=offset)
    y2, s2 = titans_memory_chunked(*(x[:, 7:] for x in seqs), s1, dims, chunk_size=chunk, offset=offset + 7)
    torch.testing.assert_close(torch.cat((y1, y2), 1), y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(s2, s_ref, atol=1e-12, rtol=0)
    s_t, outs = state, []
    for t in range(T):
        o, s_t = titans_memory_step(*(x[:, t] for x in seqs), s_t, dims, chunk_size=chunk, offset=offset + t)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(s_t, s_ref, atol=1e-12, rtol=0)
    if chunk > 1:  # the grid matters: gradients at the current weights give something else
        y_tok, _ = titans_memory_recurrent(*seqs, state, dims, chunk_size=1)
        assert (y_tok - y_ref).abs().max() > 1e-4


def test_linear_memory_closed_form():
    """L_M = 1, M(k) = W k. Inside one chunk every gradient is at W0: u_t = 2 (W0 k_t - v_t) k_t^T. With constant
    gates eta, theta, alpha, S_t = eta^t S0 - theta sum_{i<=t} eta^{t-i} u_i and
    W_t = (1-alpha)^t W0' + sum_{i<=t} (1-alpha)^{t-i} S_i, so with r = 1 - alpha
    W_t = r^t W + S0 sum_{j=1..t} r^{t-j} eta^j - theta sum_{i<=t} u_i sum_{j=i..t} r^{t-j} eta^{j-i}."""
    dims = (DK, DV)
    seqs, state = _inputs(dims)
    q, k, v = seqs[:3]
    c_eta, c_theta, c_alpha = 0.7, 0.2, 0.1
    gates = [torch.full((B, T, H), x, dtype=torch.float64) for x in (c_eta, c_theta, c_alpha)]
    y, s = titans_memory_chunked(q, k, v, *gates, state, dims, chunk_size=T)  # one chunk: W0 throughout
    r = 1 - c_alpha
    W0 = state[:, :, 0].reshape(B, H, DV, DK)
    W, S0 = state[:, :, 1].reshape(B, H, DV, DK), state[:, :, 2].reshape(B, H, DV, DK)
    u = 2 * torch.einsum("bthv,bthk->bthvk", torch.einsum("bhvk,bthk->bthv", W0, k) - v, k)  # [B, T, H, dv, dk]
    # unit keys: the normalisation by max(1, ||k||^2) is 1; the clip to norm MAX_SURPRISE (1) per token remains
    u = u * (1.0 / u.flatten(-2).norm(dim=-1)).clamp(max=1.0)[..., None, None]
    for t in range(1, T + 1):
        Wt = r ** t * W + S0 * sum(r ** (t - j) * c_eta ** j for j in range(1, t + 1))
        for i in range(1, t + 1):
            Wt = Wt - c_theta * u[:, i - 1] * sum(r ** (t - j) * c_eta ** (j - i) for j in range(i, t + 1))
        torch.testing.assert_close(y[:, t - 1], torch.einsum("bhvk,bhk->bhv", Wt, q[:, t - 1]), atol=1e-12, rtol=0)
    torch.testing.assert_close(s[:, :, 1].reshape(B, H, DV, DK), Wt, atol=1e-12, rtol=0)
    S_T = c_eta ** T * S0 - c_theta * sum(c_eta ** (T - i) * u[:, i - 1] for i in range(1, T + 1))
    torch.testing.assert_close(s[:, :, 2].reshape(B, H, DV, DK), S_T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dims", DIMS)
def test_surprise_is_autograd_of_the_stated_loss(dims):
    """One step from W0 = W, S = 0, eta = 0, alpha = 0, theta = 1: the new momentum is minus the surprise: the
    gradient of ||M(W; k) - v||^2 (the loss written out here, not token_loss, differentiated by torch.autograd),
    each layer's part divided by max(1, ||x_l||^2) for that layer's input x_l, then clipped to norm 1."""
    seqs, state = _inputs(dims)
    q, k, v = (x[:, 0] for x in seqs[:3])
    state[:, :, 0] = state[:, :, 1]
    state[:, :, 2] = 0
    zeros, ones = torch.zeros(B, H, dtype=torch.float64), torch.ones(B, H, dtype=torch.float64)
    _, s = titans_memory_step(q, k, v, zeros, ones, zeros, state, dims, chunk_size=1)
    w = state[:, :, 1].clone().requires_grad_()
    loss, at = 0.0, 0
    x = k
    mats = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        mats.append(w[..., at:at + d_in * d_out].reshape(B, H, d_out, d_in))
        at += d_in * d_out
    inputs = []
    for i, Wl in enumerate(mats):
        inputs.append(x)
        x = torch.einsum("bhoi,bhi->bho", Wl, x)
        x = F.silu(x) if i < len(mats) - 1 else x
    loss = ((x - v) ** 2).sum()
    (g,) = torch.autograd.grad(loss, w)
    sizes = [a * b for a, b in zip(dims[:-1], dims[1:])]
    g = torch.cat([part / x_l.pow(2).sum(-1, keepdim=True).clamp_min(1.0)
                   for part, x_l in zip(g.detach().split(sizes, -1), inputs)], -1)
    g = g * (1.0 / g.norm(dim=-1, keepdim=True)).clamp(max=1.0)
    torch.testing.assert_close(s[:, :, 2], -g, atol=1e-12, rtol=0)
    assert token_loss(state[0, 0, 1], k[0, 0], v[0, 0], dims) > 0


@pytest.mark.parametrize("dims", DIMS)
def test_flops_match_the_counter(dims):
    seqs, state = _inputs(dims, dtype=torch.float32)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        titans_memory_chunked(*seqs, state, dims, chunk_size=8, offset=3)
    assert fc.get_total_flops() == B * H * chunked_flops(T, dims, 8, offset=3)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        titans_memory_step(*(x[:, 0] for x in seqs), state, dims, chunk_size=8)
    assert fc.get_total_flops() == B * H * step_flops(dims)


def test_gradients_reach_the_inputs_through_the_inner_updates():
    """The outer loss trains the initial weights, keys and gates through torch.func's inner gradients: the chunked
    form's gradients equal the reference's (autograd through its per-token autograd.grad)."""
    dims = (DK, 6, DV)
    seqs, state = _inputs(dims)
    leaves = [x.clone().requires_grad_() for x in (*seqs, state)]
    grads = []
    for fn in (titans_memory_recurrent, titans_memory_chunked):
        y, s = fn(*leaves[:6], leaves[6], dims, chunk_size=4)
        grads.append(torch.autograd.grad(y.square().sum() + s.sum(), leaves))
    for name, a, b in zip(["q", "k", "v", "eta", "theta", "alpha", "state"], *grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0, msg=name)


# == the mixers: MAL's memory layer, MAG and MAC, through the tiny presets =========================================
from harness.cache_bytes import assert_cache_bytes_match  # noqa: E402
from harness.cached_decode import assert_cached_decode_matches, split_steps  # noqa: E402
from harness.flops import assert_flops_match_counter  # noqa: E402

from hybridlm.model import ModelConfig  # noqa: E402
from hybridlm.model.model import HybridLM  # noqa: E402
from hybridlm.presets import get_config  # noqa: E402

PRESETS = ["tiny-titans-mal", "tiny-titans-mag", "tiny-titans-mac"]
VOCAB = 256


@pytest.fixture(scope="module")
def models():
    out = {}
    for i, name in enumerate(PRESETS):
        torch.manual_seed(i)
        model = HybridLM(get_config(name)).eval()
        with torch.no_grad():  # norms, gate biases and persistent slots away from their init, so a wrong formula shows
            for pname, p in model.named_parameters():
                if "norm" in pname or pname.endswith("bias") or "persistent" in pname:
                    p.add_(0.2 * torch.randn_like(p))
        out[name] = model
    return out


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def l2(x):
    """L2 normalisation as Gated DeltaNet's (and the memory's) q / k: x / sqrt(sum x^2 + 1e-6)."""
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6)


def _conv(u, w):
    """silu(causal depthwise conv) from its taps: u [B, T, C], w [C, K]."""
    K, T = w.shape[1], u.shape[1]
    up = F.pad(u.transpose(1, 2), (K - 1, 0))
    return F.silu(sum(up[:, :, j:j + T] * w[:, j, None] for j in range(K))).transpose(1, 2)


def ref_memory(mem, u, state):
    """The memory branch from its equations over the op's token-by-token reference -> (r [B, T, H, d], state)."""
    c = mem.cfg
    B, T, _ = u.shape
    H, d = c.num_heads, c.head_dim
    q, k, v = _conv(u @ mem.qkv.weight.T, mem.conv_weight).view(B, T, 3, H, d).unbind(2)
    eta, theta, alpha = torch.sigmoid(u @ mem.gates.weight.T + mem.gates.bias).view(B, T, 3, H).unbind(2)
    return titans_memory_recurrent(l2(q), l2(k), v, eta,
                                   theta, alpha, state, c.dims, chunk_size=c.chunk_size)


def ref_attention(m, q, k, v, visible):
    """q [B, T, H, d]; k, v [B, S, H, d] after the persistent slots; visible(t, j) -> bool for key j."""
    B, T, H, d = q.shape
    pk, pv = (p.transpose(0, 1)[None].expand(B, -1, -1, -1) for p in (m.persistent_k, m.persistent_v))
    out = torch.zeros_like(q)
    for t in range(T):
        keys = [j for j in range(k.shape[1]) if visible(t, j)]
        kk, vv = torch.cat((pk, k[:, keys]), 1), torch.cat((pv, v[:, keys]), 1)  # [B, N_p + n, H, d]
        w = torch.einsum("bhd,bnhd->bhn", q[:, t], kk).div(math.sqrt(d)).softmax(-1)
        out[:, t] = torch.einsum("bhn,bnhd->bhd", w, vv)
    return out


def ref_titans(m, x):
    """A Titans mixer from the module docstring's equations, one token or one segment at a time."""
    c = m.cfg
    B, T, D = x.shape
    H, d, C = c.num_heads, c.head_dim, c.chunk_size
    state = m.memory.initial_state(B).to(x.dtype)
    heads = lambda y: y.view(B, -1, H, d)  # noqa: E731
    if c.variant == "memory":
        r, _ = ref_memory(m.memory, x, state)
        return _rms(r, m.r_norm.weight, m.r_norm.eps).reshape(B, T, -1) @ m.o_proj.weight.T
    q, k, v = (heads(x @ p.weight.T) for p in (m.q_proj, m.k_proj, m.v_proj))
    if c.variant == "mag":
        a = ref_attention(m, q, k, v, lambda t, j: t - c.window < j <= t)
        r, _ = ref_memory(m.memory, x, state)
        y = _rms(a, m.a_norm.weight, m.a_norm.eps) * torch.sigmoid(_rms(r, m.r_norm.weight, m.r_norm.eps))
        return y.reshape(B, T, -1) @ m.o_proj.weight.T
    qr = l2(heads(_conv(x @ m.retrieve_q.weight.T, m.retrieve_conv)))
    a_all, outs = x[:, :0], []
    for s in range(0, T, C):  # segment by segment: retrieve, attend, then update
        seg = slice(s, min(T, s + C))
        w = state[:, :, 1]  # the weights the segment starts with
        h = torch.stack([torch.stack([mlp(w[b, i], qr[b, t, i], c.dims) for i in range(H)])
                         for b in range(B) for t in range(seg.start, seg.stop)]).view(B, -1, H * d)
        h = h @ m.retrieve_out.weight.T
        n = h.shape[1]
        kh, vh = heads(h @ m.k_proj.weight.T), heads(h @ m.v_proj.weight.T)
        a = ref_attention(m, q[:, seg], torch.cat((kh, k[:, seg]), 1), torch.cat((vh, v[:, seg]), 1),
                          lambda t, j: (j if j < n else j - n) <= t)
        a = a.reshape(B, n, -1) @ m.a_proj.weight.T
        a_all = torch.cat((a_all, a), 1)
        r_all, _ = ref_memory(m.memory, a_all, m.memory.initial_state(B).to(x.dtype))  # the whole stream so far
        _, state = ref_memory(m.memory, a_all, m.memory.initial_state(B).to(x.dtype))
        r = r_all[:, seg]
        outs.append(a * torch.sigmoid(_rms(r, m.r_norm.weight, m.r_norm.eps).reshape(B, n, -1) @ m.o_proj.weight.T))
    return torch.cat(outs, 1)


@pytest.mark.parametrize("name", PRESETS)
def test_mixer_equals_its_reference(models, name):
    """Each variant against its equations (float64; 37 tokens: two whole 16-token chunks / segments and a part)."""
    m = models[name].layers[0].mixer.double()
    try:
        x = torch.randn(2, 37, m.o_proj.out_features, dtype=torch.float64)
        with torch.no_grad():
            got = m(x)
        # float64 throughout but the RMSNorms, which normalise in float32 (core/norms.py): ~1e-8
        torch.testing.assert_close(got, ref_titans(m, x), atol=1e-7, rtol=0)
    finally:
        m.float()


@pytest.mark.parametrize("name", PRESETS)
def test_cached_decode_equals_the_full_forward_and_the_cache_is_constant(models, name):
    model = models[name]
    ids = torch.randint(0, VOCAB, (2, 90))
    # pieces that start and end mid-chunk (7, 23, 70), then single tokens across the segment boundary at 80
    cache = assert_cached_decode_matches(model, ids, split_steps(90, cuts=(7, 23, 70)), atol=2e-5)
    held = cache.memory_bytes()
    with torch.no_grad():
        for _ in range(3 * 16):  # three more segments
            model(torch.randint(0, VOCAB, (2, 1)), cache=cache)
    # past the window and a whole number of segments later, the cache holds exactly as much: constant in context
    assert cache.memory_bytes() == held == model.cache_bytes(90, batch=2, dtype_bytes=4)
    # at 1M tokens as at 90 (the same place in a segment: MAC's open segment is the one part that varies, and it
    # never holds more than chunk_size - 1 tokens)
    assert model.cache_bytes(10**6 + 90 % 16) == model.cache_bytes(90 + 16 * 1000) == model.cache_bytes(90)
    assert max(model.cache_bytes(10**6 + r) for r in range(16)) == model.cache_bytes(10**6 + 15)


def test_greedy_generate_equals_argmax_of_full_forwards(models):
    model = models["tiny-titans-mac"]
    ids = torch.randint(0, VOCAB, (1, 14))
    out = model.generate(ids, max_new_tokens=5)  # across MAC's first segment boundary (16)
    seq = ids
    for _ in range(5):
        with torch.no_grad():
            seq = torch.cat((seq, model(seq).logits[:, -1:].argmax(-1)), 1)
    assert torch.equal(out, seq)


@pytest.mark.parametrize("name", PRESETS)
def test_params_flops_and_cache_bytes(models, name):
    model = models[name]
    for b in model.layers:
        assert b.mixer.num_params() == sum(p.numel() for p in b.mixer.parameters())
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert_flops_match_counter(model, VOCAB, tokens=40, decode_at=40)  # 40: two chunks and a part
    assert_cache_bytes_match(model, VOCAB, context=37, chunk=10, decode_steps=3, total=True)


def test_mac_is_causal_and_trains_through_its_segments(models):
    """A token changes nothing before it; a token of the first segment reaches the third segment only through the
    memory (attention is per segment), so its gradient there proves the graph is kept from segment to segment."""
    m = models["tiny-titans-mac"].layers[0].mixer
    x = torch.randn(1, 40, m.o_proj.out_features, requires_grad=True)
    y = m(x)
    x2 = x.detach().clone()
    x2[:, 20] += 1.0
    with torch.no_grad():
        y2 = m(x2)
    assert torch.equal(y2[:, :20], y[:, :20].detach()) and (y2[:, 20:] - y[:, 20:]).abs().max() > 1e-4
    (grad,) = torch.autograd.grad(y[:, 35].sum(), x)
    assert grad[:, 3].abs().sum() > 0 and torch.all(grad[:, 36:] == 0)


@pytest.mark.parametrize("changes,field", [
    (dict(variant="mal"), "variant"),
    (dict(variant="mag"), "window"),
    (dict(variant="mac", window=8), "window"),
    (dict(variant="memory", persistent=2), "persistent"),
    (dict(variant="mag", window=8, persistent=-1), "persistent"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"mixers\['T'\]\.{field}="):
        ModelConfig(vocab_size=32, d_model=32, num_layers=1, mixer_pattern="T", ffn_pattern="-",
                    mixers={"T": dict(kind="titans", num_heads=2, head_dim=8, **changes)}, ffns={})


def test_memory_recalls_past_the_window_and_beats_itself_switched_off():
    """A two-layer MAL (memory layer, then attention over an 8-token window) trained on needles: 2 key-value pairs
    in the first 8 tokens of 32, queried in the last 4, so every answer lies 22 or more tokens back, beyond the
    window. Switched off (the inner learning rate theta forced to 0: the memory never writes) the same model can
    only guess (chance 1/16). Measured at 400 steps: 0.6-0.7 against 0.05-0.08."""
    from hybridlm.analysis.recall import RecallSettings, eval_recall, needle_batch, train_recall
    window, T = 8, 32
    cfg = ModelConfig(vocab_size=32, d_model=32, num_layers=2, mixer_pattern="M W", ffn_pattern="D D",
                      mixers={"M": dict(kind="titans", num_heads=2, head_dim=16, memory_layers=1, chunk_size=8),
                              "W": dict(kind="attention", num_heads=2, num_kv_heads=2, head_dim=16, rope_fraction=0.0,
                                        qk_norm=False, sliding_window=window)},
                      ffns={"D": dict(kind="dense", intermediate_size=64)}, tie_embeddings=False, mtp_depth=0)
    s = RecallSettings(vocab=32, width=32, seq_len=T, needle_seq_len=T, needles=2, tasks=("needle",), steps=400,
                       batch_size=32, lr=3e-3, eval_needle_lens=(T,), eval_examples=256)
    x, y = needle_batch(64, T, 2, 32)
    answers = (y != -100).nonzero()[:, 1]
    assert answers.min() >= T - 4 and (x[:, T // 4:T - 4] < 16).sum() == 0  # needles only in the first quarter
    assert answers.min() - (T // 4 - 1) > window  # the nearest needle is past the window

    def off(mod, inp, out):  # theta's logits (the middle third of the gates) to -inf: the memory never learns
        out = out.clone()
        out.view(*out.shape[:2], 3, -1)[:, :, 1] = -1e4
        return out

    acc = {}
    for memory in (True, False):
        torch.manual_seed(0)
        model = HybridLM(cfg)
        if not memory:
            model.layers[0].mixer.memory.gates.register_forward_hook(off)
        train_recall(model, s, seed=0)
        acc[memory] = eval_recall(model, s, seed=0)["needle"][f"T{T}"]
    assert acc[False] < 2 / 16 and acc[True] > 0.4 and acc[True] - acc[False] > 0.3, acc
