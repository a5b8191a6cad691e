"""A tiny hybrid ModelConfig built directly (Gated DeltaNet, gated full attention, sliding-window attention; MoE and
dense FFNs; one MTP block), shared by the generic families' tests and the model tests."""

from hybridlm import AttentionConfig, DenseFFNConfig, GatedDeltaNetConfig, ModelConfig, MoEConfig


def tiny_config(pattern="GGGA GA", ffn="M*6", **over) -> ModelConfig:
    return ModelConfig(
        vocab_size=97, d_model=40, num_layers=6, mixer_pattern=pattern, ffn_pattern=ffn,
        mixers={"G": GatedDeltaNetConfig(num_qk_heads=2, num_v_heads=4, head_k_dim=8, head_v_dim=6, chunk_size=8),
                "A": AttentionConfig(num_heads=4, num_kv_heads=2, head_dim=12, rope_fraction=0.5, output_gate=True),
                "S": AttentionConfig(num_heads=2, num_kv_heads=1, head_dim=12, sliding_window=6)},
        ffns={"M": MoEConfig(num_experts=5, top_k=2, expert_size=16, shared_size=12, shared_gate=True,
                             aux_loss_coef=0.01),
              "D": DenseFFNConfig(intermediate_size=30)},
        mtp_depth=1, **over)
