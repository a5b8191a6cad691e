"""Dense feed-forward: the kind's config (`DenseFFNConfig`) and module (`DenseFFN`), plus `SwiGLU`, which the MoE
reuses as its shared expert. Two activations:

    swiglu (default):  y = down(silu(gate(x)) * up(x))       gate, up [I, D], down [D, I]
    relu2:             y = down(relu(up(x))^2)               up [I, D], down [D, I]   (no gate; Nemotron-H's MLP)

Shapes: B batch, T tokens, D model dim, I intermediate width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.config import fail
from ...registry import register_ffn

ACTIVATIONS = ("swiglu", "relu2")


@dataclass
class DenseFFNConfig:
    """Dense feed-forward: SwiGLU down(silu(gate(x)) * up(x)), or relu2 down(relu(up(x))^2) (non-gated)."""

    intermediate_size: int
    activation: Literal["swiglu", "relu2"] = "swiglu"
    kind: Literal["dense"] = "dense"

    def validate(self, where: str, d_model: int) -> None:
        if self.intermediate_size < 1:
            fail(f"{where}.intermediate_size", self.intermediate_size, "must be >= 1")
        if self.activation not in ACTIVATIONS:
            fail(f"{where}.activation", self.activation, f"must be one of {ACTIVATIONS}")

    @property
    def gated(self) -> bool:
        return self.activation == "swiglu"

    def describe(self) -> str:
        """What `hybridlm info` shows for this FFN."""
        return f"{self.activation} {self.intermediate_size}"


def swiglu(gate: Tensor, up: Tensor, limit: float = 0.0) -> Tensor:
    """silu(gate) * up; limit > 0 clamps first: gate <= limit, up in [-limit, limit] (DeepSeek-V4)."""
    if limit > 0:
        gate, up = gate.clamp(max=limit), up.clamp(min=-limit, max=limit)
    return F.silu(gate) * up


def relu2(up: Tensor) -> Tensor:
    """relu(up)^2 (squared ReLU, Primer / Nemotron)."""
    return F.relu(up).square()


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); also the MoE's shared expert."""

    def __init__(self, d_model: int, intermediate_size: int, limit: float = 0.0):
        super().__init__()
        self.d_model, self.intermediate_size, self.limit = d_model, intermediate_size, limit
        self.gate_proj = nn.Linear(d_model, intermediate_size, bias=False)
        self.up_proj = nn.Linear(d_model, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, d_model, bias=False)

    def forward(self, x_BTD: Tensor, token_ids: Tensor | None = None) -> Tensor:
        return self.down_proj(swiglu(self.gate_proj(x_BTD), self.up_proj(x_BTD), self.limit))

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        for lin in (self.gate_proj, self.up_proj, self.down_proj):
            nn.init.normal_(lin.weight, 0.0, std)

    def num_params(self) -> int:
        return 3 * self.d_model * self.intermediate_size

    def active_params(self) -> int:
        return self.num_params()

    def flops_per_token(self) -> int:
        return 2 * self.active_params()  # every weight is one multiply-add per token


@register_ffn("dense", DenseFFNConfig)
class DenseFFN(SwiGLU):
    """A dense FFN with the MoE's interface (`aux_loss` is always None): SwiGLU, or with activation "relu2" the
    non-gated up -> relu^2 -> down MLP (no gate_proj)."""

    def __init__(self, cfg: DenseFFNConfig, d_model: int, vocab_size: int | None = None):
        super().__init__(d_model, cfg.intermediate_size)
        self.cfg = cfg
        if not cfg.gated:
            del self.gate_proj
            self.gate_proj = None
        self.aux_loss: Tensor | None = None

    def forward(self, x_BTD: Tensor, token_ids: Tensor | None = None) -> Tensor:
        if self.gate_proj is None:
            return self.down_proj(relu2(self.up_proj(x_BTD)))
        return super().forward(x_BTD, token_ids)

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        for lin in (self.gate_proj, self.up_proj, self.down_proj):
            if lin is not None:
                nn.init.normal_(lin.weight, 0.0, std)

    def num_params(self) -> int:
        return (3 if self.gate_proj is not None else 2) * self.d_model * self.intermediate_size

    def describe(self) -> str:
        return self.cfg.describe()
