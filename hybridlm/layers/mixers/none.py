"""The empty mixer: a layer with no token mixer at all, written "-" in a mixer pattern.

Nemotron-H's layers each hold one sublayer (Mamba-2, attention, or an MLP): its MLP-only layers are a block whose
mixer is this kind. The block then has no mixer norm and no residual add for the mixer; the kind has no parameters,
no FLOPs and no cache (`new_cache()` is None, `cache_kind` None, so cache accounting leaves it out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...registry import register_mixer


@dataclass
class NoMixerConfig:
    """No token mixer in this layer (pattern letter "-")."""

    kind: Literal["none"] = "none"

    def validate(self, where: str, d_model: int) -> None:
        pass

    def describe(self, brief: bool = False) -> str:
        return "none"


@register_mixer("none", NoMixerConfig)
class NoMixer(nn.Module):
    identity = True  # the Block skips this sublayer and builds no norm for it
    cache_kind = None

    def __init__(self, cfg: NoMixerConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = True):
        super().__init__()
        self.cfg = cfg
        self.aux_loss: torch.Tensor | None = None

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache=None, ctx=None) -> torch.Tensor:
        return torch.zeros_like(x_BTD)

    def init_weights(self, std: float, out_std: float) -> None:
        pass

    def new_cache(self) -> None:
        return None

    def num_params(self) -> int:
        return 0

    def flops_per_token(self, context: int = 0, causal_skip: bool = True) -> float:
        return 0

    def decode_flops(self, context: int = 0) -> int:
        return 0

    def cache_bytes(self, context: int = 0, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = None) -> int:
        return 0

    def describe(self) -> str:
        return self.cfg.describe()
