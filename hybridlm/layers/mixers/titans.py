"""Titans (Behrouz, Zhong, Mirrokni 2024, arXiv 2501.00663): a neural long-term memory that keeps learning at
inference time, in the paper's three ways of combining it with attention. The memory itself (an MLP per head whose
weights are trained token by token with momentum and forgetting) is the op in hybridlm/ops/titans_memory.py; this
file wraps it as a mixer.

The memory branch (every variant), from an input stream u [B, T, D]:
    q, k, v = silu(causal depthwise conv_K(W_qkv u))      per head of head_dim; q, k L2-normalised
    eta, theta, alpha = sigmoid(W_g u + b_g)              momentum, inner learning rate, forgetting; per head
    r_t = M(W_t; q_t)                                     the read uses the weights after token t's update

Variants (`variant`):
- "memory" (MAL's memory layer): y = W_o RMSNorm_head(r). MAL is the layer pattern memory, then sliding-window
  attention (an `attention` layer with sliding_window), each a block of its own.
- "mag" (memory as a gate): one layer with two branches over the same input, sliding-window attention over
  [persistent | x] and the memory over x:  y = W_o( RMSNorm_a(a) * sigmoid(RMSNorm_m(r)) ), per head.
- "mac" (memory as context), segment by segment on the grid of `chunk_size` tokens counted from position 0:
      h   = W_h M(W_seg; q'(x))                  retrieve with the weights the segment started with (no update)
      a   = W_a Attn(x; [persistent | h | x])    causal: x_j sees h_i and x_i for i <= j, and every persistent slot
      memory branch over a (q, k, v from a), updating the weights token by token; r its read
      y   = a * sigmoid(W_r RMSNorm_head(r))
  The retrieved tokens share their positions with the segment's tokens, so a query sees the retrieval of its own
  and earlier positions only (a fully visible retrieval would leak later tokens of the segment).

Persistent memory (`persistent` > 0, mag and mac): N_p learned key/value slots per head that every query attends
to. The paper prepends N_p learned input tokens; since they do not depend on the input, learning their keys and
values directly is the same function class (2 H d per slot rather than D).

Attention here has no positional encoding (NoPE): order comes from the causal mask and the memory's convs. The
paper gives no widths, depths or positional scheme for its 170M-760M models.

Cache (TitansCache): the memory's conv window and state [B, H, 3, P] (constant in context; the chunk grid's offset
is pos mod chunk_size), plus the attention's keys and values: MAG's last window - 1 tokens, MAC's current segment's
retrieved and own tokens (at most 2 (chunk_size - 1)). Both are bounded: a Titans layer's cache is constant in the
context length. MAL's memory layer keeps the shared RecurrentState.

Shapes: B batch, T new tokens, D d_model, H heads, d head_dim, S keys, N_p persistent slots, P memory weights.
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
from ...ops.precision import compute_dtype
from ...ops.titans_memory import (chunk_segments, chunked_flops, init_memory_weights, memory_params, memory_read,
                                  step_flops, titans_memory_chunked, titans_memory_step)
from ...registry import register_mixer
from ..cache import RecurrentState, nbytes
from ..context import ForwardContext
from .attention import KVCache
from .gated_deltanet import l2norm
from .mamba import causal_conv, init_conv

VARIANTS = ("memory", "mag", "mac")


@dataclass
class TitansConfig:
    """A Titans layer: the neural memory alone (MAL's memory layer), or memory-gated SWA (MAG), or memory as
    context (MAC)."""

    num_heads: int
    head_dim: int = 64  # each memory maps head_dim -> head_dim; attention heads have the same width
    variant: Literal["memory", "mag", "mac"] = "memory"
    memory_layers: int = 2  # L_M: the memory MLP's depth (the paper: deeper memories remember more)
    memory_expand: int = 2  # a deep memory's hidden width over head_dim
    chunk_size: int = 16  # tokens whose surprises share the chunk-start weights; MAC's segment length
    conv_kernel: int = 4
    window: int | None = None  # MAG's sliding window (required there)
    persistent: int = 0  # persistent memory slots (mag, mac)
    kind: Literal["titans"] = "titans"

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "num_heads", "head_dim", "memory_layers", "memory_expand", "chunk_size",
                     "conv_kernel")
        if self.variant not in VARIANTS:
            fail(f"{where}.variant", self.variant, f"must be one of {', '.join(VARIANTS)}")
        if self.persistent < 0:
            fail(f"{where}.persistent", self.persistent, "must be >= 0")
        if self.variant == "mag":
            if self.window is None or self.window < 1:
                fail(f"{where}.window", self.window, "MAG's sliding window must be >= 1")
        elif self.window is not None:
            fail(f"{where}.window", self.window, f"only variant 'mag' has a sliding window (the {self.variant!r} "
                 "variant's attention is " + ("per segment)" if self.variant == "mac" else "a layer of its own)"))
        if self.variant == "memory" and self.persistent:
            fail(f"{where}.persistent", self.persistent, "persistent slots belong to an attention branch (mag, mac)")

    @property
    def dims(self) -> tuple[int, ...]:
        """The memory MLP's widths (d, hidden ..., d)."""
        d = self.head_dim
        return (d, *[self.memory_expand * d] * (self.memory_layers - 1), d)

    def describe(self, brief: bool = False) -> str:
        name = {"memory": "Titans memory", "mag": "Titans MAG", "mac": "Titans MAC"}[self.variant]
        if brief:
            return name + (f" window {self.window}" if self.window else "")
        extras = [f"L_M {self.memory_layers}", f"chunk {self.chunk_size}", f"conv {self.conv_kernel}"]
        extras += [f"window {self.window}"] if self.window else []
        extras += [f"{self.persistent} persistent"] if self.persistent else []
        return f"{name} {self.num_heads}h x {self.head_dim} ({', '.join(extras)})"


@dataclass
class TitansCache:
    """A MAG / MAC layer's decode state: the memory branch's conv window and state, MAC's retrieval conv window,
    and the attention keys / values (MAG: a sliding window; MAC: the open segment's [retrieved | own] tokens)."""

    memory: RecurrentState = field(default_factory=RecurrentState)
    retrieve: RecurrentState = field(default_factory=RecurrentState)  # MAC: the retrieval query's conv window
    kv: KVCache | None = None  # MAG
    seg: tuple[torch.Tensor, ...] | None = None  # MAC: (k_h, v_h, k_x, v_x) [B, H, r, d], r tokens of the segment
    kind = "titans"

    def memory_by_kind(self) -> dict[str, int]:
        kv = nbytes(*(self.seg or ())) + (self.kv.memory_bytes() if self.kv is not None else 0)
        return {"kv": kv, "recurrent": self.memory.memory_bytes() + self.retrieve.memory_bytes()}

    def memory_bytes(self) -> int:
        return sum(self.memory_by_kind().values())


class NeuralMemory(nn.Module):
    """The memory branch: projections, conv, gates and the op. forward(u [B, T, D], pos0, cache) -> r [B, T, H, d]."""

    # sigmoid(bias) at init: momentum eta, inner learning rate theta, forgetting alpha. Every surprise of a chunk is
    # taken at the same weights, so a chunk moves them by up to C * 2 theta / (1 - eta) along a key direction: with
    # (0.9, 0.1) the deeper layers of tiny-titans-mag (whose keys are alike) diverged to NaN within 90 tokens;
    # (0.5, 0.01) keeps C * 2 theta / (1 - eta) = 0.64 < 1 at C = 16, and stayed bounded over 1024 tokens (measured).
    GATE_INIT = (0.5, 0.01, 0.01)

    def __init__(self, cfg: TitansConfig, d_model: int):
        super().__init__()
        self.cfg = cfg
        H, d = cfg.num_heads, cfg.head_dim
        self.qkv = nn.Linear(d_model, 3 * H * d, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(3 * H * d, cfg.conv_kernel))  # depthwise, no bias
        self.gates = nn.Linear(d_model, 3 * H)  # [eta | theta | alpha] logits
        self.w_init = nn.Parameter(torch.empty(H, memory_params(cfg.dims)))  # the learned initial memory W_0

    def init_weights(self, std: float) -> None:
        nn.init.normal_(self.qkv.weight, std=std)
        nn.init.normal_(self.gates.weight, std=std)
        H = self.cfg.num_heads
        with torch.no_grad():
            self.gates.bias.copy_(torch.tensor(self.GATE_INIT).logit().repeat_interleave(H))
        init_conv(self.conv_weight, None)
        init_memory_weights(self.w_init, self.cfg.dims)

    def num_params(self) -> int:
        c = self.cfg
        D, Hd = self.qkv.in_features, c.num_heads * c.head_dim
        return 3 * Hd * D + 3 * Hd * c.conv_kernel + 3 * c.num_heads * (D + 1) + c.num_heads * memory_params(c.dims)

    def proj_flops(self) -> int:
        """Per token: W_qkv, the depthwise conv and the gates."""
        c = self.cfg
        D, Hd = self.qkv.in_features, c.num_heads * c.head_dim
        return 2 * D * 3 * Hd + 2 * 3 * Hd * c.conv_kernel + 2 * D * 3 * c.num_heads

    def op_flops(self, tokens: int, offset: int) -> int:
        """The op over `tokens` tokens starting `offset` into a chunk, every head (the step form for one cached
        token)."""
        c = self.cfg
        return c.num_heads * chunked_flops(tokens, c.dims, c.chunk_size, offset)

    def state_bytes(self, batch: int, dtype_bytes: int, state_bytes: int | None) -> int:
        """Conv window [B, 3 H d, K-1] in the cache dtype, state [B, H, 3, P] in state_bytes (float32 here)."""
        c = self.cfg
        sb = dtype_bytes if state_bytes is None else state_bytes
        return (batch * 3 * c.num_heads * c.head_dim * (c.conv_kernel - 1) * dtype_bytes
                + batch * c.num_heads * 3 * memory_params(c.dims) * sb)

    def initial_state(self, B: int) -> torch.Tensor:
        w = self.w_init.to(compute_dtype(self.w_init))[None].expand(B, -1, -1)  # [B, H, P]
        return torch.stack((w, w, torch.zeros_like(w)), 2)  # [B, H, 3, P]: chunk-start weights, weights, momentum

    def forward(self, u_BTD: torch.Tensor, pos0: int, cache: RecurrentState | None,
                keep_graph: bool = False) -> torch.Tensor:
        """keep_graph: leave the conv window and state in the cache undetached (MAC's segment loop in training)."""
        c = self.cfg
        B, T, _ = u_BTD.shape
        H, d = c.num_heads, c.head_dim
        qkv = causal_conv(self.qkv(u_BTD).transpose(1, 2), self.conv_weight, None, cache, keep_graph)
        qkv = qkv.transpose(1, 2)
        dt = compute_dtype(u_BTD)  # float32 (float64 kept for tests)
        q, k, v = qkv.reshape(B, T, 3, H, d).to(dt).unbind(2)  # [B, T, H, d] each
        eta, theta, alpha = torch.sigmoid(self.gates(u_BTD).to(dt)).view(B, T, 3, H).unbind(2)  # [B, T, H]
        state = cache.state if cache is not None and cache.state is not None else self.initial_state(B)
        offset = pos0 % c.chunk_size
        if T == 1:  # the step form (equal to the chunked one for one token, with fewer FLOPs)
            r, state = titans_memory_step(l2norm(q[:, 0]), l2norm(k[:, 0]), v[:, 0], eta[:, 0], theta[:, 0],
                                          alpha[:, 0], state, c.dims, c.chunk_size, offset)
            r = r[:, None]
        else:
            r, state = titans_memory_chunked(l2norm(q), l2norm(k), v, eta, theta, alpha, state, c.dims,
                                             c.chunk_size, offset)
        if cache is not None:
            cache.state = state if keep_graph else state.detach()
        return r.to(u_BTD.dtype)  # [B, T, H, d]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q [B, H, T, d], k / v [B, H, S, d], mask [T, S] (True = visible) or None (all visible)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(q.shape[-1]))


@register_mixer("titans", TitansConfig)
class Titans(nn.Module):
    def __init__(self, cfg: TitansConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = True):
        super().__init__()
        self.cfg = cfg
        H, d = cfg.num_heads, cfg.head_dim
        Hd = H * d
        self.cache_kind = RecurrentState.kind if cfg.variant == "memory" else TitansCache.kind
        self.memory = NeuralMemory(cfg, d_model)
        self.r_norm = RMSNorm(d, norm_eps)
        if cfg.variant != "memory":
            self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, Hd, bias=False) for _ in range(3))
            if cfg.persistent:
                self.persistent_k = nn.Parameter(torch.empty(H, cfg.persistent, d))
                self.persistent_v = nn.Parameter(torch.empty(H, cfg.persistent, d))
        if cfg.variant == "mag":
            self.a_norm = RMSNorm(d, norm_eps)
        if cfg.variant == "mac":
            self.retrieve_q = nn.Linear(d_model, Hd, bias=False)
            self.retrieve_conv = nn.Parameter(torch.empty(Hd, cfg.conv_kernel))
            self.retrieve_out = nn.Linear(Hd, d_model, bias=False)  # retrieved tokens back in the model's space
            self.a_proj = nn.Linear(Hd, d_model, bias=False)  # the attention output a, the memory's input
        self.o_proj = nn.Linear(Hd, d_model, bias=False)  # memory / MAG output; MAC: the gate W_r
        self.aux_loss: torch.Tensor | None = None

    def init_weights(self, std: float, out_std: float) -> None:
        self.memory.init_weights(std)
        self.r_norm.init_weights()
        for name in ("q_proj", "k_proj", "v_proj", "retrieve_q", "retrieve_out"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name).weight, std=std)
        if hasattr(self, "a_proj"):
            nn.init.normal_(self.a_proj.weight, std=out_std)
        nn.init.normal_(self.o_proj.weight, std=std if self.cfg.variant == "mac" else out_std)
        if self.cfg.persistent:
            nn.init.normal_(self.persistent_k, std=1.0)
            nn.init.normal_(self.persistent_v, std=1.0)
        if hasattr(self, "a_norm"):
            self.a_norm.init_weights()
        if hasattr(self, "retrieve_conv"):
            init_conv(self.retrieve_conv, None)

    def new_cache(self) -> RecurrentState | TitansCache:
        if self.cfg.variant == "memory":
            return RecurrentState()
        return TitansCache(kv=KVCache(window=self.cfg.window) if self.cfg.variant == "mag" else None)

    def describe(self) -> str:
        return self.cfg.describe()

    def num_params(self) -> int:
        c = self.cfg
        D, Hd = self.o_proj.out_features, c.num_heads * c.head_dim
        n = self.memory.num_params() + c.head_dim + Hd * D  # memory, r_norm, o_proj
        if c.variant != "memory":
            n += 3 * D * Hd + 2 * c.num_heads * c.persistent * c.head_dim  # q, k, v; persistent slots
        if c.variant == "mag":
            n += c.head_dim  # a_norm
        if c.variant == "mac":
            n += 3 * D * Hd + Hd * c.conv_kernel  # retrieve_q, retrieve_out, a_proj; the retrieval conv
        return n

    # -- accounting (docs/cost.md): matmuls at 2 FLOPs per multiply-add, as FlopCounterMode counts them ----------
    def _pieces(self, context: int, tokens: int) -> list[tuple[int, int]]:
        """(segment offset, length) of the pieces a forward of `tokens` new tokens after `context - tokens`
        cached ones is cut into (MAC works segment by segment)."""
        start = context - tokens
        return [((start + a) % self.cfg.chunk_size, b - a) for a, b in chunk_segments(tokens, start, self.cfg.chunk_size)]

    def _flops(self, context: int, tokens: int, causal_skip: bool) -> int:
        """FLOPs of `tokens` new tokens whose last is token number `context`."""
        c = self.cfg
        D, H, d = self.o_proj.out_features, c.num_heads, c.head_dim
        Hd, Np = H * d, c.persistent
        per_tok = self.memory.proj_flops() + 2 * Hd * D  # memory projections, o_proj (MAC: the gate W_r)
        pieces = self._pieces(context, tokens) if c.variant == "mac" else [((context - tokens) % c.chunk_size, tokens)]
        op = sum(H * step_flops(c.dims) if n == 1 else self.memory.op_flops(n, r) for r, n in pieces)
        if c.variant == "memory":
            return tokens * per_tok + op
        per_tok += 2 * D * Hd * 3  # q, k, v of the attention
        score = 4 * Hd  # QK^T and PV per query and key
        if c.variant == "mag":
            w, first = c.window, context - tokens + 1
            keys = sum(Np + min(p, w) for p in range(first, context + 1)) if causal_skip else \
                tokens * (Np + min(context, context - tokens + w))
            return tokens * per_tok + op + score * keys
        # MAC: retrieval (q', conv, the memory's forward, W_h), k / v of the retrieved tokens, a_proj; attention
        per_tok += (2 * D * Hd + 2 * Hd * c.conv_kernel + H * 2 * memory_params(c.dims) + 2 * Hd * D
                    + 2 * 2 * D * Hd + 2 * Hd * D)
        keys = 0
        for r, n in self._pieces(context, tokens):
            keys += sum(Np + 2 * (r + j) for j in range(1, n + 1)) if causal_skip else n * (Np + 2 * (r + n))
        return tokens * per_tok + op + score * keys

    def flops_per_token(self, context: int, causal_skip: bool = True) -> float:
        """Mean FLOPs per token of a `context`-token forward from position 0, each token's inner forward and
        backward of the memory included. causal_skip=False counts the attention's masked keys too (what a dense
        kernel, and torch's counter on SDPA, computes)."""
        return self._flops(context, context, causal_skip) / context

    def decode_flops(self, context: int) -> int:
        """One cached token, number `context`: the memory's step (its surprise and read) and, for MAG / MAC, its
        attention over the persistent slots and the window / the segment so far."""
        return self._flops(context, 1, True)

    def cache_bytes(self, context: int, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = 4) -> int:
        return sum(self.cache_bytes_by_kind(context, batch, dtype_bytes, state_bytes).values())

    def cache_bytes_by_kind(self, context: int, batch: int = 1, dtype_bytes: int = 2,
                            state_bytes: int | None = 4) -> dict[str, int]:
        """'recurrent': the memory's conv window and state (MAC: and the retrieval conv window); 'kv': MAG's last
        min(context, window - 1) tokens, MAC's open segment (context mod chunk_size tokens, retrieved and own)."""
        c = self.cfg
        rec = self.memory.state_bytes(batch, dtype_bytes, state_bytes)
        if c.variant == "memory":
            return {RecurrentState.kind: rec}
        Hd = c.num_heads * c.head_dim
        if c.variant == "mac":
            rec += batch * Hd * (c.conv_kernel - 1) * dtype_bytes
            tokens = 2 * (context % c.chunk_size)
        else:
            tokens = min(context, c.window - 1)
        return {"kv": 2 * batch * Hd * tokens * dtype_bytes, "recurrent": rec}

    # -- forward ---------------------------------------------------------------------------------------------------
    def _heads(self, x_BTX: torch.Tensor) -> torch.Tensor:
        B, T, _ = x_BTX.shape
        return x_BTX.view(B, T, self.cfg.num_heads, self.cfg.head_dim).transpose(1, 2)  # [B, H, T, d]

    def _persistent(self, B: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The persistent slots' keys and values [B, H, N_p, d]."""
        H, d = self.cfg.num_heads, self.cfg.head_dim
        if not self.cfg.persistent:
            empty = torch.zeros(B, H, 0, d, dtype=dtype, device=self.o_proj.weight.device)
            return empty, empty
        return (self.persistent_k.to(dtype)[None].expand(B, -1, -1, -1),
                self.persistent_v.to(dtype)[None].expand(B, -1, -1, -1))

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: RecurrentState | TitansCache | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        c = self.cfg
        B, T, _ = x_BTD.shape
        if c.variant == "memory":
            r = self.memory(x_BTD, pos0, cache)  # [B, T, H, d]
            return self.o_proj(self.r_norm(r).reshape(B, T, -1))
        if c.variant == "mag":
            return self._mag(x_BTD, pos0, cache)
        # MAC: segment by segment; without a cache, one lives for this forward and keeps the graph between segments
        keep_graph = cache is None
        cache = self.new_cache() if cache is None else cache
        outs = [self._mac_piece(x_BTD[:, a:b], pos0 + a, cache, keep_graph)
                for a, b in chunk_segments(T, pos0, c.chunk_size)]
        return torch.cat(outs, 1) if outs else x_BTD[:, :0]

    def _mag(self, x_BTD: torch.Tensor, pos0: int, cache: TitansCache | None) -> torch.Tensor:
        c = self.cfg
        B, T, _ = x_BTD.shape
        q, k, v = (self._heads(p(x_BTD)) for p in (self.q_proj, self.k_proj, self.v_proj))  # [B, H, T, d]
        key_start = pos0
        if cache is not None:
            k, v, key_start = cache.kv.append(k, v)  # [B, H, S, d]
        pk, pv = self._persistent(B, q.dtype)
        S = k.shape[2]
        q_pos = torch.arange(pos0, pos0 + T, device=x_BTD.device)[:, None]
        k_pos = torch.arange(key_start, key_start + S, device=x_BTD.device)[None, :]
        mask = (k_pos <= q_pos) & (q_pos - k_pos < c.window)  # [T, S]
        mask = torch.cat((mask.new_ones(T, pk.shape[2]), mask), 1)  # persistent slots: always visible
        a = _sdpa(q, torch.cat((pk, k), 2), torch.cat((pv, v), 2), mask).transpose(1, 2)  # [B, T, H, d]
        r = self.memory(x_BTD, pos0, cache.memory if cache is not None else None)  # [B, T, H, d]
        y = self.a_norm(a) * torch.sigmoid(self.r_norm(r))
        return self.o_proj(y.reshape(B, T, -1))

    def _mac_piece(self, x_BTD: torch.Tensor, pos0: int, cache: TitansCache, keep_graph: bool) -> torch.Tensor:
        """Tokens pos0 .. pos0+T-1, all in one segment (T <= chunk_size - pos0 mod chunk_size)."""
        c = self.cfg
        B, T, _ = x_BTD.shape
        r0 = pos0 % c.chunk_size  # tokens of this segment already consumed (in the cache)
        state = cache.memory.state if cache.memory.state is not None else self.memory.initial_state(B)
        # retrieve with the weights the segment started with: row 0 of the state (the op's chunk grid is the segment)
        qr = causal_conv(self.retrieve_q(x_BTD).transpose(1, 2), self.retrieve_conv, None, cache.retrieve,
                         keep_graph).transpose(1, 2)
        qr = l2norm(qr.reshape(B, T, c.num_heads, c.head_dim).to(compute_dtype(x_BTD)))
        h = self.retrieve_out(memory_read(state[:, :, 0], qr, c.dims).to(x_BTD.dtype).reshape(B, T, -1))  # [B,T,D]
        q = self._heads(self.q_proj(x_BTD))
        kh, vh, kx, vx = (self._heads(p(u)) for p, u in ((self.k_proj, h), (self.v_proj, h),
                                                         (self.k_proj, x_BTD), (self.v_proj, x_BTD)))
        if r0 and cache.seg is not None:
            kh, vh, kx, vx = (torch.cat((old, new), 2) for old, new in zip(cache.seg, (kh, vh, kx, vx)))
        # keep the open segment's keys; a finished segment's are never seen again
        cache.seg = None if (r0 + T) % c.chunk_size == 0 else \
            tuple(t if keep_graph else t.detach() for t in (kh, vh, kx, vx))
        pk, pv = self._persistent(B, q.dtype)
        S = kh.shape[2]  # r0 + T positions of this segment
        q_pos = torch.arange(S - T, S, device=x_BTD.device)[:, None]
        seen = torch.arange(S, device=x_BTD.device)[None, :] <= q_pos  # [T, S]
        mask = torch.cat((seen.new_ones(T, pk.shape[2]), seen, seen), 1)
        a = _sdpa(q, torch.cat((pk, kh, kx), 2), torch.cat((pv, vh, vx), 2), mask)  # [B, H, T, d]
        a = self.a_proj(a.transpose(1, 2).reshape(B, T, -1))  # [B, T, D]
        r = self.memory(a, pos0, cache.memory, keep_graph)  # updates the memory with the attention's output
        return a * torch.sigmoid(self.o_proj(self.r_norm(r).reshape(B, T, -1)))
