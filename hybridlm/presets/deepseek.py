"""DeepSeek presets: DeepSeek-V3 / V3.2 (MLA + DeepSeekMoE), Kimi-K2 (the V3 architecture) and DeepSeek-V4
(compressed sparse attention + mHC).

Sources (hyperparameters copied from, and parameter totals checked against, hybridlm/resources/published-configs.json):
- https://huggingface.co/deepseek-ai/DeepSeek-V3 (config.json, inference/configs/config_671B.json; V3-0324, V3.1, R1 share the shapes)
- https://huggingface.co/deepseek-ai/DeepSeek-V3.2-Exp (config.json; V3.2 final shares the shapes)
- https://huggingface.co/moonshotai/Kimi-K2-Instruct (config.json; Base / 0905 / Thinking share the shapes)
- https://huggingface.co/deepseek-ai/DeepSeek-V4-Flash, https://huggingface.co/deepseek-ai/DeepSeek-V4-Pro (config.json)
`v4_mixers` and `v4_moe` are public: the tiny DeepSeek-V4 preset (presets/tiny.py) reuses them at its width.
"""

from __future__ import annotations

from ..layers.ffn.dense import DenseFFNConfig
from ..layers.ffn.moe import MoEConfig
from ..layers.mixers.compressed_attention import CompressedAttentionConfig
from ..layers.mixers.mla import MLAConfig
from ..model.config import ModelConfig


def _deepseek_v3(name: str, *, vocab: int, heads: int, dense_layers: int, experts: int, groups: int, topk_groups: int,
                 routed_scale: float, rope_theta: float, yarn_factor: float, yarn_beta_fast: float, mtp: int,
                 max_seq_len: int, index_n_heads: int = 0) -> ModelConfig:
    """DeepSeek-V3 architecture (d=7168, 61 layers): MLA on every layer (q_lora 1536, kv_lora 512, nope/rope/v head
    dims 128/64/128, interleaved RoPE with YaRN from 4096 positions, mscale 1.0 / 1.0); the first `dense_layers`
    layers dense SwiGLU 18432, the rest MoE: sigmoid scores, `experts` x 2048 routed top-8 (group-limited when
    groups > 1), selection-only bias with the aux-loss-free step 0.001, top-k renormalised then scaled by
    `routed_scale`, one ungated shared expert of width 2048. Plain RMSNorm (eps 1e-6), untied head.
    index_n_heads > 0: V3.2's sparse-attention indexer (head dim 128, top-2048 keys) in every MLA layer."""
    mla = MLAConfig(num_heads=heads, kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64,
                    v_head_dim=128, rope_theta=rope_theta, rope_interleaved=True, rope_scaling="yarn",
                    yarn_factor=yarn_factor, yarn_original_max_position=4096, yarn_beta_fast=yarn_beta_fast,
                    yarn_beta_slow=1.0, yarn_mscale=1.0, yarn_mscale_all_dim=1.0, index_n_heads=index_n_heads,
                    index_head_dim=128, index_topk=2048)
    moe = MoEConfig(num_experts=experts, top_k=8, expert_size=2048, shared_size=2048, shared_gate=False,
                    score_func="sigmoid", norm_topk=True, routed_scale=routed_scale, bias_update_rate=0.001,
                    n_groups=groups, topk_groups=topk_groups)
    return ModelConfig(
        name=name, vocab_size=vocab, d_model=7168, num_layers=61, mixer_pattern="L*61",
        ffn_pattern=f"D*{dense_layers} M*{61 - dense_layers}", mixers={"L": mla},
        ffns={"D": DenseFFNConfig(intermediate_size=18_432), "M": moe}, norm_eps=1e-6, zero_centered_norm=False,
        tie_embeddings=False, mtp_depth=mtp, mtp_mixer="L" if mtp else None, mtp_ffn="M" if mtp else None,
        max_seq_len=max_seq_len, hf_model_type="deepseek_v32" if index_n_heads else "deepseek_v3",
    )


