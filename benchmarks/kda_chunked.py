"""Benchmark: hybridlm's chunked Kimi Delta Attention (the gated delta rule with a per-channel decay) against
transformers' torch chunked KDA (`chunk_kimi_delta_attention`, its fallback without fla), on CPU, fp32.

Target shape: one Kimi-Linear-48B KDA layer's op, B=1, T=2048, 32 heads x 128 (keys and values).

    python3 benchmarks/kda_chunked.py            # full run (transformers takes ~15 s a call at T=2048)
    python3 benchmarks/kda_chunked.py --quick    # fewer repetitions

The two implementations and a 2048^3 torch.mm are alternated inside one process, best of N each, so they see the
same machine state; then the op's own matmuls are replayed alone (benchmarks/matmul_replay.py), with warm and
with cold operands, which bounds what any fusion of the other work could reach. "% of mm" divides hybridlm's algorithm GFLOP/s (the matmuls its chunked form does, the count
`KDA.flops_per_token` uses, which equals torch's FlopCounterMode) by the mm rate measured in the run. Decays are
drawn as KDA's gate produces them at initialisation (-exp(A_log) softplus(dt_bias): A in [1, 16] per head, a rate
in [1e-3, 0.1] per channel, jittered per token; the fastest channels decay by ~100 per chunk, so the sub-blocks are
needed, and by < 40 per sub-block, so the diagonal blocks factorise) and, separately, strong (down to -8 per
token), which takes the elementwise path on the sub-blocks' diagonals.
"""

from __future__ import annotations

import math
import os
import sys
from functools import partial

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import best_of, setup  # benchmarks/common.py, beside this script
from matmul_replay import record_matmuls, replay_time

from hybridlm.ops.gated_delta_rule import inverse_unit_lower_flops
from hybridlm.ops.gated_delta_rule import gated_delta_rule_chunked

try:
    from transformers.models.kimi_linear.modeling_kimi_linear import chunk_kimi_delta_attention
except ImportError:  # transformers missing: benchmark hybridlm alone
    chunk_kimi_delta_attention = None


def algorithm_flops(T: int, H: int, d: int, C: int = 64) -> float:
    """Matmul FLOPs of gated_delta_rule_chunked with a per-channel decay (as KDA.flops_per_token's op part)."""
    s = math.gcd(C, 16)
    per_head = 4 * s * d + 4 * d * (C - s) ** 2 / C + inverse_unit_lower_flops(C) + 6 * C * d + 6 * d * d
    return T * H * per_head


def make_inputs(T: int, H: int, d: int, strong: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(1, T, H, d, generator=gen), dim=-1)
    k = F.normalize(torch.randn(1, T, H, d, generator=gen), dim=-1)
    v = torch.randn(1, T, H, d, generator=gen)
    if strong:
        g = -8.0 * torch.rand(1, T, H, d, generator=gen)
    else:  # one rate per channel (softplus(dt_bias) dominates the gate at init), jittered per token
        A = torch.empty(H).uniform_(1.0, 16.0, generator=gen)
        dt = torch.exp(torch.empty(H, d).uniform_(math.log(1e-3), math.log(0.1), generator=gen))
        g = -A[:, None] * dt * (1 + 0.2 * torch.randn(1, T, H, d, generator=gen)).abs()
    beta = torch.sigmoid(torch.randn(1, T, H, generator=gen))
    return q, k, v, g, beta


def main():
    args, reps = setup(__doc__)
    H, d = 32, 128
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)

    def mm():
        return a @ b

    print(f"threads {torch.get_num_threads()}, shape B=1 T=2048 H={H} d={d} fp32, best of {reps}")
    with torch.no_grad():
        mm()
        for strong in (False, True):
            x = make_inputs(2048, H, d, strong)
            ours = partial(gated_delta_rule_chunked, *x)
            hf = partial(chunk_kimi_delta_attention, *x, output_final_state=True)
            ours()
            best = {"mm": float("inf"), "ours": float("inf"), "hf": float("inf")}
            for _ in range(reps):  # alternate all three so each sees the same machine state
                best["mm"] = min(best["mm"], best_of(mm, 3))
                best["ours"] = min(best["ours"], best_of(ours, 1))
                if chunk_kimi_delta_attention is not None and not (strong and args.quick):
                    best["hf"] = min(best["hf"], best_of(hf, 1))
            mm_rate = 2 * 2048**3 / best["mm"] / 1e9
            rate = algorithm_flops(2048, H, d) / best["ours"] / 1e9
            label = "strong decays (to -8/token)" if strong else "KDA-init decays"
            print(f"[{label}] mm 2048^3: {mm_rate:.1f} GFLOP/s")
            print(f"  hybridlm chunked: {best['ours'] * 1e3:8.1f} ms  {rate:6.1f} GFLOP/s = {rate / mm_rate:5.1%} of mm")
            if not strong:  # the same matmuls alone: what the op's shapes allow with every other op free
                calls = record_matmuls(ours)
                for reuse, how in ((True, "warm operands"), (False, "cold operands")):
                    t = min(replay_time(calls, reps, reuse=reuse), float("inf"))
                    r = algorithm_flops(2048, H, d) / t / 1e9
                    print(f"  its {len(calls)} matmuls alone, {how}: {t * 1e3:8.1f} ms  {r:6.1f} GFLOP/s = "
                          f"{r / mm_rate:5.1%} of mm")
            if best["hf"] < float("inf"):
                print(f"  transformers chunk_kimi_delta_attention: {best['hf'] * 1e3:8.1f} ms  "
                      f"-> hybridlm {best['hf'] / best['ours']:.1f}x faster")
        print("T scaling (KDA-init decays):")
        prev = None
        for T in (1024, 2048, 4096):
            fn = partial(gated_delta_rule_chunked, *make_inputs(T, H, d, strong=False))
            fn()
            t = best_of(fn, reps)
            note = "" if prev is None else f"  (x{t / prev:.2f} for x2 T)"
            print(f"  T={T:5d}: {t * 1e3:8.1f} ms  {t / T * 1e6:7.1f} us/token{note}")
            prev = t


if __name__ == "__main__":
    main()
