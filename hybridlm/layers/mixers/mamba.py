"""Mamba-1 token mixer (selective SSM), as in Mamba and Jamba; and `causal_conv`, the conv both Mamba mixers use.

  [x | z] = in_proj(x)                           rows x | z, each E = expand * D
  u       = silu(causal depthwise conv_K(x) + conv_bias)
  [dt | B | C] = x_proj(u)                       R = dt_rank, N = d_state
  (Jamba, inner_norms) dt, B, C = RMSNorm(dt), RMSNorm(B), RMSNorm(C)   weights init at 1, not zero-centred
  delta   = softplus(dt_proj.weight @ dt + dt_proj.bias)                 the bias goes in before the softplus
  y       = selective_scan(u, delta, A = -exp(A_log), B, C, D)           h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t
  out     = out_proj(y * silu(z))
  (memory_out = name) y, after the D skip and before the z gate, is also left in the forward context under that
  name: SambaY's memory, read by the Gated Memory Units of its cross-decoder (layers/mixers/gmu.py)

Shapes: Bt batch, T tokens, D d_model, E d_inner, R dt_rank, N d_state, K conv kernel, C conv channels.
The kind's config (`MambaConfig`) and module (`Mamba`); its cache is layers/cache.py's `RecurrentState` (the last K-1
pre-conv inputs and the fp32 state). The op (recurrent reference, chunked, one-step) lives in hybridlm/ops/selective_scan.py.
Reference: transformers `MambaMixer` and `JambaMambaMixer`, and mambapy's `MambaBlock`; parity in
tests/test_mamba_mixers.py.
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
from ...ops.causal_conv import causal_depthwise_conv
from ...ops.selective_scan import selective_scan
from ...registry import register_mixer
from ..cache import RecurrentState
from ..context import ForwardContext


@dataclass
class MambaConfig:
    """Mamba-1 (selective scan); inner_norms=True is Jamba's variant (RMSNorm on dt, B and C)."""

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # None: ceil(d_model / 16), as Mamba's "auto"
    conv_bias: bool = True
    proj_bias: bool = False  # bias on in_proj and out_proj
    inner_norms: bool = False
    chunk_size: int = 64
    dt_min: float = 0.001  # init only: dt ~ log-uniform in [dt_min, dt_max], floored at dt_init_floor
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    memory_out: str | None = None  # leave y [B, T, E] (before the z gate) in the forward context under this name
    kind: Literal["mamba"] = "mamba"

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "d_state", "d_conv", "expand", "chunk_size")
        if self.dt_rank is not None and self.dt_rank < 1:
            fail(f"{where}.dt_rank", self.dt_rank, "must be >= 1 (or None: ceil(d_model / 16))")
        check_dt_range(self, where, "dt_min", "dt_max", "dt_init_floor")
        if self.memory_out is not None and (not isinstance(self.memory_out, str) or not self.memory_out):
            fail(f"{where}.memory_out", self.memory_out, "must be a non-empty name or None")

    def context_io(self, d_model: int) -> tuple[dict, dict]:
        """(writes, reads) in the forward context (ModelConfig checks every reader against its writer)."""
        return ({self.memory_out: ("memory", self.expand * d_model)} if self.memory_out else {}), {}

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        tap = f" -> memory {self.memory_out!r}" if self.memory_out else ""
        if brief:
            return ("Mamba (Jamba)" if self.inner_norms else "Mamba") + tap
        rank = "auto" if self.dt_rank is None else self.dt_rank
        norms = ", RMSNorm on dt/B/C" if self.inner_norms else ""
        return f"mamba x{self.expand}, state {self.d_state}, conv {self.d_conv}, dt rank {rank}{norms}{tap}"


def check_dt_range(cfg, where: str, lo: str, hi: str, floor: str) -> None:
    """The time-step init range: 0 < lo <= hi, floor >= 0."""
    if not getattr(cfg, lo) > 0:
        fail(f"{where}.{lo}", getattr(cfg, lo), "must be > 0")
    if not getattr(cfg, hi) >= getattr(cfg, lo):
        fail(f"{where}.{hi}", getattr(cfg, hi), f"must be >= {lo}={getattr(cfg, lo)} (the range is inverted)")
    if not getattr(cfg, floor) >= 0:
        fail(f"{where}.{floor}", getattr(cfg, floor), "must be >= 0")


