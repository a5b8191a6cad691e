"""Pure Mamba-2 language models (every layer x + Mamba2(RMSNorm(x)), no FFN, no attention).

Sources (hyperparameters copied from; the totals are checked in tests/families/test_mamba2_hybrids.py against
transformers' own Mamba2ForCausalLM built on the meta device from the config.json we write):
- https://huggingface.co/state-spaces/mamba2-2.7b config.json (mamba_ssm format): d_model 2560, n_layer 64,
  vocab_size 50277 with pad_vocab_size_multiple 16 (-> 50288, as transformers' convert_mamba2_ssm_checkpoint
  script pads it), ssm_cfg {"layer": "Mamba2"} = mamba_ssm's Mamba2 defaults (d_state 128, d_conv 4, expand 2,
  headdim 64, ngroups 1, chunk_size 256, conv bias, no projection bias), rms_norm, tie_embeddings true.
  Total 2,702,599,680 (the "2.7b").
- https://huggingface.co/mistralai/Mamba-Codestral-7B-v0.1 config.json (model_type mamba2): hidden_size 4096,
  num_hidden_layers 64, num_heads 128, head_dim 64, state_size 128, n_groups 8, expand 2, conv_kernel 4,
  chunk_size 256, vocab_size 32768, tie_word_embeddings false, layer_norm_epsilon 1e-5. Total 7,285,403,648 (the
  model card's 7.29B).
"""

from __future__ import annotations

import math

from ..layers.mixers.mamba2 import Mamba2Config
from ..model.config import ModelConfig

SSM_MAX_SEQ_LEN = 1 << 20  # no position limit in a recurrent model (the converter's value too)


def _mamba2(name: str, *, d: int, layers: int, vocab: int, groups: int, tied: bool) -> ModelConfig:
    """Mamba-2 LM: d_inner = 2 d in heads of 64, state 128, conv 4, SSD chunks of 256, dt unclamped."""
    mixer = Mamba2Config(num_heads=2 * d // 64, head_dim=64, d_state=128, n_groups=groups, conv_kernel=4,
                         chunk_size=256, conv_bias=True, proj_bias=False, time_step_limit=(0.0, math.inf))
    return ModelConfig(
        name=name, vocab_size=vocab, d_model=d, num_layers=layers, mixer_pattern=f"M*{layers}",
        ffn_pattern=f"-*{layers}", mixers={"M": mixer}, ffns={}, norm_eps=1e-5, zero_centered_norm=False,
        tie_embeddings=tied, max_seq_len=SSM_MAX_SEQ_LEN, hf_model_type="mamba2")


PRESETS = {
    # state-spaces/mamba2-2.7b (mamba_ssm config.json, vocab padded to a multiple of 16, tied head)
    "mamba2-2.7b": lambda: _mamba2("mamba2-2.7b", d=2560, layers=64, vocab=50_288, groups=1, tied=True),
    # mistralai/Mamba-Codestral-7B-v0.1 config.json (transformers' mamba2 format, 8 groups, untied head)
    "mamba-codestral-7b": lambda: _mamba2("mamba-codestral-7b", d=4096, layers=64, vocab=32_768, groups=8,
                                          tied=False),
}
ALIASES = {"mamba-2-2.7b": "mamba2-2.7b", "mamba-codestral-7b-v0.1": "mamba-codestral-7b"}
