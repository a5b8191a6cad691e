"""Titans' neural long-term memory (Behrouz, Zhong, Mirrokni 2024, arXiv 2501.00663, section 3.1): an MLP whose
weights are the state, trained at test time by gradient descent with momentum and weight decay.

Per head the memory M is an MLP with L_M >= 1 layers, `dims` = (d_k, hidden ..., d_v), SiLU between layers, no
biases; its weights W are kept flat, one vector of P = sum(d_in * d_out) numbers. For each token t:

    u_t = grad_W ||M(W0; k_t) - v_t||^2          the surprise; W0 = the weights at the start of t's chunk,
                                                  each layer's part divided by max(1, ||x_l||^2) (below)
    S_t = eta_t S_{t-1} - theta_t u_t             momentum
    W_t = (1 - alpha_t) W_{t-1} + S_t             forgetting (weight decay)
    y_t = M(W_t; q_t)                             the read uses the weights *after* token t's update

Chunks: token positions are cut into chunks of `chunk_size` on one grid counted from the start of the sequence
(the state carries `offset`, the tokens of the open chunk already consumed), and every gradient in a chunk is taken
at the weights the chunk started with. chunk_size = 1 is the paper's per-token rule; larger chunks are the paper's
parallel training form (section 3.2). The grid is the same for the recurrent reference, the chunked form and the
one-step decode, so all three give the same result for any chunk size and any split of the sequence.

The normalised surprise. Layer l's part of the gradient is delta_l x_l^T (x_l its input at W0), so one step moves
that layer's output for x_l by theta 2 ||x_l||^2 times the error: the raw rule is stable only while theta ||x_l||^2
stays small, and a chunk, whose surprises all come from W0, adds up to C of them. Keys are unit vectors, so the
first layer is the delta rule, but a hidden layer's input has ||x||^2 ~ 0.35 x its width at init (22 at width 64):
with the raw gradient tiny-titans-mal's memory grew to 1e21 and NaN within 33 training steps at theta = 0.01
(measured). Dividing each layer's part by max(1, ||x_l||^2), as normalised LMS does, keeps every layer's step at
theta times its error; for a one-layer memory over unit keys it is the paper's rule exactly.

State [B, H, 3, P]: row 0 the chunk-start weights W0, row 1 the weights W_{t}, row 2 the momentum S_t.

Shapes: B batch, T tokens, H heads, N = B * H memories, c tokens of one chunk, P weights per memory,
dk / dv key / value dims.

Forms:
    titans_memory_recurrent  token-by-token reference (a Python loop; autograd for each token's gradient)
    titans_memory_chunked    per chunk: every token's surprise at once, as the rank-one factors (input, output
                             gradient) of each layer; momentum and decay as [c, c] decay matrices; the reads as
                             attention-like [c, c] products (no token's weights are formed); no loop over tokens
    titans_memory_step       one decode token (its surprise by torch.func's grad of token_loss)
    memory_read              M(W; q) with one set of weights for every query (MAC's retrieval)
    chunked_flops            the matmul FLOPs titans_memory_chunked does (what torch's FlopCounterMode counts)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad, vmap

from .precision import compute_dtype

__all__ = ["chunk_segments", "chunked_flops", "init_memory_weights", "memory_params", "memory_read", "mlp", "normalise_surprise", "step_flops", "titans_memory_chunked",
           "titans_memory_recurrent", "titans_memory_step", "token_loss"]


def memory_params(dims: tuple[int, ...]) -> int:
    """P: the weights of one memory MLP with layer widths `dims`."""
    return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def _unflatten(w_P: Tensor, dims: tuple[int, ...]) -> list[Tensor]:
    """A flat weight vector -> the layer matrices [d_out, d_in], in order."""
    out, at = [], 0
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        out.append(w_P[at:at + d_in * d_out].view(d_out, d_in))
        at += d_in * d_out
    return out


def mlp(w_P: Tensor, x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """M(W; x) for one memory: x [..., d_k] -> [..., d_v]; SiLU between layers."""
    layers = _unflatten(w_P, dims)
    for i, W in enumerate(layers):
        x = x @ W.T
        if i < len(layers) - 1:
            x = F.silu(x)
    return x


def token_loss(w_P: Tensor, k: Tensor, v: Tensor, dims: tuple[int, ...]) -> Tensor:
    """The memory's loss on one token: ||M(W; k) - v||^2 (a sum of squares, no 1/2)."""
    return ((mlp(w_P, k, dims) - v) ** 2).sum()


