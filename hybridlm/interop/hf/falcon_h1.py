"""Falcon-H1 (model_type `falcon_h1`): recognised, and refused with the reason.

Every Falcon-H1 layer runs attention AND a Mamba-2 mixer side by side on the same normed input and adds their
outputs (x += ssm_out_multiplier * mamba(h) + attention_out_multiplier * attn(h * attention_in_multiplier), then the
MLP; reference: transformers 5.23.0 `models/falcon_h1/modeling_falcon_h1.py`). hybridlm's block holds one token mixer
per layer, and its cache one entry per layer, so this layout does not map onto the one config; docs/mamba2_hybrids.md
says what it would take (a parallel mixer kind with a paired KV + SSM cache; its muP multipliers on linear maps
could be folded into the weights). Loading or inspecting a falcon_h1 checkpoint raises a ValueError saying so.
"""

from __future__ import annotations

from ...model.config import ModelConfig
from ...registry import register_converter
from .base import Converter

WHY = ("config.json (falcon_h1) is not supported: every Falcon-H1 layer runs attention and Mamba-2 in parallel on "
       "the same input (layers_block_type 'hybrid'), and hybridlm's block has one token mixer per layer "
       "(docs/mamba2_hybrids.md)")


class FalconH1Converter(Converter):
    model_types = ("falcon_h1",)
    weight_types = ()  # nothing to read or write

    def config_from_hf(self, hf: dict) -> ModelConfig:
        raise ValueError(WHY)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        raise ValueError(WHY.replace("config.json (falcon_h1) is", "writing falcon_h1 is"))


register_converter(FalconH1Converter())
