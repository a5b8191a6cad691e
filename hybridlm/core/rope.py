"""Rotary position embedding, full or partial, on the first `rope_dim` dims of a head: the rotate-half layout
(Qwen, `apply_rope`) or the interleaved / complex layout that rotates adjacent pairs (Llama 4,
`apply_rope_interleaved`); optional "llama3" frequency scaling (`llama3_inv_freq`) and YaRN frequencies
(`yarn_inv_freq`, DeepSeek V3 / V4)."""

from __future__ import annotations

import math

import torch


def llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1 / Llama 4 context extension: wavelengths above original_max / low_freq_factor are stretched by
    `factor`, those below original_max / high_freq_factor kept, the band between interpolated (transformers'
    _compute_llama3_parameters, op for op, so the float32 values agree bit for bit)."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    # low == high (Llama 4 Scout) divides by zero here, but then no wavelength is in the band: where() drops it
    smooth = (old_len / wavelen - low) / (high - low) if high != low else torch.zeros_like(inv_freq)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    in_band = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(in_band, smoothed, scaled)


def yarn_inv_freq(dim: int, base: float, factor: float, original_max: int, beta_fast: float,
                  beta_slow: float) -> torch.Tensor:
    """YaRN inverse frequencies [dim/2] (float32, CPU): blended between interpolated (1/factor) and extrapolated by a
    linear ramp over the dims whose wavelength fits between beta_slow and beta_fast rotations in the original context
    (transformers' _compute_yarn_parameters and DeepSeek's precompute_freqs_cis, op for op)."""
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim)

    def correction_dim(rotations: float) -> float:  # the dim whose wavelength fits `rotations` times in the context
        return dim * math.log(original_max / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # no zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low), 0, 1)
    extrapolate = 1 - ramp  # 1: keep the original frequency (high-frequency dims), 0: interpolate by 1/factor
    return (1.0 / (factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate


def rope_cos_sin(positions: torch.Tensor, rope_dim: int, theta: float, dtype: torch.dtype,
                 scaling: dict | None = None):
    """positions [T] (int) -> cos, sin [T, rope_dim], computed in float32 then cast."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, device=positions.device, dtype=torch.float32) / rope_dim))
    if scaling is not None:
        inv_freq = llama3_inv_freq(inv_freq, scaling)
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


def apply_rope_interleaved(x_BTHd: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2i], x[2i+1]) by angle i, i.e. multiply by e^{i theta} in complex form (Llama 4),
    in float32 as the reference does; cos/sin [T, rope_dim] as rope_cos_sin returns them (first half used)."""
    rd = cos.shape[-1]
    rot, rest = x_BTHd[..., :rd].float(), x_BTHd[..., rd:]
    c, s = cos[None, :, None, :rd // 2].float(), sin[None, :, None, :rd // 2].float()  # broadcast over B and H
    re, im = rot[..., 0::2], rot[..., 1::2]
    out = torch.stack((re * c - im * s, re * s + im * c), dim=-1).flatten(-2).to(x_BTHd.dtype)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def rope_tail_interleaved(x: torch.Tensor, inv_freq: torch.Tensor, positions: torch.Tensor,
                          inverse: bool = False) -> torch.Tensor:
    """Rotate adjacent pairs of the LAST 2 * len(inv_freq) dims of x [B, T, ..., d] by positions [T] x inv_freq, in
    float32 (DeepSeek-V4 lays a head out as [no-RoPE | RoPE]). inverse=True rotates by -position (V4 de-rotates
    the attention output's RoPE slice this way)."""
    rd = 2 * inv_freq.numel()
    if rd == 0:
        return x
    angles = positions.float()[:, None] * inv_freq.to(x.device)[None, :]  # [T, rd/2]
    shape = (1, positions.numel()) + (1,) * (x.dim() - 3) + (rd // 2,)
    c, s = angles.cos().view(shape), angles.sin().view(shape)
    if inverse:
        s = -s
    rot = x[..., -rd:].float()
    re, im = rot[..., 0::2], rot[..., 1::2]
    out = torch.stack((re * c - im * s, re * s + im * c), dim=-1).flatten(-2).to(x.dtype)
    return torch.cat((x[..., :-rd], out), dim=-1)