def _check(q: Tensor, k: Tensor, v: Tensor, eta: Tensor, state: Tensor, dims: tuple[int, ...]) -> None:
    B, T, H, dk = k.shape
    if q.shape != k.shape:
        raise ValueError(f"titans memory: q {tuple(q.shape)} and k {tuple(k.shape)} must have one shape [B, T, H, dk]")
    if v.shape[:3] != (B, T, H) or dims[0] != dk or dims[-1] != v.shape[-1]:
        raise ValueError(f"titans memory: k {tuple(k.shape)} / v {tuple(v.shape)} do not fit dims={dims}")
    if eta.shape != (B, T, H):
        raise ValueError(f"titans memory: gates {tuple(eta.shape)} must be [B, T, H] = {(B, T, H)}")
    if state.shape != (B, H, 3, memory_params(dims)):
        raise ValueError(f"titans memory: state {tuple(state.shape)} must be [B, H, 3, P] = "
                         f"{(B, H, 3, memory_params(dims))}")


def titans_memory_recurrent(q, k, v, eta, theta, alpha, state, dims, chunk_size: int = 1, offset: int = 0
                            ) -> tuple[Tensor, Tensor]:
    """Reference: one token at a time, each gradient by autograd of token_loss at the chunk-start weights.
    q, k [B, T, H, dk]; v [B, T, H, dv]; eta, theta, alpha [B, T, H] in (0, 1); state [B, H, 3, P].
    Returns (y [B, T, H, dv], state)."""
    _check(q, k, v, eta, state, dims)
    dt = compute_dtype(v)
    B, T, H, _ = k.shape
    w0, w, s = (x.to(dt) for x in state.unbind(2))  # [B, H, P] each
    outs, outer = [], torch.is_grad_enabled()  # outer: keep the graph for the caller's backward
    for t in range(T):
        with torch.enable_grad():  # the surprise needs autograd even under no_grad
            base = w0.detach().requires_grad_() if not w0.requires_grad else w0
            losses = sum(token_loss(base[b, h], k[b, t, h].to(dt), v[b, t, h].to(dt), dims)
                         for b in range(B) for h in range(H))
            u = torch.autograd.grad(losses, base, create_graph=outer)[0]  # [B, H, P]
        u = normalise_surprise(u.reshape(B * H, -1), w0.reshape(B * H, -1), k[:, t].to(dt).reshape(B * H, -1),
                               dims).view(B, H, -1)
        s = eta[:, t, :, None].to(dt) * s - theta[:, t, :, None].to(dt) * u
        w = (1 - alpha[:, t, :, None].to(dt)) * w + s
        outs.append(torch.stack([torch.stack([mlp(w[b, h], q[b, t, h].to(dt), dims) for h in range(H)])
                                 for b in range(B)]))
        if (offset + t + 1) % chunk_size == 0:
            w0 = w
    y = torch.stack(outs, 1) if T else v.new_zeros(B, 0, H, v.shape[-1], dtype=dt)
    return y.to(v.dtype), torch.stack((w0, w, s), 2)


def _decay_matrix(log_a_Nc: Tensor) -> Tensor:
    """L[n, t, i] = prod_{j = i+1 .. t} a_j for i <= t, else 0, from log a [N, c] (a sum of logs in a masked
    cumulative sum: no division, so a gate at 0 gives exact zeros instead of NaN)."""
    c = log_a_Nc.shape[-1]
    x = log_a_Nc[:, :, None].expand(-1, c, c)  # x[n, t, i] = log a_t
    strict = torch.ones(c, c, dtype=torch.bool, device=x.device).tril(-1)
    seg = x.masked_fill(~strict, 0).cumsum(1)  # seg[n, t, i] = sum_{j = i+1 .. t} log a_j  (t >= i)
    return seg.exp().masked_fill(~strict | torch.eye(c, dtype=torch.bool, device=x.device), 0) + \
        torch.eye(c, dtype=x.dtype, device=x.device)


