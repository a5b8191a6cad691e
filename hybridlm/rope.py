"""Rotary position embedding, full or partial (rotate-half layout on the first `rope_dim` dims of a head)."""

from __future__ import annotations

import torch


def rope_cos_sin(positions: torch.Tensor, rope_dim: int, theta: float, dtype: torch.dtype):
    """positions [T] (int) -> cos, sin [T, rope_dim], computed in float32 then cast."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, device=positions.device, dtype=torch.float32) / rope_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]  # [T, rope_dim/2]
    angles = torch.cat((angles, angles), dim=-1)  # [T, rope_dim]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x_BTHd: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of every head; the rest pass through (partial RoPE)."""
    rd = cos.shape[-1]
    rot, rest = x_BTHd[..., :rd], x_BTHd[..., rd:]
    half = rd // 2
    rotated_half = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # broadcast over B and H
    out = rot * cos + rotated_half * sin
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out
