"""The hybrid cache: one object holding every layer's decode state.

Attention layers keep keys and values (`KVCache`, growing with context, or bounded by a sliding window or by
the current block of chunked attention);
linear layers keep a constant-size conv window and recurrent state (`RecurrentState`); Multi-head Latent
Attention layers keep one compressed latent and one shared roped key per token (`LatentCache`); DeepSeek-V4 layers
keep a sliding window of shared key=value vectors plus compressed entries (`CompressedKVCache`). `HybridCache.pos`
is the number of tokens already consumed, i.e. the absolute position of the next token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@dataclass
class KVCache:
    """Keys/values [B, Hkv, S, hd] for absolute positions start .. start+S-1."""

    window: int | None = None  # keep at most window-1 past tokens: all the next query can see
    chunk: int | None = None  # chunked attention: keep only the next query's block (at most chunk-1 tokens)
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    start: int = 0

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Add new keys/values; returns (all keys, all values, absolute position of the first key)
        to attend over for this step, then trims what no future query can see."""
        if self.k is None:
            k_all, v_all, start = k_new, v_new, self.start
        else:
            k_all, v_all, start = torch.cat((self.k, k_new), dim=2), torch.cat((self.v, v_new), dim=2), self.start
        keep = k_all.shape[2] if self.window is None else min(k_all.shape[2], self.window - 1)
        if self.chunk is not None:  # the next position is start + len; its block began (next mod chunk) ago
            keep = min(keep, (start + k_all.shape[2]) % self.chunk)
        drop = k_all.shape[2] - keep
        self.k, self.v, self.start = k_all[:, :, drop:], v_all[:, :, drop:], start + drop
        return k_all, v_all, start

    def memory_bytes(self) -> int:
        return _nbytes(self.k, self.v)


@dataclass
class RecurrentState:
    """Constant-size state of a linear mixer: conv window [B, C, K-1] and recurrent state [B, H, dk, dv]."""

    conv: torch.Tensor | None = None
    state: torch.Tensor | None = None

    def memory_bytes(self) -> int:
        return _nbytes(self.conv, self.state)


@dataclass
class LatentCache:
    """Multi-head Latent Attention cache: the normalised KV latent c_kv [B, S, kv_lora_rank] and the roped key
    shared by all heads k_rope [B, S, qk_rope_head_dim], for absolute positions 0 .. S-1. No per-head keys or
    values are stored: they are re-expanded from the latent (prefill) or never formed (absorbed decode)."""

    c_kv: torch.Tensor | None = None
    k_rope: torch.Tensor | None = None
    index_k: torch.Tensor | None = None  # DeepSeek-V3.2 indexer keys [B, S, index_head_dim] (None: no indexer)

    def append(self, c_new: torch.Tensor, k_rope_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.c_kv is not None:
            c_new, k_rope_new = torch.cat((self.c_kv, c_new), dim=1), torch.cat((self.k_rope, k_rope_new), dim=1)
        self.c_kv, self.k_rope = c_new, k_rope_new
        return c_new, k_rope_new

    def append_index(self, k_new: torch.Tensor) -> torch.Tensor:
        if self.index_k is not None:
            k_new = torch.cat((self.index_k, k_new), dim=1)
        self.index_k = k_new
        return k_new

    def memory_bytes(self) -> int:
        return _nbytes(self.c_kv, self.k_rope, self.index_k)


@dataclass
class CompressorState:
    """Running state of a DeepSeek-V4 KV compressor: the projected tokens of the still-open window (kv and gate
    logits [B, p, c*d], p < ratio), for overlapping (CSA) compression the low half of the last closed window
    (kv and gate + position bias [B, ratio, d]), and the emitted entries [B, N, d] (entry i pools tokens
    [i*ratio, (i+1)*ratio))."""

    pending_kv: torch.Tensor | None = None
    pending_gate: torch.Tensor | None = None
    prev_kv: torch.Tensor | None = None
    prev_gate: torch.Tensor | None = None
    entries: torch.Tensor | None = None
    count: int = 0  # entries emitted so far

    def memory_bytes(self) -> int:
        return _nbytes(self.pending_kv, self.pending_gate, self.prev_kv, self.prev_gate, self.entries)


@dataclass
class CompressedKVCache:
    """DeepSeek-V4 attention cache: the last window-1 shared key=value vectors [B, S, d] plus, on compressed
    layers, the compressor's state and, on CSA layers, the lightning indexer's own compressor state."""

    window: int
    kv: torch.Tensor | None = None
    compressor: CompressorState | None = None
    indexer: CompressorState | None = None
    kind = "compressed"

    def append(self, kv_new: torch.Tensor) -> torch.Tensor:
        """-> every key this step attends to in its window (cached then new); keeps the last window-1."""
        kv_all = kv_new if self.kv is None else torch.cat((self.kv, kv_new), dim=1)
        self.kv = kv_all[:, kv_all.shape[1] - min(kv_all.shape[1], self.window - 1):]
        return kv_all

    def memory_bytes(self) -> int:
        return (_nbytes(self.kv) + (self.compressor.memory_bytes() if self.compressor else 0)
                + (self.indexer.memory_bytes() if self.indexer else 0))


@dataclass
class HybridCache:
    layers: list = field(default_factory=list)
    pos: int = 0

    def memory_bytes(self) -> int:
        return sum(layer.memory_bytes() for layer in self.layers)

    def memory_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for layer in self.layers:
            kind = getattr(layer, "kind", None) or (
                "kv" if isinstance(layer, KVCache) else "latent" if isinstance(layer, LatentCache) else "recurrent")
            out[kind] = out.get(kind, 0) + layer.memory_bytes()
        return out
