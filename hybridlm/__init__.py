"""hybridlm: build, cost, train, run and compare hybrid linear/softmax-attention and extreme-MoE LLMs.

Public API:
    get_config(name) -> ModelConfig        presets (full-scale published models, tiny trainable ones)
    HybridLM(config)                       one model for every family
    HybridLM.from_hf(dir), model.save_hf(dir)
    model(input_ids, labels=None) -> ModelOutput(.logits [B, T, V], .loss)
    model.generate(input_ids, max_new_tokens=..., temperature=..., top_k=..., top_p=..., stop_tokens=...)
"""

from . import interop  # noqa: F401  (HybridLM.from_hf / save_hf: interop.hf registers its pipeline on import)
from .interop import hf  # noqa: F401
from .layers.ffn.dense import DenseFFNConfig
from .layers.ffn.moe import MoEConfig
from .layers.mixers.attention import AttentionConfig
from .layers.mixers.gated_deltanet import GatedDeltaNetConfig
from .layers.mixers.mamba import MambaConfig
from .layers.mixers.mamba2 import Mamba2Config
from .layers.mixers.mla import MLAConfig
from .model import HybridLM, ModelConfig, ModelOutput
from .presets import get_config, preset_names

__all__ = ["AttentionConfig", "DenseFFNConfig", "GatedDeltaNetConfig", "MLAConfig", "Mamba2Config", "MambaConfig",
           "ModelConfig", "MoEConfig", "HybridLM", "ModelOutput", "get_config", "preset_names"]
