"""Multi-head Latent Attention (DeepSeek-V2/V3) with decoupled RoPE, cached as the compressed latent.

    c_Q = RMSNorm(W_qa x)                         (or no compression: q = W_q x, when q_lora_rank is None)
    q_h = W_qb,h c_Q = [q_nope,h | q_rope,h]      RoPE on q_rope
    [c_KV | k_R] = W_kva x                        c_KV <- RMSNorm(c_KV); k_R <- RoPE(k_R): ONE key head for all heads
    k_h = [W_uk,h c_KV | k_R],  v_h = W_uv,h c_KV  (kv_b_proj holds [W_uk,h ; W_uv,h] head by head)
    o = W_o concat_h softmax(q_h . k_h * scale) v_h

The cache (`LatentCache`) holds c_KV and k_R: kv_lora_rank + qk_rope_head_dim values per token, whatever H.
Two equal ways to attend, chosen by `self.absorb`:
  expanded ("never"; prefill): every cached latent is expanded into per-head keys and values, then SDPA;
  absorbed ("always"; single-token decode under "auto"): W_uk,h folds into the query, q_lat,h = W_uk,h^T q_nope,h,
    so q_h . k_h = q_lat,h . c_KV + q_rope,h . k_R: MQA over the latent with one [c_KV | k_R] key head whose value
    is c_KV itself; W_uv,h is applied after the weighted sum. No per-head key or value is ever formed.
YaRN (rope_scaling="yarn"): transformers' rule: inverse frequencies blended between interpolated and
extrapolated by a linear ramp over [low, high] dims, cos/sin scaled by mscale(f, yarn_mscale) /
mscale(f, yarn_mscale_all_dim), and the softmax scale by mscale(f, yarn_mscale_all_dim)^2.

Shapes: B batch, T new tokens, S keys (cache + new), H heads, D d_model, R kv_lora_rank, n qk_nope_head_dim,
r qk_rope_head_dim, v v_head_dim.
The kind's config (`MLAConfig`), module (`MLA`) and cache (`LatentCache`).
Reference: transformers `DeepseekV3Attention` (parity through the whole model in tests/families/test_deepseek.py).

Optional DeepSeek Sparse Attention (V3.2, cfg.index_n_heads > 0), transformers' `DeepseekV32Indexer` exactly:
    q^I = wq_b c_Q -> [T, Hi, Di],  k^I = LayerNorm(wk x) -> [S, Di] (one key head, weight + bias, eps 1e-6),
    RoPE (rotate-half, never interleaved, same frequencies and YaRN cos/sin scale as MLA) on the first r dims of both,
    I(t, s) = sum_j w(t, j) ReLU(q^I(t, j) . k^I(s) Di^-1/2),  w = weights_proj(x) Hi^-1/2   (float32 scoring),
    causal mask (-inf), top-min(index_topk, S) keys per query; every other key gets -inf in MLA (both forms).
No Hadamard rotation or FP8 (transformers skips both: the rotation preserves dot products). The indexer keys are
cached per token (LatentCache.index_k, index_head_dim values, counted under "latent"). Training: with
index_loss_coef > 0 the indexer learns from V3.2's sparse-stage KL loss (ops/index_loss.py) on a detached input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import at_least_one, fail
from ...core.norms import RMSNorm
from ...core.rope import apply_rope, yarn_inv_freq
from ...ops.index_loss import index_kl_loss
from ...registry import register_mixer
from ..cache import nbytes
from ..context import ForwardContext


@dataclass
class MLAConfig:
    """Multi-head Latent Attention (DeepSeek-V2/V3): low-rank query and KV compression with decoupled RoPE.

    Per token and layer the cache holds the normalised KV latent (kv_lora_rank values) and one roped key head
    shared by all heads (qk_rope_head_dim values). rope_scaling="yarn" rescales the rotary frequencies (YaRN)
    and the softmax scale (mscale), as transformers' deepseek_v3 does; 0.0 in yarn_mscale / yarn_mscale_all_dim
    stands for a field absent from the HF rope parameters."""

    num_heads: int
    kv_lora_rank: int = 512
    q_lora_rank: int | None = 1536  # None: one full-rank query projection (DeepSeek-V2-Lite)
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    rope_theta: float = 10_000.0
    use_rope: bool = True  # False: the q_rope / k_R dims get no rotation (Kimi Linear's MLA layers are NoPE)
    rope_interleaved: bool = True  # rotary pairs (x0, x1), (x2, x3), ... as DeepSeek's weights are laid out
    rope_scaling: Literal["yarn"] | None = None
    yarn_factor: float = 1.0
    yarn_original_max_position: int = 4096
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_mscale: float = 0.0
    yarn_mscale_all_dim: float = 0.0
    latent_norm_eps: float = 1e-6  # the q / kv latent RMSNorms (1e-6 in DeepSeek's and transformers' code)
    # DeepSeek Sparse Attention (V3.2) lightning indexer: index_n_heads 0 = no indexer (dense MLA).
    index_n_heads: int = 0
    index_head_dim: int = 128
    index_topk: int = 2048
    index_loss_coef: float = 0.0  # > 0: train the indexer with its KL loss (a training knob, not in checkpoints)
    kind: Literal["mla"] = "mla"

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "num_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        if self.q_lora_rank is not None and self.q_lora_rank < 1:
            fail(f"{where}.q_lora_rank", self.q_lora_rank, "must be >= 1 or None (no query compression)")
        if self.qk_rope_head_dim % 2:
            fail(f"{where}.qk_rope_head_dim", self.qk_rope_head_dim, "must be even (rotary pairs)")
        if self.rope_scaling not in (None, "yarn"):
            fail(f"{where}.rope_scaling", self.rope_scaling, "must be None or 'yarn'")
        if self.rope_scaling == "yarn":
            for name in ("yarn_factor", "yarn_original_max_position", "yarn_beta_fast", "yarn_beta_slow"):
                if getattr(self, name) <= 0:
                    fail(f"{where}.{name}", getattr(self, name), "must be > 0")
            for name in ("yarn_mscale", "yarn_mscale_all_dim"):
                if getattr(self, name) < 0:
                    fail(f"{where}.{name}", getattr(self, name), "must be >= 0 (0 = absent)")
        if not self.use_rope and self.index_n_heads:
            fail(f"{where}.use_rope", self.use_rope, "must be True with the V3.2 indexer (its keys are roped)")
        if self.latent_norm_eps <= 0:
            fail(f"{where}.latent_norm_eps", self.latent_norm_eps, "must be > 0")
        if self.index_n_heads < 0:
            fail(f"{where}.index_n_heads", self.index_n_heads, "must be >= 0 (0 = no indexer)")
        if self.index_n_heads:
            if self.q_lora_rank is None:
                fail(f"{where}.q_lora_rank", None, "must be set when index_n_heads > 0 (the indexer query reads c_Q)")
            if self.index_head_dim < self.qk_rope_head_dim:
                fail(f"{where}.index_head_dim", self.index_head_dim,
                      f"must be >= qk_rope_head_dim ({self.qk_rope_head_dim}): RoPE goes on its first dims")
            if self.index_topk < 1:
                fail(f"{where}.index_topk", self.index_topk, "must be >= 1")
        if self.index_loss_coef < 0:
            fail(f"{where}.index_loss_coef", self.index_loss_coef, "must be >= 0 (0 = the indexer is not trained)")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def has_indexer(self) -> bool:
        return self.index_n_heads > 0

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            return f"MLA {self.num_heads}q, latent {self.kv_lora_rank}+{self.qk_rope_head_dim}"
        q = f"q_lora {self.q_lora_rank}" if self.q_lora_rank else "full-rank q"
        rope = "no rope" if not self.use_rope else f"rope {self.qk_rope_head_dim}" + (f", yarn x{self.yarn_factor:g}" if self.rope_scaling == "yarn" else "")
        return (f"MLA {self.num_heads}q x {self.qk_nope_head_dim}+{self.qk_rope_head_dim}/{self.v_head_dim} ({q}, "
                f"kv_lora {self.kv_lora_rank}, {rope}; cache {self.kv_lora_rank + self.qk_rope_head_dim}/token)")


@dataclass
class LatentCache:
    """Multi-head Latent Attention cache: the normalised KV latent c_kv [B, S, kv_lora_rank] and the roped key
    shared by all heads k_rope [B, S, qk_rope_head_dim], for absolute positions 0 .. S-1. No per-head keys or
    values are stored: they are re-expanded from the latent (prefill) or never formed (absorbed decode)."""

    c_kv: torch.Tensor | None = None
    k_rope: torch.Tensor | None = None
    index_k: torch.Tensor | None = None  # DeepSeek-V3.2 indexer keys [B, S, index_head_dim] (None: no indexer)
    kind = "latent"  # not a field: the label memory_by_kind groups by

    def append(self, c_new: torch.Tensor, k_rope_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.c_kv is not None:
            c_new, k_rope_new = torch.cat((self.c_kv, c_new), dim=1), torch.cat((self.k_rope, k_rope_new), dim=1)
        self.c_kv, self.k_rope = c_new, k_rope_new
        return c_new, k_rope_new

    def append_index(self, k_new: torch.Tensor) -> torch.Tensor:
        if self.index_k is not None:
            k_new = torch.cat((self.index_k, k_new), dim=1)
        self.index_k = k_new
        return k_new

    def memory_bytes(self) -> int:
        return nbytes(self.c_kv, self.k_rope, self.index_k)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_inv_freq(c: MLAConfig) -> tuple[torch.Tensor, float, float]:
    """-> (inverse frequencies [r/2] in float32, cos/sin scale, softmax scale), same arithmetic as transformers."""
    dim, base = c.qk_rope_head_dim, c.rope_theta
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim)
    scale = c.qk_head_dim ** -0.5
    if c.rope_scaling is None:
        return 1.0 / pos_freqs, 1.0, scale
    f = c.yarn_factor
    if c.yarn_mscale and c.yarn_mscale_all_dim:
        attention_factor = yarn_mscale(f, c.yarn_mscale) / yarn_mscale(f, c.yarn_mscale_all_dim)
    else:
        attention_factor = yarn_mscale(f)
    if c.yarn_mscale_all_dim:
        scale = scale * yarn_mscale(f, c.yarn_mscale_all_dim) ** 2

    inv_freq = yarn_inv_freq(dim, base, f, c.yarn_original_max_position, c.yarn_beta_fast, c.yarn_beta_slow)
    return inv_freq, attention_factor, scale


@register_mixer("mla", MLAConfig)
class MLA(nn.Module):
    cache_kind = LatentCache.kind

    def __init__(self, cfg: MLAConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = False):
        super().__init__()
        self.cfg, self.d_model = cfg, d_model
        H, R, r, v = cfg.num_heads, cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.v_head_dim
        q_out = H * cfg.qk_head_dim
        if cfg.q_lora_rank is None:
            self.q_proj = nn.Linear(d_model, q_out, bias=False)
            self.q_a_proj = self.q_a_layernorm = self.q_b_proj = None
        else:
            self.q_proj = None
            self.q_a_proj = nn.Linear(d_model, cfg.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.latent_norm_eps, zero_centered)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, q_out, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d_model, R + r, bias=False)
        self.kv_a_layernorm = RMSNorm(R, cfg.latent_norm_eps, zero_centered)
        self.kv_b_proj = nn.Linear(R, H * (cfg.qk_nope_head_dim + v), bias=False)
        self.o_proj = nn.Linear(H * v, d_model, bias=False)
        # Not a buffer: model.to(bf16) would round the frequencies. Float32, computed on the CPU, moved on use.
        self._inv_freq, self.rope_scale, self.scale = rope_inv_freq(cfg)
        self.absorb = "auto"  # "auto": absorbed for single-token steps, expanded otherwise; "always" | "never"
        self.indexer = Indexer(cfg, d_model) if cfg.has_indexer else None
        self.aux_loss: torch.Tensor | None = None  # the indexer's KL loss after a training forward

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        for lin in (self.q_proj, self.q_a_proj, self.q_b_proj, self.kv_a_proj_with_mqa, self.kv_b_proj):
            if lin is not None:
                nn.init.normal_(lin.weight, std=std)
        nn.init.normal_(self.o_proj.weight, std=out_std)
        for norm in (self.q_a_layernorm, self.kv_a_layernorm):
            if norm is not None:
                norm.init_weights()
        if self.indexer is not None:
            for lin in (self.indexer.wq_b, self.indexer.wk, self.indexer.weights_proj):
                nn.init.normal_(lin.weight, std=std)
            self.indexer.k_norm.reset_parameters()

    def new_cache(self) -> LatentCache:
        return LatentCache()

    def describe(self) -> str:
        return self.cfg.describe()

    # -- rotary ------------------------------------------------------------------------------------------
    def _rope(self, x_BTHr: torch.Tensor, pos0: int, interleaved: bool | None = None) -> torch.Tensor:
        T = x_BTHr.shape[1]
        positions = torch.arange(pos0, pos0 + T, device=x_BTHr.device, dtype=torch.float32)
        if self._inv_freq.device != x_BTHr.device:
            self._inv_freq = self._inv_freq.to(x_BTHr.device)
        angles = positions[:, None] * self._inv_freq[None, :]  # [T, r/2], float32
        angles = torch.cat((angles, angles), dim=-1)
        cos = (angles.cos() * self.rope_scale).to(x_BTHr.dtype)
        sin = (angles.sin() * self.rope_scale).to(x_BTHr.dtype)
        if self.cfg.rope_interleaved if interleaved is None else interleaved:  # pairs (x0, x1), (x2, x3), ... -> halves: then it is rotate-half RoPE
            x_BTHr = torch.cat((x_BTHr[..., 0::2], x_BTHr[..., 1::2]), dim=-1)
        return apply_rope(x_BTHr, cos, sin)

    # -- forward -----------------------------------------------------------------------------------------
    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: LatentCache | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        c = self.cfg
        B, T, _ = x_BTD.shape
        H, R, n, r, v = c.num_heads, c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        if self.q_proj is not None:
            q = self.q_proj(x_BTD)
        else:
            c_q_BTQ = self.q_a_layernorm(self.q_a_proj(x_BTD))
            q = self.q_b_proj(c_q_BTQ)
        q_nope_BTHn, q_rope_BTHr = q.view(B, T, H, n + r).split([n, r], dim=-1)
        c_kv_BTR, k_rope_BTr = self.kv_a_proj_with_mqa(x_BTD).split([R, r], dim=-1)
        c_kv_BTR = self.kv_a_layernorm(c_kv_BTR)
        if c.use_rope:  # without it the shared key k_R is still cached, only unrotated
            q_rope_BTHr = self._rope(q_rope_BTHr, pos0)
            k_rope_BTr = self._rope(k_rope_BTr[:, :, None], pos0)[:, :, 0]
        if cache is not None:
            c_kv_BSR, k_rope_BSr = cache.append(c_kv_BTR, k_rope_BTr)  # keys at positions 0 .. S-1
        else:
            c_kv_BSR, k_rope_BSr = c_kv_BTR, k_rope_BTr  # keys at positions pos0 .. pos0+T-1
        S = c_kv_BSR.shape[1]
        if S == T:
            mask, causal = None, T > 1  # keys are exactly the new tokens
        elif T == 1:
            mask, causal = None, False  # one query sees every cached key
        else:  # a chunk after a cached prefix: query t sits at key position S - T + t
            mask = torch.arange(S, device=x_BTD.device)[None, :] <= torch.arange(S - T, S, device=x_BTD.device)[:, None]
            causal = False
        self.aux_loss = index_BTS = None
        train_index = self.indexer is not None and c.index_loss_coef > 0 and self.training and torch.is_grad_enabled()
        if self.indexer is not None:  # sparse: causal AND among the query's top-k indexer keys; [B, 1, T, S]
            with torch.set_grad_enabled(train_index):  # detached input: only the KL loss trains the indexer
                index_BTS = self.index_scores(x_BTD.detach(), c_q_BTQ.detach(), pos0, cache)
            mask = self.index_select(index_BTS)[:, None]
            causal = False
        absorbed = self.absorb == "always" or (self.absorb == "auto" and T == 1)
        if absorbed:
            w_HXR = self.kv_b_proj.weight.view(H, n + v, R)
            w_uk_HnR, w_uv_HvR = w_HXR[:, :n], w_HXR[:, n:]
            q_lat_BHTR = torch.einsum("bthn,hnr->bhtr", q_nope_BTHn, w_uk_HnR)
            q_BHTX = torch.cat((q_lat_BHTR, q_rope_BTHr.transpose(1, 2)), dim=-1)  # [B, H, T, R + r]
            k_B1SX = torch.cat((c_kv_BSR, k_rope_BSr), dim=-1)[:, None]  # one key head: [latent | rope]
            o_BHTR = F.scaled_dot_product_attention(q_BHTX, k_B1SX, c_kv_BSR[:, None], attn_mask=mask,
                                                    is_causal=causal, scale=self.scale, enable_gqa=H > 1)
            o_BTHv = torch.einsum("bhtr,hvr->bthv", o_BHTR, w_uv_HvR)
        else:
            kv_BSHX = self.kv_b_proj(c_kv_BSR).view(B, S, H, n + v)
            k_nope_BSHn, v_BSHv = kv_BSHX.split([n, v], dim=-1)
            k_BSHX = torch.cat((k_nope_BSHn, k_rope_BSr[:, :, None].expand(B, S, H, r)), dim=-1)
            q_BTHX = torch.cat((q_nope_BTHn, q_rope_BTHr), dim=-1)
            o_BHTv = F.scaled_dot_product_attention(q_BTHX.transpose(1, 2), k_BSHX.transpose(1, 2),
                                                    v_BSHv.transpose(1, 2), attn_mask=mask, is_causal=causal,
                                                    scale=self.scale)
            o_BTHv = o_BHTv.transpose(1, 2)
            if train_index:  # the KL target: the attention weights SDPA does not return, recomputed without grad
                with torch.no_grad():
                    s_BHTS = torch.einsum("bthx,bshx->bhts", q_BTHX.float(), k_BSHX.float()) * self.scale
                    target_BTS = s_BHTS.masked_fill(~mask, float("-inf")).softmax(-1).sum(1)
                self.aux_loss = c.index_loss_coef * index_kl_loss(index_BTS, target_BTS, mask[:, 0])
        return self.o_proj(o_BTHv.reshape(B, T, H * v))

    def index_scores(self, x_BTD: torch.Tensor, c_q_BTQ: torch.Tensor, pos0: int,
                     cache: LatentCache | None = None) -> torch.Tensor:
        """Lightning-indexer scores I [B, T, S] (float32) of each new query against every key so far; appends the
        new indexer keys to the cache."""
        ix = self.indexer
        B, T, _ = x_BTD.shape
        Hi, Di, r = ix.n_heads, ix.head_dim, self.cfg.qk_rope_head_dim
        q_BTHD = ix.wq_b(c_q_BTQ).view(B, T, Hi, Di)
        q_rot, q_pass = q_BTHD.split([r, Di - r], dim=-1)
        k_BTD = ix.k_norm(ix.wk(x_BTD))
        k_rot, k_pass = k_BTD.split([r, Di - r], dim=-1)
        q_BTHD = torch.cat((self._rope(q_rot, pos0, interleaved=False), q_pass), dim=-1)
        k_BTD = torch.cat((self._rope(k_rot[:, :, None], pos0, interleaved=False)[:, :, 0], k_pass), dim=-1)
        k_BSD = cache.append_index(k_BTD) if cache is not None else k_BTD
        scores_BTHS = F.relu(torch.matmul(q_BTHD.float(), k_BSD.transpose(-1, -2).float().unsqueeze(1)) * ix.softmax_scale)
        w_BTH = ix.weights_proj(x_BTD.to(ix.weights_proj.weight.dtype)).float() * Hi ** -0.5
        return torch.matmul(w_BTH.unsqueeze(-2), scores_BTHS).squeeze(-2)

    @torch.no_grad()
    def index_select(self, index_BTS: torch.Tensor) -> torch.Tensor:
        """-> bool [B, T, S]: True where key s is causal for query t and among its top-k indexer scores."""
        T, S = index_BTS.shape[-2:]
        device = index_BTS.device
        causal_TS = torch.arange(S, device=device)[None, :] <= torch.arange(S - T, S, device=device)[:, None]
        index_BTS = index_BTS.masked_fill(~causal_TS, float("-inf"))
        top_BTK = index_BTS.topk(min(self.cfg.index_topk, S), dim=-1).indices
        selected = torch.zeros_like(index_BTS, dtype=torch.bool).scatter(-1, top_BTK, True)
        return selected & causal_TS

    # -- accounting (docs/cost.md): matmul FLOPs at 2 per multiply-add; norms, RoPE, softmax not counted -----
    def num_params(self, d_model: int | None = None) -> int:
        c, D = self.cfg, self.d_model
        H, R, r = c.num_heads, c.kv_lora_rank, c.qk_rope_head_dim
        q_out = H * c.qk_head_dim
        q = D * q_out if c.q_lora_rank is None else D * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * q_out
        n = q + D * (R + r) + R + R * H * (c.qk_nope_head_dim + c.v_head_dim) + H * c.v_head_dim * D
        if c.has_indexer:  # wq_b, wk, k_norm (weight + bias), weights_proj
            Hi, Di = c.index_n_heads, c.index_head_dim
            n += c.q_lora_rank * Hi * Di + D * Di + 2 * Di + D * Hi
        return n

    def _proj_flops(self) -> int:
        c = self.cfg
        norms = c.kv_lora_rank + (c.q_lora_rank or 0) + (2 * c.index_head_dim if c.has_indexer else 0)
        return 2 * (self.num_params() - norms)

    def keys_seen(self, position: int) -> int:
        """Keys the query at 1-based `position` attends to (itself included): all of them, or with the indexer at
        most index_topk of them."""
        return min(position, self.cfg.index_topk) if self.cfg.has_indexer else position

    def mean_keys(self, context: int) -> float:
        if not self.cfg.has_indexer or context <= self.cfg.index_topk:
            return (context + 1) / 2
        k = self.cfg.index_topk
        return (k * (k + 1) / 2 + (context - k) * k) / context

    def _index_flops_per_key(self) -> int:
        """Indexer scoring per (query, causal key): Hi Di for q^I . k^I and Hi for the head-weighted sum."""
        c = self.cfg
        return 2 * c.index_n_heads * (c.index_head_dim + 1) if c.has_indexer else 0

    def flops_per_token(self, context: int, causal_skip: bool = True) -> float:
        """Prefill (expanded form) FLOPs per token over a causal pass of `context` tokens: every projection once
        per token (kv_b_proj expands each token's latent once), then per key QK^T over n + r dims and PV over v
        dims per head. causal_skip=False counts every query against all `context` keys (a dense masked kernel)."""
        c = self.cfg
        keys = self.mean_keys(context) if causal_skip else context
        index_keys = (context + 1) / 2 if causal_skip else context  # the indexer scores every causal key
        return (self._proj_flops() + 2 * c.num_heads * (c.qk_head_dim + c.v_head_dim) * keys
                + self._index_flops_per_key() * index_keys)

    def decode_flops(self, context: int) -> int:
        """One absorbed decode step whose query is token number `context`: the projections of the new token,
        W_uk folded into the query and W_uv after the sum (together H R (n + v) multiply-adds: kv_b_proj's size,
        so the projection count is the prefill one), then per key the latent scores over R + r dims and the
        latent weighted sum over R dims per head."""
        c = self.cfg
        R, r = c.kv_lora_rank, c.qk_rope_head_dim
        return (self._proj_flops() + 2 * c.num_heads * (2 * R + r) * self.keys_seen(context)
                + self._index_flops_per_key() * context)

    def cache_tokens(self, context: int) -> int:
        return context

    def cache_bytes(self, context: int, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = None) -> int:
        """c_KV [B, S, R] and k_R [B, S, r], S = context (+ the indexer keys [B, S, index_head_dim]).
        state_bytes: unused (no state)."""
        c = self.cfg
        per_token = c.kv_lora_rank + c.qk_rope_head_dim + (c.index_head_dim if c.has_indexer else 0)
        return batch * self.cache_tokens(context) * per_token * dtype_bytes


class Indexer(nn.Module):
    """DeepSeek-V3.2 lightning indexer parameters (transformers' `DeepseekV32Indexer` names and shapes); the
    scoring lives in MLA.index_scores / index_select."""

    def __init__(self, cfg: MLAConfig, d_model: int):
        super().__init__()
        self.n_heads, self.head_dim = cfg.index_n_heads, cfg.index_head_dim
        self.wq_b = nn.Linear(cfg.q_lora_rank, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(d_model, self.head_dim, bias=False)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.weights_proj = nn.Linear(d_model, self.n_heads, bias=False)
        self.softmax_scale = self.head_dim ** -0.5
