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

import torch
from common import alternate, greedy_agreement, line, setup
from pairs import deepseek_v4_pair


def main() -> None:
    args, reps = setup(__doc__)
    import transformers

    T = 512 if args.quick else 2048
    prompt_len, new = (128, 16) if args.quick else (512, 32)
    torch.manual_seed(0)
    _, hf, ours = deepseek_v4_pair()
    cfg = hf.config
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
