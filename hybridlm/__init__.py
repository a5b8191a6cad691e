"""hybridlm: build, cost, train, run and compare hybrid linear/softmax-attention and extreme-MoE LLMs.

Public API:
    get_config(name) -> ModelConfig        presets (full-scale published models, tiny trainable ones)
    HybridLM(config)                       one model for every family
    HybridLM.from_hf(dir), model.save_hf(dir)
    model(input_ids, labels=None) -> ModelOutput(.logits [B, T, V], .loss)
    model.generate(input_ids, max_new_tokens=..., temperature=..., top_k=..., top_p=..., stop_tokens=...)
"""

from .config import AttentionConfig, DenseFFNConfig, GatedDeltaNetConfig, MLAConfig, ModelConfig, MoEConfig
from .model import HybridLM, ModelOutput
from .presets import get_config, preset_names

__all__ = ["AttentionConfig", "DenseFFNConfig", "GatedDeltaNetConfig", "MLAConfig", "ModelConfig", "MoEConfig",
           "HybridLM", "ModelOutput", "get_config", "preset_names"]
