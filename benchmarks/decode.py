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

import time

import torch
from common import setup
from pairs import deepseek_v4_pair, qwen3_next_pair


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
