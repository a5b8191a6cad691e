"""Titans' neural long-term memory (Behrouz, Zhong, Mirrokni 2024, arXiv 2501.00663, section 3.1): an MLP whose
weights are the state, trained at test time by gradient descent with momentum and weight decay.

Per head the memory M is an MLP with L_M >= 1 layers, `dims` = (d_k, hidden ..., d_v), SiLU between layers, no
biases; its weights W are kept flat, one vector of P = sum(d_in * d_out) numbers. For each token t:

    u_t = grad_W ||M(W0; k_t) - v_t||^2          the surprise; W0 = the weights at the start of t's chunk
    S_t = eta_t S_{t-1} - theta_t u_t             momentum
    W_t = (1 - alpha_t) W_{t-1} + S_t             forgetting (weight decay)
    y_t = M(W_t; q_t)                             the read uses the weights *after* token t's update

Chunks: token positions are cut into chunks of `chunk_size` on one grid counted from the start of the sequence
(the state carries `offset`, the tokens of the open chunk already consumed), and every gradient in a chunk is taken
at the weights the chunk started with. chunk_size = 1 is the paper's per-token rule; larger chunks are the paper's
parallel training form (section 3.2). The grid is the same for the recurrent reference, the chunked form and the
one-step decode, so all three give the same result for any chunk size and any split of the sequence.

State [B, H, 3, P]: row 0 the chunk-start weights W0, row 1 the weights W_{t}, row 2 the momentum S_t.

Shapes: B batch, T tokens, H heads, N = B * H memories, c tokens of one chunk, P weights per memory,
dk / dv key / value dims.

Forms:
    titans_memory_recurrent  token-by-token reference (a Python loop; autograd for each token's gradient)
    titans_memory_chunked    per chunk: every token's gradient at once (torch.func vmap of grad), then momentum
                             and decay as one [c, c] matrix product each; no loop over the tokens of a chunk
    titans_memory_step       one decode token
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

__all__ = ["chunked_flops", "init_memory_weights", "memory_params", "memory_read", "mlp", "step_flops", "titans_memory_chunked",
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
        s = eta[:, t, :, None].to(dt) * s - theta[:, t, :, None].to(dt) * u
        w = (1 - alpha[:, t, :, None].to(dt)) * w + s
        outs.append(torch.stack([torch.stack([mlp(w[b, h], q[b, t, h].to(dt), dims) for h in range(H)])
                                 for b in range(B)]))
        if (offset + t + 1) % chunk_size == 0:
            w0 = w
    y = torch.stack(outs, 1) if T else v.new_zeros(B, 0, H, v.shape[-1], dtype=dt)
    return y.to(v.dtype), torch.stack((w0, w, s), 2)


def _grads(w0_NP: Tensor, k_NcK: Tensor, v_NcV: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Every token's gradient at its memory's chunk-start weights: [N, P], [N, c, dk], [N, c, dv] -> [N, c, P]."""
    per_token = vmap(grad(token_loss), in_dims=(None, 0, 0, None))  # one memory, c tokens
    return vmap(per_token, in_dims=(0, 0, 0, None))(w0_NP, k_NcK, v_NcV, dims)


def _decay_matrix(log_a_Nc: Tensor) -> Tensor:
    """L[n, t, i] = prod_{j = i+1 .. t} a_j for i <= t, else 0, from log a [N, c] (a sum of logs in a masked
    cumulative sum: no division, so a gate at 0 gives exact zeros instead of NaN)."""
    c = log_a_Nc.shape[-1]
    x = log_a_Nc[:, :, None].expand(-1, c, c)  # x[n, t, i] = log a_t
    strict = torch.ones(c, c, dtype=torch.bool, device=x.device).tril(-1)
    seg = x.masked_fill(~strict, 0).cumsum(1)  # seg[n, t, i] = sum_{j = i+1 .. t} log a_j  (t >= i)
    return seg.exp().masked_fill(~strict | torch.eye(c, dtype=torch.bool, device=x.device), 0) + \
        torch.eye(c, dtype=x.dtype, device=x.device)


