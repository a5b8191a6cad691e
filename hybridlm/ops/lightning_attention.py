"""Lightning attention (MiniMax-01 / M1): linear attention with one constant decay per head, no normalisation.

Per head h, with decay lambda_h = exp(-slope_h) (slope_h >= 0), the state S is a [K, V] matrix and for each token t
    S_t = lambda_h S_{t-1} + k_t v_t^T
    o_t = S_t^T q_t                          (the current token included; no softmax, no denominator, no scale)

Block form (the one MiniMax's kernels and transformers' port use, blocks of c tokens, i, j = 1..c inside a block):
    intra:  O_intra = ((Q K^T) * D) V         D[i, j] = lambda^(i - j) for j <= i, else 0
    inter:  O_inter = (Q * lambda^i) S_prev   the state before the block, decayed to each query
    state:  S_next  = lambda^c S_prev + (K * lambda^(c - j))^T V
The blocks run one after another, each batched over the batch and a group of heads small enough for its [c, c]
scores to stay in cache: batching every block at once (one [N, c, c] matmul), or all 64 heads at c = 256, was
slower on CPU at MiniMax's shape, as the intermediates leave the cache (benchmarks/lightning.py). A tail shorter
than c is one more block of its own length, so no padded token ever touches the state.

Shape letters: B batch, T time, H heads, N blocks, C block length, K key dim, V value dim.

Forms:
    lightning_attention_recurrent  token-by-token reference (slow, obviously correct)
    lightning_attention_chunked    the block form (differentiable; training and prefill)
    lightning_attention_step       one decode token
Everything runs in float32 (float64 kept for tests) whatever the input dtype; the output has v's dtype, the state
is float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .precision import compute_dtype

__all__ = ["lightning_attention_chunked", "lightning_attention_recurrent", "lightning_attention_step"]

_SCORES_PER_PASS = 1 << 18  # fp32 block scores per head group (1 MB): see lightning_attention_chunked


def _check(q: Tensor, k: Tensor, v: Tensor, slope: Tensor) -> None:
    if q.shape != k.shape or q.shape[:-1] != v.shape[:-1] or q.dim() != 4:
        raise ValueError(f"q, k must be [B, T, H, K] and v [B, T, H, V] with the same B, T, H: got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if slope.shape != (q.shape[2],):
        raise ValueError(f"slope must have one value per head, shape ({q.shape[2]},): got {tuple(slope.shape)}")


def _state(initial_state: Tensor | None, B: int, H: int, K: int, V: int, like: Tensor, dt) -> Tensor:
    if initial_state is None:
        return like.new_zeros(B, H, K, V, dtype=dt)
    if initial_state.shape != (B, H, K, V):
        raise ValueError(f"initial_state must be [B, H, K, V] = {(B, H, K, V)}: got {tuple(initial_state.shape)}")
    return initial_state.to(dt)


def lightning_attention_recurrent(q: Tensor, k: Tensor, v: Tensor, initial_state: Tensor | None = None, *,
                                  slope: Tensor) -> tuple[Tensor, Tensor]:
    """Reference: loop over time. q, k [B, T, H, K]; v [B, T, H, V]; slope [H]; state [B, H, K, V]."""
    _check(q, k, v, slope)
    dt = compute_dtype(v)
    B, T, H, K = q.shape
    V = v.shape[-1]
    S = _state(initial_state, B, H, K, V, v, dt)
    lam = torch.exp(-slope.to(dt))[None, :, None, None]  # [1, H, 1, 1]
    q, k, v_ = q.to(dt), k.to(dt), v.to(dt)
    outs = []
    for t in range(T):
        S = lam * S + k[:, t, :, :, None] * v_[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    o = torch.stack(outs, dim=1) if T else v_.new_zeros(B, 0, H, V)  # [B, T, H, V]
    return o.to(v.dtype), S


def lightning_attention_step(q: Tensor, k: Tensor, v: Tensor, state: Tensor, *, slope: Tensor
                             ) -> tuple[Tensor, Tensor]:
    """One decode token: q, k [B, H, K]; v [B, H, V]; state [B, H, K, V] -> (o [B, H, V], new state)."""
    dt = compute_dtype(state)
    lam = torch.exp(-slope.to(dt))[None, :, None, None]  # [1, H, 1, 1]
    S = lam * state.to(dt) + torch.matmul(k.to(dt)[..., :, None], v.to(dt)[..., None, :])  # [B, H, K, V]: + k v^T
    o = torch.matmul(q.to(dt)[..., None, :], S)[..., 0, :]  # [B, H, V]
    return o.to(v.dtype), S


def _decays(s: Tensor, C: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For blocks of C tokens and slopes s [H]: lambda^i [H, C, 1], lambda^(C - j) [H, C, 1], the intra-block
    decay D [H, C, C] (lambda^(i - j) for j <= i, else 0) and lambda^C [H, 1, 1]; i, j = 1..C."""
    i = torch.arange(1, C + 1, device=s.device, dtype=s.dtype)  # 1-based position in the block
    s = s[:, None]  # [H, 1]
    gap = i[:, None] - i[None, :]  # [C, C]: i - j
    D = torch.exp(torch.where(gap >= 0, -s[..., None] * gap, float("-inf")))  # [H, C, C]
    return torch.exp(-s * i)[..., None], torch.exp(-s * (C - i))[..., None], D, torch.exp(-s * C)[..., None]


