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
        raise ValueError(f"B {tuple(B.shape)} and C {tuple(C.shape)} must both be {(*lead, 'G', 'N')} (x {tuple(x.shape)})")
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


def ssd_chunked(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64) -> tuple[Tensor, Tensor]:
    """SSD block decomposition: same contract as ssd_recurrent (placeholder: the recurrence)."""
    return ssd_recurrent(x, dt, A, B, C, D, initial_state)


def ssd(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Dispatcher: the one-token step for T == 1 (with a state), else the chunked form."""
    if x.dim() == 4 and x.shape[1] == 1 and initial_state is not None:
        y, h = ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, initial_state)
        return y.unsqueeze(1), h
    return ssd_chunked(x, dt, A, B, C, D, initial_state, chunk_size)
