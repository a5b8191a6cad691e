"""Prefill as a share of the matmul floor (issue 17, part 2): one forward over T tokens (B=1, no grad) of the tiny
Qwen3-Next-shaped and DeepSeek-V4-shaped models (benchmarks/pairs.py), against the floor = the forward's matmul
FLOPs (hybridlm's analytic count, docs/cost.md) at the plain 2048^3 matmul rate measured in the same run.

Beside it, the forward's own matmuls replayed alone (matmul_replay.py): with warm operands (calls of one shape
share their inputs) and cold ones (every call its own). Their share is what these matmul shapes reach on this
machine with every other op free; the forward's share cannot exceed the replay's by much.

    python3 benchmarks/prefill_floor.py [--quick] [--threads N] [--reps N]     (--quick: T = 512)
"""

from __future__ import annotations

import torch
from common import best_of, setup
from matmul_replay import matmul_flops, record_matmuls, replay_time
from pairs import deepseek_v4_pair, qwen3_next_pair


def main() -> None:
    args, reps = setup(__doc__)
    T = 512 if args.quick else 2048
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    print(f"threads {torch.get_num_threads()}, B=1 T={T} fp32, best of {reps}")
    for build in (qwen3_next_pair, deepseek_v4_pair):
        torch.manual_seed(0)
        name, _, model = build()
        ids = torch.randint(0, model.config.vocab_size, (1, T))
        with torch.no_grad():
            def forward():
                return model(ids)
            forward()
            calls = record_matmuls(forward)
            best = {"mm": float("inf"), "fwd": float("inf"), "warm": float("inf"), "cold": float("inf")}
            for _ in range(reps):  # alternated, so each sees the same machine state
                best["mm"] = min(best["mm"], best_of(lambda: a @ b, 3))
                best["fwd"] = min(best["fwd"], best_of(forward, 1))
                best["warm"] = min(best["warm"], replay_time(calls, 1, reuse=True))
                best["cold"] = min(best["cold"], replay_time(calls, 1, reuse=False))
        rate = 2 * 2048**3 / best["mm"]
        flops = model.forward_flops(T)
        floor = flops / rate
        print(f"{name}\n  mm 2048^3 {rate / 1e9:.1f} GFLOP/s; forward {flops / 1e9:.2f} GFLOP (analytic; the "
              f"recorded matmuls count {matmul_flops(calls) / 1e9:.2f}) -> floor {floor * 1e3:.1f} ms")
        print(f"  forward:                      {best['fwd'] * 1e3:8.1f} ms = {floor / best['fwd']:5.1%} of the floor")
        for key, how in (("warm", "warm operands"), ("cold", "cold operands")):
            print(f"  its {len(calls):4d} matmuls alone, {how}: {best[key] * 1e3:8.1f} ms = "
                  f"{floor / best[key]:5.1%} of the floor")


if __name__ == "__main__":
    main()
