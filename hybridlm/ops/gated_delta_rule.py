"""Gated delta rule (Gated DeltaNet) core ops in pure PyTorch.

Per value head the state S is a [K, V] matrix updated, for each token t, as
    S <- exp(g_t) * S                                   (decay, g_t <= 0: a scalar per head, Gated DeltaNet,
                                                         or one per key channel [K], Kimi Delta Attention:
                                                         S <- diag(exp(g_t)) S)
    S <- S + k_t (beta_t * (v_t - S^T k_t))^T           (delta-rule write)
    o_t = S^T (scale * q_t)
q and k are expected L2-normalised by the caller.  q/k have Hk heads, v/g/beta have Hv heads
(Hv a multiple of Hk); value head h reads q/k head h // (Hv // Hk) ("repeat_interleave" grouping).

Shape letters used in comments:
    B batch, T time, H heads (Hk query/key heads, Hv value heads, G = Hv // Hk value heads per key head),
    C chunk size, N number of chunks, K key head dim, V value head dim.

Forms:
    gated_delta_rule_recurrent  token-by-token reference (slow, obviously correct)
    gated_delta_rule_chunked    chunked UT/WY form for training and prefill (differentiable)
    gated_delta_rule_step       one decode token
    gated_delta_rule            dispatcher: fla's Triton kernel on CUDA when installed, else the chunked form
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import compute_dtype

try:  # optional GPU kernels; the module must import without them
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule as _fla_chunk_gated_delta_rule
except Exception:  # ImportError, or a broken triton install
    _fla_chunk_gated_delta_rule = None

__all__ = [
    "gated_delta_rule",
    "gated_delta_rule_chunked",
    "gated_delta_rule_recurrent",
    "gated_delta_rule_step",
    "inverse_unit_lower_flops",
]


def inverse_unit_lower_flops(C: int, base: int = 8) -> int:
    """Matmul FLOPs per chunk row of the chunked form's (I + L)^-1: each merge level of block size b does two
    b x b x b products per pair of blocks (2 b^2 C FLOPs per level, 2 b^2 per row); the base blocks' triangular
    solves are not matmuls."""
    b = C
    while b > base and b % 2 == 0:
        b //= 2
    total = 0
    while b < C:
        total += 2 * b * b
        b *= 2
    return total


def _check_heads(q: Tensor, v: Tensor) -> int:
    hk, hv = q.shape[-2], v.shape[-2]
    if hv % hk != 0:
        raise ValueError(f"value heads ({hv}) must be a multiple of query/key heads ({hk})")
    return hv // hk


def _channel_decay(g: Tensor, v: Tensor, K: int) -> bool:
    """True when g carries one log decay per key channel ([..., Hv, K], KDA), False for one per head ([..., Hv])."""
    if g.dim() == v.dim() and g.shape[-1] == K and g.shape[-2] == v.shape[-2]:
        return True
    if g.dim() == v.dim() - 1:
        return False
    raise ValueError(f"g has shape {tuple(g.shape)}: expected one log decay per value head {tuple(v.shape[:-1])} "
                     f"or per key channel {(*v.shape[:-1], K)}")


def gated_delta_rule_recurrent(q, k, v, g, beta, initial_state=None, scale=None) -> tuple[Tensor, Tensor]:
    """Reference: loop over time.  q,k [B,T,Hk,K]; v [B,T,Hv,V]; g [B,T,Hv] (scalar decay per head) or
    [B,T,Hv,K] (per key channel); beta [B,T,Hv]; state [B,Hv,K,V]."""
    groups = _check_heads(q, v)
    dt = compute_dtype(v)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    B, T, Hv, V = v.shape
    K = q.shape[-1]
    q = q.to(dt).repeat_interleave(groups, dim=2) * scale  # [B,T,Hv,K]
    k = k.to(dt).repeat_interleave(groups, dim=2)  # [B,T,Hv,K]
    per_channel = _channel_decay(g, v, K)
    v, beta = v.to(dt), beta.to(dt)
    g = g.to(dt) if per_channel else g.to(dt)[..., None]  # [B,T,Hv,K] or [B,T,Hv,1]: decays the rows of S
    S = v.new_zeros(B, Hv, K, V) if initial_state is None else initial_state.to(dt)  # [B,Hv,K,V]
    outs = []
    for t in range(T):
        S = S * g[:, t, :, :, None].exp()
        pred = torch.einsum("bhk,bhkv->bhv", k[:, t], S)  # what the state currently returns for k_t
        delta = beta[:, t, :, None] * (v[:, t] - pred)  # [B,Hv,V]
        S = S + k[:, t, :, :, None] * delta[:, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    o = torch.stack(outs, dim=1) if T > 0 else v.new_zeros(B, 0, Hv, V)  # [B,T,Hv,V]
    return o.to(v.dtype), S


def gated_delta_rule_step(q, k, v, g, beta, state, scale=None) -> tuple[Tensor, Tensor]:
    """One decode token.  q,k [B,Hk,K]; v [B,Hv,V]; g [B,Hv] or [B,Hv,K] (per key channel); beta [B,Hv];
    state [B,Hv,K,V] -> (o [B,Hv,V], new state).

    Scalar decay: S_new^T q = decay * (S^T q) + delta * (k.q), so the old state is read once for both
    S^T k and S^T q, and written once for the update. Per-channel decay decays the state's rows first.
    """
    B, Hk, K = q.shape
    Hv, V = v.shape[-2:]
    G = _check_heads(q, v)
    if _channel_decay(g, v, K):  # KDA: S <- diag(exp(g)) S, then the scalar-free delta step (decay 1)
        dt = state.dtype if state.dtype == torch.float64 else torch.float32
        decayed = state.to(dt) * g.to(dt).exp()[..., None]  # [B,Hv,K,V]
        return gated_delta_rule_step(q, k, v, g.new_zeros(B, Hv), beta, decayed, scale)
    dt = state.dtype if state.dtype == torch.float64 else torch.float32
    scale = K**-0.5 if scale is None else scale
    S = state.to(dt).reshape(B, Hk, G, K, V)
    kq = torch.stack([k.to(dt), q.to(dt) * scale], dim=2)  # [B,Hk,2,K]
    read = torch.matmul(kq.unsqueeze(2), S)  # [B,Hk,G,2,V]: rows S^T k and S^T q, shared k/q per group
    decay = g.to(dt).exp().view(B, Hk, G, 1)  # [B,Hk,G,1]
    bt = beta.to(dt).view(B, Hk, G, 1)
    delta = bt * (v.to(dt).view(B, Hk, G, V) - decay * read[..., 0, :])  # [B,Hk,G,V]
    kdotq = (kq[:, :, 0] * kq[:, :, 1]).sum(-1).view(B, Hk, 1, 1)  # [B,Hk,1,1]
    o = decay * read[..., 1, :] + kdotq * delta  # [B,Hk,G,V]
    new_S = (S * decay.unsqueeze(-1)).addcmul_(k.to(dt).view(B, Hk, 1, K, 1), delta.unsqueeze(-2))  # [B,Hk,G,K,V]
    return o.reshape(B, Hv, V).to(v.dtype), new_S.view(B, Hv, K, V)


def _chunked(x: Tensor, C: int, dt: torch.dtype) -> Tensor:
    """[B,T,H,D] -> contiguous [N,B,H,C,D], or [B,T,H] -> [N,B,H,C], in one copy (T a multiple of C)."""
    B, T = x.shape[:2]
    x = x.view(B, T // C, C, *x.shape[2:])
    x = x.permute(1, 0, 3, 2, 4) if x.dim() == 5 else x.permute(1, 0, 3, 2)
    return torch.empty(x.shape, dtype=dt, device=x.device).copy_(x)  # one pass, also when casting


def _unit_lower_inverse(L: Tensor, base: int = 8) -> Tensor:
    """(I + strict_lower(L))^-1 for a batch [..., C, C]; the diagonal and upper part of L are ignored.

    LAPACK's batched triangular solve runs one small trsm per matrix, which is slow for C = 64, so only
    the base x base diagonal blocks are inverted that way; blocks are then merged pairwise with
        [[A, 0], [M, D]]^-1 = [[A^-1, 0], [-D^-1 M A^-1, D^-1]],
    two batched matmuls per level (same total work as a triangular solve, but running at matmul speed).
    """
    C = L.shape[-1]
    b = C
    while b > base and b % 2 == 0:
        b //= 2
    nb = C // b
    lead = L.shape[:-2]
    eye = torch.eye(b, dtype=L.dtype, device=L.device)
    # diagonal blocks [..., nb, b, b]; LAPACK returns column-major results, so solving the transposed
    # (upper) system and transposing back gives row-major inverses without an extra copy
    diag = L.view(*lead, nb, b, nb, b).diagonal(dim1=-4, dim2=-2).permute(*range(len(lead)), -1, -3, -2)
    X = torch.linalg.solve_triangular(diag.mT, eye, upper=True, unitriangular=True).mT  # [..., nb, b, b]
    while b < C:
        nb //= 2
        pairs = L.view(*lead, nb, 2 * b, nb, 2 * b).diagonal(dim1=-4, dim2=-2)  # [..., 2b, 2b, nb]
        M = pairs[..., b:, :b, :].permute(*range(len(lead)), -1, -3, -2)  # [..., nb, b, b] lower-left blocks
        X = X.reshape(*lead, nb, 2, b, b)
        Ai, Di = X[..., 0, :, :], X[..., 1, :, :]
        Y = X.new_zeros(*lead, nb, 2, b, 2, b)  # [..., nb, 2b, 2b] viewed by block row / block column
        Y[..., 0, :, 0, :] = Ai
        Y[..., 1, :, 1, :] = Di
        Y[..., 1, :, 0, :] = torch.matmul(torch.matmul(Di, M), Ai).neg_()
        b *= 2
        X = Y.view(*lead, nb, b, b)
    return X.view(*lead, C, C)


# Decay factors at or below e^-30 (9.4e-14, six orders of magnitude under float32's epsilon; e^-300 in float64) are
# set to exactly 0. Kept, they and their products become subnormal floats, on which this CPU's arithmetic is several
# times slower: the Qwen3-Next-shaped benchmark model's random-init decays reach -27 per token, and flushing took its
# T=2048 forward from 360 to 291 ms (benchmarks/prefill_floor.py). A term that small changes no result beyond rounding.
# The exponent is clamped first: exp itself is ~25x slower on arguments far below -88 (whose results are subnormal
# or 0) than on normal ones, and a chunk's pairwise decays reach -1700 there.
_FLUSH_BELOW = {torch.float64: -300.0}


def _exp_(x: Tensor) -> Tensor:
    """exp(x) in place (x a temporary), with exp(x) at or below e^-30 (e^-300 in float64) set to exactly 0: a clamp
    and a threshold pass (a mask from x < -30 then masked_fill took 8x as long as the exp itself)."""
    floor = _FLUSH_BELOW.get(x.dtype, -30.0)
    y = x.clamp_min_(floor - 1.0).exp_()
    return F.threshold(y, math.exp(floor), 0.0) if y.requires_grad else F.threshold_(y, math.exp(floor), 0.0)


# A sub-block whose channels all decay by at most this much (in log space, over its tokens) factorises safely:
# relative to the decay just before it, every factor exp(+-(c - r)) lies within e^+-40, finite in float32.
_FACTOR_SPAN = 40.0


def _channel_chunks(qk: Tensor, c: Tensor, s: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The decay-weighted pieces of chunks with a per-channel decay, with every exp factor bounded.

    qk [M,2C,K] (q rows pre-scaled, then k rows), c [M,C,K] cumulative log decay inside the chunk (non-increasing)
    -> attn = Q K^T * D and A = K K^T * D, each [M,C,C] with entry (i, j) = sum_d x_i[d] k_j[d] exp(c_i[d] - c_j[d])
    for j <= i and 0 above the diagonal; Qd = Q exp(c), Kw = K exp(c), Kd = K exp(c_C - c), each [M,C,K].

    A factorisation x exp(c) . k exp(-c) overflows once a chunk decays by more than ~88 in some channel (the decay
    has no lower bound), so the chunk is cut into sub-blocks of s tokens, with r_a the cumulative decay just before
    sub-block a (0 for the first) and rho_b the one at the end of sub-block b (r_a = rho_{a-1}):
      off-diagonal (b < a): exp(c_i - c_j) = exp(c_i - r_a) exp(rho_{a-1} - rho_b) exp(rho_b - c_j), three factors
        <= 1, so row block a against every earlier column is one matmul of x F and the per-block-scaled k~;
      diagonal (a = b): x_i exp(c_i - r_a) against k_j exp(r_a - c_j) when the sub-block decays by at most
        _FACTOR_SPAN (the second factor <= e^40), else exp(c_i - c_j) elementwise (any decay)."""
    M, C, K = c.shape
    nb, W = C // s, C - s
    xb = qk.view(M, 2, nb, s, K)  # q rows then k rows, by sub-block
    kb, cb = xb[:, 1], c.view(M, nb, s, K)
    rho = cb[:, :, -1]  # [M,nb,K]: decay at the end of each sub-block
    r = torch.cat((rho.new_zeros(M, 1, K), rho[:, :-1]), dim=1)  # [M,nb,K]: decay just before each sub-block
    F_ = _exp_(cb - r[:, :, None])  # exp(c_i - r_a) <= 1  [M,nb,s,K]
    xf = xb * F_[:, None]  # [M,2,nb,s,K]
    causal = torch.ones(s, s, dtype=torch.bool, device=c.device).tril_()
    if bool((r - rho).max() <= _FACTOR_SPAN):
        kf = kb / F_  # k_j exp(r_a - c_j), within e^_FACTOR_SPAN
        diag = torch.matmul(xf, kf[:, None].transpose(-1, -2)).mul_(causal)  # [M,2,nb,s,s]
        ktil = kf * _exp_(rho - r)[:, :, None]  # k_j exp(rho_b - c_j) <= 1
    else:  # exp(c_i - c_j) elementwise; the clamp keeps the j > i entries finite, the mask drops them after
        D = _exp_((cb[:, :, :, None] - cb[:, :, None]).clamp_max_(0))  # [M,nb,s(i),s(j),K]
        kD = D * kb[:, :, None]  # k_j exp(c_i - c_j)
        diag = torch.matmul(kD, xb.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3) * causal  # [M,2,nb,s(i),s(j)]
        ktil = kb * _exp_(rho[:, :, None] - cb)
    grams = c.new_zeros(M, 2, nb, s, C)  # [M, q|k, row block, row, column]
    if nb > 1:  # row blocks a >= 1 against columns j < W; E zero for column blocks b >= a
        E = _exp_((rho[:, :-1, None] - rho[:, None, :-1]).clamp_max_(0))  # [M,nb-1(a-1),nb-1(b),K]
        E = E * torch.ones(nb - 1, nb - 1, dtype=torch.bool, device=c.device).tril_()[..., None]
        kr = (ktil[:, None, :-1] * E[:, :, :, None]).view(M, nb - 1, W, K).transpose(-1, -2)  # [M,nb-1,K,W]
        for i in range(2):  # q rows, k rows
            grams[:, i, 1:, :, :W] = torch.matmul(xf[:, i, 1:], kr)  # [M,nb-1,s,W]
    # the diagonal blocks last: the off-diagonal products wrote zeros over those of row blocks 1 .. nb-2
    grams.view(M, 2, nb, s, nb, s).diagonal(dim1=2, dim2=4).copy_(diag.permute(0, 1, 3, 4, 2))
    qkd = xf * _exp_(r.clone())[:, None, :, None]  # [Q; K] exp(c)  [M,2,nb,s,K]
    Kd = ktil * _exp_(rho[:, -1:] - rho)[:, :, None]  # k_j exp(c_C - c_j)
    grams, qkd = grams.view(M, 2, C, C), qkd.view(M, 2, C, K)
    return grams[:, 0], grams[:, 1], qkd[:, 0], qkd[:, 1], Kd.view(M, C, K)


