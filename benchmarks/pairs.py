"""The tiny same-weight model pairs the whole-model benchmarks time: a transformers model built from a small config
(random weights), saved, and loaded by HybridLM.from_hf. Used by model_vs_transformers.py,
deepseek_v4_vs_transformers.py and decode.py. Each builder returns (description, transformers model, HybridLM)."""

from __future__ import annotations

import tempfile

import torch


def qwen3_next_pair():
    """Qwen3-Next-80B-A3B's proportions at d_model 256 instead of 2048 (every width / 8): GDN key dim = d and value
    dim = 2d (heads of 64 instead of 128), attention q = 2d with 8 query heads per KV head, 64 experts of width d/4
    with top-10 + 1 shared (512 experts in the original), vocabulary 8x d."""
    import transformers

    from hybridlm import HybridLM
    cfg = transformers.AutoConfig.for_model(
        "qwen3_next", vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=1, head_dim=64, linear_num_key_heads=4, linear_num_value_heads=8, linear_key_head_dim=64,
        linear_value_head_dim=64, num_experts=64, num_experts_per_tok=10, moe_intermediate_size=64,
        shared_expert_intermediate_size=64, intermediate_size=512)
    hf = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        return "Qwen3-Next-shaped (GGGA, d 256, 64 experts top-10 + shared)", hf, HybridLM.from_hf(d).eval()


def deepseek_v4_pair():
    """DeepSeek-V4-Flash's layout at d_model 256: heads 8 x 64 (64 x 512 there) with 8 RoPE dims (the same 1/8 share),
    q_lora 64, 2 output groups x 64, window 128, CSA 4x with an 8 x 32 indexer keeping 64 entries, HCA 128x, 32
    experts of width 128 top-6 + 1 shared (256 x 2048 there), the first layer hash-routed, 4 mHC copies."""
    import transformers

    from hybridlm import HybridLM
    kinds = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
             "compressed_sparse_attention"]
    cfg = transformers.DeepseekV4Config(
        vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_attention_heads=8, head_dim=64,
        qk_rope_head_dim=8, q_lora_rank=64, o_groups=2, o_lora_rank=64, sliding_window=128, index_n_heads=8,
        index_head_dim=32, index_topk=64, n_routed_experts=32, num_experts_per_tok=6, moe_intermediate_size=128,
        layer_types=kinds, mlp_layer_types=["hash_moe", "moe", "moe", "moe"], max_position_embeddings=4096,
        rope_scaling={"type": "yarn", "factor": 16, "original_max_position_embeddings": 256, "beta_fast": 32,
                      "beta_slow": 1})
    hf = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, b in hf.named_buffers():
            if name.endswith("tid2eid"):  # transformers initialises the hash table to zeros (every token to expert 0)
                b.copy_(torch.rand(b.shape[0], 32).argsort(-1)[:, :b.shape[1]])
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        return "DeepSeek-V4-Flash layout (S C H C, d 256, mHC x4, 32 experts top-6)", hf, HybridLM.from_hf(d).eval()
