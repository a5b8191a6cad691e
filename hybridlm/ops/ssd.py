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

__all__ = ["ssd", "ssd_chunked", "ssd_recurrent", "ssd_step"]


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


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
    cd = _compute_dtype(x)
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


# exp(-c) is formed only for c >= -limit: e^60 leaves float32 ample headroom for the sums it enters
_EXP_LIMIT = {torch.float32: 60.0, torch.float64: 600.0}


def _mul_to(a: Tensor, b: Tensor, shape: tuple[int, ...], dtype: torch.dtype, grad: bool) -> Tensor:
    """a * b as a contiguous tensor of `shape` (the broadcast shape): one pass, whatever the inputs' strides
    (an elementwise op on a permuted input would otherwise keep the input's memory order)."""
    if grad:
        return torch.mul(a, b).contiguous()
    return torch.mul(a, b, out=torch.empty(shape, dtype=dtype, device=a.device))


def _ssd_block(x, dt, A, B, C, D, S, chunk_size, out=None):
    """SSD over one block of tokens.  x [Bt,L,H,P]; dt [Bt,L,H]; B, C [Bt,L,G,N]; S [Bt*G,N,R*P] the start
    state, transposed per group (compute dtype).  Returns y [Bt,L,H,P] (written into `out` when given,
    outside autograd) and the end state."""
    Bt, L, H, P = x.shape
    G, N = B.shape[-2:]
    R = H // G
    cs, cd = chunk_size, S.dtype
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, dt, A, B, C, D, S))
    pad = -L % cs
    if pad:  # padded tokens have dt = 0 (no decay) and x = B = 0 (no write): the end state is unchanged
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    K = (L + pad) // cs
    BG, RP = Bt * G, R * P
    lim = _EXP_LIMIT[cd]

    # Grouped layout [K,Bt,G,C,R,P]: per chunk and group, a [C, R*P] matrix that B and C act on in one matmul
    xg = x.view(Bt, K, cs, G, R, P).permute(1, 0, 3, 2, 4, 5)
    dtg = dt.view(Bt, K, cs, G, R).permute(1, 0, 3, 2, 4).to(cd)  # [K,Bt,G,C,R]
    c = (dtg * A.to(cd).view(G, 1, R)).cumsum(3)  # [K,Bt,G,C,R]: cumulative log decay inside each chunk
    last = c[:, :, :, -1:]  # [K,Bt,G,1,R]
    Bg = B.view(Bt, K, cs, G, N).permute(1, 0, 3, 2, 4).to(cd).reshape(K * BG, cs, N)
    Cg = C.view(Bt, K, cs, G, N).permute(1, 0, 3, 2, 4).to(cd).reshape(K * BG, cs, N)

    # Intra-chunk part, factorised: exp(c_i - c_j) = exp(c_i) exp(-c_j) moves the decay onto x and y, so the
    # causal mask tril(C B^T) is shared by the R heads of a group (no per-head [C, C] tensor).  That is exact
    # while exp(-c_j) stays finite: for a (chunk, head) whose decay passes e^-lim the factor is zeroed here
    # and its intra part is computed with the direct mask below.
    bad = last < -lim  # [K,Bt,G,1,R]
    any_bad = bool(bad.any())
    e_in = dtg * torch.exp(-c.clamp_min(-lim))  # [K,Bt,G,C,R]
    if any_bad:
        e_in = e_in.masked_fill(bad, 0.0)
    Xt = _mul_to(xg, e_in.unsqueeze(-1), (K, Bt, G, cs, R, P), cd, grad).view(K * BG, cs, RP)
    CB = torch.matmul(Cg, Bg.transpose(-1, -2))  # [K*BG,C,C]
    CB = CB.tril() if grad else CB.tril_()

    # Chunk states: S_{k+1} = exp(c_last) S_k + sum_j exp(c_last - c_j) dt_j B_j x_j^T, kept transposed
    # per group, [N, R*P], so that the write B^T Xw and the read C S are one matmul per group
    Xw = _mul_to(xg, (dtg * (last - c).exp()).unsqueeze(-1), (K, Bt, G, cs, R, P), cd, grad).view(K, BG, cs, RP)
    BgT = Bg.view(K, BG, cs, N).transpose(-1, -2)  # [K,BG,N,C]
    decay = last.exp().view(K, BG, 1, R, 1)
    if grad:  # functional loop for autograd
        starts = []
        for k in range(K):
            starts.append(S)
            S = torch.baddbmm((S.view(BG, N, R, P) * decay[k]).view(BG, N, RP), BgT[k], Xw[k])
        Sh = torch.stack(starts)  # [K,BG,N,RP]
    else:  # same loop, in place in a preallocated buffer
        Sh = torch.empty(K + 1, BG, N, RP, dtype=cd, device=x.device)
        Sh[0] = S
        for k in range(K):
            torch.mul(Sh[k].view(BG, N, R, P), decay[k], out=Sh[k + 1].view(BG, N, R, P))
            Sh[k + 1].baddbmm_(BgT[k], Xw[k])
        S, Sh = Sh[K], Sh[:K]

    # y_i = exp(c_i) (C_i S_k + (tril(C B^T) Xt)_i): the state read and the intra part in one matmul per group
    Z = torch.bmm(Cg, Sh.view(K * BG, N, RP))
    Z = (torch.baddbmm(Z, CB, Xt) if grad else Z.baddbmm_(CB, Xt)).view(K, Bt, G, cs, R, P)
    ec = c.exp().unsqueeze(-1)  # [K,Bt,G,C,R,1]
    direct = out is not None and not pad and not grad
    if direct:  # write straight into the caller's [Bt,L,H,P] buffer, seen in the grouped layout
        y = torch.mul(Z, ec, out=out.view(Bt, K, cs, G, R, P).permute(1, 0, 3, 2, 4, 5))
    else:
        y = Z * ec
    if any_bad:  # direct mask for the (chunk, head) pairs left out above
        kk, bb, gg, _, rr = bad.nonzero(as_tuple=True)
        cb = c.permute(0, 1, 2, 4, 3)[kk, bb, gg, rr]  # [nb,C]
        seg = (cb.unsqueeze(-1) - cb.unsqueeze(-2)).clamp_max(0)  # clamped so the masked entries stay finite
        M = seg.exp().tril() * CB.view(K, Bt, G, cs, cs)[kk, bb, gg]  # [nb,C,C]
        xb = xg.permute(0, 1, 2, 4, 3, 5)[kk, bb, gg, rr] * dtg.permute(0, 1, 2, 4, 3)[kk, bb, gg, rr].unsqueeze(-1)
        yp = y.permute(0, 1, 2, 4, 3, 5)  # [K,Bt,G,R,C,P] view
        idx, yb = (kk, bb, gg, rr), torch.matmul(M, xb.to(cd))  # [nb,C,P]
        y = yp.index_put_(idx, yb, accumulate=True) if direct else yp.index_put(idx, yb, accumulate=True)
        y = y.permute(0, 1, 2, 4, 3, 5)
    if D is not None:  # the skip term, while the block is still in cache
        Dx = (xg, D.to(cd).view(G, 1, R, 1))
        y = y.addcmul_(*Dx) if direct else y.addcmul(*Dx)
    if direct:
        return out, S
    y = y.permute(1, 0, 3, 2, 4, 5).reshape(Bt, K * cs, H, P)
    y = y[:, :L] if pad else y
    if out is not None:
        out.copy_(y)
    return y, S


