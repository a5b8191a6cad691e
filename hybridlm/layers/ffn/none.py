"""The empty FFN: a layer with no feed-forward, written "-" in an FFN pattern (Nemotron-H's Mamba-2 and attention
layers). The block then has no FFN norm and no residual add for it; no parameters, no FLOPs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...registry import register_ffn


@dataclass
class NoFFNConfig:
    """No feed-forward in this layer (pattern letter "-")."""

    kind: Literal["none"] = "none"

    def validate(self, where: str, d_model: int) -> None:
        pass

    def describe(self) -> str:
        return "none"


@register_ffn("none", NoFFNConfig)
class NoFFN(nn.Module):
    identity = True  # the Block skips this sublayer and builds no norm for it

    def __init__(self, cfg: NoFFNConfig, d_model: int, vocab_size: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.aux_loss: torch.Tensor | None = None

    def forward(self, x_BTD: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros_like(x_BTD)

    def init_weights(self, std: float) -> None:
        pass

    def num_params(self) -> int:
        return 0

    def active_params(self) -> int:
        return 0

    def flops_per_token(self) -> int:
        return 0

    def describe(self) -> str:
        return self.cfg.describe()
