"""Mamba-2 token mixer (SSD), as in Mamba-2, Nemotron-H, Falcon-H1 and Granite 4.0.

  [z | xBC | dt] = in_proj(x)                   rows z (E) | x (E) | B (G N) | C (G N) | dt (H)
  [x | B | C] = silu(causal depthwise conv_K(xBC) + conv_bias)
  dt  = clamp(softplus(dt + dt_bias), *time_step_limit)
  y   = ssd(x, dt, A = -exp(A_log), B, C, D)    per head: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t
  y   = RMSNorm_group(y * silu(z))               gate before the norm, one norm per group of E / G channels
        (norm_before_gate: RMSNorm_group(y) * silu(z); gated_norm=False: y * silu(z), no norm)
  out = out_proj(y)

Shapes: Bt batch, T tokens, D d_model, H heads, P head_dim, E = H P, G n_groups, N d_state, K conv kernel,
C conv channels (E + 2 G N). The kind's config (`Mamba2Config`) and module (`Mamba2`); the cache is mamba.py's
`RecurrentState` (conv [Bt, C, K-1] pre-conv inputs, state [Bt, H, P, N] fp32). The op lives in hybridlm/ops/ssd.py.
Reference: transformers `Mamba2Mixer` (MambaRMSNormGated with group size E / G); parity in tests/test_mamba_mixers.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import at_least_one, fail
from ...core.norms import rms_normalize
from ...ops.ssd import ssd
from ...registry import register_mixer
from ..cache import RecurrentState
from ..context import ForwardContext
from .mamba import causal_conv, check_dt_range, init_conv, inverse_softplus_dt


@dataclass
class Mamba2Config:
    """Mamba-2 (SSD): scalar decay per head, B and C shared by n_groups groups of heads, gated grouped RMSNorm."""

    num_heads: int
    head_dim: int = 64
    d_state: int = 128
    n_groups: int = 1
    conv_kernel: int = 4
    chunk_size: int = 64
    conv_bias: bool = True
    proj_bias: bool = False  # bias on in_proj and out_proj
    time_step_limit: tuple[float, float] = (0.0, math.inf)  # dt clamp after the softplus; JSON: a 2-list
    time_step_min: float = 0.001  # init only: dt ~ log-uniform in [min, max], floored
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4
    norm_before_gate: bool = False  # False: norm(y * silu(z)) (transformers' Mamba2 / Nemotron-H / Granite)
    gated_norm: bool = True  # False: y * silu(z) with no norm (Falcon-H1's mamba_rms_norm=False)
    kind: Literal["mamba2"] = "mamba2"

    def __post_init__(self) -> None:
        if isinstance(self.time_step_limit, list):  # what JSON gives back
            self.time_step_limit = tuple(self.time_step_limit)

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "num_heads", "head_dim", "d_state", "n_groups", "conv_kernel", "chunk_size")
        if self.num_heads % self.n_groups:
            fail(f"{where}.num_heads", self.num_heads, f"must be a multiple of n_groups={self.n_groups}")
        lim = self.time_step_limit
        if not (isinstance(lim, tuple) and len(lim) == 2 and all(isinstance(v, (int, float)) for v in lim)):
            shown = list(lim) if isinstance(lim, tuple) else lim  # as JSON wrote it
            fail(f"{where}.time_step_limit", shown, "must be two numbers [low, high]")
        if not 0 <= lim[0] <= lim[1]:
            fail(f"{where}.time_step_limit", list(lim), "must have 0 <= low <= high (the limits are inverted)")
        check_dt_range(self, where, "time_step_min", "time_step_max", "time_step_floor")

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            return "Mamba-2"
        norm = "" if not self.gated_norm else ", norm before gate" if self.norm_before_gate else ", gated norm"
        return (f"mamba2 {self.num_heads} heads x {self.head_dim}, state {self.d_state}, {self.n_groups} groups, "
                f"conv {self.conv_kernel}{norm}")


class GroupGatedRMSNorm(nn.Module):
    """RMSNorm over each group of E / G channels with a silu(z) gate, before the norm (transformers'
    MambaRMSNormGated) or after it (norm_before_gate). Weight init 1 (not zero-centred)."""

    def __init__(self, dim: int, groups: int, eps: float, norm_before_gate: bool = False):
        super().__init__()
        self.groups, self.eps, self.norm_before_gate = groups, eps, norm_before_gate
        self.weight = nn.Parameter(torch.empty(dim))

    def init_weights(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y32, gate = y.float(), F.silu(z.float())
        if not self.norm_before_gate:
            y32 = y32 * gate
        *lead, E = y32.shape
        y32 = rms_normalize(y32.view(*lead, self.groups, E // self.groups), self.eps).view(*lead, E)
        out = self.weight * y32.type_as(y)
        return (out.float() * gate).type_as(y) if self.norm_before_gate else out

    def extra_repr(self) -> str:
        return f"groups={self.groups}, eps={self.eps}, norm_before_gate={self.norm_before_gate}"


@register_mixer("mamba2", Mamba2Config)
class Mamba2(nn.Module):
    cache_kind = RecurrentState.kind

    def __init__(self, cfg: Mamba2Config, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = True):
        super().__init__()
        self.cfg = cfg
        H, P, G, N = cfg.num_heads, cfg.head_dim, cfg.n_groups, cfg.d_state
        self.d_inner = E = H * P
        self.conv_dim = E + 2 * G * N
        self.splits = [E, self.conv_dim, H]  # z | xBC | dt
        self.in_proj = nn.Linear(d_model, sum(self.splits), bias=cfg.proj_bias)
        self.conv_weight = nn.Parameter(torch.empty(self.conv_dim, cfg.conv_kernel))  # HF's conv1d.weight [C, 1, K]
        self.conv_bias = nn.Parameter(torch.empty(self.conv_dim)) if cfg.conv_bias else None
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm = GroupGatedRMSNorm(E, G, norm_eps, cfg.norm_before_gate) if cfg.gated_norm else None
        self.out_proj = nn.Linear(E, d_model, bias=cfg.proj_bias)
        self.aux_loss: torch.Tensor | None = None  # no training loss of its own (the Mixer protocol's field)

    def init_weights(self, std: float, out_std: float) -> None:
        """Mamba-2's init: dt_bias = softplus^-1 of a log-uniform dt, A ~ U(1, 16), D = 1; the conv keeps
        nn.Conv1d's default; projections normal(std / out_std)."""
        c = self.cfg
        nn.init.normal_(self.in_proj.weight, std=std)
        nn.init.normal_(self.out_proj.weight, std=out_std)
        for lin in (self.in_proj, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        init_conv(self.conv_weight, self.conv_bias)
        with torch.no_grad():
            H = c.num_heads
            self.dt_bias.copy_(inverse_softplus_dt(H, c.time_step_min, c.time_step_max, c.time_step_floor))
            self.A_log.copy_(torch.empty(H).uniform_(1.0, 16.0).log())
        nn.init.ones_(self.D)
        if self.norm is not None:
            self.norm.init_weights()

    def new_cache(self) -> RecurrentState:
        return RecurrentState()

    def describe(self) -> str:
        return self.cfg.describe()

    def num_params(self) -> int:
        c = self.cfg
        D, E, H = self.in_proj.in_features, self.d_inner, c.num_heads
        bias = (sum(self.splits) + D) if c.proj_bias else 0
        conv = self.conv_dim * c.conv_kernel + (self.conv_dim if c.conv_bias else 0)
        return D * sum(self.splits) + E * D + bias + conv + 3 * H + (E if c.gated_norm else 0)

    # -- accounting (docs/cost.md): FLOPs count matmuls at 2 per multiply-add; elementwise ops are not counted --
    # These counts equal what torch's FlopCounterMode sees, prefill and decode (tests/test_mamba_mixers.py).
    def _proj_flops(self) -> int:
        """in_proj + out_proj and the depthwise conv (one multiply-add per channel and tap)."""
        D = self.in_proj.in_features
        return 2 * D * (sum(self.splits) + self.d_inner) + 2 * self.conv_dim * self.cfg.conv_kernel

    def flops_per_token(self, context: int = 0, causal_skip: bool = True) -> float:
        """Prefill FLOPs per token of the chunked SSD form (ops/ssd.py) over `context` tokens, which runs on
        ceil(context / C) whole chunks of C = chunk_size (the last one zero-padded). Per chunk: C B^T per group
        (2 G C^2 N), the masked intra-chunk product tril(C B^T) x (2 H C^2 P), the chunk-state write B^T x and the
        state read C S (2 H P N C each). The decays and the mask are elementwise. Not counted: the op's fallback
        for a (chunk, head) whose decay passes e^-60 (one more C x C product, data-dependent and rare).
        causal_skip: no effect (the intra-chunk form is dense, masked afterwards)."""
        c = self.cfg
        H, P, G, N, C = c.num_heads, c.head_dim, c.n_groups, c.d_state, c.chunk_size
        L = max(context, 1)
        per_chunk = 2 * G * C * C * N + 2 * H * C * C * P + 4 * H * P * N * C
        return self._proj_flops() + math.ceil(L / C) * per_chunk / L

    def decode_flops(self, context: int = 0) -> int:
        """One decode step (the one-token step op), independent of context: the projections and conv and the
        readout h C (2 H P N); the state update (decay and rank-1 write dt x B^T) is elementwise, not counted."""
        c = self.cfg
        return self._proj_flops() + 2 * c.num_heads * c.head_dim * c.d_state

    def cache_bytes(self, context: int = 0, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = 4) -> int:
        """Conv window [Bt, E + 2 G N, K-1] in the model/cache dtype plus the state [Bt, H, P, N] (float32 in
        this implementation: state_bytes=4). Constant in context."""
        c = self.cfg
        state_bytes = dtype_bytes if state_bytes is None else state_bytes
        conv = batch * self.conv_dim * (c.conv_kernel - 1) * dtype_bytes
        return conv + batch * c.num_heads * c.head_dim * c.d_state * state_bytes

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: RecurrentState | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        c = self.cfg
        Bt, T, _ = x_BTD.shape
        H, P, G, N, E = c.num_heads, c.head_dim, c.n_groups, c.d_state, self.d_inner
        z, xBC, dt = self.in_proj(x_BTD).split(self.splits, dim=-1)  # [Bt, T, E], [Bt, T, C], [Bt, T, H]
        xBC = causal_conv(xBC.transpose(1, 2), self.conv_weight, self.conv_bias, cache).transpose(1, 2)
        x, B, C = xBC.split([E, G * N, G * N], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float()).clamp(*c.time_step_limit)  # [Bt, T, H]
        A = -torch.exp(self.A_log.float())  # [H]
        state = cache.state if cache is not None else None
        y, state = ssd(x.reshape(Bt, T, H, P), dt, A, B.reshape(Bt, T, G, N), C.reshape(Bt, T, G, N), self.D,
                       initial_state=state, chunk_size=c.chunk_size)
        if cache is not None:
            cache.state = state.detach()
        y = y.reshape(Bt, T, E)
        y = self.norm(y, z) if self.norm is not None else (y.float() * F.silu(z.float())).to(y.dtype)
        return self.out_proj(y)
