"""IBM Granite 4.0-H presets: Mamba-2 and NoPE attention layers at 9:1, each followed by a fine-grained MoE with an
always-on shared SwiGLU expert, and Granite's model multipliers.

Sources (hyperparameters copied from; the total is checked in tests/families/test_mamba2_hybrids.py against
transformers' GraniteMoeHybridForCausalLM built on the meta device from the config.json we write):
- https://huggingface.co/ibm-granite/granite-4.0-h-small config.json (as quoted field by field in a third-party
  inventory: hidden_size 4096, num_hidden_layers 40, num_attention_heads 32, num_key_value_heads 8,
  num_local_experts 72, num_experts_per_tok 10, intermediate_size 768, shared_intermediate_size 1536,
  mamba_d_state 128, mamba_d_conv 4, mamba_expand 2, tie_word_embeddings true, vocab_size 100352; layer_types
  36 "mamba" + 4 "attention", the attention at layers 5, 15, 25, 35 per a GGUF card). mamba_n_heads 128
  (mamba_d_head 64) and mamba_n_groups 1 (the config's default) give 32,207,337,984, the card's "32.2B".
  Unverified (no parameter impact): the multipliers embedding 12, residual 0.22, attention 1/128, logits_scaling 8
  (the Granite 3.x / 4.x family's values), rms_norm_eps 1e-5, 128K context, mamba_chunk_size 256.
"""

from __future__ import annotations

import math

from ..layers.ffn.moe import MoEConfig
from ..layers.mixers.attention import AttentionConfig
from ..layers.mixers.mamba2 import Mamba2Config
from ..model.config import ModelConfig

PRESETS = {
    # ibm-granite/granite-4.0-h-small (32.2B total, 9B active)
    "granite-4.0-h-small": lambda: ModelConfig(
        name="granite-4.0-h-small", vocab_size=100_352, d_model=4096, num_layers=40, mixer_pattern="MMMMMAMMMM*4",
        ffn_pattern="M*40",
        mixers={"M": Mamba2Config(num_heads=128, head_dim=64, d_state=128, n_groups=1, conv_kernel=4, chunk_size=256,
                                  time_step_limit=(0.0, math.inf)),
                "A": AttentionConfig(num_heads=32, num_kv_heads=8, head_dim=128, rope_fraction=0.0, qk_norm=False,
                                     output_gate=False, softmax_scale=1 / 128)},
        ffns={"M": MoEConfig(num_experts=72, top_k=10, expert_size=768, shared_size=1536, shared_gate=False,
                             score_func="softmax", norm_topk=True, aux_loss_coef=0.001)},
        norm_eps=1e-5, zero_centered_norm=False, tie_embeddings=True, max_seq_len=131_072,
        embedding_multiplier=12.0, residual_multiplier=0.22, logits_scaling=8.0, hf_model_type="granitemoehybrid"),
}
ALIASES = {"granite-4-h-small": "granite-4.0-h-small"}
