"""Shim: moved to hybridlm.layers.ffn.moe and hybridlm.layers.ffn.dense (the lead removes this at the end of
issue 11)."""

from .layers.ffn.dense import DenseFFN, SwiGLU, swiglu
from .layers.ffn.moe import _GROUPED_MM_OK, PREFER_GROUPED_MM_ON_CPU, MoE, _grouped_mm_works

__all__ = ["PREFER_GROUPED_MM_ON_CPU", "_GROUPED_MM_OK", "DenseFFN", "MoE", "SwiGLU", "_grouped_mm_works", "swiglu"]