def _block(q: Tensor, k: Tensor, v: Tensor, S: Tensor, decays) -> tuple[Tensor, Tensor]:
    """One block: q, k [B, H, C, K], v [B, H, C, V], S [B, H, K, V] the state before it -> (o [B, H, C, V], the
    state after it)."""
    q_decay, k_decay, D, block_decay = decays
    o = torch.matmul(torch.matmul(q, k.transpose(-1, -2)) * D, v)  # intra
    o = o + torch.matmul(q * q_decay, S)  # inter
    return o, block_decay * S + torch.matmul((k * k_decay).transpose(-1, -2), v)


def lightning_attention_chunked(q: Tensor, k: Tensor, v: Tensor, initial_state: Tensor | None = None, *,
                                slope: Tensor, block_size: int = 256) -> tuple[Tensor, Tensor]:
    """The block form: q, k [B, T, H, K]; v [B, T, H, V]; slope [H]; state [B, H, K, V] -> (o, final state)."""
    _check(q, k, v, slope)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1: got {block_size}")
    dt = compute_dtype(v)
    B, T, H, K = q.shape
    V = v.shape[-1]
    S = _state(initial_state, B, H, K, V, v, dt)
    s = slope.to(dt)
    # [B, H, T, d]: heads first so each block is a contiguous [C, d] matrix per head
    q_, k_, v_ = (x.to(dt).transpose(1, 2) for x in (q, k, v))
    # Heads are independent: a pass over the sequence takes as many as keep its [G, C, C] scores near 1 MB, which
    # stay in cache (at MiniMax's 64 heads and C = 256: 4 heads a pass, 1.3x faster than all at once on 2 cores).
    G = max(1, min(H, _SCORES_PER_PASS // (block_size * block_size)))
    outs, states = [], []
    for h in range(0, H, G):
        heads = slice(h, h + G)
        S_h, decays, parts = S[:, heads], {}, []  # decays per block length: the full block's, and the tail's
        for a in range(0, T, block_size):
            C = min(block_size, T - a)
            if C not in decays:
                decays[C] = _decays(s[heads], C)
            o, S_h = _block(q_[:, heads, a:a + C], k_[:, heads, a:a + C], v_[:, heads, a:a + C], S_h, decays[C])
            parts.append(o)
        outs.append(torch.cat(parts, dim=2) if parts else v_.new_zeros(B, S_h.shape[1], 0, V))
        states.append(S_h)
    o, S = torch.cat(outs, dim=1), torch.cat(states, dim=1)  # [B, H, T, V], [B, H, K, V]
    return o.transpose(1, 2).to(v.dtype), S
