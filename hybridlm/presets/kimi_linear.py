"""Kimi Linear presets: 3 KDA (Kimi Delta Attention) : 1 NoPE MLA layers with DeepSeek-style MoE.

Sources (hyperparameters copied from, and the parameter total checked against, hybridlm/resources/published-configs.json):
- https://huggingface.co/moonshotai/Kimi-Linear-48B-A3B-Instruct (config.json; Base shares the shapes): hidden 2304,
  27 layers, vocab 163840, linear_attn_config {num_heads 32, head_dim 128, short_conv_kernel_size 4, 1-indexed
  full_attn_layers 4, 8, 12, 16, 20, 24, 27}, MLA kv_lora 512 without q LoRA, head dims 128 / 64 / 128,
  mla_use_nope; 256 experts x 1024 top-8 plus 1 shared, first_k_dense_replace 1 (dense FFN 9216), sigmoid router,
  routed_scaling_factor 2.446, num_expert_group 1; rms_norm_eps 1e-5; untied head; 1M context.
- MoonshotAI/Kimi-Linear tech report (section 5.4): first layer dense, NoPE on every MLA layer.
"""

from __future__ import annotations

from ..layers.ffn.dense import DenseFFNConfig
from ..layers.ffn.moe import MoEConfig
from ..layers.mixers.kda import KDAConfig
from ..layers.mixers.mla import MLAConfig
from ..model.config import ModelConfig


def kimi_linear_48b() -> ModelConfig:
    """Kimi-Linear-48B-A3B: full attention at 0-indexed layers 3, 7, ..., 23 and 26 (the last group is KKL). HF
    safetensors total 49,122,681,728 = num_params() + the 26 MoE layers' 256-float selection biases."""
    return ModelConfig(
        name="kimi-linear-48b-a3b", vocab_size=163_840, d_model=2304, num_layers=27, mixer_pattern="KKKL*6 KKL",
        ffn_pattern="D M*26",
        mixers={"K": KDAConfig(num_heads=32, head_dim=128, conv_kernel=4),
                "L": MLAConfig(num_heads=32, kv_lora_rank=512, q_lora_rank=None, qk_nope_head_dim=128,
                               qk_rope_head_dim=64, v_head_dim=128, use_rope=False)},
        ffns={"D": DenseFFNConfig(intermediate_size=9216),
              "M": MoEConfig(num_experts=256, top_k=8, expert_size=1024, shared_size=1024, shared_gate=False,
                             score_func="sigmoid", norm_topk=True, routed_scale=2.446, n_groups=1, topk_groups=1)},
        norm_eps=1e-5, zero_centered_norm=False, tie_embeddings=False, mtp_depth=0, max_seq_len=1_048_576,
        hf_model_type="kimi_linear")


def tiny_kimi_linear() -> ModelConfig:
    """Kimi Linear at the tiny width (presets/tiny.py's d 128, 8 layers, byte vocabulary, so `compare` contrasts
    layouts, not sizes): KKKL x 2 with 4 KDA heads x 32, NoPE MLA as tiny-deepseek's without q LoRA; first layer
    dense, then tiny-deepseek's sigmoid MoE (8 experts top-2 + 1 shared, width 128) without the group limit;
    untied head, as the published model."""
    return ModelConfig(
        name="tiny-kimi-linear", vocab_size=256, d_model=128, num_layers=8, mixer_pattern="KKKL*2",
        ffn_pattern="D M*7",
        mixers={"K": KDAConfig(num_heads=4, head_dim=32, conv_kernel=4, chunk_size=64),
                "L": MLAConfig(num_heads=4, kv_lora_rank=64, q_lora_rank=None, qk_nope_head_dim=32,
                               qk_rope_head_dim=16, v_head_dim=32, use_rope=False)},
        ffns={"D": DenseFFNConfig(intermediate_size=384),
              "M": MoEConfig(num_experts=8, top_k=2, expert_size=128, shared_size=128, shared_gate=False,
                             score_func="sigmoid", norm_topk=True, bias_update_rate=0.001)},
        norm_eps=1e-5, zero_centered_norm=False, tie_embeddings=False, mtp_depth=0, max_seq_len=2048,
        hf_model_type="kimi_linear")


PRESETS = {"kimi-linear-48b-a3b": kimi_linear_48b, "tiny-kimi-linear": tiny_kimi_linear}
ALIASES = {"kimi-linear": "kimi-linear-48b-a3b", "kimi-linear-48b-a3b-instruct": "kimi-linear-48b-a3b"}