def causal_conv(x_BCT: torch.Tensor, weight_CK: torch.Tensor, bias_C: torch.Tensor | None,
                cache: RecurrentState | None, keep_graph: bool = False) -> torch.Tensor:
    """silu(causal depthwise conv + bias) over time. The window is left-padded with the cached K-1 pre-conv inputs
    (zeros at the start), so one conv call yields exactly T outputs, prefill and decode alike; the cache then holds
    the last K-1 inputs (detached, unless keep_graph: a forward that feeds one sequence in pieces and trains through
    them, as Titans' MAC does segment by segment)."""
    K = weight_CK.shape[-1]
    Bt, C = x_BCT.shape[:2]
    past = cache.conv.to(x_BCT.dtype) if cache is not None and cache.conv is not None else None  # None: zeros
    if cache is not None:
        window = torch.cat((x_BCT.new_zeros(Bt, C, K - 1) if past is None else past, x_BCT), dim=-1)
        window = window[..., window.shape[-1] - (K - 1):]
        cache.conv = window if keep_graph else window.detach().clone()
    return F.silu(causal_depthwise_conv(x_BCT, weight_CK, past, bias_C))  # [Bt, C, T]


def init_conv(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """nn.Conv1d's default for a depthwise kernel (fan-in K), as the Mamba references keep."""
    bound = 1.0 / math.sqrt(weight.shape[-1])
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


def inverse_softplus_dt(n: int, dt_min: float, dt_max: float, floor: float) -> torch.Tensor:
    """A dt bias whose softplus is dt ~ log-uniform in [dt_min, dt_max], floored (Mamba's dt init)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus^-1(dt)


@register_mixer("mamba", MambaConfig)
class Mamba(nn.Module):
    cache_kind = RecurrentState.kind

    def __init__(self, cfg: MambaConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = True):
        super().__init__()
        self.cfg = cfg
        E, N, K = cfg.expand * d_model, cfg.d_state, cfg.d_conv
        self.d_inner = E
        self.dt_rank = R = cfg.dt_rank if cfg.dt_rank is not None else math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * E, bias=cfg.proj_bias)  # rows x | z
        self.conv_weight = nn.Parameter(torch.empty(E, K))  # depthwise: HF's conv1d.weight [E, 1, K] squeezed
        self.conv_bias = nn.Parameter(torch.empty(E)) if cfg.conv_bias else None
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)  # rows dt | B | C
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.empty(E, N))
        self.D = nn.Parameter(torch.empty(E))
        self.out_proj = nn.Linear(E, d_model, bias=cfg.proj_bias)
        # Jamba's inner norms are plain RMSNorms (weight init 1) whatever the model's zero_centered says
        norms = (RMSNorm(R, norm_eps), RMSNorm(N, norm_eps), RMSNorm(N, norm_eps)) if cfg.inner_norms else (None,) * 3
        self.dt_norm, self.b_norm, self.c_norm = norms
        self.aux_loss: torch.Tensor | None = None  # no training loss of its own (the Mixer protocol's field)

    def init_weights(self, std: float, out_std: float) -> None:
        """Mamba's init: dt_proj.weight ~ U(+-R^-1/2), dt_proj.bias = softplus^-1 of a log-uniform dt, A = 1..N
        per channel (S4D-real), D = 1; the conv keeps nn.Conv1d's default; projections normal(std / out_std)."""
        c = self.cfg
        nn.init.normal_(self.in_proj.weight, std=std)
        nn.init.normal_(self.x_proj.weight, std=std)
        nn.init.normal_(self.out_proj.weight, std=out_std)
        for lin in (self.in_proj, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        init_conv(self.conv_weight, self.conv_bias)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        with torch.no_grad():
            E, N = self.A_log.shape
            self.dt_proj.bias.copy_(inverse_softplus_dt(E, c.dt_min, c.dt_max, c.dt_init_floor))
            self.A_log.copy_(torch.arange(1, N + 1, dtype=torch.float32).log().expand(E, N))
        nn.init.ones_(self.D)
        for norm in (self.dt_norm, self.b_norm, self.c_norm):
            if norm is not None:
                norm.init_weights()

    def new_cache(self) -> RecurrentState:
        return RecurrentState()

    def describe(self) -> str:
        return self.cfg.describe()

    def num_params(self) -> int:
        c = self.cfg
        D, E, R, N, K = self.in_proj.in_features, self.d_inner, self.dt_rank, c.d_state, c.d_conv
        bias = (2 * E + D) if c.proj_bias else 0
        norms = R + 2 * N if c.inner_norms else 0
        conv = E * K + (E if c.conv_bias else 0)
        return 3 * D * E + bias + conv + E * (R + 2 * N) + R * E + E + E * N + E + norms

    # -- accounting (docs/cost.md): FLOPs count matmuls at 2 per multiply-add; elementwise ops are not counted --
    # The selective scan's state update (decay exp(delta A) * h and the write delta u B^T, combined by the chunked
    # form's in-chunk scan) is elementwise per state entry: not counted. Its one matmul is the readout y = h C.
    # So these counts equal what torch's FlopCounterMode sees, prefill and decode (tests/test_mamba_mixers.py).
    def _token_flops(self) -> int:
        """in_proj, x_proj, dt_proj, out_proj, the depthwise conv (one multiply-add per channel and tap) and the
        readout h C (E N per token)."""
        D, E, R, N = self.in_proj.in_features, self.d_inner, self.dt_rank, self.cfg.d_state
        return 2 * (2 * D * E + E * (R + 2 * N) + R * E + E * D) + 2 * E * self.cfg.d_conv + 2 * E * N

    def flops_per_token(self, context: int = 0, causal_skip: bool = True) -> float:
        """Prefill FLOPs per token, independent of context (the chunked scan's work is per token).
        causal_skip: no effect (no mask to skip)."""
        return self._token_flops()

    def decode_flops(self, context: int = 0) -> int:
        """One decode step (the one-token step op), independent of context: the same matmuls as a prefill token."""
        return self._token_flops()

    def cache_bytes(self, context: int = 0, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = 4) -> int:
        """Conv window [Bt, E, K-1] in the model/cache dtype plus the state [Bt, E, N] (float32 in this
        implementation: state_bytes=4). Constant in context."""
        c = self.cfg
        state_bytes = dtype_bytes if state_bytes is None else state_bytes
        conv = batch * self.d_inner * (c.d_conv - 1) * dtype_bytes
        return conv + batch * self.d_inner * c.d_state * state_bytes

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: RecurrentState | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        c = self.cfg
        R, N = self.dt_rank, c.d_state
        x, z = self.in_proj(x_BTD).chunk(2, dim=-1)  # [Bt, T, E] each
        u = causal_conv(x.transpose(1, 2), self.conv_weight, self.conv_bias, cache).transpose(1, 2)  # [Bt, T, E]
        dt, B, C = self.x_proj(u).split([R, N, N], dim=-1)  # [Bt, T, R], [Bt, T, N], [Bt, T, N]
        if c.inner_norms:
            dt, B, C = self.dt_norm(dt), self.b_norm(B), self.c_norm(C)
        # the bias is added in fp32 before the softplus (as the Mamba kernels' delta_bias)
        delta = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float())  # [Bt, T, E]
        A = -torch.exp(self.A_log.float())  # [E, N]
        state = cache.state if cache is not None else None
        y, state = selective_scan(u, delta, A, B, C, self.D, initial_state=state, chunk_size=c.chunk_size)
        if cache is not None:
            cache.state = state.detach()
        if c.memory_out is not None:
            if ctx is None:
                raise ValueError(f"Mamba with memory_out={c.memory_out!r} needs the forward context (run it in a model)")
            ctx.put(c.memory_out, y)  # [Bt, T, E]: the scan output after the D skip, before the gate
        y = (y.float() * F.silu(z.float())).to(x_BTD.dtype)  # [Bt, T, E]
        return self.out_proj(y)
