"""What a layer leaves for later layers in the same forward pass.

`HybridLM` creates one `ForwardContext` per forward (and the MTP module one of its own) and passes it to every
block and mixer: `mixer(x, pos0, cache, ctx)`. A layer may `ctx.put(name, value)`; a later layer `ctx.get(name)`.
YOCO's cross-decoder layers read the KV that one self-decoder layer produced; SambaY's gated memory units read a
saved Mamba output. The context lives for one forward only: whatever must survive to the next decode step belongs
in the writing layer's own cache (the writer then puts the cached value, past and new tokens, into the context),
so cached decode sees exactly what a full forward sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_MISSING = object()


@dataclass
class ForwardContext:
    pos0: int = 0  # absolute position of the forward's first token (cache.pos before it, or 0)
    layer: int = -1  # index of the block now running (set by the model before each block; -1 = none)
    num_layers: int = 0  # the model's number of blocks (0 = none: a mixer run on its own or in the MTP block)
    values: dict[str, Any] = field(default_factory=dict)

    def put(self, name: str, value: Any) -> None:
        """Leave `value` under `name` for later layers; a second put under the same name replaces it."""
        self.values[name] = value

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The value an earlier layer put under `name` (or `default`); without a default a missing name is an error
        that lists what is there, since it means the layer plan puts a reader before its writer."""
        if name in self.values:
            return self.values[name]
        if default is not _MISSING:
            return default
        raise KeyError(f"ForwardContext has no {name!r} before layer {self.layer} (an earlier layer must put it; "
                       f"present: {sorted(self.values)})")

    def __contains__(self, name: str) -> bool:
        return name in self.values
