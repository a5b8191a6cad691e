"""Kimi Delta Attention (KDA), the linear mixer of Kimi Linear.

  q,k,v = silu(causal depthwise conv_K(W_q x | W_k x | W_v x))   separate short convs, one depthwise call
  q,k   = l2norm(q), l2norm(k)                                    x / sqrt(sum x^2 + 1e-6), as transformers / fla
  g     = -exp(A_log) * softplus(f_b(f_a(x)) + dt_bias)           one log decay per key channel [H, dk], no floor
  beta  = sigmoid(b_proj(x))                                      one per head
  o     = gated_delta_rule(q, k, v, g, beta)                      S <- (I - beta k k^T) diag(exp(g)) S + beta k v^T
  y     = o_proj(RMSNorm_head(o) * sigmoid(g_b(g_a(x))))          the low ranks of f and g are the head dim

Shapes: B batch, T tokens, H heads, dk head dim (keys and values alike), C conv channels (3 H dk), K conv kernel.
The kind's config (`KDAConfig`) and module (`KDA`); its cache is layers/cache.py's `RecurrentState` (the conv window
and the float32 state [B, H, dk, dk]). The op (recurrent, chunked with sub-blocks, one step) lives in
hybridlm/ops/gated_delta_rule.py. Reference: transformers 5.23 `KimiLinearDeltaAttention`; parity tested through the
whole model in tests/families/test_kimi_linear.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import at_least_one
from ...core.norms import GatedRMSNorm
from ...ops.gated_delta_rule import gated_delta_rule, gated_delta_rule_step, inverse_unit_lower_flops
from ...registry import register_mixer
from ..cache import RecurrentState
from ..context import ForwardContext
from .gated_deltanet import l2norm
from .mamba import causal_conv, init_conv, inverse_softplus_dt


@dataclass
class KDAConfig:
    """Kimi Delta Attention: num_heads heads of head_dim keys and values, per-channel forget gate."""

    num_heads: int
    head_dim: int = 128
    conv_kernel: int = 4
    chunk_size: int = 64
    kind: Literal["kda"] = "kda"

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "num_heads", "head_dim", "conv_kernel", "chunk_size")

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            return "Kimi Delta Attention"
        return f"kda {self.num_heads} heads x {self.head_dim}, per-channel decay, conv {self.conv_kernel}"


@register_mixer("kda", KDAConfig)
class KDA(nn.Module):
    cache_kind = RecurrentState.kind

    def __init__(self, cfg: KDAConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = False):
        super().__init__()
        self.cfg = cfg
        H, dk = cfg.num_heads, cfg.head_dim
        self.dim = H * dk
        self.q_proj = nn.Linear(d_model, self.dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.dim, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(3 * self.dim, cfg.conv_kernel))  # q | k | v, depthwise, no bias
        self.f_a_proj = nn.Linear(d_model, dk, bias=False)  # forget gate, low rank dk
        self.f_b_proj = nn.Linear(dk, self.dim, bias=False)
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(self.dim))
        self.b_proj = nn.Linear(d_model, H, bias=False)
        self.g_a_proj = nn.Linear(d_model, dk, bias=False)  # output gate, low rank dk
        self.g_b_proj = nn.Linear(dk, self.dim, bias=False)
        self.o_norm = GatedRMSNorm(dk, norm_eps, activation="sigmoid")
        self.o_proj = nn.Linear(self.dim, d_model, bias=False)
        self.aux_loss: torch.Tensor | None = None  # no training loss of its own (the Mixer protocol's field)

    def init_weights(self, std: float, out_std: float) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.f_a_proj, self.f_b_proj, self.b_proj, self.g_a_proj,
                    self.g_b_proj):
            nn.init.normal_(lin.weight, std=std)
        nn.init.normal_(self.o_proj.weight, std=out_std)
        init_conv(self.conv_weight, None)
        # fla's KDA layer (as transformers' Kimi Linear init): A ~ U(1, 16) per head; softplus(dt_bias) log-uniform
        # in [1e-3, 0.1] per channel, so the initial decays exp(-A dt) lie between ~0.2 and ~1 per token.
        with torch.no_grad():
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1.0, 16.0).log())
            self.dt_bias.copy_(inverse_softplus_dt(self.dt_bias.numel(), 1e-3, 0.1, 1e-4))
        self.o_norm.init_weights()

    def new_cache(self) -> RecurrentState:
        return RecurrentState()

    def describe(self) -> str:
        return self.cfg.describe()

    def num_params(self) -> int:
        D, H, dk = self.q_proj.in_features, self.cfg.num_heads, self.cfg.head_dim
        proj = 3 * D * self.dim + 2 * (D * dk + dk * self.dim) + D * H + self.dim * D
        return proj + 3 * self.dim * self.cfg.conv_kernel + H + self.dim + dk

    # -- accounting (docs/cost.md): FLOPs count matmuls at 2 per multiply-add; elementwise ops are not counted --
    # These counts equal what torch's FlopCounterMode sees, prefill and decode (tests/families/test_kimi_linear.py).
    def _proj_flops(self) -> int:
        """The projections (q, k, v, the two low-rank gates, beta, out) and the depthwise conv."""
        D, H, dk = self.q_proj.in_features, self.cfg.num_heads, self.cfg.head_dim
        return 2 * (3 * D * self.dim + 2 * (D * dk + dk * self.dim) + D * H + self.dim * D) \
            + 2 * 3 * self.dim * self.cfg.conv_kernel

    def flops_per_token(self, context: int = 0, causal_skip: bool = True) -> float:
        """Prefill FLOPs per token of the chunked form (chunk C, sub-blocks s = gcd(C, 16)), independent of context.
        Per head and token: the diagonal sub-blocks' q and k rows against k_j exp(c_i - c_j) (4 s dk), the
        off-diagonal rows against the earlier columns (4 dk (C - s)^2 / C), the unit-lower inverse's merges, W and U
        (2 C dk + 2 C dv), the intra-chunk (Q K^T * D) u (2 C dv) and the three products with the state (6 dk dv).
        causal_skip: no effect (no mask to skip)."""
        C, d = self.cfg.chunk_size, self.cfg.head_dim
        s = math.gcd(C, 16)
        per_head = 4 * s * d + 4 * d * (C - s) ** 2 / C + inverse_unit_lower_flops(C) + 6 * C * d + 6 * d * d
        return self._proj_flops() + self.cfg.num_heads * per_head

    def decode_flops(self, context: int = 0) -> int:
        """One decode step, independent of context: per head the one-step form reads S^T k and S^T q in one
        product (4 dk dv); the state's decay and rank-1 write are elementwise."""
        return self._proj_flops() + self.cfg.num_heads * 4 * self.cfg.head_dim ** 2

    def cache_bytes(self, context: int = 0, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = 4) -> int:
        """Conv window [B, 3 H dk, K-1] in the model/cache dtype plus the state [B, H, dk, dk] (float32 in this
        implementation: state_bytes=4, whatever the model dtype). Constant in context."""
        c = self.cfg
        state_bytes = dtype_bytes if state_bytes is None else state_bytes
        conv = batch * 3 * self.dim * (c.conv_kernel - 1) * dtype_bytes
        return conv + batch * c.num_heads * c.head_dim * c.head_dim * state_bytes

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: RecurrentState | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        c = self.cfg
        B, T, _ = x_BTD.shape
        shape = (B, T, c.num_heads, c.head_dim)
        qkv = torch.cat((self.q_proj(x_BTD), self.k_proj(x_BTD), self.v_proj(x_BTD)), dim=-1)  # [B, T, C]
        qkv = causal_conv(qkv.transpose(1, 2), self.conv_weight, None, cache).transpose(1, 2)
        q, k, v = qkv.split(self.dim, dim=-1)
        q, k = l2norm(q.reshape(shape).float()), l2norm(k.reshape(shape).float())  # [B, T, H, dk]
        v = v.reshape(shape).float()
        # softplus is the identity above 20, as in transformers (F.softplus's threshold), so the gate never overflows
        f = self.f_b_proj(self.f_a_proj(x_BTD)).float() + self.dt_bias.float()  # [B, T, H dk]
        g = -self.A_log.float().exp()[:, None] * F.softplus(f, threshold=20.0).view(shape)  # [B, T, H, dk], <= 0
        beta = torch.sigmoid(self.b_proj(x_BTD).float())  # [B, T, H]
        state = cache.state if cache is not None else None
        if cache is not None and T == 1 and state is not None:
            o, state = gated_delta_rule_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0], state)
            o = o[:, None]
        else:
            o, state = gated_delta_rule(q, k, v, g, beta, initial_state=state, chunk_size=c.chunk_size)
        if cache is not None:
            cache.state = state.detach()
        gate = self.g_b_proj(self.g_a_proj(x_BTD)).view(shape)
        o = self.o_norm(o.to(x_BTD.dtype), gate)  # [B, T, H, dk]
        return self.o_proj(o.reshape(B, T, self.dim))
