"""Decode speed (issue 17): hybridlm's compiled decode step (generate(compile=True)) against hybridlm eager and
transformers' generate, on the two tiny models with the same weights that model_vs_transformers.py and
deepseek_v4_vs_transformers.py build (Qwen3-Next's proportions; DeepSeek-V4-Flash's layout).

Decode ms/token = (time of a prefill + N greedy tokens - time of the same prefill + 1 token) / (N - 1), for each
implementation alike; the three alternate in one process, best of --reps. The compiled step's warm-up (tracing and
compiling, or loading torch's on-disk graph cache) is timed separately, then excluded. Batch 1 and batch 8
(tokens/s = 8 / ms per step). The greedy tokens of all three are compared first.

    python3 benchmarks/decode.py            # prompt 128, 33 new tokens, 3 reps
    python3 benchmarks/decode.py --quick    # 17 new tokens, 2 reps
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from common import setup

sys.path.insert(0, str(Path(__file__).parent))


def qwen3_next_pair():
    import transformers

    from hybridlm import HybridLM
    cfg = transformers.AutoConfig.for_model(  # as model_vs_transformers.py: Qwen3-Next-80B-A3B's widths / 8
        "qwen3_next", vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=1, head_dim=64, linear_num_key_heads=4, linear_num_value_heads=8, linear_key_head_dim=64,
        linear_value_head_dim=64, num_experts=64, num_experts_per_tok=10, moe_intermediate_size=64,
        shared_expert_intermediate_size=64, intermediate_size=512)
    hf = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        return "Qwen3-Next-shaped (GGGA, d 256, 64 experts top-10 + shared)", hf, HybridLM.from_hf(d).eval()


def deepseek_v4_pair():
    import transformers

    from hybridlm import HybridLM
    kinds = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
             "compressed_sparse_attention"]
    cfg = transformers.DeepseekV4Config(  # as deepseek_v4_vs_transformers.py
        vocab_size=2048, hidden_size=256, num_hidden_layers=4, num_attention_heads=8, head_dim=64,
        qk_rope_head_dim=8, q_lora_rank=64, o_groups=2, o_lora_rank=64, sliding_window=128, index_n_heads=8,
        index_head_dim=32, index_topk=64, n_routed_experts=32, num_experts_per_tok=6, moe_intermediate_size=128,
        layer_types=kinds, mlp_layer_types=["hash_moe", "moe", "moe", "moe"], max_position_embeddings=4096,
        rope_scaling={"type": "yarn", "factor": 16, "original_max_position_embeddings": 256, "beta_fast": 32,
                      "beta_slow": 1})
    hf = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, b in hf.named_buffers():
            if name.endswith("tid2eid"):
                b.copy_(torch.rand(b.shape[0], 32).argsort(-1)[:, :b.shape[1]])
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        return "DeepSeek-V4-Flash layout (S C H C, d 256, mHC x4, 32 experts top-6)", hf, HybridLM.from_hf(d).eval()


def clock(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@torch.no_grad()
def measure(title, hf, ours, prompt_len: int, new: int, reps: int) -> None:
    print(f"\n{title}")
    for batch in (1, 8):
        prompt = torch.randint(0, 2048, (batch, prompt_len))
        gens = {
            "transformers": lambda n: hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                  pad_token_id=0),
            "hybridlm eager": lambda n: ours.generate(prompt, max_new_tokens=n),
            "hybridlm compiled": lambda n: ours.generate(prompt, max_new_tokens=n, compile=True),
        }
        timings: dict = {}
        warm = clock(lambda: ours.generate(prompt, max_new_tokens=3, compile=True, timings=timings))
        toks = {k: g(new)[:, prompt_len:] for k, g in gens.items()}
        agree = {k: int((t == toks["transformers"]).all(0).long().cumprod(0).sum()) for k, t in toks.items()}
        best = {k: float("inf") for k in gens}
        for _ in range(reps):
            for k, g in gens.items():
                best[k] = min(best[k], (clock(lambda: g(new)) - clock(lambda: g(1))) / (new - 1))
        ref = best["transformers"]
        print(f"  batch {batch}: compiled step warm-up {timings['first_step_s']:.1f} s (whole first call {warm:.1f} s); "
              f"greedy tokens equal to transformers' for the first {agree['hybridlm eager']} (eager) / "
              f"{agree['hybridlm compiled']} (compiled) of {new}")
        for k, t in best.items():
            print(f"    {k:18s} {1e3 * t:7.2f} ms/step  {batch / t:8.0f} tokens/s   "
                  f"{ref / t:5.2f}x transformers   {best['hybridlm eager'] / t:5.2f}x hybridlm eager")


def main() -> None:
    args, reps = setup(__doc__)
    reps = 2 if args.quick else (args.reps or 3)
    new = 17 if args.quick else 33
    torch.manual_seed(0)
    for pair in (qwen3_next_pair, deepseek_v4_pair):
        measure(*pair(), prompt_len=128, new=new, reps=reps)


if __name__ == "__main__":
    main()
