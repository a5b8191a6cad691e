"""Token mixers, one per file, all with the same interface:

    Mixer(cfg, d_model, norm_eps, zero_centered)
    forward(x [B, T, D], pos0: int, cache: layer cache | None) -> [B, T, D]
    init_weights(std, out_std); new_cache(); num_params()

`build_mixer` resolves a config's `kind` to its class: the one place a name chooses a behaviour.
"""

from .attention import Attention
from .compressed_attention import CompressedAttention
from .gated_deltanet import GatedDeltaNet
from .mla import MLA

MIXERS = {"attention": Attention, "gated_deltanet": GatedDeltaNet, "mla": MLA,
          "compressed_attention": CompressedAttention}


def build_mixer(cfg, d_model: int, norm_eps: float, zero_centered: bool):
    return MIXERS[cfg.kind](cfg, d_model, norm_eps, zero_centered)
