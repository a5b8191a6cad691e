"""Gated Memory Unit (SambaY, Ren et al. 2025, arXiv 2507.06607, eq. for the GMU): a cross-decoder layer that mixes
no tokens itself but gates a memory an earlier layer left in the forward context.

  y = W_out( silu(W_in x) * m )          W_in: D -> E, W_out: E -> D, no bias (Phi-4-mini-flash: mamba_proj_bias)

m [B, T, E] is what a Mamba layer with `memory_out` saved (its scan output after the D skip, before its own z gate;
E = expand * d_model), read here per position. The layer keeps no cache: a decode step's memory comes from that
Mamba layer's step in the same forward, so cached decode sees what a full forward sees, and a YOCO prefill may run
it for the last position alone (it then reads the memory's last positions). Reference: the structure of Microsoft's
ArchScale `gated_memory_unit.py` and the published Phi-4-mini-flash modelling file; tested against a hand
computation in tests/families/test_sambay.py (no port runs on CPU).

Shapes: B batch, T positions computed, D d_model, E memory width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import at_least_one, fail
from ...registry import register_mixer
from ..context import ForwardContext


@dataclass
class GMUConfig:
    """A Gated Memory Unit reading the memory `memory` (width expand * d_model) from the forward context."""

    memory: str = "memory"
    expand: int = 2  # the memory's width over d_model (the writing Mamba layer's expand)
    bias: bool = False
    kind: Literal["gmu"] = "gmu"

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "expand")
        if not isinstance(self.memory, str) or not self.memory:
            fail(f"{where}.memory", self.memory, "must name the memory a Mamba layer's memory_out writes")

    def context_io(self, d_model: int) -> tuple[dict, dict]:
        """(writes, reads) in the forward context: it reads the memory, at the width its writer declares."""
        return {}, {self.memory: ("memory", self.expand * d_model)}

    def describe(self, brief: bool = False) -> str:
        return f"GMU <- {self.memory!r}" if brief else f"gated memory unit x{self.expand} <- memory {self.memory!r}"


@register_mixer("gmu", GMUConfig)
class GMU(nn.Module):
    cache_kind = None  # keeps nothing between steps (so it may sit in the YOCO-skipped suffix)

    def __init__(self, cfg: GMUConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = True):
        super().__init__()
        self.cfg = cfg
        E = cfg.expand * d_model
        self.in_proj = nn.Linear(d_model, E, bias=cfg.bias)
        self.out_proj = nn.Linear(E, d_model, bias=cfg.bias)
        self.aux_loss: torch.Tensor | None = None

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.in_proj.weight, std=std)
        nn.init.normal_(self.out_proj.weight, std=out_std)
        for lin in (self.in_proj, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def new_cache(self) -> None:
        return None

    def describe(self) -> str:
        return self.cfg.describe()

    def num_params(self) -> int:
        D, E = self.in_proj.in_features, self.in_proj.out_features
        return 2 * D * E + ((E + D) if self.cfg.bias else 0)

    # -- accounting (docs/cost.md): the two projections; the gate is elementwise --------------------------------
    def flops_per_token(self, context: int = 0, causal_skip: bool = True) -> float:
        return 4 * self.in_proj.in_features * self.in_proj.out_features

    def decode_flops(self, context: int = 0) -> int:
        return 4 * self.in_proj.in_features * self.in_proj.out_features

    def cache_bytes(self, context: int = 0, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = None) -> int:
        return 0

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache=None, ctx: ForwardContext | None = None
                ) -> torch.Tensor:
        if ctx is None:
            raise ValueError(f"GMU reads memory {self.cfg.memory!r} from the forward context: run it in a model")
        m = ctx.get(self.cfg.memory)  # [B, T_all, E]; a YOCO prefill computes only the last T of those positions
        T, E = x_BTD.shape[1], self.in_proj.out_features
        if m.shape[-1] != E or m.shape[1] < T:
            raise ValueError(f"GMU: memory {self.cfg.memory!r} has shape {tuple(m.shape)}, needs [B, >= {T}, {E}]")
        m = m[:, m.shape[1] - T:].to(x_BTD.dtype)
        return self.out_proj(F.silu(self.in_proj(x_BTD)) * m)
