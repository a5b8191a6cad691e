"""Softmax attention: GQA with any KV head count, separate head_dim, full/partial/no RoPE, optional per-head
QK RMSNorm, optional sigmoid output gate (Qwen gated attention), optional sliding window. Uses torch SDPA.
The kind's config (`AttentionConfig`), module (`Attention`) and cache (`KVCache`).
Llama 4 (iRoPE) options: chunked local attention (fixed blocks of chunk_size), interleaved RoPE with llama3
frequency scaling, weightless QK-norm after RoPE, and attention-temperature tuning of q on NoPE layers.
SambaY (Phi-4-mini-flash) options:
- differential attention (Ye et al. 2024, arXiv 2410.05258, as Phi-4-mini-flash uses it): heads pair up (2i, 2i+1),
  each pair attends twice over the pair's values side by side [v_2i | v_2i+1] (width 2d),
      o_pair = RMSNorm_2d( softmax(q_2i k_2i^T) V - lambda softmax(q_2i+1 k_2i+1^T) V ) * (1 - lambda_init)
      lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init,  lambda_init = 0.8 - 0.6 exp(-0.3 layer)
  with the 0-based layer index of the model (ForwardContext.layer), and the 2d output split back into the two heads;
- kv_out: leave this layer's keys and values (cache included) in the forward context; kv_source: a YOCO
  cross-attention layer, queries only, attending over the keys and values another layer left (no cache of its own).

Shapes: B batch, T new tokens, S keys (cache + new), H query heads, G kv heads, d head_dim, D d_model.
Reference: transformers `Qwen3NextAttention` (tested for parity through the whole model in tests/families/test_qwen.py)
and `Llama4TextAttention` (tests/families/test_llama4.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import at_least_one, fail
from ...core.norms import RMSNorm
from ...core.rope import apply_rope, apply_rope_interleaved, rope_cos_sin
from ...registry import register_mixer
from ..cache import nbytes
from ..context import ForwardContext


@dataclass
class AttentionConfig:
    """Softmax attention: GQA, partial RoPE, optional QK-norm, sigmoid output gate, sliding window."""

    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None  # None: d_model // num_heads
    rope_fraction: float = 1.0  # share of head_dim that is rotated; 0.0 = no positional encoding (NoPE)
    rope_theta: float = 10_000.0
    qk_norm: bool = True  # per-head RMSNorm on q and k (Qwen3)
    output_gate: bool = False  # o <- o * sigmoid(W_g x), per element (Qwen gated attention)
    sliding_window: int | None = None
    bias: bool = False
    # Llama 4 (iRoPE). chunk_size: fixed-block local attention, token i sees j iff i//chunk == j//chunk and j <= i
    # (the cache keeps only the current block). qk_norm_weight=False: weightless RMSNorm, applied after RoPE.
    # temperature_tuning: q <- q * (1 + attn_scale * log(floor((pos + 1) / floor_scale) + 1)), pos 0-based.
    # rope_interleaved: rotate adjacent pairs (complex form) rather than the two halves. rope_scaling: the
    # "llama3" inv_freq adjustment, {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    # "original_max_position_embeddings"}.
    chunk_size: int | None = None
    qk_norm_weight: bool = True
    temperature_tuning: bool = False
    attn_scale: float = 0.1
    floor_scale: int = 8192
    rope_interleaved: bool = False
    rope_scaling: dict | None = None
    softmax_scale: float | None = None  # None: head_dim^-1/2 (Granite 4.0's attention_multiplier sets it)
    out_bias: bool = False  # bias on o_proj (Phi-4-mini-flash); `bias` is the q/k/v projections'
    differential: bool = False  # differential attention over head pairs (module docstring)
    kv_out: str | None = None  # leave (k, v, first key position) in the forward context under this name
    kv_source: str | None = None  # cross-attention: queries only, over the keys / values this name holds
    kind: Literal["attention"] = "attention"

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "num_heads", "num_kv_heads")
        if self.head_dim is None:
            if d_model % self.num_heads:
                fail(f"{where}.num_heads", self.num_heads, f"does not divide d_model={d_model} (or set head_dim)")
            self.head_dim = d_model // self.num_heads
        if self.head_dim < 1:
            fail(f"{where}.head_dim", self.head_dim, "must be >= 1")
        if self.num_heads % self.num_kv_heads:
            fail(f"{where}.num_kv_heads", self.num_kv_heads, f"must divide num_heads={self.num_heads}")
        if not 0.0 <= self.rope_fraction <= 1.0:
            fail(f"{where}.rope_fraction", self.rope_fraction, "must be in [0, 1]")
        if self.rope_dim % 2:
            fail(f"{where}.rope_fraction", self.rope_fraction, f"gives an odd rotary dim {self.rope_dim}")
        if self.sliding_window is not None and self.sliding_window < 1:
            fail(f"{where}.sliding_window", self.sliding_window, "must be >= 1 or None")
        if self.chunk_size is not None:
            if self.chunk_size < 1:
                fail(f"{where}.chunk_size", self.chunk_size, "must be >= 1 or None")
            if self.sliding_window is not None:
                fail(f"{where}.chunk_size", self.chunk_size,
                      f"cannot be combined with sliding_window={self.sliding_window} (choose one local pattern)")
        if not self.qk_norm_weight and not self.qk_norm:
            fail(f"{where}.qk_norm_weight", False, "needs qk_norm=True")
        if self.temperature_tuning and self.floor_scale < 1:
            fail(f"{where}.floor_scale", self.floor_scale, "must be >= 1")
        if self.rope_scaling is not None:
            self._validate_rope_scaling(f"{where}.rope_scaling")
        if self.softmax_scale is not None and not (math.isfinite(self.softmax_scale) and self.softmax_scale > 0):
            fail(f"{where}.softmax_scale", self.softmax_scale, "must be a finite number > 0 or None")
        if self.differential and (self.num_heads % 2 or self.num_kv_heads % 2):
            fail(f"{where}.differential", True, f"pairs heads: num_heads={self.num_heads} and "
                 f"num_kv_heads={self.num_kv_heads} must both be even")
        for name in ("kv_out", "kv_source"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v):
                fail(f"{where}.{name}", v, "must be a non-empty name or None")
            if v is not None and (self.sliding_window is not None or self.chunk_size is not None):
                fail(f"{where}.{name}", v, "shares one full KV: it cannot be combined with sliding_window or "
                     "chunk_size (a trimmed cache would drop keys the readers see in a full forward)")
        if self.kv_out is not None and self.kv_source is not None:
            fail(f"{where}.kv_source", self.kv_source, f"a cross-attention layer has no keys of its own to put "
                 f"under kv_out={self.kv_out!r}")

    def context_io(self, d_model: int) -> tuple[dict, dict]:
        """(writes, reads) in the forward context: the KV it shares or the one it reads, as (kv heads, head_dim)."""
        spec = ("kv", self.num_kv_heads, self.head_dim)
        return ({self.kv_out: spec} if self.kv_out else {}), ({self.kv_source: spec} if self.kv_source else {})

    _LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")

    def _validate_rope_scaling(self, where: str) -> None:
        rs = self.rope_scaling
        if not isinstance(rs, dict) or rs.get("rope_type") != "llama3":
            fail(where, rs, "only {'rope_type': 'llama3', ...} is supported")
        if not self.rope_dim:
            fail(where, rs, "has no rotary dims to scale (rope_fraction=0)")
        missing = [k for k in self._LLAMA3_KEYS if k not in rs]
        unknown = sorted(set(rs) - {"rope_type", *self._LLAMA3_KEYS})
        if missing or unknown:
            fail(where, rs, f"needs exactly the keys rope_type, {', '.join(self._LLAMA3_KEYS)}"
                  f" (missing {missing}, unknown {unknown})")
        if not (rs["factor"] > 0 and 0 < rs["low_freq_factor"] <= rs["high_freq_factor"]
                and rs["original_max_position_embeddings"] > 0):
            fail(where, rs, "needs factor > 0, 0 < low_freq_factor <= high_freq_factor, "
                  "original_max_position_embeddings > 0")

    @property
    def rope_dim(self) -> int:
        return int(self.head_dim * self.rope_fraction)

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            label = ("gated " if self.output_gate else "") + ("differential " if self.differential else "")
            label += ("cross-" if self.kv_source else "") + f"attention {self.num_heads}q/{self.num_kv_heads}kv"
            label += f" window {self.sliding_window}" if self.sliding_window else ""
            label += f" chunk {self.chunk_size}" if self.chunk_size else ""
            label += f" <- {self.kv_source!r}" if self.kv_source else ""
            label += f" -> {self.kv_out!r}" if self.kv_out else ""
            return label + (" NoPE" if not self.rope_dim else "")
        extras = [f"rope {self.rope_dim}/{self.head_dim}" if self.rope_dim else "NoPE"]
        extras += ["differential"] * self.differential
        extras += [f"queries over KV {self.kv_source!r}"] if self.kv_source else []
        extras += [f"shares its KV as {self.kv_out!r}"] if self.kv_out else []
        extras += ["qk-norm"] * self.qk_norm + ["out-gate"] * self.output_gate
        extras += [f"window {self.sliding_window}"] if self.sliding_window else []
        extras += [f"chunk {self.chunk_size}"] if self.chunk_size else []
        extras += [f"temperature tuning (floor {self.floor_scale})"] if self.temperature_tuning else []
        return f"attention {self.num_heads}q/{self.num_kv_heads}kv x {self.head_dim} ({', '.join(extras)})"


@dataclass
class KVCache:
    """Keys/values [B, Hkv, S, hd] for absolute positions start .. start+S-1.

    A cache that keeps every token (no window, no chunk) writes into a buffer grown GROW tokens at a time, so a
    decode step appends in place instead of copying the whole cache (at 64K tokens that copy was a third of a
    tiny-hybrid decode step); `k` / `v` are views of the tokens held, and memory_bytes() counts those (the buffer
    holds fewer than GROW more per layer)."""

    window: int | None = None  # keep at most window-1 past tokens: all the next query can see
    chunk: int | None = None  # chunked attention: keep only the next query's block (at most chunk-1 tokens)
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    start: int = 0
    _buf: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)  # k, v storage
    kind = "kv"  # not a field: the label memory_by_kind groups by
    GROW = 256  # not a field: the growing buffer's step (tokens)

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Add new keys/values; returns (all keys, all values, absolute position of the first key)
        to attend over for this step, then trims what no future query can see."""
        if self.window is None and self.chunk is None and not torch.is_grad_enabled():
            return self._append_in_place(k_new, v_new)
        if self.k is None:
            k_all, v_all, start = k_new, v_new, self.start
        else:
            k_all, v_all, start = torch.cat((self.k, k_new), dim=2), torch.cat((self.v, v_new), dim=2), self.start
        keep = k_all.shape[2] if self.window is None else min(k_all.shape[2], self.window - 1)
        if self.chunk is not None:  # the next position is start + len; its block began (next mod chunk) ago
            keep = min(keep, (start + k_all.shape[2]) % self.chunk)
        drop = k_all.shape[2] - keep
        self.k, self.v, self.start = k_all[:, :, drop:], v_all[:, :, drop:], start + drop
        return k_all, v_all, start

    def _append_in_place(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        n0 = 0 if self.k is None else self.k.shape[2]
        n = n0 + k_new.shape[2]
        buf_k, buf_v = self._buf or (None, None)
        if buf_k is None or buf_k.shape[2] < n or buf_k.shape[:2] != k_new.shape[:2] or buf_k.dtype != k_new.dtype:
            cap = -(-n // self.GROW) * self.GROW
            B, G, _, d = k_new.shape
            buf_k, buf_v = k_new.new_empty(B, G, cap, d), v_new.new_empty(B, G, cap, v_new.shape[-1])
            if n0:
                buf_k[:, :, :n0], buf_v[:, :, :n0] = self.k, self.v
            self._buf = (buf_k, buf_v)
        buf_k[:, :, n0:n], buf_v[:, :, n0:n] = k_new, v_new
        self.k, self.v = buf_k[:, :, :n], buf_v[:, :, :n]
        return self.k, self.v, self.start

    def memory_bytes(self) -> int:
        return nbytes(self.k, self.v)


def lambda_init(layer: int) -> float:
    """Differential attention's lambda_init at 0-based depth `layer`: 0.8 - 0.6 exp(-0.3 layer) (Ye et al. 2024)."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


def differential_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor, subln: RMSNorm,
                      lam_init: float, **sdpa) -> torch.Tensor:
    """Differential attention over head pairs. q [B, H, T, d], k / v [B, G, S, d] -> [B, H, T, d]: pair p = heads
    (2p, 2p+1) gives RMSNorm(a_2p - lam a_2p+1) * (1 - lam_init) over values [v_2p' | v_2p'+1] (its KV pair p'),
    whose 2d columns are the outputs of heads 2p and 2p+1."""
    B, H, T, d = q.shape
    vv = torch.cat((v[:, 0::2], v[:, 1::2]), dim=-1)  # [B, G/2, S, 2d]
    a1 = F.scaled_dot_product_attention(q[:, 0::2], k[:, 0::2], vv, **sdpa)  # [B, H/2, T, 2d]
    a2 = F.scaled_dot_product_attention(q[:, 1::2], k[:, 1::2], vv, **sdpa)
    o = subln(a1 - lam.to(a1.dtype) * a2) * (1.0 - lam_init)  # [B, H/2, T, 2d]
    return o.view(B, H // 2, T, 2, d).transpose(2, 3).reshape(B, H, T, d)


@register_mixer("attention", AttentionConfig)
class Attention(nn.Module):
    cache_kind = KVCache.kind  # None on a cross-attention layer (set per instance): it keeps no cache

    def __init__(self, cfg: AttentionConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = True):
        super().__init__()
        self.cfg = cfg
        H, G, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        # With the output gate, q_proj emits [query | gate] per head, interleaved head by head (HF layout).
        self.q_proj = nn.Linear(d_model, H * d * (2 if cfg.output_gate else 1), bias=cfg.bias)
        cross = cfg.kv_source is not None
        self.k_proj = None if cross else nn.Linear(d_model, G * d, bias=cfg.bias)
        self.v_proj = None if cross else nn.Linear(d_model, G * d, bias=cfg.bias)
        if cross:
            self.cache_kind = None
        self.o_proj = nn.Linear(H * d, d_model, bias=cfg.out_bias)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(d, norm_eps, zero_centered, weight=cfg.qk_norm_weight)
            self.k_norm = None if cross else RMSNorm(d, norm_eps, zero_centered, weight=cfg.qk_norm_weight)
        else:
            self.q_norm = self.k_norm = None
        if cfg.differential:  # lambda's reparameterisation and the per-pair sub-layer norm (weight at 1)
            self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
                nn.Parameter(torch.empty(d)) for _ in range(4))
            self.subln = RMSNorm(2 * d, norm_eps)
        self.aux_loss: torch.Tensor | None = None  # no training loss of its own (the Mixer protocol's field)

    def init_weights(self, std: float, out_std: float) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            if lin is None:
                continue
            nn.init.normal_(lin.weight, std=out_std if lin is self.o_proj else std)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        for norm in (self.q_norm, self.k_norm):
            if norm is not None:
                norm.init_weights()
        if self.cfg.differential:  # N(0, 0.1), as the differential-attention reference initialises them
            for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
                nn.init.normal_(p, std=0.1)
            self.subln.init_weights()

    def new_cache(self) -> KVCache | None:
        if self.cfg.kv_source is not None:
            return None
        return KVCache(window=self.cfg.sliding_window, chunk=self.cfg.chunk_size)

    def describe(self) -> str:
        return self.cfg.describe()

    def _proj_shapes(self) -> tuple[int, int, int]:
        """(d_model, q_proj rows, k_proj + v_proj rows)."""
        c = self.cfg
        q_out = c.num_heads * c.head_dim * (2 if c.output_gate else 1)
        return self.q_proj.in_features, q_out, 0 if c.kv_source else 2 * c.num_kv_heads * c.head_dim

    def num_params(self, d_model: int | None = None) -> int:
        c = self.cfg
        D, q_out, kv_out = self._proj_shapes()
        n = D * (q_out + kv_out) + c.num_heads * c.head_dim * D
        n += (q_out + kv_out) * c.bias + D * c.out_bias
        return n + self._norm_params() + (6 * c.head_dim if c.differential else 0)  # 4 lambda vectors, subln 2d

    def _norm_params(self) -> int:
        if not (self.cfg.qk_norm and self.cfg.qk_norm_weight):
            return 0
        return self.cfg.head_dim * (1 if self.cfg.kv_source else 2)

    # -- accounting (docs/cost.md): FLOPs count matmuls at 2 per multiply-add; elementwise ops are not counted --
    def _proj_flops(self) -> int:
        D, q_out, kv_out = self._proj_shapes()
        return 2 * D * (q_out + kv_out) + 2 * self.cfg.num_heads * self.cfg.head_dim * D

    def _flops_per_key(self) -> int:
        """Score and value FLOPs per query and key: QK^T and PV, 4 H d; differential attention runs two
        softmaxes per head pair over values of width 2d: 2 x (2 d + 2 (2d)) per pair = 6 H d."""
        return (6 if self.cfg.differential else 4) * self.cfg.num_heads * self.cfg.head_dim

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
        keys = self.mean_keys(context) if causal_skip else context
        return self._proj_flops() + self._flops_per_key() * keys

    def decode_flops(self, context: int) -> int:
        """FLOPs of one decode step whose query is token number `context` (it sees min(context, window) keys)."""
        return self._proj_flops() + self._flops_per_key() * self.keys_seen(context)

    def cache_tokens(self, context: int) -> int:
        """Tokens KVCache holds after `context` tokens: all of them, window - 1 for a sliding window, or those of
        the current chunk (context mod chunk_size: at a block boundary the next query sees nothing before it)."""
        w, C = self.cfg.sliding_window, self.cfg.chunk_size
        if C is not None:
            return context % C
        return context if w is None else min(context, w - 1)

    def cache_bytes(self, context: int, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = None) -> int:
        """K and V [B, Hkv, S, head_dim] each, S = cache_tokens(context) (none on a cross-attention layer, which
        reads another layer's). state_bytes: unused (no state)."""
        c = self.cfg
        if c.kv_source is not None:
            return 0
        return 2 * batch * c.num_kv_heads * c.head_dim * self.cache_tokens(context) * dtype_bytes

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: KVCache | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        c = self.cfg
        B, T, _ = x_BTD.shape
        H, G, d = c.num_heads, c.num_kv_heads, c.head_dim
        q = self.q_proj(x_BTD)
        gate = None
        if c.output_gate:
            q, gate = q.view(B, T, H, 2 * d).chunk(2, dim=-1)  # [B, T, H, d] each
            gate = gate.reshape(B, T, H * d)
        q = q.reshape(B, T, H, d)
        cross = c.kv_source is not None  # keys and values come from the context, already normed and rotated
        k = None if cross else self.k_proj(x_BTD).view(B, T, G, d)
        v = None if cross else self.v_proj(x_BTD).view(B, T, G, d)
        # A weighted norm goes before RoPE (Qwen); a weightless one commutes with the rotation (it keeps the head's
        # norm) and goes after it, in Llama 4's order, so the rounding matches the reference too.
        norm_first = self.q_norm is not None and c.qk_norm_weight
        if norm_first:
            q, k = self.q_norm(q), (None if cross else self.k_norm(k))
        positions = torch.arange(pos0, pos0 + T, device=x_BTD.device)
        if c.rope_dim:
            if c.rope_interleaved:
                cos, sin = rope_cos_sin(positions, c.rope_dim, c.rope_theta, torch.float32, c.rope_scaling)
                rotate = apply_rope_interleaved
            else:
                cos, sin = rope_cos_sin(positions, c.rope_dim, c.rope_theta, q.dtype, c.rope_scaling)
                rotate = apply_rope
            q, k = rotate(q, cos, sin), (None if cross else rotate(k, cos, sin))
        if self.q_norm is not None and not norm_first:
            q, k = self.q_norm(q), (None if cross else self.k_norm(k))
        if c.temperature_tuning:  # sharper softmax far into the context (NoPE layers), per query position
            scale_T = 1.0 + c.attn_scale * torch.log1p(torch.floor((positions.float() + 1.0) / c.floor_scale))
            q = (q * scale_T[None, :, None, None]).to(q.dtype)
        q = q.transpose(1, 2)  # [B, H, T, d]
        if cross:
            if ctx is None:
                raise ValueError(f"cross-attention reads KV {c.kv_source!r} from the forward context: run it in a "
                                 "model")
            k, v, key_start = ctx.get(c.kv_source)  # [B, G, S, d] each, keys at key_start .. key_start+S-1
        else:
            k, v, key_start = k.transpose(1, 2), v.transpose(1, 2), pos0  # [B, G, T, d]
            if cache is not None:
                k, v, key_start = cache.append(k, v)  # [B, G, S, d]
            if c.kv_out is not None:
                if ctx is None:
                    raise ValueError(f"attention with kv_out={c.kv_out!r} needs the forward context: run it in a "
                                     "model")
                ctx.put(c.kv_out, (k, v, key_start))
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
        sdpa = dict(attn_mask=mask, is_causal=causal, scale=c.softmax_scale or 1.0 / math.sqrt(d), enable_gqa=G != H)
        if c.differential:
            if ctx is None or ctx.layer < 0:
                raise ValueError("differential attention needs its layer index (ForwardContext.layer): run it in a "
                                 "model")
            init = lambda_init(ctx.layer)
            lam = (torch.exp((self.lambda_q1.float() * self.lambda_k1.float()).sum())
                   - torch.exp((self.lambda_q2.float() * self.lambda_k2.float()).sum()) + init)
            o = differential_sdpa(q, k, v, lam, self.subln, init, **sdpa)  # [B, H, T, d]
        else:
            o = F.scaled_dot_product_attention(q, k, v, **sdpa)  # [B, H, T, d]
        o = o.transpose(1, 2).reshape(B, T, H * d)
        if gate is not None:
            o = o * torch.sigmoid(gate)
        return self.o_proj(o)
