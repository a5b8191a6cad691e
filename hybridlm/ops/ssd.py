"""State-space duality (SSD, Mamba-2) core ops in pure PyTorch.

Per head h the state is a [P, N] matrix with one scalar decay per head and token, updated as
    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T
    y_t = h_t C_t + D x_t
dt is expected after softplus(dt + dt_bias) and the clamp to the time-step limits; A = -exp(A_log).
B and C have G groups; head h reads group h // (H // G).

Shape letters used in comments:
    Bt batch, T time, H heads, P head dim, G groups (R = H // G heads per group), N state size,
    C chunk size, K number of chunks.

Forms:
    ssd_recurrent  token-by-token reference (slow, obviously correct)
    ssd_chunked    SSD block decomposition for training and prefill (differentiable)
    ssd_step       one decode token
    ssd            dispatcher: the step for T == 1, else the chunked form
Compute runs in float32 (float64 stays float64 so tests can compare forms tightly); y is returned in
x's dtype and the state in the compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import compute_dtype

__all__ = ["ssd", "ssd_chunked", "ssd_recurrent", "ssd_step"]


def _check(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, state: Tensor | None) -> int:
    """Shapes of one call (x [Bt,T,H,P] or [Bt,H,P] for a step); returns R = H // G, heads per group."""
    lead, (H, P) = x.shape[:-2], x.shape[-2:]
    if dt.shape != (*lead, H):
        raise ValueError(f"dt must be {(*lead, H)} (x {tuple(x.shape)}), got {tuple(dt.shape)}")
    if A.shape != (H,):
        raise ValueError(f"A must be [H={H}], got {tuple(A.shape)}")
    if B.dim() != x.dim() or B.shape[:-2] != lead or C.shape != B.shape:
        shape = (*lead, "G", "N")
        raise ValueError(f"B {tuple(B.shape)} and C {tuple(C.shape)} must both be {shape} (x {tuple(x.shape)})")
    G, N = B.shape[-2:]
    if H % G != 0:
        raise ValueError(f"heads H={H} (x {tuple(x.shape)}) must be a multiple of groups G={G} (B {tuple(B.shape)})")
    if D is not None and D.shape != (H,):
        raise ValueError(f"D must be [H={H}], got {tuple(D.shape)}")
    if state is not None and state.shape != (lead[0], H, P, N):
        raise ValueError(f"state must be [Bt, H, P, N] = {(lead[0], H, P, N)}, got {tuple(state.shape)}")
    return H // G


def ssd_recurrent(x, dt, A, B, C, D=None, initial_state=None) -> tuple[Tensor, Tensor]:
    """Reference: loop over time.  x [Bt,T,H,P]; dt [Bt,T,H]; A [H]; B, C [Bt,T,G,N]; D [H]; state [Bt,H,P,N]."""
    R = _check(x, dt, A, B, C, D, initial_state)
    cd = compute_dtype(x)
    Bt, T, H, P = x.shape
    N = B.shape[-1]
    xc, dtc, Ac = x.to(cd), dt.to(cd), A.to(cd)
    Bh = B.to(cd).repeat_interleave(R, dim=2)  # [Bt,T,H,N]
    Ch = C.to(cd).repeat_interleave(R, dim=2)  # [Bt,T,H,N]
    h = xc.new_zeros(Bt, H, P, N) if initial_state is None else initial_state.to(cd)  # [Bt,H,P,N]
    ys = []
    for t in range(T):
        decay = torch.exp(dtc[:, t] * Ac)[:, :, None, None]  # [Bt,H,1,1]
        h = decay * h + (dtc[:, t, :, None] * xc[:, t])[:, :, :, None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]))
    y = torch.stack(ys, dim=1) if T > 0 else xc.new_zeros(Bt, 0, H, P)  # [Bt,T,H,P]
    if D is not None:
        y = y + xc * D.to(cd)[:, None]
    if T == 0 and initial_state is not None:
        h = h.clone()  # never hand back the caller's initial_state tensor itself
    return y.to(x.dtype), h


