"""The hybrid cache: one object holding every layer's decode state.

Each mixer kind defines its own cache class beside it (layers/mixers/<kind>.py) with a class attribute `kind`
("kv", "latent", "recurrent", "compressed", ...) and `memory_bytes()`; this container only sums them. A layer
without a mixer (kind "none") holds None. `pos` is the
number of tokens already consumed, i.e. the absolute position of the next token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def nbytes(*tensors: torch.Tensor | None) -> int:
    """Bytes held by the given tensors (None counts 0)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


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
            out[layer.kind] = out.get(layer.kind, 0) + layer.memory_bytes()
        return out
