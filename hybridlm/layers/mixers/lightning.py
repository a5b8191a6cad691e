"""Lightning attention token mixer, as in MiniMax-01 (MiniMax-Text-01) and MiniMax-M1.

  q, k, v = silu(qkv_proj(x))                  one fused projection, rows per head [q | k | v]; no 1/sqrt(d) scale
  o       = lightning_attention(q, k, v, slope) S_t = exp(-slope_h) S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t
  y       = out_proj( sigmoid(output_gate(x)) * RMSNorm(o over all heads) )

The decay slope of head h (0-based) in layer l of L is ALiBi's slope times a depth factor, as MiniMax's code builds
it: slope_h = alibi(H)_h * (1 - l / (L - 1) + 1e-5) (L = 1: 1 + 1e-5), alibi(H)_h = 2^(-8 (h + 1) / H) for H a power
of 2; for other H the first P = 2^floor(log2 H) slopes of alibi(P), then every other slope of alibi(2P) (ALiBi's
interpolation). So the first layer forgets fastest and the last keeps almost everything. The mixer reads l and L
from the forward context (ctx.layer, ctx.num_layers), so one legend entry serves every layer.

Shapes: B batch, T tokens, D d_model, H heads, d head dim. The kind's config (`LightningConfig`) and module
(`Lightning`); its cache is layers/cache.py's `RecurrentState` (no conv window; state [B, H, d, d] in float32).
The op (recurrent reference, block form, one step) lives in hybridlm/ops/lightning_attention.py.
Reference: transformers `MiniMaxLightningAttention`; parity tested through the whole model in
tests/families/test_minimax.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...core.config import at_least_one, fail
from ...core.norms import RMSNorm
from ...ops.lightning_attention import lightning_attention_chunked, lightning_attention_step
from ...registry import register_mixer
from ..cache import RecurrentState
from ..context import ForwardContext


@dataclass
class LightningConfig:
    """Lightning attention (MiniMax-01 / M1): linear attention with a fixed per-head decay, block form."""

    num_heads: int
    head_dim: int = 128
    block_size: int = 256  # MiniMax's kernel block (config.json; the result does not depend on it). The CPU op
    # runs in tiles of min(block_size, CPU_BLOCK) tokens (see Lightning.block)
    norm_eps: float = 1e-6  # the output RMSNorm's eps (MiniMax: the RMSNorm default, not the model's rms_norm_eps)
    kind: Literal["lightning"] = "lightning"

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "num_heads", "head_dim", "block_size")
        if not self.norm_eps > 0:
            fail(f"{where}.norm_eps", self.norm_eps, "must be > 0")

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            return "lightning attention"
        return f"lightning attention {self.num_heads} x {self.head_dim}, block {self.block_size}"


def alibi_slopes(n: int) -> list[float]:
    """ALiBi's head slopes: 2^(-8 (h + 1) / n) for n a power of 2; otherwise those of the power of 2 below n, then
    every other slope of the power of 2 above it (Press et al. 2022, as MiniMax's code builds them)."""
    if n & (n - 1) == 0:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]
    p = 1 << (n.bit_length() - 1)
    return alibi_slopes(p) + alibi_slopes(2 * p)[0::2][: n - p]


def lightning_slopes(num_heads: int, layer: int, num_layers: int) -> torch.Tensor:
    """The decay slopes [H] (float32) of layer `layer` (0-based) of `num_layers`: alibi_slopes(H) scaled by MiniMax's
    depth factor 1 - layer / (num_layers - 1) + 1e-5 (1 + 1e-5 for a single layer)."""
    if not 0 <= layer < num_layers:
        raise ValueError(f"layer {layer} is outside [0, num_layers={num_layers})")
    factor = 1 + 1e-5 if num_layers <= 1 else 1 - layer / (num_layers - 1) + 1e-5
    return torch.tensor(alibi_slopes(num_heads), dtype=torch.float32) * factor