def ssd_step(x, dt, A, B, C, D, state) -> tuple[Tensor, Tensor]:
    """One decode token.  x [Bt,H,P]; dt [Bt,H]; A [H]; B, C [Bt,G,N]; D [H] or None; state [Bt,H,P,N]."""
    R = _check(x, dt, A, B, C, D, state)
    cd = state.dtype if state.dtype == torch.float64 else torch.float32
    Bt, H, P = x.shape
    G, N = B.shape[-2:]
    xc, dtc = x.to(cd), dt.to(cd)
    decay = torch.exp(dtc * A.to(cd))[:, :, None, None]  # [Bt,H,1,1]
    # group-shared B and C are broadcast over the R heads of each group instead of repeated
    h = (state.to(cd) * decay).view(Bt, G, R, P, N)
    h = h.addcmul_((dtc[:, :, None] * xc).view(Bt, G, R, P, 1), B.to(cd).view(Bt, G, 1, 1, N))
    y = torch.matmul(h.view(Bt, G, R * P, N), C.to(cd).view(Bt, G, N, 1)).view(Bt, H, P)
    if D is not None:
        y = y + xc * D.to(cd)[:, None]
    return y.to(x.dtype), h.view(Bt, H, P, N)


# Decays are floored at e^-flush, far below float32 resolution.  Smaller ones cost speed, not accuracy:
# exp of an argument below about -88 (float32) runs 50-170x slower than exp of a moderate one, and products
# of tiny decays with the data are subnormal, which makes a matmul over them some 20x slower
# (torch.set_flush_denormal reaches only the calling thread, not the intra-op workers).
_FLUSH = {torch.float32: 40.0, torch.float64: 600.0}
# The fast path takes the (chunk, head) pairs whose decay stays above e^-(2 limit): all its factors are then
# within e^(+-limit), far from float32's range ends (e^+-88) for the products they enter
_EXP_LIMIT = {torch.float32: 60.0, torch.float64: 300.0}


