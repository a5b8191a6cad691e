"""Whole-model speed: hybridlm against transformers on a tiny Qwen3-Next-shaped model with the same weights.

Builds a transformers Qwen3NextForCausalLM from a small config (random weights), loads the same checkpoint with
HybridLM.from_hf, checks the logits agree, then alternates the two implementations and reports the best of N:
  - one forward over T=2048 tokens (B=1)
  - generation: a 512-token prefill then 32 greedy decode steps (both produce the same tokens)
Run: python benchmarks/model_vs_transformers.py [--quick] [--threads N]
"""

from __future__ import annotations

import torch
from common import alternate, best_of, greedy_agreement, line, setup
from pairs import qwen3_next_pair


def main() -> None:
    args, reps = setup(__doc__)

    T = 512 if args.quick else 2048
    prompt_len, new = (128, 16) if args.quick else (512, 32)
    torch.manual_seed(0)
    _, hf, ours = qwen3_next_pair()
    cfg = hf.config
    ids = torch.randint(0, 2048, (1, T))
    with torch.no_grad():
        diff = (ours(ids[:, :256]).logits - hf(input_ids=ids[:, :256]).logits).abs().max().item()
    print(f"threads={torch.get_num_threads()}  model: Qwen3-Next proportions, 4 layers GGGA, d=256, 64 experts top-10 + shared; max |logit diff| = {diff:.2e}")

    prompt = ids[:, :prompt_len]

    def hf_generate():
        return hf.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)

    def our_generate():
        return ours.generate(prompt, max_new_tokens=new)

    with torch.no_grad():
        print(greedy_agreement(our_generate()[0, prompt_len:], hf_generate()[0, prompt_len:]))
    whole = alternate({"forward": (lambda: ours(ids), lambda: hf(input_ids=ids)),
                       "generate": (our_generate, hf_generate)}, reps)
    a_mm, b_mm = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t_mm = best_of(lambda: a_mm @ b_mm, reps)
    # Where the time goes: the same layer of each implementation on the same hidden states. Projections, the
    # attention kernel (SDPA) and the head are the same torch kernels in both, which bounds the whole-model ratio.
    x = torch.randn(1, T, cfg.hidden_size)
    pos = hf.model.rotary_emb(x, torch.arange(T)[None])
    parts = {
        "gated deltanet layer": (lambda: ours.layers[0].mixer(x), lambda: hf.model.layers[0].linear_attn(x)),
        "gated attention layer": (lambda: ours.layers[3].mixer(x), lambda: hf.model.layers[3].self_attn(x, pos, None)),
        "moe layer": (lambda: ours.layers[0].ffn(x), lambda: hf.model.layers[0].mlp(x)),
    }
    print(f"per-layer forward at T={T} (best of {reps}):")
    for name, (t_ours, t_hf) in alternate(parts, reps).items():
        print("  " + line(name, t_ours, t_hf, "ms"))
    (t_ours, t_hf), (g_ours, g_hf) = whole["forward"], whole["generate"]
    print(line(f"forward T={T}:", t_ours, t_hf))
    # The floor: the forward's matmul FLOPs (hybridlm's analytic count, docs/cost.md) at the machine's plain
    # 2048^3 matmul rate measured in this run. No implementation of these kernels can beat it by much, so it
    # bounds the speed-up any implementation can show over transformers.
    mm_rate = 2 * 2048**3 / t_mm
    flops = ours.forward_flops(T)
    floor = flops / mm_rate
    print(f"  matmul rate {mm_rate / 1e9:.1f} GFLOP/s; forward {flops / 1e9:.2f} GFLOP -> floor {floor:.3f} s; "
          f"hybridlm at {flops / t_ours / 1e9:.1f} GFLOP/s ({floor / t_ours:.0%} of the rate), "
          f"transformers at {flops / t_hf / 1e9:.1f} GFLOP/s; the largest speed-up over transformers "
          f"the floor allows: {t_hf / floor:.2f}x")
    print(line(f"prefill {prompt_len} + decode {new}:", g_ours, g_hf))


if __name__ == "__main__":
    main()
