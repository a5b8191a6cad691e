"""Jamba presets (AI21): Mamba-1 layers with RMSNorm on dt / B / C, one NoPE attention layer in every 8, and a
16-expert top-2 MoE on every other layer.

Sources (hyperparameters copied from, and parameter totals checked against, hybridlm/resources/published-configs.json):
- https://huggingface.co/ai21labs/AI21-Jamba-1.5-Mini (model card: 52B total / 12B active, 256K context; the
  architecture of ai21labs/Jamba-v0.1, whose config.json = transformers' JambaConfig defaults)
- https://huggingface.co/ai21labs/AI21-Jamba-1.5-Large (model card: 398B total / 94B active)
- Jamba-1.5 paper, arXiv 2408.12570, section 2: Large is 9 blocks of 8 layers (attention : Mamba = 1 : 7), MoE every
  2 layers, 16 experts, top-2, hidden 8192, 64 query heads, 8 KV heads
- the totals 51,570,323,328 and 398,555,145,696 (published-configs.json, "computed ... incl. embeddings") are
  reproduced exactly, and tests/families/test_jamba.py holds them against transformers' JambaForCausalLM built on
  the meta device from the same config.json
"""

from __future__ import annotations

from ..layers.ffn.dense import DenseFFNConfig
from ..layers.ffn.moe import MoEConfig
from ..layers.mixers.attention import AttentionConfig
from ..layers.mixers.mamba import MambaConfig
from ..model.config import ModelConfig


def _jamba(name: str, *, d: int, layers: int, heads: int, kv_heads: int, ffn: int, dt_rank: int, experts: int = 16,
           top_k: int = 2, vocab: int = 65_536, max_seq_len: int = 262_144, d_state: int = 16,
           tie: bool = False) -> ModelConfig:
    """The Jamba layout: in every 8 layers, attention at l % 8 == 4 (GQA, no positional encoding, no QK-norm), Mamba-1
    elsewhere (expand 2, conv 4, RMSNorm on dt, B and C); MoE (softmax router, top-k NOT renormalised, as transformers
    computes it) on odd layers, dense SwiGLU of the same width on even ones. Plain RMSNorm, eps 1e-6, untied head."""
    attn = AttentionConfig(num_heads=heads, num_kv_heads=kv_heads, head_dim=d // heads, rope_fraction=0.0,
                           qk_norm=False, output_gate=False)
    mamba = MambaConfig(d_state=d_state, d_conv=4, expand=2, dt_rank=dt_rank, conv_bias=True, proj_bias=False,
                        inner_norms=True)
    moe = MoEConfig(num_experts=experts, top_k=top_k, expert_size=ffn, score_func="softmax", norm_topk=False,
                    aux_loss_coef=0.001)
    return ModelConfig(
        name=name, vocab_size=vocab, d_model=d, num_layers=layers, mixer_pattern=f"MMMMAMMM*{layers // 8}",
        ffn_pattern=f"DM*{layers // 2}", mixers={"M": mamba, "A": attn},
        ffns={"D": DenseFFNConfig(intermediate_size=ffn), "M": moe}, norm_eps=1e-6, zero_centered_norm=False,
        tie_embeddings=tie, mtp_depth=0, max_seq_len=max_seq_len, hf_model_type="jamba")


PRESETS = {
    # AI21-Jamba-1.5-Mini (= Jamba-v0.1's architecture): 32 layers at 4096, 32 q / 8 kv heads, FFN 14336, dt_rank 256
    # (ceil(4096 / 16)), vocab 65,536, 256K context. 51,570,323,328 parameters (12.110B active).
    "jamba-1.5-mini": lambda: _jamba("jamba-1.5-mini", d=4096, layers=32, heads=32, kv_heads=8, ffn=14_336,
                                     dt_rank=256),
    # AI21-Jamba-1.5-Large: 72 layers (9 blocks of 8) at 8192, 64 q / 8 kv heads (the paper); FFN 24576 and dt_rank
    # 512 (ceil(8192 / 16)) are published-configs.json's inference: they reproduce 398B / 94B to the stated rounding.
    # 398,555,145,696 parameters (94.149B active).
    "jamba-1.5-large": lambda: _jamba("jamba-1.5-large", d=8192, layers=72, heads=64, kv_heads=8, ffn=24_576,
                                      dt_rank=512),
    # The Jamba layout at the tiny presets' width, depth and byte vocabulary (presets/tiny.py), for `hybridlm compare`:
    # one NoPE attention layer (4 q / 2 kv heads x 32) among 7 Mamba layers (dt_rank 8 = ceil(128 / 16)), 8 experts
    # top-2 on odd layers (tiny-hybrid's count), one width 192 for experts and dense layers (the format has one
    # intermediate_size), chosen so active parameters (1,788,568) are within 2% of tiny-hybrid's (1,760,752); tied.
    "tiny-jamba": lambda: _jamba("tiny-jamba", d=128, layers=8, heads=4, kv_heads=2, ffn=192, dt_rank=8, experts=8,
                                 vocab=256, max_seq_len=2048, tie=True),
}
ALIASES = {"jamba-mini": "jamba-1.5-mini", "jamba-large": "jamba-1.5-large",
           "ai21-jamba-1.5-mini": "jamba-1.5-mini", "ai21-jamba-1.5-large": "jamba-1.5-large"}
