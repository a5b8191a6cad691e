"""The hybrid cache: one object holding every layer's decode state.

Each mixer kind's cache class has a class attribute `kind` ("kv", "latent", "recurrent", "compressed", ...) and
`memory_bytes()`; this container only sums them. Attention-like kinds define theirs beside the mixer
(layers/mixers/<kind>.py); the linear and state-space mixers (Gated DeltaNet, Mamba, Mamba-2) share
`RecurrentState` here. A layer without a mixer (kind "none") holds None. `pos` is the number of tokens already
consumed, i.e. the absolute position of the next token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def nbytes(*tensors: torch.Tensor | None) -> int:
    """Bytes held by the given tensors (None counts 0)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@dataclass
class RecurrentState:
    """Constant-size state of a linear / state-space mixer (Gated DeltaNet, Mamba, Mamba-2): the conv window, the
    last K-1 pre-conv inputs [B, C, K-1] in the model dtype, and the recurrent state in float32 ([B, H, dk, dv] for
    the delta rule, [B, E, N] for Mamba-1, [B, H, P, N] for Mamba-2)."""

    conv: torch.Tensor | None = None
    state: torch.Tensor | None = None
    kind = "recurrent"  # not a field: the label memory_by_kind groups by

    def memory_bytes(self) -> int:
        return nbytes(self.conv, self.state)


@dataclass
class HybridCache:
    layers: list = field(default_factory=list)
    pos: int = 0

    def memory_bytes(self) -> int:
        return sum(layer.memory_bytes() for layer in self.layers if layer is not None)

    def memory_by_kind(self) -> dict[str, int]:
        """Bytes per cache kind, in order of first appearance (each layer cache names its own `kind`)."""
        out: dict[str, int] = {}
        for layer in self.layers:
            if layer is None:  # a layer without a mixer (kind "none") keeps no state
                continue
            parts = layer.memory_by_kind() if hasattr(layer, "memory_by_kind") else {layer.kind: layer.memory_bytes()}
            for kind, n in parts.items():  # a composite cache (Titans MAG / MAC: KV and a memory) splits itself
                out[kind] = out.get(kind, 0) + n
        return out