def _layers(w_NP: Tensor, dims: tuple[int, ...]) -> list[Tensor]:
    """Flat weights of N memories -> each layer's [N, d_out, d_in] (views)."""
    out, at = [], 0
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        out.append(w_NP[:, at:at + d_in * d_out].view(-1, d_out, d_in))
        at += d_in * d_out
    return out


def _silu_grad(h: Tensor) -> Tensor:
    sig = torch.sigmoid(h)
    return sig * (1 + h * (1 - sig))


def _forward(w0: list[Tensor], k: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """M(W0; k) for N memories, c tokens each: k [N, c, dk] -> (every layer's input x_l [N, c, d_in], the hidden
    pre-activations, the output [N, c, dv])."""
    xs, pre = [k], []
    for i, W in enumerate(w0):  # W [N, d_out, d_in]
        h = torch.bmm(xs[-1], W.transpose(1, 2))  # [N, c, d_out]
        if i < len(w0) - 1:
            pre.append(h)
            xs.append(F.silu(h))
    return xs, pre, h


def _step_scale(x: Tensor) -> Tensor:
    """1 / max(1, ||x||^2) over the last dim (the normalised surprise, module docstring)."""
    return 1.0 / x.pow(2).sum(-1).clamp_min(1.0)


MAX_SURPRISE = 1.0  # the surprise's norm (all layers) is clipped to this, per token and memory


def _clip_scale(sq_norm: Tensor) -> Tensor:
    """min(1, MAX_SURPRISE / ||u||) from ||u||^2."""
    return (MAX_SURPRISE / sq_norm.clamp_min(1e-30).sqrt()).clamp(max=1.0)


def normalise_surprise(u_NP: Tensor, w_NP: Tensor, k_NK: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Raw gradients [N, P] of one token per memory (at weights w, key k [N, dk]) -> the surprise: each layer's part
    divided by max(1, ||x_l||^2), x_l that layer's input, then the whole clipped to norm MAX_SURPRISE."""
    xs, _, _ = _forward(_layers(w_NP, dims), k_NK[:, None])
    parts, at = [], 0
    for x, (d_in, d_out) in zip(xs, zip(dims[:-1], dims[1:])):
        parts.append(u_NP[:, at:at + d_in * d_out] * _step_scale(x[:, 0])[:, None])
        at += d_in * d_out
    u = torch.cat(parts, 1)
    return u * _clip_scale(u.pow(2).sum(-1))[:, None]


def _surprise_factors(w0: list[Tensor], k: Tensor, v: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Each token's gradient of ||M(W0; k) - v||^2 is rank one per layer, u_l = delta_l x_l^T: backpropagation
    by hand at the chunk-start weights for the c tokens at once. k [N, c, dk], v [N, c, dv] -> (x_l [N, c, d_in],
    delta_l [N, c, d_out]) per layer (x_l: the layer's input, delta_l: the loss gradient at its output divided by
    max(1, ||x_l||^2), so delta_l x_l^T is the normalised surprise)."""
    xs, pre, out = _forward(w0, k)
    deltas = [2 * (out - v)]
    for i in range(len(w0) - 1, 0, -1):  # the input gradient of every layer but the first
        deltas.insert(0, torch.bmm(deltas[0], w0[i]) * _silu_grad(pre[i - 1]))
    deltas = [d * _step_scale(x)[..., None] for x, d in zip(xs, deltas)]
    # ||delta x^T||_F = ||delta|| ||x||: the whole surprise's norm from the factors, then the clip
    clip = _clip_scale(sum(d.pow(2).sum(-1) * x.pow(2).sum(-1) for x, d in zip(xs, deltas)))[..., None]  # [N, c, 1]
    return xs, [d * clip for d in deltas]


def _chunk(q, k, v, eta, theta, alpha, w0, w, s, dims):
    """One chunk for N memories: q, k [N, c, dk]; v [N, c, dv]; gates [N, c]; w0, w, s [N, P] ->
    (y [N, c, dv], W_c, S_c). With the decay matrices Le (momentum) and La (forgetting), and g_i = -theta_i u_i:
        S_t = sum_i Le[t, i] g_i + e_t S,     e_t = prod_{j <= t} eta_j
        W_t = sum_i La[t, i] S_i + a_t W,     a_t = prod_{j <= t} (1 - alpha_j)
            = sum_i A[t, i] g_i + (La e)_t S + a_t W,      A = La Le.
    Every u_i is rank one per layer (delta_i x_i^T, _surprise_factors), so no token's weights are formed: a layer
    of the read, its input y_t, gives
        W_t y_t = a_t W y_t + (La e)_t S y_t + sum_i A[t, i] (-theta_i) (x_i . y_t) delta_i,
    attention-like [c, c] products, and only the chunk's last weights and momentum are built (one [d_out, c] x
    [c, d_in] product each)."""
    xs, deltas = _surprise_factors(_layers(w0, dims), k, v)
    log_e, log_a = torch.log(eta), torch.log1p(-alpha)  # [N, c]
    Le, La = _decay_matrix(log_e), _decay_matrix(log_a)  # [N, c, c]
    e, a = log_e.cumsum(1).exp(), log_a.cumsum(1).exp()  # [N, c]
    A = torch.bmm(La, Le) * -theta[:, None, :]  # [N, c, c]: A[t, i] (-theta_i)
    la_e = torch.bmm(La, e[..., None])  # [N, c, 1]
    W, S = _layers(w, dims), _layers(s, dims)
    y, w_end, s_end = q, [], []
    for i, (x, d) in enumerate(zip(xs, deltas)):
        h = (a[..., None] * torch.bmm(y, W[i].transpose(1, 2)) + la_e * torch.bmm(y, S[i].transpose(1, 2))
             + torch.bmm(A * torch.bmm(y, x.transpose(1, 2)), d))  # [N, c, d_out]
        y = F.silu(h) if i < len(xs) - 1 else h
        w_end.append(a[:, -1, None, None] * W[i] + la_e[:, -1, :, None] * S[i]
                     + torch.bmm(d.transpose(1, 2) * A[:, -1, None, :], x))  # [N, d_out, d_in]
        s_end.append(e[:, -1, None, None] * S[i] + torch.bmm(d.transpose(1, 2) * (Le[:, -1] * -theta)[:, None], x))
    flat = lambda ms: torch.cat([m.flatten(1) for m in ms], 1)  # noqa: E731
    return y, flat(w_end), flat(s_end)


def chunk_segments(T: int, offset: int, C: int) -> list[tuple[int, int]]:
    """[start, end) pieces of T tokens on the chunk grid, the first one finishing the open chunk."""
    out, at = [], 0
    while at < T:
        end = min(T, at + C - (offset + at) % C)
        out.append((at, end))
        at = end
    return out


def titans_memory_chunked(q, k, v, eta, theta, alpha, state, dims, chunk_size: int = 64, offset: int = 0
                          ) -> tuple[Tensor, Tensor]:
    """Chunked form (training and prefill); same arguments and result as titans_memory_recurrent. Differentiable:
    the inner surprises are plain tensor operations, so the outer loss trains the projections, gates and initial
    weights through the inner updates (tested equal to autograd through the reference's per-token autograd.grad)."""
    _check(q, k, v, eta, state, dims)
    dt = compute_dtype(v)
    B, T, H, _ = k.shape
    flat = lambda x: x.to(dt).transpose(1, 2).reshape(B * H, T, *x.shape[3:])  # noqa: E731  [N, T, ...]
    qN, kN, vN, eN, thN, aN = map(flat, (q, k, v, eta, theta, alpha))
    w0, w, s = (x.to(dt).reshape(B * H, -1) for x in state.unbind(2))  # [N, P]
    outs = []
    for a, b in chunk_segments(T, offset, chunk_size):
        y, w, s = _chunk(qN[:, a:b], kN[:, a:b], vN[:, a:b], eN[:, a:b], thN[:, a:b], aN[:, a:b], w0, w, s, dims)
        outs.append(y)
        if (offset + b) % chunk_size == 0:
            w0 = w
    y = torch.cat(outs, 1) if outs else vN.new_zeros(B * H, 0, dims[-1])
    y = y.view(B, H, T, -1).transpose(1, 2)  # [B, T, H, dv]
    return y.to(v.dtype), torch.stack((w0, w, s), 1).view(B, H, 3, -1)


def titans_memory_step(q, k, v, eta, theta, alpha, state, dims, chunk_size: int = 64, offset: int = 0
                       ) -> tuple[Tensor, Tensor]:
    """One decode token: q, k [B, H, dk]; v [B, H, dv]; gates [B, H]; state [B, H, 3, P] -> (y [B, H, dv],
    state). `offset`: the tokens of the open chunk before this one (the chunk closes after it when
    offset + 1 == chunk_size)."""
    dt = compute_dtype(v)
    B, H, _ = k.shape
    w0, w, s = (x.to(dt).reshape(B * H, -1) for x in state.unbind(2))  # [N, P]
    flat = lambda x: x.to(dt).reshape(B * H, *x.shape[2:])  # noqa: E731
    u = vmap(grad(token_loss), in_dims=(0, 0, 0, None))(w0, flat(k), flat(v), dims)  # [N, P]
    u = normalise_surprise(u, w0, flat(k), dims)
    s = flat(eta)[:, None] * s - flat(theta)[:, None] * u
    w = (1 - flat(alpha)[:, None]) * w + s
    y = vmap(mlp, in_dims=(0, 0, None))(w, flat(q), dims)  # [N, dv]
    if (offset + 1) % chunk_size == 0:
        w0 = w
    return y.view(B, H, -1).to(v.dtype), torch.stack((w0, w, s), 1).view(B, H, 3, -1)


def memory_read(w_BHP: Tensor, q_BTHK: Tensor, dims: tuple[int, ...]) -> Tensor:
    """M(W; q_t) with one set of weights per memory for all T queries (no update): [B, H, P], [B, T, H, dk] ->
    [B, T, H, dv]."""
    dt = compute_dtype(w_BHP)
    B, T, H, _ = q_BTHK.shape
    qN = q_BTHK.to(dt).transpose(1, 2).reshape(B * H, T, -1)
    y = vmap(mlp, in_dims=(0, 0, None))(w_BHP.to(dt).reshape(B * H, -1), qN, dims)  # [N, T, dv]
    return y.view(B, H, T, -1).transpose(1, 2)


# -- accounting: matmul FLOPs at 2 per multiply-add, as torch's FlopCounterMode counts them -----------------------
def _grad_flops(dims: tuple[int, ...]) -> int:
    """One token's surprise: the forward (2 d_in d_out per layer), the weight gradient of every layer (an outer
    product, 2 d_in d_out) and the input gradient of every layer but the first (2 d_in d_out)."""
    layer = [2 * a * b for a, b in zip(dims[:-1], dims[1:])]
    return 2 * sum(layer) + sum(layer[1:])


def step_flops(dims: tuple[int, ...]) -> int:
    """One decode token: its surprise (torch.func's grad), the forward that gives the layer inputs its normalisation
    divides by, and its read (one forward each)."""
    return _grad_flops(dims) + 2 * 2 * memory_params(dims)


def chunked_flops(tokens: int, dims: tuple[int, ...], chunk_size: int, offset: int = 0) -> int:
    """Matmul FLOPs of titans_memory_chunked for one memory over `tokens` tokens starting `offset` into a chunk.
    Per chunk of c tokens: the surprises' forward (every layer) and backward (every layer's input gradient but the
    first's), 2 c d_in d_out each; A = La Le (2 c^3) and La e (2 c^2); per layer of the read W y and S y
    (2 c d_in d_out each), (y x^T) and its product with the deltas (2 c^2 (d_in + d_out)); the chunk's last
    weights and momentum (2 c d_in d_out each)."""
    layers = list(zip(dims[:-1], dims[1:]))
    total = 0
    for a, b in chunk_segments(tokens, offset, chunk_size):
        c = b - a
        total += 2 * c ** 3 + 2 * c * c
        for i, (d_in, d_out) in enumerate(layers):
            total += 2 * c * d_in * d_out * (5 + (i > 0)) + 2 * c * c * (d_in + d_out)
    return total


def init_memory_weights(w_HP: Tensor, dims: tuple[int, ...]) -> None:
    """Each layer ~ N(0, 1 / d_in), so M(k) starts at the scale of a unit-norm key (the initial weights W_0 are
    parameters, learned by the outer loss as the paper's meta-learned initial memory)."""
    with torch.no_grad():
        at = 0
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            w_HP[:, at:at + d_in * d_out].normal_(0.0, 1.0 / math.sqrt(d_in))
            at += d_in * d_out
