"""Shim: the mixers moved to hybridlm.layers.mixers, one kind per file (the lead removes this at the end of
issue 11)."""

from ..layers.mixers import build_mixer
from ..layers.mixers.attention import Attention
from ..layers.mixers.compressed_attention import CompressedAttention
from ..layers.mixers.gated_deltanet import GatedDeltaNet
from ..layers.mixers.mla import MLA
from ..registry import MIXERS

__all__ = ["MIXERS", "MLA", "Attention", "CompressedAttention", "GatedDeltaNet", "build_mixer"]
