"""Named configs: full-scale published models and tiny trainable ones.

Full-scale hyperparameters come from ../shared/reference/published-configs.json (model cards and config.json
dumps, cited per preset below). Build them on the meta device: `HybridLM(get_config(name), device="meta")`.
"""

from __future__ import annotations

from .config import (
    AttentionConfig,
    CompressedAttentionConfig,
    DenseFFNConfig,
    GatedDeltaNetConfig,
    MLAConfig,
    ModelConfig,
    MoEConfig,
)


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


def _v4_mixers(*, heads: int, q_lora: int, o_groups: int, index_topk: int, head_dim: int = 512, rope_dim: int = 64,
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


def _v4_moe(experts: int, width: int, routed_scale: float, top_k: int = 6, hash_routing: bool = False) -> MoEConfig:
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
        mixers=_v4_mixers(heads=heads, q_lora=q_lora, o_groups=o_groups, index_topk=index_topk, yarn=yarn),
        ffns={"X": _v4_moe(experts, width, routed_scale, hash_routing=True), "M": _v4_moe(experts, width, routed_scale)},
        norm_eps=1e-6, zero_centered_norm=False, tie_embeddings=False, mtp_depth=1, mtp_mixer="S", mtp_ffn="M",
        max_seq_len=1_048_576, hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6, hf_model_type="deepseek_v4",
    )


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
    mixers = _v4_mixers(heads=4, head_dim=32, rope_dim=16, q_lora=96, o_groups=2, o_lora=64, window=32, csa=4, hca=16,
                        index_heads=4, index_dim=32, index_topk=8, index_loss_coef=1.0)
    return ModelConfig(
        name="tiny-deepseek-v4", vocab_size=256, d_model=128, num_layers=8, mixer_pattern="S CH*3 C",
        ffn_pattern="X*2 M*6", mixers=mixers,
        ffns={"X": _v4_moe(8, 128, 1.0, top_k=2, hash_routing=True), "M": _v4_moe(8, 128, 1.0, top_k=2)},
        norm_eps=1e-6, zero_centered_norm=False, tie_embeddings=True, mtp_depth=1, mtp_mixer="S", mtp_ffn="M",
        max_seq_len=2048, hc_mult=4, hf_model_type="deepseek_v4")


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
ALIASES = {"qwen3.6-35b-a3b": "qwen3.5-35b-a3b", "qwen3.6-27b": "qwen3.5-27b",
           "llama-4-scout": "llama4-scout-17b-16e", "llama-4-maverick": "llama4-maverick-17b-128e"}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_config(name: str) -> ModelConfig:
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(list(PRESETS) + list(ALIASES))}")
    return PRESETS[key]()