def _chunk_block(q, k, v, g, beta, S, scale, C, out):
    """Chunked form over one block of tokens.  q,k [B,T,Hk,K]; v [B,T,Hv,V]; g [B,T,Hv] (scalar decay) or
    [B,T,Hv,K] (per key channel, with Hk = Hv); beta [B,T,Hv]; S [B*Hv,K,V] start state (compute dtype).
    Writes the outputs into out [B,T,Hv,V]; returns the end state."""
    B, T, Hk, K = q.shape
    Hv, V = v.shape[-2:]
    G = Hv // Hk
    per_channel = g.dim() == 4
    dt = S.dtype
    pad = -T % C
    if pad:  # padded tokens have k = 0 (no write), g = 0 (no decay): the end state is unchanged
        q, k, v = (F.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
        g, beta = (F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad)) for x in (g, beta))
    N = (T + pad) // C
    BHk, BHv = B * Hk, B * Hv

    # q (pre-scaled) and k chunks stacked in one buffer: a single matmul gives both Q K^T and K K^T
    qk = q.new_empty(N, B, Hk, 2, C, K, dtype=dt)
    qk[:, :, :, 0] = q.view(B, N, C, Hk, K).permute(1, 0, 3, 2, 4)
    qk[:, :, :, 0].mul_(scale)
    qk[:, :, :, 1] = k.view(B, N, C, Hk, K).permute(1, 0, 3, 2, 4)
    qk = qk.view(N, B, Hk, 2 * C, K)
    kc = qk[..., C:, :]  # [N,B,Hk,C,K]
    vc = _chunked(v, C, dt)  # [N,B,Hv,C,V]
    gc = _chunked(g, C, dt).cumsum(3)  # [N,B,Hv,C] or [N,B,Hv,C,K]: cumulative log decay inside each chunk
    bc = _chunked(beta, C, dt)  # [N,B,Hv,C]

    if per_channel:  # G = 1: the decay-weighted pieces per head (_channel_chunks)
        attn, L, Qd, Kw, Kd = _channel_chunks(qk.view(N * BHv, 2 * C, K), gc.view(N * BHv, C, K), math.gcd(C, 16))
        L = L.view(N, B, Hk, G, C, C) * bc.view(N, B, Hk, G, C, 1)  # strict lower used
    else:
        # Gram matrices once per key head, shared by the G value heads of the group
        gram = torch.matmul(qk, kc.transpose(-1, -2)).view(N, B, Hk, 1, 2 * C, C)  # [N,B,Hk,1,2C,C]
        # Pairwise decay exp(c_i - c_j) for j <= i.  Clamping at 0 keeps the unused j > i entries finite
        # (cheaper than masking with -inf, and exp of -inf is slow); they are zeroed or ignored below.
        dec = _exp_((gc.unsqueeze(-1) - gc.unsqueeze(-2)).clamp_max_(0)).view(N, B, Hk, G, C, C)
        attn = torch.mul(gram[..., :C, :], dec).tril_().view(N * BHv, C, C)  # intra-chunk causal (scale Q K^T * D)
        L = torch.mul(gram[..., C:, :], dec).mul_(bc.view(N, B, Hk, G, C, 1))  # [N,B,Hk,G,C,C], strict lower used
    Tinv = _unit_lower_inverse(L)  # (I + L)^-1, [N,B,Hk,G,C,C]
    if per_channel:  # the decays scale K and Q channel by channel
        Tu = torch.mul(Tinv, bc.view(N, B, Hk, G, 1, C)).view(N, BHv, C, C)
        W = torch.matmul(Tu, Kw.view(N, BHv, C, K))  # [N,BHv,C,K]
        Qd = Qd.reshape(N * BHv, C, K)
        KdT = Kd.view(N, BHv, C, K).transpose(-1, -2)  # [N,BHv,K,C]
        chunk_decay = _exp_(gc[..., -1, :].clone()).view(N, BHv, K, 1)
    else:
        ec = _exp_(gc.clone())  # [N,B,Hv,C]
        # Diagonal scalings folded into Tinv's columns, so W's matmul can share K across the G value heads
        Tw = torch.mul(Tinv, (bc * ec).view(N, B, Hk, G, 1, C))
        W = torch.matmul(Tw.view(N, BHk, G * C, C), kc.reshape(N, BHk, C, K)).view(N, BHv, C, K)
        Tu = torch.mul(Tinv, bc.view(N, B, Hk, G, 1, C)).view(N, BHv, C, C)
        Qd = torch.mul(qk[..., :C, :].unsqueeze(3), ec.view(N, B, Hk, G, C, 1)).view(N * BHv, C, K)
        last = gc[..., -1:]  # [N,B,Hv,1]
        Kd = torch.mul(kc.unsqueeze(3), _exp_(last - gc).view(N, B, Hk, G, C, 1))  # [N,B,Hk,G,C,K]
        KdT = Kd.view(N, BHv, C, K).transpose(-1, -2)  # [N,BHv,K,C]
        chunk_decay = _exp_(last.clone()).view(N, BHv, 1, 1)
    U = torch.matmul(Tu, vc.view(N, BHv, C, V))  # [N,BHv,C,V]

    # Sequential part: only the products with the running state.  The state at the start of every chunk
    # is kept, so the state's contribution to the outputs is one batched matmul after the loop.
    if torch.is_grad_enabled() and (S.requires_grad or W.requires_grad):  # functional loop for autograd
        starts, us = [], []
        for n in range(N):
            u = U[n] - torch.bmm(W[n], S)  # [BHv,C,V]
            starts.append(S)
            us.append(u)
            S = torch.baddbmm(S * chunk_decay[n], KdT[n], u)
        Sh, U = torch.stack(starts), torch.stack(us)  # [N,BHv,K,V], [N,BHv,C,V]
    else:  # same loop, in place in preallocated buffers (out= rather than baddbmm_, which FlopCounterMode misses)
        # Sh[n]: the state at the start of chunk n, side by side for the output product after the loop. With one
        # chunk a block (the default at wide heads) that is the incoming state itself, read in place, not copied.
        Sh = torch.empty(N + 1, BHv, K, V, dtype=dt, device=q.device)
        if N > 1:
            Sh[0] = S
        for n in range(N):
            prev = S if n == 0 else Sh[n]
            torch.baddbmm(U[n], W[n], prev, alpha=-1, out=U[n])
            torch.baddbmm(torch.mul(prev, chunk_decay[n], out=Sh[n + 1]), KdT[n], U[n], out=Sh[n + 1])
        S, Sh = Sh[N], (S.unsqueeze(0) if N == 1 else Sh[:N])
    o = torch.bmm(Qd, Sh.reshape(N * BHv, K, V))  # [N*BHv,C,V], then + attn u (in place unless autograd records)
    o = torch.baddbmm(o, attn, U.view(N * BHv, C, V), **({} if torch.is_grad_enabled() else {"out": o}))
    o = o.view(N, B, Hv, C, V).permute(1, 0, 3, 2, 4)  # [B,N,C,Hv,V] view; the copy into out is the transpose
    if pad:
        out.copy_(o.reshape(B, N * C, Hv, V)[:, :T])
    else:
        out.view(B, N, C, Hv, V).copy_(o)
    return S