def _chunk(q, k, v, eta, theta, alpha, w0, w, s, dims):
    """One chunk for N memories: q, k [N, c, dk]; v [N, c, dv]; gates [N, c]; w0, w, s [N, P] ->
    (y [N, c, dv], W_c, S_c). With the decay matrices Le (momentum) and La (forgetting), and g = -theta * u:
        S_t = sum_i Le[t, i] g_i + e_t S,     e_t = prod_{j <= t} eta_j
        W_t = sum_i La[t, i] S_i + a_t W,     a_t = prod_{j <= t} (1 - alpha_j)
            = (La Le) g + (La e) S + a W      one [c, c] x [c, P] product gives every token's weights."""
    u = _grads(w0, k, v, dims)  # [N, c, P]
    g = -theta[..., None] * u  # [N, c, P]
    log_e, log_a = torch.log(eta), torch.log1p(-alpha)  # [N, c]
    Le, La = _decay_matrix(log_e), _decay_matrix(log_a)  # [N, c, c]
    e, a = log_e.cumsum(1).exp(), log_a.cumsum(1).exp()  # [N, c]
    W_all = torch.bmm(torch.bmm(La, Le), g) + torch.bmm(La, e[..., None]) * s[:, None] + a[..., None] * w[:, None]
    S_end = torch.bmm(Le[:, -1:], g)[:, 0] + e[:, -1:] * s  # [N, P]
    y = vmap(vmap(mlp, in_dims=(0, 0, None)), in_dims=(0, 0, None))(W_all, q, dims)  # [N, c, dv]
    return y, W_all[:, -1], S_end


def _segments(T: int, offset: int, C: int) -> list[tuple[int, int]]:
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
    torch.func's grad composes with autograd, so the outer loss trains the projections, gates and initial weights
    through the inner updates."""
    _check(q, k, v, eta, state, dims)
    dt = compute_dtype(v)
    B, T, H, _ = k.shape
    flat = lambda x: x.to(dt).transpose(1, 2).reshape(B * H, T, *x.shape[3:])  # noqa: E731  [N, T, ...]
    qN, kN, vN, eN, thN, aN = map(flat, (q, k, v, eta, theta, alpha))
    w0, w, s = (x.to(dt).reshape(B * H, -1) for x in state.unbind(2))  # [N, P]
    outs = []
    for a, b in _segments(T, offset, chunk_size):
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
    """One decode token: its surprise and its read (one forward)."""
    return _grad_flops(dims) + 2 * memory_params(dims)


def chunked_flops(tokens: int, dims: tuple[int, ...], chunk_size: int, offset: int = 0) -> int:
    """Matmul FLOPs of titans_memory_chunked for one memory over `tokens` tokens starting `offset` into a chunk.
    Per chunk of c tokens: c surprises and c reads; La Le (2 c^3); every token's weights (La Le) g (2 c^2 P) and
    (La e) (2 c^2); the final momentum Le[-1] g (2 c P)."""
    P = memory_params(dims)
    total = 0
    for a, b in _segments(tokens, offset, chunk_size):
        c = b - a
        total += c * (_grad_flops(dims) + 2 * P) + 2 * c ** 3 + 2 * c * c * P + 2 * c * c + 2 * c * P
    return total


def init_memory_weights(w_HP: Tensor, dims: tuple[int, ...]) -> None:
    """Each layer ~ N(0, 1 / d_in), so M(k) starts at the scale of a unit-norm key (the initial weights W_0 are
    parameters, learned by the outer loss as the paper's meta-learned initial memory)."""
    with torch.no_grad():
        at = 0
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            w_HP[:, at:at + d_in * d_out].normal_(0.0, 1.0 / math.sqrt(d_in))
            at += d_in * d_out
