"""Softmax attention: GQA with any KV head count, separate head_dim, full/partial/no RoPE, optional per-head
QK RMSNorm, optional sigmoid output gate (Qwen gated attention), optional sliding window. Uses torch SDPA.
Llama 4 (iRoPE) options: chunked local attention (fixed blocks of chunk_size), interleaved RoPE with llama3
frequency scaling, weightless QK-norm after RoPE, and attention-temperature tuning of q on NoPE layers.

Shapes: B batch, T new tokens, S keys (cache + new), H query heads, G kv heads, d head_dim, D d_model.
Reference: transformers `Qwen3NextAttention` (tested for parity through the whole model in tests/test_hf_qwen.py)
and `Llama4TextAttention` (tests/test_llama4.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..cache import KVCache
from ..config import AttentionConfig
from ..norms import RMSNorm
from ..rope import apply_rope, apply_rope_interleaved, rope_cos_sin


class Attention(nn.Module):
    def __init__(self, cfg: AttentionConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = True):
        super().__init__()
        self.cfg = cfg
        H, G, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        # With the output gate, q_proj emits [query | gate] per head, interleaved head by head (HF layout).
        self.q_proj = nn.Linear(d_model, H * d * (2 if cfg.output_gate else 1), bias=cfg.bias)
        self.k_proj = nn.Linear(d_model, G * d, bias=cfg.bias)
        self.v_proj = nn.Linear(d_model, G * d, bias=cfg.bias)
        self.o_proj = nn.Linear(H * d, d_model, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(d, norm_eps, zero_centered, weight=cfg.qk_norm_weight)
            self.k_norm = RMSNorm(d, norm_eps, zero_centered, weight=cfg.qk_norm_weight)
        else:
            self.q_norm = self.k_norm = None

    def init_weights(self, std: float, out_std: float) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.normal_(lin.weight, std=std)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        nn.init.normal_(self.o_proj.weight, std=out_std)
        for norm in (self.q_norm, self.k_norm):
            if norm is not None:
                norm.init_weights()

    def new_cache(self) -> KVCache:
        return KVCache(window=self.cfg.sliding_window, chunk=self.cfg.chunk_size)

    def num_params(self, d_model: int | None = None) -> int:
        c = self.cfg
        H, G, d = c.num_heads, c.num_kv_heads, c.head_dim
        D = self.q_proj.in_features
        q_out = H * d * (2 if c.output_gate else 1)
        n = D * (q_out + 2 * G * d) + H * d * D
        if c.bias:
            n += q_out + 2 * G * d
        return n + self._norm_params()

    def _norm_params(self) -> int:
        return 2 * self.cfg.head_dim if self.cfg.qk_norm and self.cfg.qk_norm_weight else 0

    # -- accounting (docs/cost.md): FLOPs count matmuls at 2 per multiply-add; elementwise ops are not counted --
    def _proj_flops(self) -> int:
        return 2 * (self.num_params() - self._norm_params())  # norms: no matmul

    def keys_seen(self, position: int) -> int:
        """Keys the query at 1-based `position` attends to (itself included): bounded by the sliding window, or
        by the chunk (its block's keys up to itself)."""
        w, C = self.cfg.sliding_window, self.cfg.chunk_size
        if C is not None:
            return (position - 1) % C + 1
        return position if w is None else min(position, w)

    def mean_keys(self, context: int) -> float:
        """Mean of keys_seen over positions 1..context: what a causal kernel that skips masked blocks computes."""
        L, w, C = context, self.cfg.sliding_window, self.cfg.chunk_size
        if C is not None:  # every whole block contributes 1 + ... + C, the last partial block 1 + ... + r
            r = L % C
            return ((L // C) * C * (C + 1) / 2 + r * (r + 1) / 2) / L
        if w is None or L <= w:
            return (L + 1) / 2
        return (w * (w + 1) / 2 + (L - w) * w) / L

    def flops_per_token(self, context: int, causal_skip: bool = True) -> float:
        """Prefill FLOPs per token, averaged over a causal prefill of `context` tokens: projections plus
        QK^T and PV (4 * H * head_dim per key). causal_skip=False counts every query against all `context`
        keys, as a dense masked kernel (or torch's FLOP counter on SDPA) does."""
        c = self.cfg
        keys = self.mean_keys(context) if causal_skip else context
        return self._proj_flops() + 4 * c.num_heads * c.head_dim * keys

    def decode_flops(self, context: int) -> int:
        """FLOPs of one decode step whose query is token number `context` (it sees min(context, window) keys)."""
        c = self.cfg
        return self._proj_flops() + 4 * c.num_heads * c.head_dim * self.keys_seen(context)

    def cache_tokens(self, context: int) -> int:
        """Tokens KVCache holds after `context` tokens: all of them, window - 1 for a sliding window, or those of
        the current chunk (context mod chunk_size: at a block boundary the next query sees nothing before it)."""
        w, C = self.cfg.sliding_window, self.cfg.chunk_size
        if C is not None:
            return context % C
        return context if w is None else min(context, w - 1)

    def cache_bytes(self, context: int, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = None) -> int:
        """K and V [B, Hkv, S, head_dim] each, S = cache_tokens(context). state_bytes: unused (no state)."""
        c = self.cfg
        return 2 * batch * c.num_kv_heads * c.head_dim * self.cache_tokens(context) * dtype_bytes

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        c = self.cfg
        B, T, _ = x_BTD.shape
        H, G, d = c.num_heads, c.num_kv_heads, c.head_dim
        q = self.q_proj(x_BTD)
        gate = None
        if c.output_gate:
            q, gate = q.view(B, T, H, 2 * d).chunk(2, dim=-1)  # [B, T, H, d] each
            gate = gate.reshape(B, T, H * d)
        q = q.reshape(B, T, H, d)
        k = self.k_proj(x_BTD).view(B, T, G, d)
        v = self.v_proj(x_BTD).view(B, T, G, d)
        # A weighted norm goes before RoPE (Qwen); a weightless one commutes with the rotation (it keeps the head's
        # norm) and goes after it, in Llama 4's order, so the rounding matches the reference too.
        norm_first = self.q_norm is not None and c.qk_norm_weight
        if norm_first:
            q, k = self.q_norm(q), self.k_norm(k)
        positions = torch.arange(pos0, pos0 + T, device=x_BTD.device)
        if c.rope_dim:
            if c.rope_interleaved:
                cos, sin = rope_cos_sin(positions, c.rope_dim, c.rope_theta, torch.float32, c.rope_scaling)
                q, k = apply_rope_interleaved(q, cos, sin), apply_rope_interleaved(k, cos, sin)
            else:
                cos, sin = rope_cos_sin(positions, c.rope_dim, c.rope_theta, q.dtype, c.rope_scaling)
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.q_norm is not None and not norm_first:
            q, k = self.q_norm(q), self.k_norm(k)
        if c.temperature_tuning:  # sharper softmax far into the context (NoPE layers), per query position
            scale_T = 1.0 + c.attn_scale * torch.log1p(torch.floor((positions.float() + 1.0) / c.floor_scale))
            q = (q * scale_T[None, :, None, None]).to(q.dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H|G, T, d]
        key_start = pos0
        if cache is not None:
            k, v, key_start = cache.append(k, v)  # [B, G, S, d]
        S = k.shape[2]
        C = c.chunk_size
        one_chunk = C is None or pos0 // C == (pos0 + T - 1) // C
        if key_start == pos0 and c.sliding_window is None and one_chunk:
            mask, causal = None, T > 1  # keys are exactly the new tokens (all in one chunk): plain causal
        elif T == 1 and (c.sliding_window is None or S <= c.sliding_window):
            # one query sees every key kept (at most window - 1 past, or the past of its own chunk)
            mask, causal = None, False
        else:
            q_pos = positions[:, None]
            k_pos = torch.arange(key_start, key_start + S, device=x_BTD.device)[None, :]
            mask = k_pos <= q_pos  # [T, S]
            if c.sliding_window is not None:
                mask &= (q_pos - k_pos) < c.sliding_window
            if C is not None:
                mask &= (k_pos // C) == (q_pos // C)
            causal = False
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           scale=1.0 / math.sqrt(d), enable_gqa=G != H)  # [B, H, T, d]
        o = o.transpose(1, 2).reshape(B, T, H * d)
        if gate is not None:
            o = o * torch.sigmoid(gate)
        return self.o_proj(o)
