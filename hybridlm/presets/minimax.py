"""MiniMax presets: lightning attention (linear, a fixed decay per head) in 7 of every 8 layers, softmax attention in
the 8th, a 32-expert top-2 MoE everywhere, post-norm residuals scaled by alpha = (2 L)^(1/4).

Sources (hyperparameters copied from, and the total checked against, hybridlm/resources/published-configs.json):
- https://github.com/MiniMax-AI/MiniMax-M1 config.json (verbatim in published-configs.json): 80 layers, hidden 6144,
  64 heads / 8 KV heads x 128, attn_type_list [0 x 7, 1] x 10, 32 local experts top-2 of width 9216, no shared
  expert, vocab 200,064, rotary_dim 64, rope_theta 1e7, max_position_embeddings 10,240,000, postnorm true,
  layernorm_{full_attention,linear_attention,mlp}_alpha 3.5565588200778455 (= (2 x 80)^(1/4)), betas 1 (the
  default), rms_norm_eps 1e-5, untied head
- MiniMax-AI/MiniMax-01 MiniMax-Text-01-Model-Card.md: the same architecture, "456B total, 45.9B activated", RoPE on
  half the head dim with base 1e7; lightning attention in blocks of 256 (MiniMax's modeling_minimax_text_01.py)
- the HF safetensors total of MiniMax-M1-40k / -80k, 456,089,655,296 (published-configs.json), is reproduced
  exactly by num_params() (the checkpoints store no buffers), tests/test_presets.py
"""

from __future__ import annotations

from ..layers.ffn.moe import MoEConfig
from ..layers.mixers.attention import AttentionConfig
from ..layers.mixers.lightning import LightningConfig
from ..model.config import ModelConfig


def _minimax(name: str, *, d: int, layers: int, pattern: str, heads: int, kv_heads: int, head_dim: int,
             experts: int, expert_size: int, rope_theta: float, vocab: int, max_seq_len: int, block_size: int = 256,
             tie: bool = False) -> ModelConfig:
    """The MiniMax layout: lightning attention (L) and GQA softmax attention (A, RoPE on half the head, no QK-norm),
    both num_heads x head_dim; softmax-routed top-2 MoE (renormalised, no shared expert) on every layer; post-norm
    residuals x <- alpha norm(x) + f(norm(x)) with alpha = (2 layers)^(1/4) for every sublayer; plain RMSNorm eps 1e-5."""
    alpha = (2 * layers) ** 0.25
    mixers = {"L": LightningConfig(num_heads=heads, head_dim=head_dim, block_size=block_size),
              "A": AttentionConfig(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, rope_fraction=0.5,
                                   rope_theta=rope_theta, qk_norm=False, output_gate=False)}
    moe = MoEConfig(num_experts=experts, top_k=2, expert_size=expert_size, score_func="softmax", norm_topk=True,
                    aux_loss_coef=0.001)
    return ModelConfig(
        name=name, vocab_size=vocab, d_model=d, num_layers=layers, mixer_pattern=pattern, ffn_pattern=f"M*{layers}",
        mixers=mixers, ffns={"M": moe}, norm_eps=1e-5, zero_centered_norm=False, tie_embeddings=tie, mtp_depth=0,
        max_seq_len=max_seq_len, postnorm=True, mixer_residual_scale={"L": [alpha, 1.0], "A": [alpha, 1.0]},
        ffn_residual_scale={"M": [alpha, 1.0]}, hf_model_type="minimax")


PRESETS = {
    # MiniMax-M1 (40k / 80k; MiniMax-Text-01 is the same network): 456,089,655,296 parameters (45.9B active without
    # the embedding and head).
    "minimax-m1": lambda: _minimax("minimax-m1", d=6144, layers=80, pattern="LLLLLLLA*10", heads=64, kv_heads=8,
                                   head_dim=128, experts=32, expert_size=9216, rope_theta=1e7, vocab=200_064,
                                   max_seq_len=10_240_000),
    # The MiniMax layout at the tiny presets' width, depth and byte vocabulary (presets/tiny.py), for `hybridlm
    # compare`: 3 lightning : 1 softmax (7 : 1 leaves one softmax layer in 8, too few to compare at this depth),
    # 4 heads x 32 for both kinds (2 KV heads), 8 experts top-2 of width 192 (no shared expert; tiny-hybrid's
    # 2 x 128 routed + 128 shared active width), alpha = 16^(1/4) = 2, RoPE theta 1e4 at this length; blocks of 64
    # (the result does not depend on the block; a 256-token training window is then 4 blocks); tied.
    "tiny-minimax": lambda: _minimax("tiny-minimax", d=128, layers=8, pattern="LLLA*2", heads=4, kv_heads=2,
                                     head_dim=32, experts=8, expert_size=192, rope_theta=10_000.0, vocab=256,
                                     max_seq_len=2048, block_size=64, tie=True),
}
ALIASES = {"minimax-text-01": "minimax-m1", "minimax-m1-80k": "minimax-m1", "minimax-m1-40k": "minimax-m1"}
