"""Shim: each cache class moved beside its mixer, the container to hybridlm.layers.cache (the lead removes this at
the end of issue 11)."""

from .layers.cache import HybridCache, nbytes
from .layers.mixers.attention import KVCache
from .layers.mixers.compressed_attention import CompressedKVCache
from .layers.mixers.compressor import CompressorState
from .layers.mixers.gated_deltanet import RecurrentState
from .layers.mixers.mla import LatentCache

_nbytes = nbytes

__all__ = ["CompressedKVCache", "CompressorState", "HybridCache", "KVCache", "LatentCache", "RecurrentState"]
