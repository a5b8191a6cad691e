"""Kind -> class tables, filled by decorators where each class is defined.

A mixer kind registers its module class and its config dataclass together
(``@register_mixer("attention", AttentionConfig)``); an FFN kind likewise; a Hugging Face
converter registers itself under every ``model_type`` it declares, and the HF pipeline its
load / save for ``HybridLM.from_hf`` / ``save_hf``. Nothing here imports
the rest of hybridlm, so any module may import this one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MIXERS: dict[str, type] = {}
MIXER_CONFIGS: dict[str, type] = {}
FFNS: dict[str, type] = {}
FFN_CONFIGS: dict[str, type] = {}
CONVERTERS: dict[str, object] = {}
# The Hugging Face load / save pipeline (interop.hf) behind HybridLM.from_hf / save_hf: the model ranks below
# interop, so interop hands its pipeline down here instead of the model importing upward.
HF_IO: dict[str, Callable] = {}


def _register(table: dict, configs: dict, kind: str, config_cls: type, what: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if kind in table and table[kind] is not cls:
            raise ValueError(f"{what} kind {kind!r} is already registered to {table[kind].__name__}")
        table[kind] = cls
        configs[kind] = config_cls
        return cls

    return deco


def register_mixer(kind: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: ``kind`` names the mixer module class and its config dataclass."""
    return _register(MIXERS, MIXER_CONFIGS, kind, config_cls, "mixer")


def register_ffn(kind: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: ``kind`` names the FFN module class and its config dataclass."""
    return _register(FFNS, FFN_CONFIGS, kind, config_cls, "FFN")


def register_converter(obj: T) -> T:
    """Register a converter (class or instance) under each of its ``model_types``."""
    types = getattr(obj, "model_types", None)
    if not types or isinstance(types, str):
        raise ValueError(f"converter {obj!r} must declare model_types: tuple[str, ...]")
    for mt in types:
        if mt in CONVERTERS and CONVERTERS[mt] is not obj:
            raise ValueError(f"model_type {mt!r} is already registered to {CONVERTERS[mt]!r}")
        CONVERTERS[mt] = obj
    return obj


def register_hf_io(load: Callable, save: Callable) -> None:
    """Called once by interop.hf: `load(path, device=, dtype=) -> HybridLM`, `save(model, path, dtype=)`."""
    HF_IO["load"], HF_IO["save"] = load, save
