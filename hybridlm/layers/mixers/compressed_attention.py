"""DeepSeek-V4 attention: one shared key=value head over a sliding window plus compressed entries, with a sink.

    c_Q = RMSNorm(W_qa x);  q_h = W_qb,h c_Q;  q_h <- q_h / rms(q_h)   (unweighted)     RoPE on the last r dims
    kv = RMSNorm(W_kv x)  [hd]: the ONE key, and also the value, that every head reads   RoPE on the last r dims
    keys of query t: kv of tokens (t - window, t]  +  compressed entries (compressor.py):
        "hca": every entry i < (t+1)//m;  "csa": the indexer's top-k of those;  "none": the window only
    p_j = exp(s_j) / (sum_i exp(s_i) + exp(sink_h)),  s_j = q_h . k_j hd^-1/2           (a learnable sink per head)
    o_h = sum_j p_j k_j, then the RoPE slice of o_h rotated back by -t (K = V carried the keys' rotation into o)
    output = W_ob concat_g( W_oa,g [o_h for the H/g heads of group g] )                 (grouped low-rank output)

Training: with index_loss_coef > 0 the CSA indexer learns from V3.2's sparse-stage KL loss (ops/index_loss.py),
exposed as `aux_loss` and added to the model's loss.
The cache (`CompressedKVCache`) keeps the last window-1 kv vectors and the compressor states: its size is bounded
by the window plus context/m entries. Attention runs over blocks of queries (max(128, window) of them): each block
scores its band of block + window - 1 window keys and its entries (CSA: each query's top-k, gathered; HCA: every
complete one) in float32 with the sink, one batched matmul per part since there is one key head; torch's SDPA has
no sink term. Work and memory are O(T (block + window + k)), not O(T^2).
RoPE: theta and optional YaRN frequencies per layer (V4: plain 10k on window-only layers, 160k + YaRN x16 on
compressed ones); neither cos/sin nor the softmax scale gets YaRN's mscale, as in DeepSeek's code and transformers.
The kind's config (`CompressedAttentionConfig`), module (`CompressedAttention`) and cache (`CompressedKVCache`);
the compressor and indexer live in compressor.py.
Reference: transformers 5.23 `DeepseekV4Attention` (parity through the whole model in tests/families/test_deepseek_v4.py).

Shapes: B batch, T new tokens, S window keys (cached + new), N compressed entries, H heads, hd head dim,
G output groups, R o_lora_rank, Q q_lora_rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...core.config import at_least_one, fail
from ...core.norms import RMSNorm, rms_normalize
from ...core.rope import rope_tail_interleaved, yarn_inv_freq
from ...ops.index_loss import index_kl_loss
from ...registry import register_mixer
from ..cache import nbytes
from ..context import ForwardContext
from .compressor import Compressor, CompressorState, Indexer, visible_entries


@dataclass
class CompressedAttentionConfig:
    """DeepSeek-V4 attention: one shared key=value head, a sliding window with a learnable per-head sink, and
    optionally compressed long-range entries: "csa" (overlapping windows of 2 x compress_ratio tokens, top-k picked
    by a lightning indexer) or "hca" (disjoint windows, every closed one attended). Low-rank query, grouped
    low-rank output projection. RoPE (interleaved pairs) on the last rope_dim dims of each head; rope_scaling is
    None or {"rope_type": "yarn", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow"}
    (frequencies only: V4 scales neither cos/sin nor the softmax)."""

    num_heads: int
    head_dim: int = 512
    rope_dim: int = 64
    q_lora_rank: int = 1024
    o_groups: int = 8
    o_lora_rank: int = 1024
    sliding_window: int = 128
    compression: Literal["none", "csa", "hca"] = "none"
    compress_ratio: int = 4
    rope_theta: float = 10_000.0
    rope_scaling: dict | None = None
    index_n_heads: int = 64  # CSA only: the lightning indexer
    index_head_dim: int = 128
    index_topk: int = 512
    index_loss_coef: float = 0.0  # > 0: train the CSA indexer with the KL loss (a training knob, not in checkpoints)
    kind: Literal["compressed_attention"] = "compressed_attention"

    _YARN_KEYS = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow")

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "num_heads", "head_dim", "q_lora_rank", "o_groups", "o_lora_rank", "sliding_window",
                      "compress_ratio", "index_n_heads", "index_head_dim", "index_topk")
        if self.rope_dim < 0 or self.rope_dim % 2 or self.rope_dim > self.head_dim:
            fail(f"{where}.rope_dim", self.rope_dim, f"must be even and in [0, head_dim={self.head_dim}]")
        if self.num_heads % self.o_groups:
            fail(f"{where}.o_groups", self.o_groups, f"must divide num_heads={self.num_heads}")
        if self.compression not in ("none", "csa", "hca"):
            fail(f"{where}.compression", self.compression, "must be 'none', 'csa' or 'hca'")
        if self.index_loss_coef < 0:
            fail(f"{where}.index_loss_coef", self.index_loss_coef, "must be >= 0 (0 = the indexer is not trained)")
        if self.compression == "csa" and self.index_head_dim < self.rope_dim:
            fail(f"{where}.index_head_dim", self.index_head_dim, f"must be >= rope_dim ({self.rope_dim})")
        rs = self.rope_scaling
        if rs is not None:
            missing = [k for k in self._YARN_KEYS if k not in rs] if isinstance(rs, dict) else list(self._YARN_KEYS)
            unknown = sorted(set(rs) - {"rope_type", *self._YARN_KEYS}) if isinstance(rs, dict) else []
            if not isinstance(rs, dict) or rs.get("rope_type") != "yarn" or missing or unknown:
                fail(f"{where}.rope_scaling", rs, f"must be {{'rope_type': 'yarn', {', '.join(self._YARN_KEYS)}}} "
                      f"(missing {missing}, unknown {unknown})")
            if not all(rs[k] > 0 for k in self._YARN_KEYS):
                fail(f"{where}.rope_scaling", rs, "needs every value > 0")

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            label = {"none": f"window-only ({self.sliding_window})",
                     "csa": f"CSA ({self.compress_ratio}x, top-{self.index_topk})",
                     "hca": f"HCA ({self.compress_ratio}x)"}[self.compression]
            return f"shared-KV {self.num_heads}q x {self.head_dim} {label}"
        comp = {"none": "window only",
                "csa": f"CSA {self.compress_ratio}x, indexer {self.index_n_heads}h top-{self.index_topk}",
                "hca": f"HCA {self.compress_ratio}x"}[self.compression]
        yarn = f", yarn x{self.rope_scaling['factor']:g}" if self.rope_scaling else ""
        return (f"shared-KV attention {self.num_heads}q x {self.head_dim} (window {self.sliding_window} + sink, "
                f"{comp}; rope {self.rope_dim} theta {self.rope_theta:g}{yarn}; output {self.o_groups} groups x "
                f"{self.o_lora_rank})")


@dataclass
class CompressedKVCache:
    """DeepSeek-V4 attention cache: the last window-1 shared key=value vectors [B, S, d] plus, on compressed
    layers, the compressor's state and, on CSA layers, the lightning indexer's own compressor state."""

    window: int
    kv: torch.Tensor | None = None
    compressor: CompressorState | None = None
    indexer: CompressorState | None = None
    kind = "compressed"

    def append(self, kv_new: torch.Tensor) -> torch.Tensor:
        """-> every key this step attends to in its window (cached then new); keeps the last window-1."""
        kv_all = kv_new if self.kv is None else torch.cat((self.kv, kv_new), dim=1)
        self.kv = kv_all[:, kv_all.shape[1] - min(kv_all.shape[1], self.window - 1):]
        return kv_all

    def memory_bytes(self) -> int:
        return (nbytes(self.kv) + (self.compressor.memory_bytes() if self.compressor else 0)
                + (self.indexer.memory_bytes() if self.indexer else 0))


def v4_inv_freq(c: CompressedAttentionConfig) -> torch.Tensor:
    rs = c.rope_scaling
    if rs is None:
        return 1.0 / (c.rope_theta ** (torch.arange(0, c.rope_dim, 2, dtype=torch.float32, device="cpu") / c.rope_dim))
    return yarn_inv_freq(c.rope_dim, c.rope_theta, rs["factor"], rs["original_max_position_embeddings"],
                         rs["beta_fast"], rs["beta_slow"])


@register_mixer("compressed_attention", CompressedAttentionConfig)
class CompressedAttention(nn.Module):
    cache_kind = CompressedKVCache.kind

    def __init__(self, cfg: CompressedAttentionConfig, d_model: int, norm_eps: float = 1e-6,
                 zero_centered: bool = False):
        super().__init__()
        if zero_centered:
            raise NotImplementedError("compressed_attention uses plain RMSNorm weights (zero_centered_norm=False)")
        self.cfg, self.d_model, self.eps = cfg, d_model, norm_eps
        H, hd, G, R = cfg.num_heads, cfg.head_dim, cfg.o_groups, cfg.o_lora_rank
        self.wq_a = nn.Linear(d_model, cfg.q_lora_rank, bias=False)
        self.q_norm = RMSNorm(cfg.q_lora_rank, norm_eps)
        self.wq_b = nn.Linear(cfg.q_lora_rank, H * hd, bias=False)
        self.wkv = nn.Linear(d_model, hd, bias=False)
        self.kv_norm = RMSNorm(hd, norm_eps)
        self.wo_a = nn.Linear(H * hd // G, G * R, bias=False)  # G blocks [R, H hd / G] stacked: block-diagonal
        self.wo_b = nn.Linear(G * R, d_model, bias=False)
        self.attn_sink = nn.Parameter(torch.empty(H))
        self.compressor = self.indexer = None
        if cfg.compression != "none":
            self.compressor = Compressor(d_model, hd, cfg.compress_ratio, cfg.compression == "csa", norm_eps)
        if cfg.compression == "csa":
            self.indexer = Indexer(d_model, cfg.q_lora_rank, cfg.index_n_heads, cfg.index_head_dim,
                                   cfg.compress_ratio, cfg.index_topk, norm_eps)
        self._inv_freq = v4_inv_freq(cfg)  # float32 on the CPU, not a buffer: model.to(bf16) must not round it
        self.scale = hd ** -0.5
        self.aux_loss: torch.Tensor | None = None  # the indexer's KL loss after a training forward

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        for lin in (self.wq_a, self.wq_b, self.wkv, self.wo_a):
            nn.init.normal_(lin.weight, std=std)
        nn.init.normal_(self.wo_b.weight, std=out_std)
        nn.init.zeros_(self.attn_sink)
        self.q_norm.init_weights()
        self.kv_norm.init_weights()
        for sub in (self.compressor, self.indexer):
            if sub is not None:
                sub.init_weights(std)

    def new_cache(self) -> CompressedKVCache:
        c = self.cfg
        return CompressedKVCache(window=c.sliding_window,
                                 compressor=CompressorState() if self.compressor is not None else None,
                                 indexer=CompressorState() if self.indexer is not None else None)

    def describe(self) -> str:
        return self.cfg.describe()

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: CompressedKVCache | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        c = self.cfg
        B, T, _ = x_BTD.shape
        H, hd, G = c.num_heads, c.head_dim, c.o_groups
        inv_freq = self._inv_freq
        positions_T = torch.arange(pos0, pos0 + T, device=x_BTD.device)

        c_q_BTQ = self.q_norm(self.wq_a(x_BTD))
        q_BTHd = self.wq_b(c_q_BTQ).view(B, T, H, hd)
        q_BTHd = rope_tail_interleaved(rms_normalize(q_BTHd, self.eps).to(q_BTHd.dtype), inv_freq, positions_T)
        kv_BTd = rope_tail_interleaved(self.kv_norm(self.wkv(x_BTD)), inv_freq, positions_T)

        kv_BSd = cache.append(kv_BTd) if cache is not None else kv_BTd  # window keys from position key0 on
        key0 = pos0 + T - kv_BSd.shape[1]
        self.aux_loss = index_BTN = entries_BNd = top_BTK = valid_BTK = None
        # grad mode first: under no_grad it is False before any config float is compared (torch.compile(dynamic=True)
        # traces floats as symbols, and set_grad_enabled takes no symbol)
        train_index = torch.is_grad_enabled() and self.training and self.indexer is not None and c.index_loss_coef > 0
        if self.compressor is not None:
            state = cache.compressor if cache is not None else CompressorState()
            entries_BNd = self.compressor(x_BTD, state, inv_freq)
            if self.indexer is not None:
                istate = cache.indexer if cache is not None else CompressorState()
                with torch.set_grad_enabled(train_index):  # detached input: only the KL loss trains the indexer
                    index_BTN = self.indexer.scores(x_BTD.detach(), c_q_BTQ.detach(), positions_T, istate, inv_freq)
                top_BTK, valid_BTK = self.indexer.select(index_BTN, positions_T)

        # Query blocks: each sees its band of window keys (block + window - 1 of them, not all T) and its compressed
        # entries (CSA: each query's gathered top-k; HCA: the visible ones), one float32 softmax with the sink.
        o_BTHd = q_BTHd.new_empty(B, T, H, hd)
        target_BTN = index_BTN.new_zeros(index_BTN.shape) if train_index else None
        block = max(128, c.sliding_window)
        sink_1H11 = self.attn_sink.float().view(1, H, 1, 1)
        for t0 in range(0, T, block):
            t1 = min(T, t0 + block)
            pos_b = positions_T[t0:t1]
            lo, hi = max(0, pos0 + t0 - c.sliding_window + 1 - key0), pos0 + t1 - key0
            kw_BSd = kv_BSd[:, lo:hi]
            delta_bS = pos_b[:, None] - torch.arange(key0 + lo, key0 + hi, device=x_BTD.device)[None, :]
            q_BbHd = q_BTHd[:, t0:t1].float() * self.scale
            # one key head: all H x b queries against the same keys in one batched matmul
            parts = [torch.einsum("bthd,bsd->bhts", q_BbHd, kw_BSd.float())
                     .masked_fill(~((delta_bS >= 0) & (delta_bS < c.sliding_window)), float("-inf"))]
            if top_BTK is not None:  # CSA: [B, b, K, hd] gathered entries
                ent = entries_BNd[torch.arange(B, device=x_BTD.device)[:, None, None], top_BTK[:, t0:t1]]
                parts.append(torch.einsum("bthd,btkd->bhtk", q_BbHd, ent.float())
                             .masked_fill(~valid_BTK[:, None, t0:t1], float("-inf")))
            elif entries_BNd is not None:  # HCA: the entries complete for the block's last query, [B, n, hd]
                ent = entries_BNd[:, :(pos0 + t1) // c.compress_ratio]
                parts.append(torch.einsum("bthd,bnd->bhtn", q_BbHd, ent.float())
                             .masked_fill(~visible_entries(pos_b, ent.shape[1], c.compress_ratio), float("-inf")))
            parts.append(sink_1H11.expand(B, H, t1 - t0, 1))
            probs = torch.cat(parts, dim=-1).softmax(dim=-1)
            Sw = kw_BSd.shape[1]
            o = torch.einsum("bhts,bsd->bthd", probs[..., :Sw].to(kw_BSd.dtype), kw_BSd)
            if entries_BNd is not None:
                p_c = probs[..., Sw:-1].to(ent.dtype)
                o = o + (torch.einsum("bhtk,btkd->bthd", p_c, ent) if top_BTK is not None
                         else torch.einsum("bhtn,bnd->bthd", p_c, ent))
                if train_index:  # the KL target: the main attention's weight on each entry, summed over heads
                    target_BTN[:, t0:t1].scatter_add_(-1, top_BTK[:, t0:t1],
                                                      p_c.detach().float().sum(1) * valid_BTK[:, t0:t1])
            o_BTHd[:, t0:t1] = o
        if train_index:
            seen_BTN = torch.zeros_like(target_BTN, dtype=torch.bool).scatter_(-1, top_BTK, valid_BTK)
            self.aux_loss = c.index_loss_coef * index_kl_loss(index_BTN, target_BTN, seen_BTN)
        o_BTHd = rope_tail_interleaved(o_BTHd, inv_freq, positions_T, inverse=True)

        o_BTGi = o_BTHd.reshape(B, T, G, -1)  # heads [g H/G, (g+1) H/G) form group g
        w_GRi = self.wo_a.weight.view(G, c.o_lora_rank, -1)
        return self.wo_b(torch.einsum("btgi,gri->btgr", o_BTGi, w_GRi).flatten(2))

    # -- accounting (docs/cost.md): matmul FLOPs at 2 per multiply-add; norms, RoPE, softmax, pooling not counted --
    def num_params(self) -> int:
        c, D = self.cfg, self.d_model
        Q, H, hd = c.q_lora_rank, c.num_heads, c.head_dim
        n = D * Q + Q + Q * H * hd + D * hd + hd + H * hd * c.o_lora_rank + c.o_groups * c.o_lora_rank * D + H
        for sub in (self.compressor, self.indexer):
            n += sub.num_params() if sub is not None else 0
        return n

    def _proj_flops(self) -> int:
        c, D = self.cfg, self.d_model
        n = D * c.q_lora_rank + c.q_lora_rank * c.num_heads * c.head_dim + D * c.head_dim
        n += c.num_heads * c.head_dim * c.o_lora_rank + c.o_groups * c.o_lora_rank * D
        if self.compressor is not None:
            n += self.compressor.matmul_params()
        if self.indexer is not None:
            n += (self.indexer.wq_b.weight.numel() + self.indexer.weights_proj.weight.numel()
                  + self.indexer.compressor.matmul_params())
        return 2 * n

    def _entries(self, position: int) -> int:
        """Complete compressed entries for the query at 1-based `position`."""
        return position // self.cfg.compress_ratio if self.compressor is not None else 0

    def keys_seen(self, position: int) -> int:
        """Keys the query at 1-based `position` attends to: its window plus the entries it may (CSA: top-k) see."""
        c = self.cfg
        entries = self._entries(position)
        return min(position, c.sliding_window) + (min(entries, c.index_topk) if self.indexer is not None else entries)

    def _sum_keys(self, context: int) -> tuple[float, float]:
        """-> (sum over positions 1..context of keys_seen, of the entries the indexer scores), closed forms."""
        c, L = self.cfg, context
        w = c.sliding_window
        window = L * (L + 1) / 2 if L <= w else w * (w + 1) / 2 + (L - w) * w

        def floor_sum(n: int) -> float:  # sum_{t=1..n} floor(t / m)
            m = c.compress_ratio
            q, r = divmod(n, m)
            return m * q * (q - 1) / 2 + q * (r + 1)

        if self.compressor is None:
            return window, 0.0
        scored = floor_sum(L)
        if self.indexer is None:
            return window + scored, 0.0
        k_end = c.index_topk * c.compress_ratio  # from this position on, the top-k cap binds
        capped = scored if L < k_end else floor_sum(k_end - 1) + (L - k_end + 1) * c.index_topk
        return window + capped, scored

    def _index_flops_per_entry(self) -> int:
        c = self.cfg
        return 2 * c.index_n_heads * (c.index_head_dim + 1) if self.indexer is not None else 0

    def flops_per_token(self, context: int, causal_skip: bool = True) -> float:
        """Prefill FLOPs per token averaged over a causal pass of `context` tokens: projections (compressors and
        indexer included), then per key 2 H hd for the scores and 2 H hd for the weighted sum, plus the indexer's
        scoring of every complete entry. causal_skip=False: every query against its window and all entries of the
        whole context (a dense masked kernel)."""
        c = self.cfg
        if causal_skip:
            keys, scored = (s / context for s in self._sum_keys(context))
        else:
            keys = min(context, c.sliding_window) + self._entries(context)
            scored = self._entries(context) if self.indexer is not None else 0
        return self._proj_flops() + 4 * c.num_heads * c.head_dim * keys + self._index_flops_per_entry() * scored

    def decode_flops(self, context: int) -> float:
        """One decode step whose query is token number `context`."""
        c = self.cfg
        scored = self._entries(context) if self.indexer is not None else 0
        return (self._proj_flops() + 4 * c.num_heads * c.head_dim * self.keys_seen(context)
                + self._index_flops_per_entry() * scored)

    def cache_bytes(self, context: int, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = None) -> int:
        """What `CompressedKVCache` holds after `context` tokens: min(context, window - 1) kv vectors; per
        compressor its entries, the open window's projected kv and gate, and (overlapping) the last closed window's
        low half of kv and gate. state_bytes: unused (the state is kept in the model dtype)."""
        c = self.cfg
        n = min(context, c.sliding_window - 1) * c.head_dim
        m = c.compress_ratio
        for sub in (self.compressor, self.indexer.compressor if self.indexer is not None else None):
            if sub is None:
                continue
            width = sub.wkv.out_features
            n += (context // m) * sub.dim + 2 * (context % m) * width
            if sub.overlap and context >= m:
                n += 2 * m * sub.dim
        return batch * n * dtype_bytes