def ssd_chunked(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64, block_chunks=None) -> tuple[Tensor, Tensor]:
    """SSD block decomposition: same contract as ssd_recurrent, cost linear in T.

    Inside a chunk with start state S, cumulative log decay c_i = sum_{s<=i} dt_s A and L_ij = exp(c_i - c_j)
    for j <= i (else 0):
        y_i    = exp(c_i) C_i S  +  sum_j (C_i . B_j) L_ij dt_j x_j  +  D x_i     (state, intra-chunk, skip)
        S_next = exp(c_last) S  +  sum_j exp(c_last - c_j) dt_j x_j B_j^T
    The intra-chunk part is a masked quadratic form, batched over all chunks of a block, with the decay
    factored out of the mask so that one mask serves a group's heads; only the state recurrence loops,
    once per chunk, and the state read shares the intra part's matmul.  The
    sequence is processed in blocks of `block_chunks` chunks so that intermediates stay cache-sized.
    """
    _check(x, dt, A, B, C, D, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    cd = _compute_dtype(x)
    Bt, T, H, P = x.shape
    G, N = B.shape[-2:]
    R = H // G
    if initial_state is None:
        S = torch.zeros(Bt * G, N, R * P, dtype=cd, device=x.device)
    else:  # [Bt,H,P,N] -> per group transposed [Bt*G, N, R*P]
        S = initial_state.to(cd).view(Bt, G, R, P, N).permute(0, 1, 4, 2, 3).reshape(Bt * G, N, R * P)
    if block_chunks is None:  # about 4 MB of fp32 x per block
        block_chunks = max(1, (4 << 20) // (chunk_size * Bt * H * P * 4))
    block = chunk_size * block_chunks
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, dt, A, B, C, D, S))
    out = None if grad else torch.empty(Bt, T, H, P, dtype=cd, device=x.device)
    ys = []
    for t0 in range(0, T, block):
        sl = slice(t0, t0 + block)
        yb, S = _ssd_block(x[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], D, S, chunk_size,
                           None if grad else out[:, sl])
        ys.append(yb)
    if grad:
        y = torch.cat(ys, 1) if len(ys) != 1 else ys[0]
    else:
        y = out
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
