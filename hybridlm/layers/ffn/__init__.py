"""Feed-forward layers, one kind per file (config dataclass + module), registered with `@register_ffn`:
dense SwiGLU (dense.py), the dropless mixture of experts (moe.py) and none (none.py, pattern letter "-"). `build_ffn` resolves a config's `kind`."""

from ...registry import FFNS
from . import dense, moe, none  # noqa: F401 (each registers its kind)


def build_ffn(cfg, d_model: int, vocab_size: int | None = None):
    if cfg.kind not in FFNS:
        raise ValueError(f"FFN kind {cfg.kind!r} is not registered; known kinds: {sorted(FFNS)}")
    return FFNS[cfg.kind](cfg, d_model, vocab_size)
