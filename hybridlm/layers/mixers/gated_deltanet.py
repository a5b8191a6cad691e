"""Gated DeltaNet token mixer, as in Qwen3-Next / Qwen3.5.

  [q|k|v|z|b|a] = in_proj(x)                 one fused projection (HF's in_proj_qkvz/ba or in_proj_qkv/z/b/a)
  q,k,v = silu(causal depthwise conv_K(q|k|v))
  q,k   = l2norm(q), l2norm(k)                 (q is scaled by dk^-1/2 inside the op)
  beta  = sigmoid(b);  g = -exp(A_log) * softplus(a + dt_bias)
  o     = gated_delta_rule(q, k, v, g, beta)   grouped value heads: Hv a multiple of Hk
  y     = out_proj(RMSNorm_head(o) * silu(z))

Shapes: B batch, T tokens, C conv channels (2*Hk*dk + Hv*dv), K conv kernel, Hk qk heads, Hv value heads.
The kind's config (`GatedDeltaNetConfig`) and module (`GatedDeltaNet`); its cache is layers/cache.py's `RecurrentState`.
The op itself (recurrent reference, chunked, one-step) lives in hybridlm/ops/gated_delta_rule.py.
Reference: transformers `Qwen3NextGatedDeltaNet`; parity tested through the whole model in tests/families/test_qwen.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import at_least_one, fail
from ...core.norms import GatedRMSNorm
from ...ops.causal_conv import causal_depthwise_conv
from ...ops.gated_delta_rule import gated_delta_rule, gated_delta_rule_step
from ...registry import register_mixer
from ..cache import RecurrentState
from ..context import ForwardContext
from .mamba import inverse_softplus_dt


@dataclass
class GatedDeltaNetConfig:
    """Gated DeltaNet (Qwen3-Next / Qwen3.5): grouped value heads share num_qk_heads query/key heads."""

    num_qk_heads: int
    num_v_heads: int
    head_k_dim: int = 128
    head_v_dim: int = 128
    conv_kernel: int = 4
    chunk_size: int = 64
    kind: Literal["gated_deltanet"] = "gated_deltanet"

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "num_qk_heads", "num_v_heads", "head_k_dim", "head_v_dim", "conv_kernel",
                      "chunk_size")
        if self.num_v_heads % self.num_qk_heads:
            fail(f"{where}.num_v_heads", self.num_v_heads, f"must be a multiple of num_qk_heads={self.num_qk_heads}")

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            return "Gated DeltaNet"
        return (f"gated deltanet {self.num_qk_heads}qk/{self.num_v_heads}v x {self.head_k_dim}/{self.head_v_dim}, "
                f"conv {self.conv_kernel}")


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


@register_mixer("gated_deltanet", GatedDeltaNetConfig)
class GatedDeltaNet(nn.Module):
    cache_kind = RecurrentState.kind

    def __init__(self, cfg: GatedDeltaNetConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = True):
        super().__init__()
        self.cfg = cfg
        Hk, Hv, dk, dv = cfg.num_qk_heads, cfg.num_v_heads, cfg.head_k_dim, cfg.head_v_dim
        self.key_dim, self.value_dim = Hk * dk, Hv * dv
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.splits = [self.key_dim, self.key_dim, self.value_dim, self.value_dim, Hv, Hv]  # q k v z b a
        self.in_proj = nn.Linear(d_model, sum(self.splits), bias=False)
        self.conv_weight = nn.Parameter(torch.empty(self.conv_dim, cfg.conv_kernel))  # depthwise, no bias
        self.A_log = nn.Parameter(torch.empty(Hv))
        self.dt_bias = nn.Parameter(torch.empty(Hv))
        self.norm = GatedRMSNorm(dv, norm_eps)
        self.out_proj = nn.Linear(self.value_dim, d_model, bias=False)
        self.aux_loss: torch.Tensor | None = None  # no training loss of its own (the Mixer protocol's field)

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.in_proj.weight, std=std)
        nn.init.normal_(self.out_proj.weight, std=out_std)
        bound = 1.0 / math.sqrt(self.cfg.conv_kernel)  # nn.Conv1d's default fan-in bound for a depthwise kernel
        nn.init.uniform_(self.conv_weight, -bound, bound)
        # The Gated DeltaNet authors' layer (fla-org/flash-linear-attention, fla/layers/gated_deltanet.py): A ~ U(0, 16)
        # and Mamba-2's dt init, softplus(dt_bias) log-uniform in [1e-3, 0.1], so the decay exp(-A dt) starts
        # between ~0.2 and ~1 per token. transformers' Qwen3-Next init (A ~ U(1, 16), dt_bias = 1) starts every head
        # at a decay of at most e^-1.3 = 0.27 per token: with the few heads of a small model nothing is remembered past
        # a few tokens, and MQAR stayed at chance for 800 steps (measured on the recall twin of tiny-gdn).
        with torch.no_grad():
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(0.0, 16.0).clamp_min(1e-4).log())
            self.dt_bias.copy_(inverse_softplus_dt(self.dt_bias.numel(), 1e-3, 0.1, 1e-4))
        self.norm.init_weights()

    def new_cache(self) -> RecurrentState:
        return RecurrentState()

    def describe(self) -> str:
        return self.cfg.describe()

    def num_params(self) -> int:
        D = self.in_proj.in_features
        Hv, dv = self.cfg.num_v_heads, self.cfg.head_v_dim
        return D * sum(self.splits) + self.conv_dim * self.cfg.conv_kernel + 2 * Hv + dv + self.value_dim * D

    # -- accounting (docs/cost.md): FLOPs count matmuls at 2 per multiply-add; elementwise ops are not counted --
    def _proj_flops(self) -> int:
        """in_proj + out_proj matmuls and the depthwise conv (one multiply-add per channel and tap)."""
        D = self.in_proj.in_features
        return 2 * D * (sum(self.splits) + self.value_dim) + 2 * self.conv_dim * self.cfg.conv_kernel

    def flops_per_token(self, context: int = 0, causal_skip: bool = True) -> float:
        """Prefill FLOPs per token of the chunked (UT/WY) form with chunk C, independent of context. Per value
        head and token: Q K^T and K K^T (4 C dk, shared by the G value heads of a key head), W = T K (2 C dk),
        U = T V (2 C dv), the intra-chunk (Q K^T * D) U (2 C dv), the triangular inverse (~2 C^2 / 3), and the
        three products with the state, W S, K^T u and Q S (6 dk dv). causal_skip: no effect (no mask to skip)."""
        c = self.cfg
        C, dk, dv, G = c.chunk_size, c.head_k_dim, c.head_v_dim, c.num_v_heads // c.num_qk_heads
        per_head = 4 * C * dk / G + 2 * C * dk + 4 * C * dv + 2 * C * C / 3 + 6 * dk * dv
        return self._proj_flops() + c.num_v_heads * per_head

    def decode_flops(self, context: int = 0) -> int:
        """One decode step of the recurrent form, independent of context: per value head S^T k and S^T q read
        the state (4 dk dv) and the rank-1 write k delta^T adds 2 dk dv."""
        c = self.cfg
        return self._proj_flops() + c.num_v_heads * 6 * c.head_k_dim * c.head_v_dim

    def cache_bytes(self, context: int = 0, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = 4) -> int:
        """Conv window [B, conv_dim, K-1] in the model/cache dtype plus the state [B, Hv, dk, dv]; the state
        is float32 in this implementation (state_bytes=4), whatever the model dtype. Constant in context."""
        c = self.cfg
        state_bytes = dtype_bytes if state_bytes is None else state_bytes
        conv = batch * self.conv_dim * (c.conv_kernel - 1) * dtype_bytes
        return conv + batch * c.num_v_heads * c.head_k_dim * c.head_v_dim * state_bytes

    def _conv(self, x_BCT: torch.Tensor, cache: RecurrentState | None) -> torch.Tensor:
        """Causal depthwise conv + SiLU; carries the last K-1 inputs in the cache."""
        K = self.cfg.conv_kernel
        B, C, T = x_BCT.shape
        if cache is None:
            return F.silu(causal_depthwise_conv(x_BCT, self.conv_weight))
        cache_past = cache.conv  # None before the first call: zeros
        past = cache_past if cache_past is not None else x_BCT.new_zeros(B, C, K - 1)
        full = torch.cat((past, x_BCT), dim=-1)  # [B, C, K-1+T]
        cache.conv = full[..., -(K - 1):].detach().clone() if K > 1 else full[..., :0]
        if T == 1:  # decode: one dot product per channel, cheaper than the shifted sums
            return F.silu((full * self.conv_weight.to(x_BCT.dtype)).sum(-1, keepdim=True))
        return F.silu(causal_depthwise_conv(x_BCT, self.conv_weight, cache_past))

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: RecurrentState | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        c = self.cfg
        B, T, _ = x_BTD.shape
        Hk, Hv, dk, dv = c.num_qk_heads, c.num_v_heads, c.head_k_dim, c.head_v_dim
        q, k, v, z, b, a = self.in_proj(x_BTD).split(self.splits, dim=-1)
        qkv = self._conv(torch.cat((q, k, v), dim=-1).transpose(1, 2), cache).transpose(1, 2)  # [B, T, C]
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        q = l2norm(q.reshape(B, T, Hk, dk).float())
        k = l2norm(k.reshape(B, T, Hk, dk).float())
        v = v.reshape(B, T, Hv, dv)
        beta = torch.sigmoid(b.float())  # [B, T, Hv]
        g = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias.float())  # [B, T, Hv], log decay <= 0
        state = cache.state if cache is not None else None
        if cache is not None and T == 1 and state is not None:
            o, state = gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0].float(), g[:, 0], beta[:, 0], state)
            o = o[:, None]
        else:
            o, state = gated_delta_rule(q, k, v.float(), g, beta, initial_state=state, chunk_size=c.chunk_size)
        if cache is not None:
            cache.state = state.detach()
        o = self.norm(o.to(x_BTD.dtype), z.reshape(B, T, Hv, dv))  # [B, T, Hv, dv]
        return self.out_proj(o.reshape(B, T, self.value_dim))