def v4_mixers(*, heads: int, q_lora: int, o_groups: int, index_topk: int, head_dim: int = 512, rope_dim: int = 64,
               o_lora: int = 1024, window: int = 128, csa: int = 4, hca: int = 128, index_heads: int = 64,
               index_dim: int = 128, yarn: dict | None = None, index_loss_coef: float = 0.0
               ) -> dict[str, CompressedAttentionConfig]:
    """DeepSeek-V4's three attention kinds, one shape: S window-only (RoPE theta 1e4), C = CSA (ratio `csa`, lightning
    indexer top-`index_topk`, trained by its KL loss when index_loss_coef > 0) and H = HCA (ratio `hca`), both RoPE
    theta 1.6e5 with YaRN."""
    shape = {"num_heads": heads, "head_dim": head_dim, "rope_dim": rope_dim, "q_lora_rank": q_lora,
             "o_groups": o_groups, "o_lora_rank": o_lora, "sliding_window": window, "index_n_heads": index_heads,
             "index_head_dim": index_dim, "index_topk": index_topk}
    return {"S": CompressedAttentionConfig(**shape, rope_theta=10_000.0),
            "C": CompressedAttentionConfig(**shape, compression="csa", compress_ratio=csa, rope_theta=160_000.0,
                                           rope_scaling=yarn, index_loss_coef=index_loss_coef),
            "H": CompressedAttentionConfig(**shape, compression="hca", compress_ratio=hca, rope_theta=160_000.0,
                                           rope_scaling=yarn)}


def v4_moe(experts: int, width: int, routed_scale: float, top_k: int = 6, hash_routing: bool = False) -> MoEConfig:
    """sqrt(softplus) scores, selection-only bias (aux-loss-free step 0.001) without group limit, top-k
    renormalised then scaled, one ungated shared expert of the expert width, SwiGLU clamped at 10."""
    return MoEConfig(num_experts=experts, top_k=top_k, expert_size=width, shared_size=width, shared_gate=False,
                     score_func="sqrtsoftplus", norm_topk=True, routed_scale=routed_scale, bias_update_rate=0.001,
                     swiglu_limit=10.0, hash_routing=hash_routing)


def _deepseek_v4(name: str, *, d: int, mixer_pattern: str, heads: int, q_lora: int, o_groups: int, experts: int,
                 width: int, routed_scale: float, index_topk: int) -> ModelConfig:
    """DeepSeek-V4: shared-KV attention (512-dim K=V head, 64 RoPE dims, window 128 with sinks; CSA 4x with a 64 x 128
    lightning indexer, HCA 128x; YaRN x16 from 65,536 on the compressed layers), grouped output projection
    (o_lora 1024), mHC with 4 copies and 20 Sinkhorn iterations, MoE on every layer with the first 3 hash-routed,
    one MTP module (window-only attention), vocab 129,280, untied head, plain RMSNorm eps 1e-6, 1M context."""
    layers = sum(int(t.split("*")[1]) * len(t.split("*")[0]) if "*" in t else len(t) for t in mixer_pattern.split())
    yarn = {"rope_type": "yarn", "factor": 16, "original_max_position_embeddings": 65_536, "beta_fast": 32,
            "beta_slow": 1}
    return ModelConfig(
        name=name, vocab_size=129_280, d_model=d, num_layers=layers, mixer_pattern=mixer_pattern,
        ffn_pattern=f"X*3 M*{layers - 3}",
        mixers=v4_mixers(heads=heads, q_lora=q_lora, o_groups=o_groups, index_topk=index_topk, yarn=yarn),
        ffns={"X": v4_moe(experts, width, routed_scale, hash_routing=True), "M": v4_moe(experts, width, routed_scale)},
        norm_eps=1e-6, zero_centered_norm=False, tie_embeddings=False, mtp_depth=1, mtp_mixer="S", mtp_ffn="M",
        max_seq_len=1_048_576, hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6, hf_model_type="deepseek_v4",
    )


