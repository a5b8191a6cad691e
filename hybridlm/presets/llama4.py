"""Llama 4 presets (text model; iRoPE chunked local attention + global NoPE, top-1 MoE).

Sources (hyperparameters copied from, and parameter totals checked against, hybridlm/resources/published-configs.json):
- https://huggingface.co/meta-llama/Llama-4-Scout-17B-16E-Instruct (config.json text_config; transformers' Llama4TextConfig defaults)
- https://huggingface.co/meta-llama/Llama-4-Maverick-17B-128E-Instruct (as quoted by TensorRT-LLM's test config and Primus PR #172)
"""

from __future__ import annotations

from ..layers.ffn.dense import DenseFFNConfig
from ..layers.ffn.moe import MoEConfig
from ..layers.mixers.attention import AttentionConfig
from ..model.config import ModelConfig


def _llama4(name: str, *, experts: int, moe_step: int, qk_norm: bool, rope_scaling: dict | None,
            max_seq_len: int) -> ModelConfig:
    """Llama 4 text model (iRoPE): 3 of every 4 layers chunked local attention (8192-token blocks) with interleaved
    RoPE (theta 5e5) and, where used, weightless QK-norm; every 4th layer global NoPE attention with temperature
    tuning. GQA 40q/8kv x 128 at d=5120, 48 layers. MoE: top-1 sigmoid router that scales the expert input, 8192-wide
    experts plus one ungated shared expert of that width, every `moe_step`-th layer (the rest dense SwiGLU 16384).
    Plain RMSNorm (eps 1e-5), untied head, no MTP, vocab 202,048."""
    local = AttentionConfig(num_heads=40, num_kv_heads=8, head_dim=128, rope_fraction=1.0, rope_theta=500_000.0,
                            qk_norm=qk_norm, qk_norm_weight=not qk_norm, output_gate=False, chunk_size=8192,
                            rope_interleaved=True, rope_scaling=rope_scaling)
    nope = AttentionConfig(num_heads=40, num_kv_heads=8, head_dim=128, rope_fraction=0.0, rope_theta=500_000.0,
                           qk_norm=False, output_gate=False, temperature_tuning=True, attn_scale=0.1,
                           floor_scale=8192)
    moe = MoEConfig(num_experts=experts, top_k=1, expert_size=8192, shared_size=8192, shared_gate=False,
                    score_func="sigmoid", norm_topk=False, scale_input=True)
    ffns = {"M": moe} if moe_step == 1 else {"D": DenseFFNConfig(intermediate_size=16_384), "M": moe}
    return ModelConfig(
        name=name, vocab_size=202_048, d_model=5120, num_layers=48, mixer_pattern="RRRN*12",
        ffn_pattern="M*48" if moe_step == 1 else f"{'D' * (moe_step - 1)}M*{48 // moe_step}",
        mixers={"R": local, "N": nope}, ffns=ffns, norm_eps=1e-5, zero_centered_norm=False, tie_embeddings=False,
        mtp_depth=0, max_seq_len=max_seq_len, hf_model_type="llama4_text",
    )


PRESETS = {
    # meta-llama/Llama-4-Scout-17B-16E(-Instruct) config.json text_config (published-configs.json; HF
    # Llama4TextConfig defaults): 16 experts on every layer, QK-norm, llama3 RoPE scaling x16 from 8192, 10M context.
    "llama4-scout-17b-16e": lambda: _llama4(
        "llama4-scout-17b-16e", experts=16, moe_step=1, qk_norm=True, max_seq_len=10_485_760,
        rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                      "original_max_position_embeddings": 8192}),
    # meta-llama/Llama-4-Maverick-17B-128E(-Instruct) (published-configs.json: TensorRT-LLM test config, Primus PR
    # #172): 128 experts on odd layers (moe_layers = 1, 3, ..., 47), dense 16384 on even ones, no QK-norm, no RoPE
    # scaling, 1M context. NoPE every 4th layer assumed as in Scout (unverified there; no parameter impact).
    "llama4-maverick-17b-128e": lambda: _llama4(
        "llama4-maverick-17b-128e", experts=128, moe_step=2, qk_norm=False, rope_scaling=None,
        max_seq_len=1_048_576),
}
ALIASES = {"llama-4-scout": "llama4-scout-17b-16e", "llama-4-maverick": "llama4-maverick-17b-128e"}
