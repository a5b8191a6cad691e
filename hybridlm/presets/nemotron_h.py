"""NVIDIA Nemotron-H / Nemotron Nano 2 presets: Mamba-2, NoPE attention and relu^2 MLP layers, one sublayer each,
plus `tiny-mamba2-hybrid` (the family's layout at the tiny width).

Sources (hyperparameters copied from; every total is checked in tests/families/test_mamba2_hybrids.py against
transformers' NemotronHForCausalLM built on the meta device from the config.json we write):
- https://huggingface.co/nvidia/Nemotron-H-8B-Base-8K (config.json; Megatron-Bridge NemotronHModelProvider8B):
  hybrid_override_pattern "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-" (52 layers: 24 Mamba-2, 4 attention,
  24 MLP), hidden_size 4096, intermediate_size 21504, 32 heads / 8 KV x 128, mamba_num_heads 128 x mamba_head_dim
  64, ssm_state_size 128, n_groups 8, conv_kernel 4, chunk_size 128, vocab 131072, untied, layer_norm_epsilon
  1e-5, max_position_embeddings 8192. Total 8,100,852,736 (the card's 8.1B).
- nvidia/Nemotron-H-47B-Base-8K and -56B-Base-8K (Megatron-Bridge NemotronHModelProvider47B / 56B): hidden 8192,
  64 / 8 heads, 256 Mamba heads x 64, state 256, FFN 30720 / 32768, 98 / 118 layers (patterns below).
  Totals 46,791,554,816 and 56,324,350,464.
- nvidia/NVIDIA-Nemotron-Nano-9B-v2(-Base) and -12B-v2 (Megatron-Bridge NemotronNanoModelProvider9Bv2 / 12Bv2):
  hidden 4480 / 5120, 40 / 8 heads x 128, 128 Mamba heads x 80, state 128, FFN 15680 / 20480, 56 / 62 layers,
  128K context. Totals 8,888,227,328 and 12,310,001,152 (the cards' 8.89B and 12.3B).
Shared by all (NemotronHModelProvider defaults, transformers' NemotronHConfig): n_groups 8, conv 4, conv bias, no
projection / attention / MLP biases, time_step_min 0.001 (transformers clamps dt below there), plain RMSNorm.
Nemotron-3 (Nano-30B-A3B, Super-120B-A12B) adds MoE "E" layers with non-gated relu2 experts, which hybridlm's MoE
does not have yet: no preset (docs/mamba2_hybrids.md).
"""

from __future__ import annotations

import math

from ..layers.ffn.dense import DenseFFNConfig
from ..layers.mixers.attention import AttentionConfig
from ..layers.mixers.mamba2 import Mamba2Config
from ..model.config import ModelConfig

_TYPE = {"M": ("M", "-"), "*": ("A", "-"), "-": ("-", "D")}
PATTERN_8B = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
PATTERN_47B = "M-M-M-M-M-M-M-M-M*-M-M-M-M-M-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-M-M---MM---M-M*-M-M-M-M-M-"
PATTERN_56B = "M-M-M-M*-" + "M-M-M-M-M*-" * 9 + "M-M-M-M-M-"
PATTERN_NANO_9B = "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-"
PATTERN_NANO_12B = "M-M-M-M*-" + "M-M-M-M*-" * 5 + "M-M-M-M-"


def patterns(hybrid: str) -> tuple[str, str]:
    """A Nemotron-H hybrid_override_pattern -> (mixer_pattern, ffn_pattern): M -> mixer M, * -> mixer A,
    - -> an MLP-only layer (mixer '-', ffn D)."""
    return "".join(_TYPE[c][0] for c in hybrid), "".join(_TYPE[c][1] for c in hybrid)