PRESETS = {
    # deepseek-ai/DeepSeek-V3 config.json + inference/configs/config_671B.json (published-configs.json; also
    # V3-0324, V3.1, R1): 3 dense layers, 256 experts in 8 groups (4 kept), route scale 2.5, yarn x40 (beta_fast 32),
    # one MTP module. Totals: 671.026B main model; + MTP (unique) 682.636B; the checkpoint's 684,489,845,504 also
    # counts the MTP layer's copies of the embedding and head and the 58 + 1 selection-bias vectors (buffers here).
    "deepseek-v3": lambda: _deepseek_v3(
        "deepseek-v3", vocab=129_280, heads=128, dense_layers=3, experts=256, groups=8, topk_groups=4,
        routed_scale=2.5, rope_theta=10_000.0, yarn_factor=40.0, yarn_beta_fast=32.0, mtp=1, max_seq_len=163_840),
    # deepseek-ai/DeepSeek-V3.2-Exp (V3.2 final: same shapes) config (published-configs.json): V3 + the DSA
    # lightning indexer (64 heads x 128, top-2048) in every layer: 13.96M params per layer (0.851B over 61 layers,
    # + 14M in the MTP layer); main model 671.878B; HF safetensors total (V3.2, logical) 685,355,329,792 with the
    # MTP layer's embedding / head copies and the bias vectors. The indexer is always active.
    "deepseek-v3.2": lambda: _deepseek_v3(
        "deepseek-v3.2", vocab=129_280, heads=128, dense_layers=3, experts=256, groups=8, topk_groups=4,
        routed_scale=2.5, rope_theta=10_000.0, yarn_factor=40.0, yarn_beta_fast=32.0, mtp=1, max_seq_len=163_840,
        index_n_heads=64),
    # moonshotai/Kimi-K2-Instruct config.json (published-configs.json; Base/0905/Thinking the same shapes): the V3
    # architecture with 64 heads, 1 dense layer, 384 experts ungrouped, route scale 2.827, rope theta 5e4, yarn x32
    # (beta_fast 1), no MTP weights shipped. Checkpoint total 1,026,408,232,448 (+ 60 selection-bias vectors).
    "kimi-k2": lambda: _deepseek_v3(
        "kimi-k2", vocab=163_840, heads=64, dense_layers=1, experts=384, groups=1, topk_groups=1,
        routed_scale=2.827, rope_theta=50_000.0, yarn_factor=32.0, yarn_beta_fast=1.0, mtp=0, max_seq_len=131_072),
    # deepseek-ai/DeepSeek-V4-Flash config.json (published-configs.json): 43 layers = 2 window-only + CSA / HCA
    # alternating (compress_ratios 0, 0, 4, 128, ..., 4), 256 experts x 2048 top-6, route scale 1.5, index top-512.
    # Main model 284.332B ("284B"); + MTP 290.942B; the HF total 290,944,616,402 adds the int tid2eid tables and the
    # selection-bias vectors (buffers here).
    "deepseek-v4-flash": lambda: _deepseek_v4(
        "deepseek-v4-flash", d=4096, mixer_pattern="SS CH*20 C", heads=64, q_lora=1024, o_groups=8, experts=256,
        width=2048, routed_scale=1.5, index_topk=512),
    # deepseek-ai/DeepSeek-V4-Pro config.json as quoted (published-configs.json): 61 layers = 2 HCA + CSA / HCA
    # alternating (compress_ratios 128, 128, 4, 128, ..., 4), d 7168, 128 heads, q_lora 1536, 16 output groups,
    # 384 experts x 3072 top-6, route scale 2.5, index top-1024. HF total 1,598,839,674,782.
    "deepseek-v4-pro": lambda: _deepseek_v4(
        "deepseek-v4-pro", d=7168, mixer_pattern="HH CH*29 C", heads=128, q_lora=1536, o_groups=16, experts=384,
        width=3072, routed_scale=2.5, index_topk=1024),
}
ALIASES: dict[str, str] = {}
