"""RMSNorm variants used across the families.

- `RMSNorm(zero_centered=False)`: x_hat * w, w initialised to 1 (Llama, DeepSeek).
- `RMSNorm(zero_centered=True)`: x_hat * (1 + w), w initialised to 0 (Qwen3-Next / Qwen3.5), so weight
  decay pulls the scale toward 1 rather than 0.
- `GatedRMSNorm`: per-head norm of the Gated DeltaNet output, then * silu(z) (norm before gate); with
  activation="sigmoid", Kimi Delta Attention's output norm.
- `LayerNorm`: (x - mean) / std * w + b, w at 1, b at 0 (Phi-4-mini-flash / SambaY's block and final norms).
- `build_norm`: the model's block / final norm from ModelConfig.norm ("rmsnorm" or "layernorm").

All normalise in float32 and cast back, as the reference implementations do, so parity holds in bf16 too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, zero_centered: bool = False, weight: bool = True):
        super().__init__()
        self.eps, self.zero_centered = eps, zero_centered
        self.weight = nn.Parameter(torch.empty(dim)) if weight else None

    def init_weights(self) -> None:
        if self.weight is not None:
            nn.init.constant_(self.weight, 0.0 if self.zero_centered else 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rms_normalize(x, self.eps)
        if self.weight is None:
            return y.type_as(x)
        if self.zero_centered:
            return (y * (1.0 + self.weight.float())).type_as(x)
        return self.weight * y.type_as(x)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, zero_centered={self.zero_centered}"


class LayerNorm(nn.Module):
    """LayerNorm with a weight and a bias, normalised in float32 like the RMSNorms here."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim))

    def init_weights(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), (x.shape[-1],), self.weight.float(), self.bias.float(), self.eps)
        return y.type_as(x)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def build_norm(kind: str, dim: int, eps: float, zero_centered: bool) -> nn.Module:
    """The block / final norm a ModelConfig names: "rmsnorm" (zero-centred or not) or "layernorm"."""
    if kind == "layernorm":
        return LayerNorm(dim, eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps, zero_centered)
    raise ValueError(f"norm={kind!r}: must be 'rmsnorm' or 'layernorm'")


def norm_params(kind: str, dim: int) -> int:
    """Parameters of build_norm(kind, dim): a weight, plus a bias for LayerNorm."""
    return 2 * dim if kind == "layernorm" else dim


class GatedRMSNorm(nn.Module):
    """y = w * rmsnorm(x) * act(gate), over the last dim (one value head); act silu (Gated DeltaNet) or sigmoid
    (Kimi Delta Attention)."""

    def __init__(self, dim: int, eps: float = 1e-6, activation: str = "silu"):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.act = {"silu": F.silu, "sigmoid": torch.sigmoid}[activation]

    def init_weights(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        y = self.weight * rms_normalize(x, self.eps).type_as(x)
        return (y * self.act(gate.float())).type_as(x)
