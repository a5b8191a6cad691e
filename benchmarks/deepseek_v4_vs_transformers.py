"""Whole-model speed for DeepSeek-V4: hybridlm against transformers on a tiny V4-Flash-shaped model, same weights.

Builds a transformers DeepseekV4ForCausalLM from a small config (random weights; every attention kind: window-only,
CSA with the lightning indexer, HCA; hash-routed and score-routed MoE; mHC), loads the same checkpoint with
HybridLM.from_hf, checks the logits agree, then alternates the two implementations and reports the best of N:
  - one forward over T tokens (B=1)
  - generation: a prefill then greedy decode steps
  - per layer: one mHC sublayer wrapper, each attention kind, one MoE
Run: python benchmarks/deepseek_v4_vs_transformers.py [--quick] [--threads N]
"""

from __future__ import annotations

import tempfile

import torch
from common import alternate, greedy_agreement, line, setup


def main() -> None:
    args, reps = setup(__doc__)
    import transformers

    from hybridlm import HybridLM

    T = 512 if args.quick else 2048
    prompt_len, new = (128, 16) if args.quick else (512, 32)
    torch.manual_seed(0)
    # DeepSeek-V4-Flash's layout at d_model 256: heads 8 x 64 (64 x 512 there) with 8 RoPE dims (the same 1/8 share),
    # q_lora 64, 2 output groups x 64, window 128, CSA 4x with an 8 x 32 indexer keeping 64 entries, HCA 128x,
    # 32 experts of width 128 top-6 + 1 shared (256 x 2048 there), the first layer hash-routed, 4 mHC copies.
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
        ours = HybridLM.from_hf(d).eval()
    ids = torch.randint(0, 2048, (1, T))
    with torch.no_grad():
        diff = (ours(ids[:, :256]).logits - hf(input_ids=ids[:, :256]).logits).abs().max().item()
    print(f"threads={torch.get_num_threads()}  model: DeepSeek-V4-Flash layout, 4 layers S C H C, d=256, "
          f"32 experts top-6 + shared, mHC x4; max |logit diff| = {diff:.2e}")

    prompt = ids[:, :prompt_len]

    def hf_generate():
        return hf.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)

    def our_generate():
        return ours.generate(prompt, max_new_tokens=new, temperature=0.0)

    with torch.no_grad():
        print(greedy_agreement(our_generate()[0, prompt_len:], hf_generate()[0, prompt_len:]))
    whole = alternate({"forward": (lambda: ours(ids), lambda: hf(input_ids=ids)),
                       "generate": (our_generate, hf_generate)}, reps)

    x = torch.randn(1, T, cfg.hidden_size)
    streams = torch.randn(1, T, 4, cfg.hidden_size)
    pos = torch.arange(T)[None]
    emb = {k: hf.model.rotary_emb(x, pos, layer_type=k) for k in ("main", "compress")}
    mask = transformers.masking_utils.create_sliding_window_causal_mask(
        config=hf.config, inputs_embeds=x, attention_mask=None, past_key_values=None, position_ids=pos)
    tok = ids[:, :T]

    def hf_attn(i):
        return lambda: hf.model.layers[i].self_attn(x, position_embeddings=emb, position_ids=pos, attention_mask=mask)

    parts = {
        "mHC (one sublayer)": (lambda: ours.layers[1].attn_hc(streams), lambda: hf.model.layers[1].attn_hc(streams)),
        "window-only attention": (lambda: ours.layers[0].mixer(x), hf_attn(0)),
        "CSA attention": (lambda: ours.layers[1].mixer(x), hf_attn(1)),
        "HCA attention": (lambda: ours.layers[2].mixer(x), hf_attn(2)),
        "moe layer": (lambda: ours.layers[1].ffn(x), lambda: hf.model.layers[1].mlp(x)),
        "hash moe layer": (lambda: ours.layers[0].ffn(x, tok), lambda: hf.model.layers[0].mlp(x, input_ids=tok)),
    }
    print(f"per-layer forward at T={T} (best of {reps}):")
    for name, (t_ours, t_hf) in alternate(parts, reps).items():
        print("  " + line(name, t_ours, t_hf, "ms"))
    print(line(f"forward T={T}:", *whole["forward"]))
    print(line(f"prefill {prompt_len} + decode {new}:", *whole["generate"]))


if __name__ == "__main__":
    main()