def _decay(z: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """exp(z) for log decays z <= 0, floored at e^-flush of `dtype` (default z's), also the result's dtype."""
    dtype = z.dtype if dtype is None else dtype
    return torch.exp(z.clamp_min(-_FLUSH[dtype])).to(dtype)


def _segsum(a: Tensor) -> Tensor:
    """[..., C] log decays -> [..., C, C] with entry (i, j) = sum_{j < t <= i} a_t for j <= i, floored at
    -flush (see _decay); the entries j > i are 0 and callers apply a causal mask after the exp.

    Summed directly rather than as a difference of cumulative sums, whose rounding grows with the chunk's
    total decay, and whose gradient is the small difference of two large terms."""
    C = a.shape[-1]
    later = torch.ones(C, C, dtype=torch.bool, device=a.device).triu_(1)  # [j, t]: t > j
    seg = a.unsqueeze(-2).expand(*a.shape[:-1], C, C).masked_fill(~later, 0.0).cumsum(-1).mT  # [..., i, j]
    return seg.clamp_min(-_FLUSH[seg.dtype])


def _chunk_layout(x, dt, A, B, C, cs, cd, hp):
    """Per chunk and group views and decays.  xg [K,Bt,G,C,R,P] (a view of x); dtg [K,Bt,G,C,R] (dt, compute
    dtype); a, c, sfx [K,Bt,G,C,R] in dtype hp (log decays dt A, their inclusive prefix sums c and their
    exclusive suffix sums sum_{t > j} a_t); Bg, Cg [K*Bt*G,C,N] (compute dtype)."""
    Bt, T, H, P = x.shape
    G, N = B.shape[-2:]
    R, K = H // G, T // cs
    xg = x.view(Bt, K, cs, G, R, P).permute(1, 0, 3, 2, 4, 5)
    dtg = dt.view(Bt, K, cs, G, R).permute(1, 0, 3, 2, 4).to(cd)
    a = dtg.to(hp) * A.to(hp).view(G, 1, R)
    c = a.cumsum(3)
    sfx = F.pad(a.flip(3).cumsum(3).flip(3)[:, :, :, 1:], (0, 0, 0, 1))  # sum_{t > j}
    Bg = B.view(Bt, K, cs, G, N).permute(1, 0, 3, 2, 4).to(cd).reshape(K * Bt * G, cs, N)
    Cg = C.view(Bt, K, cs, G, N).permute(1, 0, 3, 2, 4).to(cd).reshape(K * Bt * G, cs, N)
    return xg, dtg, a, c, sfx, Bg, Cg


def _block_autograd(x, dt, A, B, C, D, S, cs):
    """One block, functional (for training).  The intra-chunk part uses a per-head causal decay mask from
    _segsum, so that no gradient is a difference of large terms; see _block_fast for the shapes."""
    Bt, T, H, P = x.shape
    G, N = B.shape[-2:]
    R, K, cd = H // G, T // cs, S.dtype
    BG, RP = Bt * G, R * P
    xg, dtg, a, c, sfx, Bg, Cg = _chunk_layout(x, dt, A, B, C, cs, cd, cd)
    CB = torch.bmm(Cg, Bg.transpose(-1, -2)).tril().view(K, Bt, G, 1, cs, cs)
    M = torch.exp(_segsum(a.permute(0, 1, 2, 4, 3))) * CB  # [K,Bt,G,R,C,C]
    xdt = xg.to(cd) * dtg.unsqueeze(-1)  # [K,Bt,G,C,R,P]
    Y = torch.matmul(M, xdt.permute(0, 1, 2, 4, 3, 5))  # [K,Bt,G,R,C,P]
    Xs = (xdt * _decay(sfx).unsqueeze(-1)).reshape(K, BG, cs, RP)  # x weighted for the state write
    BgT = Bg.view(K, BG, cs, N).transpose(-1, -2)  # [K,BG,N,C]
    decay = _decay(c[:, :, :, -1:]).view(K, BG, 1, R, 1)
    starts = []
    for k in range(K):
        starts.append(S)
        S = torch.baddbmm((S.view(BG, N, R, P) * decay[k]).view(BG, N, RP), BgT[k], Xs[k])
    Sh = torch.stack(starts)  # [K,BG,N,RP]
    Ys = torch.bmm(Cg, Sh.view(K * BG, N, RP)).view(K, Bt, G, cs, R, P) * _decay(c).unsqueeze(-1)
    y = Ys + Y.permute(0, 1, 2, 4, 3, 5)
    if D is not None:
        y = y + xg * D.to(cd).view(G, 1, R, 1)
    return y.permute(1, 0, 3, 2, 4, 5).reshape(Bt, T, H, P), S


def _workspace(ws: dict, K: int, BG: int, cs: int, N: int, RP: int, dtype, device) -> tuple[Tensor, ...]:
    """Buffers for _block_fast, allocated once per call and reused by every block (fresh memory costs a page
    fault per 4 KiB on first touch, about as much as the arithmetic here)."""
    if "U" not in ws or ws["U"].shape[0] < K:
        ws["Q"] = torch.empty(K * BG, cs, N + cs, dtype=dtype, device=device)
        ws["U"] = torch.empty(K, BG, N + cs, RP, dtype=dtype, device=device)
        ws["Sh"] = torch.empty(K + 1, BG, N, RP, dtype=dtype, device=device)
        ws["Z"] = torch.empty(K * BG, cs, RP, dtype=dtype, device=device)
    return ws["Q"][: K * BG], ws["U"][:K], ws["Sh"][: K + 1], ws["Z"][: K * BG]


def _block_fast(x, dt, A, B, C, D, S, cs, out, ws, k0):
    """One block outside autograd, written into out [Bt,T,H,P].  x [Bt,T,H,P]; dt [Bt,T,H]; B, C [Bt,T,G,N]
    (T a multiple of the chunk size cs); S [Bt*G,N,R*P] the start state, transposed per group; ws the
    workspace dict; k0 the index of the block's first chunk.  -> end state.

    With a reference m per chunk and head, exp(c_i - c_j) = exp(c_i - m) exp(m - c_j): the right factor
    weights x (X' = exp(m - c_j) dt_j x_j), the left one scales output rows, and the causal mask tril(C B^T)
    between them is shared by the R heads of a group (no per-head [C, C] tensor).  The state read folds in:
    exp(c_i) C_i S = exp(c_i - m) C_i (exp(m) S).  So per chunk and group there is one matmul, contraction N+C,
        Z = [C | tril(C B^T)] @ [exp(m) S ; X'],   y_i = exp(c_i - m) Z_i  (+ D x_i),
    and the state update reuses its right operand: S_next = exp(c_last - m) (exp(m) S + B^T X').
    m = c_last / 2 keeps every factor within e^(+-limit) while the chunk's decay c_last >= -2 limit; a
    (chunk, head) pair past that takes m = c_last (the update stays exact, all factors <= 1), gets a zero
    output scale here and its output from _direct_pairs, for all blocks at once.  The decay bookkeeping
    (sums and exponents of the small [K,Bt,G,C,R] tensors) runs in float64, so the factors' rounding does not
    grow with the chunk's decay.
    """
    Bt, T, H, P = x.shape
    G, N = B.shape[-2:]
    R, K, cd = H // G, T // cs, S.dtype
    BG, RP = Bt * G, R * P
    lim = _EXP_LIMIT[cd]
    xg, dtg, _, c, _, Bg, Cg = _chunk_layout(x, dt, A, B, C, cs, cd, torch.float64)
    last = c[:, :, :, -1:]  # [K,Bt,G,1,R]
    bad = last < -2 * lim
    any_bad = bool(bad.any())
    m = torch.where(bad, last, last / 2)
    scale = torch.exp((c - m).clamp_max_(lim)).masked_fill_(bad, 0.0).to(cd)  # [K,Bt,G,C,R]
    pre = torch.exp(torch.where(bad, m.clamp_min(-_FLUSH[cd]), m))  # exp(m) [K,Bt,G,1,R]
    post = torch.exp(last - m)  # exp(c_last - m), at least e^-limit
    # Sh[k] holds chunk k's start state S_k up to a factor f_k (exp(c_last - m) of chunk k-1), so a single
    # multiply by f_k exp(m_k) makes exp(m_k) S_k; where that product of two factors would underflow, S_k
    # is made first (f_k = 1 from then on) and exp(m_k) applied after.
    f = torch.cat([torch.ones_like(post[:1]), post[:-1]])  # [K,Bt,G,1,R]
    split = ((f * pre) < torch.finfo(cd).tiny ** 0.9).flatten(1).any(1).tolist()  # leave the data headroom
    carry, f, pre, post = (t.to(cd).view(K, BG, 1, R, 1) for t in (f * pre, f, pre, post))

    # Q = [C | tril(C B^T)], U = [exp(m) S ; X'] per chunk and group, Sh the chunk start states (see above)
    Q, U, Sh, Z = _workspace(ws, K, BG, cs, N, RP, cd, x.device)
    Q[..., :N] = Cg
    torch.bmm(Cg, Bg.transpose(-1, -2), out=Q[..., N:]).tril_()
    Xw = U[:, :, N:]  # [K,BG,C,RP] view
    wx = torch.exp(torch.where(bad, (m - c).clamp_min(-_FLUSH[cd]), (m - c).clamp_max(lim))).to(cd)  # exp(m - c_j)
    torch.mul(xg, (dtg * wx).unsqueeze(-1), out=Xw.view(K, Bt, G, cs, R, P))
    BgT = Bg.view(K, BG, cs, N).transpose(-1, -2)  # [K,BG,N,C]
    Sh[0] = S
    for k in range(K):  # the sequential part
        Pk, Sk = U[k, :, :N].view(BG, N, R, P), Sh[k].view(BG, N, R, P)
        if split[k]:
            torch.mul(Sk.mul_(f[k]), pre[k], out=Pk)
            f[k] = 1.0
        else:
            torch.mul(Sk, carry[k], out=Pk)
        torch.baddbmm(U[k, :, :N], BgT[k], Xw[k], out=Sh[k + 1])
    Z = torch.bmm(Q, U.view(K * BG, N + cs, RP), out=Z).view(K, Bt, G, cs, R, P)
    y = torch.mul(Z, scale.unsqueeze(-1), out=out.view(Bt, K, cs, G, R, P).permute(1, 0, 3, 2, 4, 5))
    if D is not None:  # the skip term, while the block is still in cache
        y.addcmul_(xg, D.to(cd).view(G, 1, R, 1))
    if any_bad:  # keep the left-out pairs' start states for _direct_pairs
        kk, bb, gg, _, rr = bad.nonzero(as_tuple=True)
        Sb = Sh.view(K + 1, Bt, G, N, R, P)[kk, bb, gg, :, rr] * f.view(K, Bt, G, R)[kk, bb, gg, rr].view(-1, 1, 1)
        ws.setdefault("pairs", []).append((k0 + kk, bb, gg * R + rr, Sb))
    return (Sh[K].view(BG, N, R, P) * post[K - 1]).view(BG, N, RP)


def _gather(t: Tensor, b: Tensor, tt: Tensor, h: Tensor) -> Tensor:
    """t[b, tt, h] for t [Bt,T,X,...] and broadcastable index tensors: one index_select on a flat view when
    t is contiguous (several times faster than advanced indexing), else advanced indexing."""
    if not t.is_contiguous():
        return t[b, tt, h]
    Bt, T, X = t.shape[:3]
    flat = ((b * T + tt) * X + h).reshape(-1)
    return t.view(Bt * T * X, *t.shape[3:]).index_select(0, flat).view(*tt.shape, *t.shape[3:])


def _direct_pairs(x, dt, A, B, C, D, out, pairs, cs):
    """Writes into out [Bt,T',H,P] (contiguous, T' >= T padded to whole chunks) the outputs of the (chunk, head)
    pairs that _block_fast left out: state read, intra-chunk part with a per-pair _segsum mask, and D x.
    `pairs` holds (chunk index, batch index, head index, start state [n,N,P]) tuples."""
    kk, bb, hh, Sb = (torch.cat(t) for t in zip(*pairs))
    T, G, cd = x.shape[1], B.shape[2], out.dtype
    n, R, P = len(kk), x.shape[2] // G, x.shape[3]
    t_idx = kk.unsqueeze(1) * cs + torch.arange(cs, device=x.device)  # [n,C]
    valid = t_idx < T  # tokens of the padding: dt = x = B = C = 0
    ti, bi, hi, gi = t_idx.clamp_max(T - 1), bb.unsqueeze(1), hh.unsqueeze(1), (hh // R).unsqueeze(1)
    dtb = _gather(dt.unsqueeze(-1), bi, ti, hi).view(n, cs).to(cd) * valid  # [n,C]
    xb = _gather(x, bi, ti, hi).to(cd)  # [n,C,P]
    Bb, Cb = _gather(B, bi, ti, gi).to(cd), _gather(C, bi, ti, gi).to(cd)  # [n,C,N]
    a = dtb * A.to(cd)[hh].unsqueeze(1)
    yb = torch.bmm(Cb, Sb).mul_(_decay(a.cumsum(-1)).unsqueeze(-1))  # exp(c_i) C_i S
    M = torch.exp(_segsum(a)).mul_(torch.bmm(Cb, Bb.transpose(-1, -2)).tril_())  # [n,C,C]
    yb.baddbmm_(M, xb * dtb.unsqueeze(-1))
    if D is not None:
        yb.addcmul_(xb, D.to(cd)[hh].view(-1, 1, 1))
    flat = ((bi * out.shape[1] + t_idx) * out.shape[2] + hi).reshape(-1)
    out.view(-1, P).index_copy_(0, flat, yb.view(-1, P))


def ssd_chunked(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64, block_chunks=None) -> tuple[Tensor, Tensor]:
    """SSD block decomposition: same contract as ssd_recurrent, cost linear in T.

    Inside a chunk with start state S, cumulative log decay c_i = sum_{s<=i} dt_s A and L_ij = exp(c_i - c_j)
    for j <= i (else 0):
        y_i    = exp(c_i) C_i S  +  sum_j (C_i . B_j) L_ij dt_j x_j  +  D x_i     (state, intra-chunk, skip)
        S_next = exp(c_last) S  +  sum_j exp(c_last - c_j) dt_j x_j B_j^T
    The intra-chunk part is a masked quadratic form batched over all chunks of a block; only the state
    recurrence loops, once per chunk.  Outside autograd the decay is factored out of the mask, so one mask
    serves a group's heads and the state read shares the intra part's matmul (_block_fast); under autograd
    each head gets its own exact mask (_block_autograd).  The sequence runs in blocks of `block_chunks`
    chunks (padded at the end with dt = 0, x = B = 0, which leaves the state unchanged), so intermediates
    stay cache-sized and memory O(block) outside autograd.
    """
    _check(x, dt, A, B, C, D, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    cd = compute_dtype(x)
    Bt, T, H, P = x.shape
    G, N = B.shape[-2:]
    R = H // G
    if initial_state is None:
        S = torch.zeros(Bt * G, N, R * P, dtype=cd, device=x.device)
    else:  # [Bt,H,P,N] -> per group transposed [Bt*G, N, R*P]
        S = initial_state.to(cd).view(Bt, G, R, P, N).permute(0, 1, 4, 2, 3).reshape(Bt * G, N, R * P)
    if block_chunks is None:  # about 8 MB of fp32 x per block (best measured on CPU; 32 MB was 25% slower)
        block_chunks = max(1, (8 << 20) // (chunk_size * Bt * H * P * 4))
    block = chunk_size * block_chunks
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, dt, A, B, C, D, S))
    ys, ws = [], {}
    out = None if grad else torch.empty(Bt, T + -T % chunk_size, H, P, dtype=cd, device=x.device)
    for t0 in range(0, T, block):
        sl = slice(t0, t0 + block)
        xb, dtb, Bb, Cb = x[:, sl], dt[:, sl], B[:, sl], C[:, sl]
        pad = -xb.shape[1] % chunk_size
        if pad:  # dt = 0 (no decay) and x = B = 0 (no write) leave the state unchanged
            xb, Bb, Cb = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (xb, Bb, Cb))
            dtb = F.pad(dtb, (0, 0, 0, pad))
        if grad:
            yb, S = _block_autograd(xb, dtb, A, Bb, Cb, D, S, chunk_size)
            ys.append(yb[:, : yb.shape[1] - pad])
        else:
            S = _block_fast(xb, dtb, A, Bb, Cb, D, S, chunk_size, out[:, t0 : t0 + xb.shape[1]], ws, t0 // chunk_size)
            if sum(len(p[0]) for p in ws.get("pairs", ())) * N * P > (32 << 20):  # bound the saved states
                _direct_pairs(x, dt, A, B, C, D, out, ws.pop("pairs"), chunk_size)
    if ws.get("pairs"):
        _direct_pairs(x, dt, A, B, C, D, out, ws.pop("pairs"), chunk_size)
    y = (torch.cat(ys, 1) if len(ys) != 1 else ys[0]) if grad else out[:, :T]
    state = S.view(Bt, G, N, R, P).permute(0, 1, 3, 4, 2).reshape(Bt, H, P, N)
    if state is initial_state:
        state = state.clone()
    return y.to(x.dtype), state


def ssd(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Dispatcher: the one-token step for T == 1 (with a state), else the chunked form."""
    if x.dim() == 4 and x.shape[1] == 1 and initial_state is not None:
        y, h = ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, initial_state)
        return y.unsqueeze(1), h
    return ssd_chunked(x, dt, A, B, C, D, initial_state, chunk_size)
