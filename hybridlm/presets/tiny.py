"""Tiny trainable presets (byte-level vocabulary, d=128, 8 layers): a few million parameters that train on a
laptop CPU. Each is the layout of one full-scale family (presets/qwen.py, llama4.py, deepseek.py) at the tiny
width, with comparable active parameters, so `hybridlm compare` contrasts the architectures, not their sizes.
Sources: the full-scale presets they shrink (cited there); the widths are this project's choice.
"""

from __future__ import annotations

from ..layers.ffn.dense import DenseFFNConfig
from ..layers.ffn.moe import MoEConfig
from ..layers.mixers.attention import AttentionConfig
from ..layers.mixers.gated_deltanet import GatedDeltaNetConfig
from ..layers.mixers.mla import MLAConfig
from ..model.config import ModelConfig
from .deepseek import v4_mixers, v4_moe


def _tiny(name: str, mixer_pattern: str) -> ModelConfig:
    """A few-million-parameter Qwen-style model that trains on a laptop CPU (byte-level vocabulary)."""
    return ModelConfig(
        name=name, vocab_size=256, d_model=128, num_layers=8, mixer_pattern=mixer_pattern, ffn_pattern="M*8",
        mixers={
            "G": GatedDeltaNetConfig(num_qk_heads=2, num_v_heads=4, head_k_dim=32, head_v_dim=32, chunk_size=64),
            "A": AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=32, rope_fraction=0.25, rope_theta=10_000.0,
                                 qk_norm=True, output_gate=True),
        },
        ffns={"M": MoEConfig(num_experts=8, top_k=2, expert_size=128, shared_size=128, shared_gate=True,
                             aux_loss_coef=0.001)},
        tie_embeddings=True, mtp_depth=1, mtp_mixer="A", mtp_ffn="M", max_seq_len=2048, hf_model_type="qwen3_next",
    )


def _tiny_llama4() -> ModelConfig:
    """Llama-4-style tiny model (the `_llama4` layout at the tiny width): 3 of 4 layers chunked local attention
    (64-token blocks, interleaved RoPE, weightless QK-norm), every 4th global NoPE with temperature tuning (floor
    scale = the chunk, as Llama 4's 8192 is its chunk); dense SwiGLU and top-1 sigmoid MoE (input scaling, ungated
    shared expert) interleaved. Widths chosen so active parameters match `_tiny` (147,456 FFN weights per layer)."""
    local = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=32, rope_fraction=1.0, rope_theta=10_000.0,
                            qk_norm=True, qk_norm_weight=False, output_gate=False, chunk_size=64, rope_interleaved=True)
    nope = AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=32, rope_fraction=0.0, qk_norm=False,
                           output_gate=False, temperature_tuning=True, attn_scale=0.1, floor_scale=64)
    moe = MoEConfig(num_experts=8, top_k=1, expert_size=192, shared_size=192, shared_gate=False, score_func="sigmoid",
                    norm_topk=False, scale_input=True)
    return ModelConfig(
        name="tiny-llama4", vocab_size=256, d_model=128, num_layers=8, mixer_pattern="RRRN*2", ffn_pattern="DM*4",
        mixers={"R": local, "N": nope}, ffns={"D": DenseFFNConfig(intermediate_size=384), "M": moe}, norm_eps=1e-5,
        zero_centered_norm=False, tie_embeddings=True, mtp_depth=0, max_seq_len=2048, hf_model_type="llama4_text")


def _tiny_deepseek() -> ModelConfig:
    """DeepSeek-V3-style tiny model (the `_deepseek_v3` layout at the tiny width): MLA on every layer (q_lora 96,
    kv_lora 64, nope/rope/v head dims 32/16/32, interleaved RoPE, no YaRN at this length), first layer dense SwiGLU,
    then sigmoid MoE with group-limited routing (8 experts in 4 groups, 2 groups kept, top-2, renormalised), the
    aux-loss-free bias step and one ungated shared expert; one MTP module. Active parameters comparable to `_tiny`."""
    mla = MLAConfig(num_heads=4, kv_lora_rank=64, q_lora_rank=96, qk_nope_head_dim=32, qk_rope_head_dim=16,
                    v_head_dim=32, rope_theta=10_000.0, rope_interleaved=True)
    moe = MoEConfig(num_experts=8, top_k=2, expert_size=128, shared_size=128, shared_gate=False, score_func="sigmoid",
                    norm_topk=True, bias_update_rate=0.001, n_groups=4, topk_groups=2)
    return ModelConfig(
        name="tiny-deepseek", vocab_size=256, d_model=128, num_layers=8, mixer_pattern="L*8", ffn_pattern="D M*7",
        mixers={"L": mla}, ffns={"D": DenseFFNConfig(intermediate_size=384), "M": moe}, norm_eps=1e-6,
        zero_centered_norm=False, tie_embeddings=True, mtp_depth=1, mtp_mixer="L", mtp_ffn="M", max_seq_len=2048,
        hf_model_type="deepseek_v3")


def _tiny_deepseek_v4() -> ModelConfig:
    """DeepSeek-V4-style tiny model (the `_deepseek_v4` layout at the tiny width): window-only attention first, then
    CSA / HCA alternating (window 32, CSA 4x with a 4 x 32 indexer keeping 8 entries, HCA 16x, so compression matters
    inside a 256-token training window; the indexer trained by its KL loss), 4 heads x 32 with 16 RoPE dims, grouped
    output 2 x 64; mHC with 4 copies;
    sqrt-softplus MoE with the first 2 layers hash-routed, clamped SwiGLU; one MTP module. The MoE is `_tiny`'s
    (8 experts, top-2, width 128, shared 128), so active parameters are comparable."""
    mixers = v4_mixers(heads=4, head_dim=32, rope_dim=16, q_lora=96, o_groups=2, o_lora=64, window=32, csa=4, hca=16,
                        index_heads=4, index_dim=32, index_topk=8, index_loss_coef=1.0)
    return ModelConfig(
        name="tiny-deepseek-v4", vocab_size=256, d_model=128, num_layers=8, mixer_pattern="S CH*3 C",
        ffn_pattern="X*2 M*6", mixers=mixers,
        ffns={"X": v4_moe(8, 128, 1.0, top_k=2, hash_routing=True), "M": v4_moe(8, 128, 1.0, top_k=2)},
        norm_eps=1e-6, zero_centered_norm=False, tie_embeddings=True, mtp_depth=1, mtp_mixer="S", mtp_ffn="M",
        max_seq_len=2048, hc_mult=4, hf_model_type="deepseek_v4")


PRESETS = {
    # Tiny trainable models: the Qwen-style hybrid and its two baselines, same width, depth and MoE.
    "tiny-hybrid": lambda: _tiny("tiny-hybrid", "GGGA*2"),
    "tiny-attention": lambda: _tiny("tiny-attention", "A*8"),
    "tiny-gdn": lambda: _tiny("tiny-gdn", "G*8"),
    # Tiny members of the other families, for `hybridlm compare` (same width, depth, vocabulary; comparable active
    # parameters): Llama 4 (iRoPE + top-1 MoE), DeepSeek-V3 (MLA + group-limited sigmoid MoE) and DeepSeek-V4
    # (compressed sparse attention + mHC + hash / sqrt-softplus MoE).
    "tiny-llama4": _tiny_llama4,
    "tiny-deepseek": _tiny_deepseek,
    "tiny-deepseek-v4": _tiny_deepseek_v4,
}
ALIASES: dict[str, str] = {}
