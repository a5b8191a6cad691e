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

__all__ = [
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_recurrent",
    "selective_scan_step",
]


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, state: Tensor | None):
    """Shapes of one call; u/delta are [Bt, T, E] (or [Bt, E] for a step), B/C [Bt, T, N] (or [Bt, N])."""
    if A.dim() != 2:
        raise ValueError(f"A must be [E, N], got {tuple(A.shape)}")
    E, N = A.shape
    lead = u.shape[:-1]
    if u.shape[-1] != E or delta.shape != u.shape:
        raise ValueError(f"u {tuple(u.shape)} and delta {tuple(delta.shape)} must both be [..., E={E}] (A is [E, N])")
    if B.shape != (*lead, N) or C.shape != (*lead, N):
        raise ValueError(f"B {tuple(B.shape)} and C {tuple(C.shape)} must be {(*lead, N)} (u {tuple(u.shape)}, A [E, N])")
    if D is not None and D.shape != (E,):
        raise ValueError(f"D must be [E={E}], got {tuple(D.shape)}")
    if state is not None and state.shape != (lead[0], E, N):
        raise ValueError(f"state must be [Bt, E, N] = {(lead[0], E, N)}, got {tuple(state.shape)}")


def selective_scan_recurrent(u, delta, A, B, C, D=None, initial_state=None) -> tuple[Tensor, Tensor]:
    """Reference: loop over time.  u, delta [Bt,T,E]; A [E,N]; B, C [Bt,T,N]; D [E]; state [Bt,E,N]."""
    _check(u, delta, A, B, C, D, initial_state)
    dt = _compute_dtype(u)
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


def selective_scan_chunked(u, delta, A, B, C, D=None, initial_state=None, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Chunked parallel scan: same contract as selective_scan_recurrent (placeholder: the recurrence)."""
    return selective_scan_recurrent(u, delta, A, B, C, D, initial_state)


def selective_scan(u, delta, A, B, C, D=None, initial_state=None, chunk_size=64) -> tuple[Tensor, Tensor]:
    """Dispatcher: the one-token step for T == 1 (with a state), else the chunked form."""
    if u.dim() == 3 and u.shape[1] == 1 and initial_state is not None:
        y, h = selective_scan_step(u[:, 0], delta[:, 0], A, B[:, 0], C[:, 0], D, initial_state)
        return y.unsqueeze(1), h
    return selective_scan_chunked(u, delta, A, B, C, D, initial_state, chunk_size)