@register_mixer("lightning", LightningConfig)
class Lightning(nn.Module):
    cache_kind = RecurrentState.kind
    # The tile the CPU block form runs in. Blocks of 64 halve the intra-block work of MiniMax's 256 (4 d c per head
    # and token) for 2.6x the speed on 2 cores (benchmarks/lightning.py, docs/minimax.md); the outputs agree to
    # float32 rounding. OpenNLPLab's lightning_attn2 Triton kernel tiles by 64 too.
    CPU_BLOCK = 64

    def __init__(self, cfg: LightningConfig, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = False):
        super().__init__()
        self.cfg = cfg
        self.block = min(cfg.block_size, self.CPU_BLOCK)
        self.inner = cfg.num_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(d_model, 3 * self.inner, bias=False)  # per head: [q | k | v]
        self.output_gate = nn.Linear(d_model, self.inner, bias=False)
        self.norm = RMSNorm(self.inner, cfg.norm_eps, zero_centered)
        self.out_proj = nn.Linear(self.inner, d_model, bias=False)
        self.aux_loss: torch.Tensor | None = None  # no training loss of its own (the Mixer protocol's field)
        self._slopes: dict[tuple[int, int], torch.Tensor] = {}

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.qkv_proj.weight, std=std)
        nn.init.normal_(self.output_gate.weight, std=std)
        nn.init.normal_(self.out_proj.weight, std=out_std)
        self.norm.init_weights()

    def new_cache(self) -> RecurrentState:
        return RecurrentState()

    def describe(self) -> str:
        return self.cfg.describe()

    def num_params(self) -> int:
        D = self.qkv_proj.in_features
        return 5 * D * self.inner + self.inner  # qkv (3), gate, out; the norm's weight

    # -- accounting (docs/cost.md): FLOPs count matmuls at 2 per multiply-add; elementwise ops are not counted --
    def _proj_flops(self) -> int:
        return 2 * self.qkv_proj.in_features * 5 * self.inner

    def flops_per_token(self, context: int = 0, causal_skip: bool = True) -> float:
        """Prefill FLOPs per token of the block form over `context` tokens from an empty state (context 0: a long
        prompt's steady state). Per head and token: Q K^T and (. * D) V against every key of its block, masked ones
        included (2 (dk + dv) keys-per-query on average: C for a full block, r for a tail of r tokens), plus the
        block's Q S_prev and K^T V (4 d^2). causal_skip: no effect (the block is computed densely)."""
        c = self.cfg
        C, d = self.block, c.head_dim
        if context > 0:
            full, r = divmod(context, C)
            keys = (full * C * C + r * r) / context
        else:
            keys = C
        return self._proj_flops() + c.num_heads * (4 * d * keys + 4 * d * d)

    def decode_flops(self, context: int = 0) -> int:
        """One decode step, independent of context: per head the write k v^T and the read S^T q (4 d^2)."""
        c = self.cfg
        return self._proj_flops() + c.num_heads * 4 * c.head_dim * c.head_dim

    def cache_bytes(self, context: int = 0, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = 4) -> int:
        """The state [B, H, d, d], float32 in this implementation (state_bytes=4); no conv window. Constant in
        context."""
        c = self.cfg
        state_bytes = dtype_bytes if state_bytes is None else state_bytes
        return batch * c.num_heads * c.head_dim * c.head_dim * state_bytes

    def slopes(self, layer: int, num_layers: int, device: torch.device) -> torch.Tensor:
        key = (layer, num_layers)
        if key not in self._slopes:
            self._slopes[key] = lightning_slopes(self.cfg.num_heads, layer, num_layers)
        return self._slopes[key].to(device)

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: RecurrentState | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        c = self.cfg
        if ctx is None or ctx.layer < 0 or ctx.num_layers < 1:
            raise ValueError("lightning attention needs its layer index and the model's depth (ForwardContext.layer, "
                             ".num_layers) for its decay: run it in a model")
        slope = self.slopes(ctx.layer, ctx.num_layers, x_BTD.device)  # [H]
        B, T, _ = x_BTD.shape
        H, d = c.num_heads, c.head_dim
        qkv = F.silu(self.qkv_proj(x_BTD)).view(B, T, H, 3 * d)
        q, k, v = qkv.split(d, dim=-1)  # [B, T, H, d] each
        state = cache.state if cache is not None else None
        if state is not None and T == 1:
            o, state = lightning_attention_step(q[:, 0], k[:, 0], v[:, 0], state, slope=slope)
            o = o[:, None]
        else:
            o, state = lightning_attention_chunked(q, k, v, state, slope=slope, block_size=self.block)
        if cache is not None:
            cache.state = state.detach()
        o = self.norm(o.reshape(B, T, self.inner))  # [B, T, H d]
        return self.out_proj(torch.sigmoid(self.output_gate(x_BTD)) * o)

