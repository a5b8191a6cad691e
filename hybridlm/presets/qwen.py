"""Qwen presets: the Qwen3-Next / Qwen3.5 hybrids (Gated DeltaNet + gated attention) and the Qwen3 MoE models.

Sources (hyperparameters copied from, and parameter totals checked against, hybridlm/resources/published-configs.json):
- https://huggingface.co/Qwen/Qwen3-Next-80B-A3B-Instruct (config.json, model card)
- https://huggingface.co/Qwen/Qwen3.5-35B-A3B, https://huggingface.co/Qwen/Qwen3.5-122B-A10B, https://huggingface.co/Qwen/Qwen3.5-397B-A17B, https://huggingface.co/Qwen/Qwen3.5-27B
  (model cards, text_config; transformers' Qwen3_5MoeTextConfig defaults); Qwen3.6 = the same architectures
- https://huggingface.co/Qwen/Qwen3-30B-A3B, https://huggingface.co/Qwen/Qwen3-235B-A22B (config.json, model cards)
"""

from __future__ import annotations

from ..layers.ffn.dense import DenseFFNConfig
from ..layers.ffn.moe import MoEConfig
from ..layers.mixers.attention import AttentionConfig
from ..layers.mixers.gated_deltanet import GatedDeltaNetConfig
from ..model.config import ModelConfig


def _qwen_hybrid(name: str, *, vocab: int, d: int, layers: int, heads: int, kv_heads: int, qk_heads: int,
                 v_heads: int, ffn: MoEConfig | DenseFFNConfig, hf_model_type: str, head_dim: int = 256,
                 lin_dim: int = 128, mtp: int = 1, max_seq_len: int = 262_144) -> ModelConfig:
    """The Qwen3-Next / Qwen3.5 layout: 3 Gated DeltaNet layers then 1 gated attention layer, repeated;
    every layer followed by the same FFN; zero-centred RMSNorm; partial RoPE on 25% of the head (theta 1e7)."""
    letter = "M" if isinstance(ffn, MoEConfig) else "D"
    return ModelConfig(
        name=name, vocab_size=vocab, d_model=d, num_layers=layers,
        mixer_pattern=f"GGGA*{layers // 4}", ffn_pattern=f"{letter}*{layers}",
        mixers={
            "G": GatedDeltaNetConfig(num_qk_heads=qk_heads, num_v_heads=v_heads, head_k_dim=lin_dim, head_v_dim=lin_dim),
            "A": AttentionConfig(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, rope_fraction=0.25,
                                 rope_theta=10_000_000.0, qk_norm=True, output_gate=True),
        },
        ffns={letter: ffn}, norm_eps=1e-6, zero_centered_norm=True, tie_embeddings=False,
        mtp_depth=mtp, mtp_mixer="A" if mtp else None, mtp_ffn=letter if mtp else None,
        max_seq_len=max_seq_len, hf_model_type=hf_model_type,
    )


def _qwen_moe(experts: int, top_k: int, width: int) -> MoEConfig:
    # softmax router, renormalised top-k, one sigmoid-gated shared expert of the expert width, aux coef 0.001
    return MoEConfig(num_experts=experts, top_k=top_k, expert_size=width, shared_size=width, shared_gate=True,
                     score_func="softmax", norm_topk=True, aux_loss_coef=0.001)


def _qwen3_moe(name: str, *, d: int, layers: int, heads: int, expert_size: int) -> ModelConfig:
    """Qwen3 MoE (model_type qwen3_moe): softmax attention on every layer (GQA 4 KV heads, head_dim 128, QK-norm,
    no output gate, full RoPE theta 1e6), plain (not zero-centred) RMSNorm, 128 experts top-8 without a shared
    expert on every layer, untied head, no MTP."""
    return ModelConfig(
        name=name, vocab_size=151_936, d_model=d, num_layers=layers,
        mixer_pattern=f"A*{layers}", ffn_pattern=f"M*{layers}",
        mixers={"A": AttentionConfig(num_heads=heads, num_kv_heads=4, head_dim=128, rope_fraction=1.0,
                                     rope_theta=1_000_000.0, qk_norm=True, output_gate=False)},
        ffns={"M": MoEConfig(num_experts=128, top_k=8, expert_size=expert_size, score_func="softmax", norm_topk=True,
                             aux_loss_coef=0.001)},
        norm_eps=1e-6, zero_centered_norm=False, tie_embeddings=False, mtp_depth=0, max_seq_len=40_960,
        hf_model_type=None,  # qwen3_moe checkpoints are not read or written (config.json only, for costing)
    )


PRESETS = {
    # Qwen/Qwen3-Next-80B-A3B-Instruct config.json + model card: 48 layers = 12 x (3 GDN + 1 gated attn), all MoE.
    "qwen3-next-80b-a3b": lambda: _qwen_hybrid(
        "qwen3-next-80b-a3b", vocab=151_936, d=2048, layers=48, heads=16, kv_heads=2, qk_heads=16, v_heads=32,
        ffn=_qwen_moe(512, 10, 512), hf_model_type="qwen3_next"),
    # Qwen/Qwen3.5-35B-A3B (= Qwen/Qwen3.6-35B-A3B) model card and Qwen3_5MoeTextConfig defaults.
    "qwen3.5-35b-a3b": lambda: _qwen_hybrid(
        "qwen3.5-35b-a3b", vocab=248_320, d=2048, layers=40, heads=16, kv_heads=2, qk_heads=16, v_heads=32,
        ffn=_qwen_moe(256, 8, 512), hf_model_type="qwen3_5_moe"),
    # Qwen/Qwen3.5-122B-A10B model card (text_config).
    "qwen3.5-122b-a10b": lambda: _qwen_hybrid(
        "qwen3.5-122b-a10b", vocab=248_320, d=3072, layers=48, heads=32, kv_heads=2, qk_heads=16, v_heads=64,
        ffn=_qwen_moe(256, 8, 1024), hf_model_type="qwen3_5_moe"),
    # Qwen/Qwen3.5-397B-A17B model card; shared expert width 1024 reproduces the checkpoint total exactly.
    "qwen3.5-397b-a17b": lambda: _qwen_hybrid(
        "qwen3.5-397b-a17b", vocab=248_320, d=4096, layers=60, heads=32, kv_heads=2, qk_heads=16, v_heads=64,
        ffn=_qwen_moe(512, 10, 1024), hf_model_type="qwen3_5_moe"),
    # Qwen/Qwen3.5-27B (= Qwen3.6-27B): dense hybrid, SwiGLU 17408 on every layer.
    "qwen3.5-27b": lambda: _qwen_hybrid(
        "qwen3.5-27b", vocab=248_320, d=5120, layers=64, heads=24, kv_heads=4, qk_heads=16, v_heads=48,
        ffn=DenseFFNConfig(intermediate_size=17_408), hf_model_type="qwen3_5"),
    # Qwen/Qwen3-30B-A3B model card + config.json (published-configs.json): HF safetensors total 30,532,122,624.
    "qwen3-30b-a3b": lambda: _qwen3_moe("qwen3-30b-a3b", d=2048, layers=48, heads=32, expert_size=768),
    # Qwen/Qwen3-235B-A22B model card + config.json (published-configs.json): HF safetensors total 235,093,634,560.
    "qwen3-235b-a22b": lambda: _qwen3_moe("qwen3-235b-a22b", d=4096, layers=94, heads=64, expert_size=1536),
}
ALIASES = {"qwen3.6-35b-a3b": "qwen3.5-35b-a3b", "qwen3.6-27b": "qwen3.5-27b"}
