"""Selective scan (Mamba-1) core ops in pure PyTorch.

Per channel e the state h is an N-vector with its own diagonal decay A[e] (negative), updated per token t as
    h_t = exp(delta_t A) * h_{t-1} + (delta_t u_t) B_t        (elementwise over N)
    y_t = h_t . C_t + D u_t
delta is expected already passed through softplus (> 0); A = -exp(A_log).

Shape letters used in comments:
    Bt batch, T time, E channels (d_inner), N state size, C chunk size, K number of chunks.

Forms:
    selective_scan_recurrent  token-by-token reference (slow, obviously correct)
    selective_scan_chunked    chunked parallel scan for training and prefill (differentiable)
    selective_scan_step       one decode token
    selective_scan            dispatcher: the step for T == 1, else the chunked form
Compute runs in float32 (float64 stays float64 so tests can compare forms tightly); y is returned in
u's dtype and the state in the compute dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .precision import compute_dtype

__all__ = [
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_recurrent",
    "selective_scan_step",
]


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, state: Tensor | None):
    """Shapes of one call; u/delta are [Bt, T, E] (or [Bt, E] for a step), B/C [Bt, T, N] (or [Bt, N])."""
    if A.dim() != 2:
        raise ValueError(f"A must be [E, N], got {tuple(A.shape)}")
    E, N = A.shape
    lead = u.shape[:-1]
    if u.shape[-1] != E or delta.shape != u.shape:
        raise ValueError(f"u {tuple(u.shape)} and delta {tuple(delta.shape)} must both be [..., E={E}] (A is [E, N])")
    if B.shape != (*lead, N) or C.shape != (*lead, N):
        raise ValueError(f"B {tuple(B.shape)} and C {tuple(C.shape)} must be {(*lead, N)} (u {tuple(u.shape)})")
    if D is not None and D.shape != (E,):
        raise ValueError(f"D must be [E={E}], got {tuple(D.shape)}")
    if state is not None and state.shape != (lead[0], E, N):
        raise ValueError(f"state must be [Bt, E, N] = {(lead[0], E, N)}, got {tuple(state.shape)}")


def selective_scan_recurrent(u, delta, A, B, C, D=None, initial_state=None) -> tuple[Tensor, Tensor]:
    """Reference: loop over time.  u, delta [Bt,T,E]; A [E,N]; B, C [Bt,T,N]; D [E]; state [Bt,E,N]."""
    _check(u, delta, A, B, C, D, initial_state)
    dt = compute_dtype(u)
    Bt, T, E = u.shape
    N = A.shape[1]
    uc, dc, Ac, Bc, Cc = (x.to(dt) for x in (u, delta, A, B, C))
    h = uc.new_zeros(Bt, E, N) if initial_state is None else initial_state.to(dt)  # [Bt,E,N]
    ys = []
    for t in range(T):
        dA = torch.exp(dc[:, t, :, None] * Ac)  # [Bt,E,N]
        h = dA * h + (dc[:, t] * uc[:, t])[:, :, None] * Bc[:, t, None, :]
        ys.append((h * Cc[:, t, None, :]).sum(-1))  # [Bt,E]
    y = torch.stack(ys, dim=1) if T > 0 else uc.new_zeros(Bt, 0, E)  # [Bt,T,E]
    if D is not None:
        y = y + uc * D.to(dt)
    if T == 0 and initial_state is not None:
        h = h.clone()  # never hand back the caller's initial_state tensor itself
    return y.to(u.dtype), h


def selective_scan_step(u, delta, A, B, C, D, state) -> tuple[Tensor, Tensor]:
    """One decode token.  u, delta [Bt,E]; A [E,N]; B, C [Bt,N]; D [E] or None; state [Bt,E,N] -> (y [Bt,E], state)."""
    _check(u, delta, A, B, C, D, state)
    dt = state.dtype if state.dtype == torch.float64 else torch.float32
    uc, dc = u.to(dt), delta.to(dt)
    h = torch.exp(dc[:, :, None] * A.to(dt)) * state.to(dt)  # [Bt,E,N]
    h = h.addcmul_((dc * uc)[:, :, None], B.to(dt)[:, None, :])
    y = torch.matmul(h, C.to(dt)[:, :, None]).squeeze(-1)  # [Bt,E]
    if D is not None:
        y = y + uc * D.to(dt)
    return y.to(u.dtype), h


def _scan_inplace(a: Tensor, b: Tensor) -> None:
    """Inclusive scan of h_t = a_t h_{t-1} + b_t along dim 0, in place: b becomes h (with h_{-1} = 0).

    Brent-Kung: an up-sweep combines pairs at strides 1, 2, 4, ... so that position i holds the composition
    of the segment ending at i, then a down-sweep fills in the positions in between: 2L combines for L
    tokens (Hillis-Steele would do L log L) in 2 log L vectorised steps.  Only products of decays in (0, 1]
    are formed, so it is stable for any decay; the cumsum / exp(-cumsum) form overflows once a chunk's
    decay passes e^-88.  Segment (a1, b1) then (a2, b2) composes to (a1 a2, a2 b1 + b2).
    `a` is overwritten by segment products and a[0] is never read (callers fold the incoming state into b[0]).
    """
    L = a.shape[0]
    s = 1
    while 2 * s <= L:  # up-sweep: i = 2s-1, 4s-1, ... absorbs the segment ending at i - s
        right, left = slice(2 * s - 1, None, 2 * s), slice(s - 1, L - s, 2 * s)
        b[right].addcmul_(a[right], b[left])
        if 4 * s <= L:  # the top level's segment products are never read
            a[right].mul_(a[left])
        s *= 2
    s //= 2
    while s >= 1:  # down-sweep: i = 3s-1, 5s-1, ... (holding a segment of length s) takes the prefix at i - s
        right, left = slice(3 * s - 1, None, 2 * s), slice(2 * s - 1, L - s, 2 * s)
        b[right].addcmul_(a[right], b[left])
        s //= 2


def _chunk_ab(delta_c: Tensor, w_c: Tensor, A: Tensor, B_c: Tensor, bufs=None) -> tuple[Tensor, Tensor]:
    """One chunk's decays a = exp(delta A) and writes b = (delta u) B, both [L,Bt,E,N] (time outermost),
    written into the preallocated `bufs` [C,Bt,E,N] pair when given (no page-faulting fresh memory per chunk)."""
    L = delta_c.shape[0]
    a, b = (None, None) if bufs is None else (bufs[0][:L], bufs[1][:L])
    a = torch.mul(delta_c.unsqueeze(-1), A, out=a).exp_()
    b = torch.mul(w_c.unsqueeze(-1), B_c.unsqueeze(-2), out=b)
    return a, b


def _scan_forward(u, delta, A, B, C, h, chunk_size, D=None, keep_starts=False):
    """Chunked scan on time-major u, delta [T,Bt,E]; B, C [T,Bt,N]; h [Bt,E,N] (all in the compute dtype).

    Returns y [T,Bt,E] (with the D term if D is given), the end state and (if asked) the start state of
    every chunk.  Nothing of size T is allocated but y: the writes delta u and the skip term go chunk by chunk.
    """
    T, Bt, E = u.shape
    N = A.shape[1]
    y = u.new_empty(T, Bt, E)
    starts = []
    L = min(chunk_size, T)
    bufs = (u.new_empty(L, Bt, E, N), u.new_empty(L, Bt, E, N))
    for t0 in range(0, T, chunk_size):
        sl = slice(t0, t0 + chunk_size)
        a, b = _chunk_ab(delta[sl], delta[sl] * u[sl], A, B[sl], bufs)  # [L,Bt,E,N]
        L = a.shape[0]
        if keep_starts:
            starts.append(h)
        b[0].addcmul_(a[0], h)  # the incoming state enters with the first token's decay
        _scan_inplace(a, b)  # b[t] = h_t
        torch.matmul(b.view(L * Bt, E, N), C[sl].reshape(L * Bt, N, 1), out=y[sl].view(L * Bt, E, 1))
        if D is not None:
            y[sl].addcmul_(u[sl], D)
        h = b[-1].clone()
    return y, h, starts


class _SelectiveScan(torch.autograd.Function):
    """The chunked scan with a hand-written backward (the forward scans in place, which autograd cannot trace).

    Per chunk, last chunk first: with q_t = gy_t C_t^T (plus the incoming state gradient at the last token),
    the state gradient G_t = q_t + a_{t+1} G_{t+1} is the same scan run backwards in time; then
    dL/db_t = G_t, dL/da_t = G_t h_{t-1}, dL/dh_start = a_0 G_0 (carried to the chunk before),
    dL/dC_t = gy_t h_t, and the chain rule through a = exp(delta A), b = (delta u) B.
    The states inside a chunk are recomputed from the saved chunk start states.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, chunk_size):
        y, h, starts = _scan_forward(u, delta, A, B, C, h0, chunk_size, keep_starts=True)
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(starts) if starts else h0[None])
        ctx.chunk_size = chunk_size
        return y, h

    @staticmethod
    def backward(ctx, gy, gh):
        u, delta, A, B, C, starts = ctx.saved_tensors
        T, Bt, E = u.shape
        N = A.shape[1]
        cs = ctx.chunk_size
        gy = torch.zeros_like(u) if gy is None else gy.contiguous()
        carry = torch.zeros_like(starts[0]) if gh is None else gh.contiguous()  # dL/dh at the current chunk end
        gu, gdelta, gB, gC = (torch.empty_like(t) for t in (u, delta, B, C))
        gA = torch.zeros_like(A)
        w = delta * u  # [T,Bt,E]
        for k in reversed(range((T + cs - 1) // cs)):
            sl = slice(k * cs, (k + 1) * cs)
            a, b = _chunk_ab(delta[sl], w[sl], A, B[sl])  # [L,Bt,E,N]
            L = a.shape[0]
            h = torch.cat([starts[k][None], b])  # [L+1,Bt,E,N]: h[t] is the state before token t
            h[1].addcmul_(a[0], starts[k])
            _scan_inplace(a.clone(), h[1:])
            gyk = gy[sl]  # [L,Bt,E]
            # the backward scan, run on reversed time: step i is token t = L-1-i, its coefficient a_{t+1}
            G = torch.mul(gyk.unsqueeze(-1), C[sl].unsqueeze(-2)).flip(0)  # [L,Bt,E,N]: q reversed
            G[0].add_(carry)
            ar = a.flip(0)
            _scan_inplace(torch.cat([ar[:1], ar[:-1]]), G)
            G = G.flip(0)  # G[t] = dL/dh_t = dL/db_t
            carry = a[0] * G[0]
            GL = G.view(L * Bt, E, N)
            gw = torch.matmul(GL, B[sl].reshape(L * Bt, N, 1)).view(L, Bt, E)  # dL/d(delta u)
            gB[sl] = torch.matmul(w[sl].reshape(L * Bt, 1, E), GL).view(L, Bt, N)
            gC[sl] = torch.matmul(gyk.reshape(L * Bt, 1, E), h[1:].view(L * Bt, E, N)).view(L, Bt, N)
            gx = G.mul_(h[:-1]).mul_(a)  # dL/d(delta A), in G's memory (G is no longer needed)
            gu[sl] = gw * delta[sl]
            gA += torch.einsum("lben,lbe->en", gx, delta[sl])
            gdelta[sl] = torch.addcmul(gx.mul_(A).sum(-1), gw, u[sl])
        return gu, gdelta, gA, gB, gC, carry, None


def selective_scan_chunked(u, delta, A, B, C, D=None, initial_state=None, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Chunked parallel scan: same contract as selective_scan_recurrent, no Python loop over tokens.

    The sequence is cut into chunks of `chunk_size` tokens; inside a chunk the per-token (decay, write) pairs
    a_t = exp(delta_t A), b_t = (delta_t u_t) B_t, [C,Bt,E,N], are combined by a Brent-Kung scan (see
    _scan_inplace) after the incoming state is folded into the first write, b_0 += a_0 h; the chunk's last
    state is carried to the next chunk.  Memory is O(chunk_size * Bt * E * N); the backward is hand-written.
    """
    _check(u, delta, A, B, C, D, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    cd = compute_dtype(u)
    Bt, _, E = u.shape
    N = A.shape[1]
    h0 = u.new_zeros(Bt, E, N, dtype=cd) if initial_state is None else initial_state.to(cd)
    # time-major copies, so that each token's [Bt,E,N] slab in a chunk is contiguous
    tm = [x.to(cd).transpose(0, 1).contiguous() for x in (u, delta, B, C)]
    args = (tm[0], tm[1], A.to(cd), tm[2], tm[3], h0)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (*args, D)):
        y, h = _SelectiveScan.apply(*args, chunk_size)
        if D is not None:
            y = y + tm[0] * D.to(cd)
    else:
        y, h, _ = _scan_forward(*args, chunk_size, None if D is None else D.to(cd))
    y = y.transpose(0, 1)  # [Bt,T,E]
    if h is initial_state:
        h = h.clone()  # never hand back the caller's initial_state tensor itself
    return y.to(u.dtype).contiguous(), h


def selective_scan(u, delta, A, B, C, D=None, initial_state=None, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Dispatcher: the one-token step for T == 1 (with a state), else the chunked form."""
    if u.dim() == 3 and u.shape[1] == 1 and initial_state is not None:
        y, h = selective_scan_step(u[:, 0], delta[:, 0], A, B[:, 0], C[:, 0], D, initial_state)
        return y.unsqueeze(1), h
    return selective_scan_chunked(u, delta, A, B, C, D, initial_state, chunk_size)