def gated_delta_rule_chunked(
    q, k, v, g, beta, initial_state=None, scale=None, chunk_size=64, block_chunks=None
) -> tuple[Tensor, Tensor]:
    """Chunked UT/WY form: same contract as gated_delta_rule_recurrent, cost linear in T.

    Inside a chunk with start state S0, cumulative log decay c_i = sum_{s<=i} g_s and
    D_ij = exp(c_i - c_j) (j <= i, else 0), the per-token writes u form the lower-triangular system
        (I + L) u = beta*v - beta*exp(c)*K S0,      L_ij = beta_i D_ij (k_i.k_j) for j < i,
    so with Tinv = (I + L)^-1:  u = U - W S0,  U = Tinv diag(beta) v,  W = Tinv diag(beta exp(c)) K.
    Then  o = diag(exp(c)) Q S0 + (Q K^T * D) u  and  S1 = exp(c_C) S0 + (diag(exp(c_C - c)) K)^T u.
    Per-channel decay (g [B,T,Hv,K], KDA) is the same system with c_i a vector over the key channels: exp(c) scales
    K and Q channel by channel, D_ij (k_i.k_j) becomes sum_d k_i[d] k_j[d] exp(c_i[d] - c_j[d]) (_channel_chunks,
    stable for any decay) and the end-of-chunk decay diag(exp(c_C)) multiplies the rows of S0; q/k heads are
    repeated to the value heads first (each value head decays its own channels).
    Everything except the products with S0 is computed for many chunks at once in batched matmuls;
    the sequential loop over chunks does two batched matmuls per chunk.  The sequence is processed in
    blocks of `block_chunks` chunks so the intermediates stay cache-sized and memory stays O(block);
    by default a block holds about 2 MB of q/k/v (measured fastest on CPU with 1 and 2 threads: cache
    misses cost more than the extra per-block overhead).
    """
    B, T, Hk, K = q.shape
    Hv, V = v.shape[-2:]
    groups = _check_heads(q, v)
    if _channel_decay(g, v, K) and groups > 1:  # per-channel decays differ per value head: no Gram sharing
        q, k = q.repeat_interleave(groups, dim=2), k.repeat_interleave(groups, dim=2)
        Hk = Hv
    dt = compute_dtype(v)
    scale = K**-0.5 if scale is None else scale
    if initial_state is None:
        S = torch.zeros(B * Hv, K, V, dtype=dt, device=v.device)
    else:
        S = initial_state.to(dt).reshape(B * Hv, K, V)
    out = v.new_empty(B, T, Hv, V)
    if block_chunks is None:  # about 2 MB of fp32 q/k/v per block
        block_chunks = max(1, (2 << 20) // (chunk_size * B * (Hk * 2 * K + Hv * V) * 4))
    block = chunk_size * block_chunks
    for t0 in range(0, T, block):
        sl = slice(t0, t0 + block)
        S = _chunk_block(q[:, sl], k[:, sl], v[:, sl], g[:, sl], beta[:, sl], S, scale, chunk_size, out[:, sl])
    if T == 0:
        S = S.clone()  # never hand back the caller's initial_state tensor itself
    return out, S.view(B, Hv, K, V)


def gated_delta_rule(q, k, v, g, beta, initial_state=None, scale=None, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Dispatcher: fla's chunked Triton kernel for CUDA tensors when fla is installed, else the torch chunked form."""
    if q.is_cuda and _fla_chunk_gated_delta_rule is not None and not _channel_decay(g, v, q.shape[-1]):
        groups = _check_heads(q, v)
        if groups > 1:  # some fla versions require as many q/k heads as value heads
            q = q.repeat_interleave(groups, dim=2)
            k = k.repeat_interleave(groups, dim=2)
        return _fla_chunk_gated_delta_rule(
            q, k, v, g, beta,
            scale=q.shape[-1] ** -0.5 if scale is None else scale,
            initial_state=initial_state,
            output_final_state=True,
            use_qk_l2norm_in_kernel=False,
        )
    return gated_delta_rule_chunked(q, k, v, g, beta, initial_state=initial_state, scale=scale, chunk_size=chunk_size)
