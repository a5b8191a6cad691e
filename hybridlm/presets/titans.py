"""Titans presets (Google, Behrouz, Zhong, Mirrokni 2024, "Titans: Learning to Memorize at Test Time",
arXiv 2501.00663): the paper's three ways to combine its neural long-term memory with attention, at the tiny
width of presets/tiny.py (d 128, 8 layers, byte vocabulary, SwiGLU MLPs of width 384 as tiny-sambay).

- tiny-titans-mal: memory as a layer, M W M W ...: a memory layer, then a sliding-window attention layer.
- tiny-titans-mag: memory as a gate: every layer sliding-window attention (with persistent slots) gated by the
  memory branch.
- tiny-titans-mac: memory as context: every layer attends, segment by segment, over [persistent | retrieved |
  segment], then updates the memory with its output.

Memory: L_M = 2 (the paper finds deeper memories better; 2 keeps the tiny models fast), 16-token chunks (MAC's
segments), 4 heads x 32, conv 4; windows of 64 tokens (tiny-sambay's) and 4 persistent slots. The paper gives no
widths for its 170M-760M models and publishes no weights, so there is no full-scale preset and no Hugging Face
format (docs/titans.md).
"""

from __future__ import annotations

from ..layers.ffn.dense import DenseFFNConfig
from ..layers.mixers.attention import AttentionConfig
from ..layers.mixers.titans import TitansConfig
from ..model.config import ModelConfig

_MEMORY = dict(num_heads=4, head_dim=32, memory_layers=2, memory_expand=2, chunk_size=16, conv_kernel=4)
WINDOW = 64


def _titans(name: str, pattern: str, mixers: dict) -> ModelConfig:
    return ModelConfig(name=name, vocab_size=256, d_model=128, num_layers=8, mixer_pattern=pattern,
                       ffn_pattern="D*8", mixers=mixers, ffns={"D": DenseFFNConfig(intermediate_size=384)},
                       norm_eps=1e-5, zero_centered_norm=False, tie_embeddings=True, mtp_depth=0, max_seq_len=2048)


def tiny_titans_mal() -> ModelConfig:
    swa = AttentionConfig(num_heads=4, num_kv_heads=4, head_dim=32, rope_fraction=0.0, qk_norm=False,
                          sliding_window=WINDOW)
    return _titans("tiny-titans-mal", "MW*4", {"M": TitansConfig(**_MEMORY, variant="memory"), "W": swa})


def tiny_titans_mag() -> ModelConfig:
    return _titans("tiny-titans-mag", "G*8", {"G": TitansConfig(**_MEMORY, variant="mag", window=WINDOW,
                                                                persistent=4)})


def tiny_titans_mac() -> ModelConfig:
    return _titans("tiny-titans-mac", "C*8", {"C": TitansConfig(**_MEMORY, variant="mac", persistent=4)})


PRESETS = {"tiny-titans-mal": tiny_titans_mal, "tiny-titans-mag": tiny_titans_mag, "tiny-titans-mac": tiny_titans_mac}
ALIASES: dict[str, str] = {}
