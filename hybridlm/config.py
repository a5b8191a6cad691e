"""Shim: the configs moved beside their modules (the lead removes this at the end of issue 11).

ModelConfig -> hybridlm.model.config; each mixer's config -> hybridlm.layers.mixers.<kind>; FFN configs ->
hybridlm.layers.ffn.{dense,moe}; the config base (field errors, expand_pattern, JSON type checks) -> hybridlm.core.config.
"""

from .core.config import at_least_one, check_types, expand_pattern, fail, from_kind
from .layers.ffn.dense import DenseFFNConfig
from .layers.ffn.moe import MoEConfig
from .layers.mixers.attention import AttentionConfig
from .layers.mixers.compressed_attention import CompressedAttentionConfig
from .layers.mixers.gated_deltanet import GatedDeltaNetConfig
from .layers.mixers.mla import MLAConfig
from .layers.protocol import FFNConfig, MixerConfig
from .model.config import ModelConfig
from .registry import FFN_CONFIGS, MIXER_CONFIGS

_fail, _at_least_one, _from_kind, _check_types = fail, at_least_one, from_kind, check_types

__all__ = ["FFN_CONFIGS", "MIXER_CONFIGS", "AttentionConfig", "CompressedAttentionConfig", "DenseFFNConfig",
           "FFNConfig", "GatedDeltaNetConfig", "MLAConfig", "MixerConfig", "MoEConfig", "ModelConfig", "expand_pattern"]
