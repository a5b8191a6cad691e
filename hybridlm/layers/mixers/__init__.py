"""Token mixers, one kind per file (config dataclass + module + cache class), all implementing
layers.protocol.Mixer:

    Mixer(cfg, d_model, norm_eps, zero_centered)
    forward(x [B, T, D], pos0: int, cache: layer cache | None, ctx: ForwardContext | None) -> [B, T, D]

Each file registers its kind with `@register_mixer(kind, ConfigClass)`; importing this package imports every kind
(the one line a new kind adds below). `build_mixer` resolves a config's `kind` to its class: the one place a name
chooses a behaviour.
"""

from ...registry import MIXERS
from . import (attention, compressed_attention, gated_deltanet, gmu, kda, lightning, mamba, mamba2, mla,  # noqa: F401 (each registers)
               none, titans)


def build_mixer(cfg, d_model: int, norm_eps: float, zero_centered: bool):
    if cfg.kind not in MIXERS:
        raise ValueError(f"mixer kind {cfg.kind!r} is not registered; known kinds: {sorted(MIXERS)}")
    return MIXERS[cfg.kind](cfg, d_model, norm_eps, zero_centered)
