"""Named configs: full-scale published models and tiny trainable ones, one file per family.

Each family file (qwen.py, llama4.py, deepseek.py, jamba.py, mamba2.py, nemotron_h.py, granite.py, sambay.py,
kimi_linear.py, tiny.py) cites its sources above each preset and exposes
`PRESETS` (name -> zero-argument builder) and `ALIASES`; this module merges them in a fixed order (the order
`hybridlm presets` lists them in). Build full-scale ones on the meta device:
`HybridLM(get_config(name), device="meta")`. Adding a family: one file here plus one line in FAMILIES.
"""

from __future__ import annotations

from collections.abc import Callable

from ..model.config import ModelConfig
from . import deepseek, granite, jamba, kimi_linear, llama4, mamba2, minimax, nemotron_h, qwen, sambay, tiny, titans

FAMILIES = (qwen, llama4, deepseek, jamba, mamba2, nemotron_h, granite, sambay, titans, minimax, kimi_linear, tiny)

PRESETS: dict[str, Callable[[], ModelConfig]] = {name: build for f in FAMILIES for name, build in f.PRESETS.items()}
ALIASES: dict[str, str] = {alias: name for f in FAMILIES for alias, name in f.ALIASES.items()}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_config(name: str) -> ModelConfig:
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(list(PRESETS) + list(ALIASES))}")
    return PRESETS[key]()