def _nemotron_h(name: str, hybrid: str, *, d: int, ffn: int, heads: int, mamba_heads: int, mamba_head_dim: int,
                state: int, max_seq_len: int) -> ModelConfig:
    """Nemotron-H: per layer one of Mamba-2 (8 groups, conv 4, dt >= 0.001), NoPE GQA attention (8 KV heads x 128)
    or a relu^2 MLP, each behind a plain RMSNorm (eps 1e-5); vocab 131072, untied head."""
    mixer, ffn_pattern = patterns(hybrid)
    mamba = Mamba2Config(num_heads=mamba_heads, head_dim=mamba_head_dim, d_state=state, n_groups=8, conv_kernel=4,
                         chunk_size=128, conv_bias=True, proj_bias=False, time_step_limit=(0.001, math.inf))
    attn = AttentionConfig(num_heads=heads, num_kv_heads=8, head_dim=128, rope_fraction=0.0, qk_norm=False,
                           output_gate=False)
    return ModelConfig(
        name=name, vocab_size=131_072, d_model=d, num_layers=len(hybrid), mixer_pattern=mixer,
        ffn_pattern=ffn_pattern, mixers={"M": mamba, "A": attn},
        ffns={"D": DenseFFNConfig(intermediate_size=ffn, activation="relu2")}, norm_eps=1e-5,
        zero_centered_norm=False, tie_embeddings=False, max_seq_len=max_seq_len, hf_model_type="nemotron_h")


def _tiny_mamba2_hybrid() -> ModelConfig:
    """Nemotron-H's mix at the tiny width (d 128, 8 blocks, byte vocabulary): Mamba-2 blocks (8 heads x 32 = 2 d,
    state 64, 2 groups) with every 4th block NoPE GQA attention (4 heads / 2 KV x 32), each block followed by a
    relu^2 MLP (448 wide, so active parameters match tiny-hybrid's within a few %). save_hf writes each block as two
    Nemotron-H layers (mixer, then MLP): pattern M-M-M-*-M-M-M-*-."""
    mamba = Mamba2Config(num_heads=8, head_dim=32, d_state=64, n_groups=2, conv_kernel=4, chunk_size=64,
                         time_step_limit=(0.001, math.inf))
    attn = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=32, rope_fraction=0.0, qk_norm=False,
                           output_gate=False)
    return ModelConfig(
        name="tiny-mamba2-hybrid", vocab_size=256, d_model=128, num_layers=8, mixer_pattern="MMMA*2",
        ffn_pattern="D*8", mixers={"M": mamba, "A": attn},
        ffns={"D": DenseFFNConfig(intermediate_size=448, activation="relu2")}, norm_eps=1e-5,
        zero_centered_norm=False, tie_embeddings=True, max_seq_len=2048, hf_model_type="nemotron_h")


PRESETS = {
    # nvidia/Nemotron-H-8B-Base-8K config.json (cited above)
    "nemotron-h-8b": lambda: _nemotron_h("nemotron-h-8b", PATTERN_8B, d=4096, ffn=21_504, heads=32, mamba_heads=128,
                                         mamba_head_dim=64, state=128, max_seq_len=8192),
    # nvidia/Nemotron-H-47B-Base-8K / -56B-Base-8K (Megatron-Bridge providers)
    "nemotron-h-47b": lambda: _nemotron_h("nemotron-h-47b", PATTERN_47B, d=8192, ffn=30_720, heads=64,
                                          mamba_heads=256, mamba_head_dim=64, state=256, max_seq_len=8192),
    "nemotron-h-56b": lambda: _nemotron_h("nemotron-h-56b", PATTERN_56B, d=8192, ffn=32_768, heads=64,
                                          mamba_heads=256, mamba_head_dim=64, state=256, max_seq_len=8192),
    # nvidia/NVIDIA-Nemotron-Nano-9B-v2 / -12B-v2 (Megatron-Bridge providers), 128K context
    "nemotron-nano-9b-v2": lambda: _nemotron_h("nemotron-nano-9b-v2", PATTERN_NANO_9B, d=4480, ffn=15_680, heads=40,
                                               mamba_heads=128, mamba_head_dim=80, state=128, max_seq_len=131_072),
    "nemotron-nano-12b-v2": lambda: _nemotron_h("nemotron-nano-12b-v2", PATTERN_NANO_12B, d=5120, ffn=20_480,
                                                heads=40, mamba_heads=128, mamba_head_dim=80, state=128,
                                                max_seq_len=131_072),
    # the family's tiny member, for `hybridlm compare`
    "tiny-mamba2-hybrid": _tiny_mamba2_hybrid,
}
ALIASES = {"nemotron-h-8b-base-8k": "nemotron-h-8b", "nemotron-h-47b-base-8k": "nemotron-h-47b",
           "nemotron-h-56b-base-8k": "nemotron-h-56b", "nvidia-nemotron-nano-9b-v2": "nemotron-nano-9b-v2",
           "nvidia-nemotron-nano-12b-v2": "nemotron-nano-12b-v2"}
