"""SambaY presets (Microsoft, Phi-4-mini-flash): a Samba self-decoder (Mamba + sliding-window attention), one
full-attention layer whose KV is the model's only growing cache, and a YOCO cross-decoder of Gated Memory Units
(reading the middle Mamba layer's scan output) and query-only cross-attention (reading that one KV).

Layout for L layers (L divisible by 4), 0-based l:
- l < L/2: Mamba on even l, sliding-window attention on odd l (the self-decoder, i.e. Samba);
- l = L/2: Mamba whose scan output is the memory (`memory_out`);
- l = L/2 + 1: full attention, no positional encoding, sharing its KV (`kv_out`);
- l >= L/2 + 2: a GMU on even l, cross-attention over the shared KV on odd l.
Every layer is followed by a SwiGLU MLP; all attention is differential; LayerNorm (weight and bias) before each
sublayer and at the end; tied embeddings; no positional encoding anywhere (the Mamba layers carry position).

Sources:
- Ren et al. 2025, "Decoder-Hybrid-Decoder Architecture for Efficient Reasoning with Long Generation", arXiv
  2507.06607 (SambaY, the GMU, YOCO prefill, differential attention in Phi-4-mini-flash-reasoning).
- https://huggingface.co/microsoft/Phi-4-mini-flash-reasoning (model card: 3.8B parameters, 64K context, 200K
  vocabulary) and the structure of its modelling file / config (vocab 200064, hidden 2560, intermediate 10240,
  32 layers, 40 heads / 20 KV heads, head_dim 64, sliding_window 512, layer_norm_eps 1e-5, Mamba d_state 16,
  d_conv 4, expand 2, dt_rank 160 (= ceil(2560 / 16)), conv bias, no Mamba projection bias; attention q/k/v and
  output projections with bias; lambda_init = 0.8 - 0.6 exp(-0.3 layer)).
- The count here, 3,852,562,944 (embedding counted once, tied), against the stated 3.8B: tests/families/test_sambay.py.
No Hugging Face port of this format exists (the hub's file imports flash_attn), so checkpoints round-trip through
hybridlm's own format only (docs/sambay.md).
"""

from __future__ import annotations

from ..layers.ffn.dense import DenseFFNConfig
from ..layers.mixers.attention import AttentionConfig
from ..layers.mixers.gmu import GMUConfig
from ..layers.mixers.mamba import MambaConfig
from ..model.config import ModelConfig


def sambay_mixers(*, heads: int, kv_heads: int, head_dim: int, window: int, d_state: int, dt_rank: int | None,
                  yoco: bool = True) -> dict:
    """The legend: M Mamba, S sliding-window attention; with yoco also W the memory-writing Mamba, F the full
    attention sharing its KV, G the GMU and X the cross-attention."""
    attn = dict(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, rope_fraction=0.0, qk_norm=False,
                bias=True, out_bias=True, differential=True)
    mamba = dict(d_state=d_state, d_conv=4, expand=2, dt_rank=dt_rank, conv_bias=True, proj_bias=False)
    mixers = {"M": MambaConfig(**mamba), "S": AttentionConfig(**attn, sliding_window=window)}
    if yoco:
        mixers |= {"W": MambaConfig(**mamba, memory_out="memory"), "F": AttentionConfig(**attn, kv_out="kv"),
                   "G": GMUConfig(memory="memory", expand=2), "X": AttentionConfig(**attn, kv_source="kv")}
    return mixers


def sambay_pattern(layers: int, yoco: bool = True) -> str:
    """SambaY's mixer pattern for `layers` (divisible by 4); yoco=False: the self-decoder pattern alone (Samba)."""
    if layers % 4:
        raise ValueError(f"SambaY needs a layer count divisible by 4, got {layers}")
    if not yoco:
        return f"MS*{layers // 2}"
    return f"MS*{layers // 4} W F" + (f" GX*{layers // 4 - 1}" if layers > 4 else "")


def _sambay(name: str, *, vocab: int, d: int, layers: int, heads: int, kv_heads: int, head_dim: int, ffn: int,
            window: int, d_state: int = 16, dt_rank: int | None = None, max_seq_len: int, yoco: bool = True
            ) -> ModelConfig:
    return ModelConfig(
        name=name, vocab_size=vocab, d_model=d, num_layers=layers, mixer_pattern=sambay_pattern(layers, yoco),
        ffn_pattern=f"D*{layers}",
        mixers=sambay_mixers(heads=heads, kv_heads=kv_heads, head_dim=head_dim, window=window, d_state=d_state,
                             dt_rank=dt_rank, yoco=yoco),
        ffns={"D": DenseFFNConfig(intermediate_size=ffn)}, norm="layernorm", norm_eps=1e-5, zero_centered_norm=False,
        tie_embeddings=True, mtp_depth=0, max_seq_len=max_seq_len)


def phi_4_mini_flash() -> ModelConfig:
    """Phi-4-mini-flash-reasoning (SambaY + differential attention), 32 layers, d 2560, 64K context."""
    return _sambay("phi-4-mini-flash", vocab=200_064, d=2560, layers=32, heads=40, kv_heads=20, head_dim=64,
                   ffn=10_240, window=512, d_state=16, dt_rank=160, max_seq_len=65_536)


def tiny_sambay() -> ModelConfig:
    """SambaY at the tiny width (presets/tiny.py's d 128, 8 layers, byte vocabulary): M S M S | W F | G X, a
    64-token window, FFN width 384 so the dense MLP matches tiny-llama4's per-layer FFN weights."""
    return _sambay("tiny-sambay", vocab=256, d=128, layers=8, heads=4, kv_heads=2, head_dim=32, ffn=384, window=64,
                   max_seq_len=2048)


def tiny_samba() -> ModelConfig:
    """tiny-sambay's self-decoder pattern over all 8 layers (Samba: Mamba + sliding-window attention, no global
    attention at all), the same mixers and widths, so the two differ only by the YOCO cross-decoder."""
    return _sambay("tiny-samba", vocab=256, d=128, layers=8, heads=4, kv_heads=2, head_dim=32, ffn=384, window=64,
                   max_seq_len=2048, yoco=False)


PRESETS = {"phi-4-mini-flash": phi_4_mini_flash, "tiny-sambay": tiny_sambay, "tiny-samba": tiny_samba}
ALIASES = {"phi-4-mini-flash-reasoning": "phi-4-mini-flash"}
