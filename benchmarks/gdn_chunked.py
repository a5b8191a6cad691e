"""Benchmark: hybridlm's chunked gated delta rule vs transformers' torch reference, on CPU.

Target shape: one Qwen3-Next linear-attention layer, B=1, T=2048, Hk=16, Hv=32, K=V=128, fp32.

    python3 benchmarks/gdn_chunked.py            # full run (~2-3 min)
    python3 benchmarks/gdn_chunked.py --quick    # smaller run

Timings on shared machines are noisy, so every number is a best-of-N and the two implementations are
alternated inside one process (they see the same machine state).

FLOP counts (2*m*n*k per matmul):
  * "effective": an algorithm-independent count, the work of the token-by-token recurrence,
        6 * B * T * Hv * K * V   (S^T k, rank-1 update, S^T q per token and value head).
    The same formula is used for hybridlm and transformers, so effective GFLOP/s compare fairly.
  * "algorithm": the matmuls hybridlm's chunked form actually does (see `chunked_flops`), with the
    blocked triangular inverse counted as its matmul-equivalent (b x b triangular solves with b
    right-hand sides = b^3 each, plus two b x b x b matmuls per block merge).
"% of mm" divides the algorithm GFLOP/s by a plain 2048^3 torch.mm measured in the same process.

Each thread configuration runs in its own process (OpenMP reads OMP_WAIT_POLICY at start-up):
by default 1 and 2 threads (`--configs 1 2 2-passive` adds 2 threads with OMP_WAIT_POLICY=PASSIVE).
With the default (spinning) OpenMP policy, 2 threads collapse when another multi-threaded process
keeps a core busy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hybridlm.ops.gated_delta_rule import gated_delta_rule_chunked, gated_delta_rule_step  # noqa: E402
from common import best_of  # noqa: E402 (benchmarks/common.py, beside this script)

try:
    from transformers.models.qwen3_next.modeling_qwen3_next import torch_chunk_gated_delta_rule
except Exception:  # transformers missing: benchmark hybridlm alone
    torch_chunk_gated_delta_rule = None


def effective_flops(B, T, Hv, K, V):
    return 6 * B * T * Hv * K * V


def tri_inverse_flops(C, base=8):
    """Matmul-equivalent FLOPs of hybridlm's blocked unit-lower-triangular inverse of one C x C matrix."""
    b = C
    while b > base and b % 2 == 0:
        b //= 2
    flops = (C // b) * b**3  # triangular solves of the diagonal blocks against the identity
    while b < C:
        flops += (C // (2 * b)) * 2 * (2 * b**3)  # -D^-1 M A^-1 for each merged pair
        b *= 2
    return flops


def chunked_flops(B, T, Hk, Hv, K, V, C):
    """Matmul FLOPs of gated_delta_rule_chunked with chunk size C."""
    N = -(-T // C)
    per_key_head = 2 * (2 * C) * C * K  # [Q;K] K^T Gram matrix, shared by the value heads of a group
    per_value_head = (
        tri_inverse_flops(C)  # (I + L)^-1
        + 2 * C * C * K  # W = Tinv diag(beta e^c) K
        + 2 * C * C * V  # U = Tinv diag(beta) V
        + 2 * C * K * V  # u = U - W S  (sequential)
        + 2 * K * C * V  # state update (sequential)
        + 2 * C * K * V  # inter-chunk output Q S, batched after the loop
        + 2 * C * C * V  # intra-chunk (Q K^T * D) @ u
    )
    return N * B * (Hk * per_key_head + Hv * per_value_head)


def make_inputs(B, T, Hk, Hv, K, V, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, Hk, K, generator=gen), dim=-1)
    k = F.normalize(torch.randn(B, T, Hk, K, generator=gen), dim=-1)
    v = torch.randn(B, T, Hv, V, generator=gen)
    g = F.logsigmoid(torch.randn(B, T, Hv, generator=gen))
    beta = torch.sigmoid(torch.randn(B, T, Hv, generator=gen))
    return q, k, v, g, beta


def matmul_rates(reps):
    """fp32 GFLOP/s of batched matmuls shaped like the ones the op uses."""
    x, y = torch.randn(32, 64, 128), torch.randn(32, 128, 128)  # sequential loop: [Hv, C, K] @ [Hv, K, V]
    u, w = torch.randn(1024, 64, 64), torch.randn(1024, 64, 128)  # intra-chunk: [N*Hv, C, C] @ [N*Hv, C, V]
    return {
        "bmm 32x(64x128x128)": 2 * 32 * 64 * 128**2 / best_of(lambda: torch.bmm(x, y), 10 * reps, 1.0) / 1e9,
        "bmm 1024x(64x64x128)": 2 * 1024 * 64 * 64 * 128 / best_of(lambda: torch.bmm(u, w), 3 * reps, 2.0) / 1e9,
    }


def run(reps, scaling_lengths, chunk_sizes, with_hf, budget_s):
    B, T, Hk, Hv, K, V = 1, 2048, 16, 32, 128, 128
    q, k, v, g, beta = make_inputs(B, T, Hk, Hv, K, V)
    ours = {C: (lambda C=C: gated_delta_rule_chunked(q, k, v, g, beta, chunk_size=C)) for C in chunk_sizes}
    hf = lambda: torch_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=64, output_final_state=True)  # noqa: E731
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    mm = lambda: a @ b  # noqa: E731
    best = {name: float("inf") for name in [*ours, "hf", "mm"]}
    t_start = time.perf_counter()
    with torch.no_grad():
        for fn in [*ours.values(), mm]:
            fn()  # warm-up (allocator, MKL init)
        for _ in range(reps):  # alternate everything, the mm reference included, so all see the same machine state
            best["mm"] = min(best["mm"], best_of(mm, 2))
            for C, fn in ours.items():
                best[C] = min(best[C], best_of(fn, 1))
            if with_hf:
                best["hf"] = min(best["hf"], best_of(hf, 1))
            if time.perf_counter() - t_start > budget_s:
                break
    mm_rate = 2 * 2048**3 / best["mm"] / 1e9
    rates = {"mm 2048^3 (alternated)": mm_rate, **matmul_rates(reps)}
    for name, r in rates.items():
        print(f"  {name:24s} {r:7.1f} GFLOP/s")

    eff = effective_flops(B, T, Hv, K, V)
    print(f"  shape B={B} T={T} Hk={Hk} Hv={Hv} K={K} V={V} fp32; effective FLOPs {eff / 1e9:.2f} G")
    for C in chunk_sizes:
        alg = chunked_flops(B, T, Hk, Hv, K, V, C)
        t = best[C]
        print(
            f"  hybridlm chunked C={C:3d}: {t * 1e3:7.1f} ms | algorithm {alg / 1e9:5.2f} GFLOP -> {alg / t / 1e9:6.1f}"
            f" GFLOP/s = {alg / t / 1e9 / mm_rate:5.1%} of mm | effective {eff / t / 1e9:6.1f} GFLOP/s"
        )
    if with_hf:
        t = best["hf"]
        print(f"  transformers torch_chunk:  {t * 1e3:7.1f} ms | effective {eff / t / 1e9:6.1f} GFLOP/s")
        for C in chunk_sizes:
            print(f"  speed-up vs transformers (C={C}): {t / best[C]:.2f}x")

    C = min(chunk_sizes, key=lambda c: best[c])
    print(f"  T scaling (C={C}, best of {reps}):")
    prev = None
    for Ts in scaling_lengths:
        q2, k2, v2, g2, b2 = make_inputs(B, Ts, Hk, Hv, K, V)
        with torch.no_grad():
            fn = lambda: gated_delta_rule_chunked(q2, k2, v2, g2, b2, chunk_size=C)  # noqa: E731
            fn()
            t = best_of(fn, reps, budget_s / 4)
        note = "" if prev is None else f"  (x{t / prev:.2f} for x{Ts / prev_T:.0f} T)"
        print(
            f"    T={Ts:5d}: {t * 1e3:7.1f} ms  {t / Ts * 1e6:6.1f} us/token"
            f"  {effective_flops(B, Ts, Hv, K, V) / t / 1e9:6.1f} eff GFLOP/s{note}"
        )
        prev, prev_T = t, Ts

    # decode: one token through gated_delta_rule_step (state read + written once)
    sq, sk = q[:, 0], k[:, 0]
    sv, sg, sb = v[:, 0], g[:, 0], beta[:, 0]
    state = torch.randn(B, Hv, K, V)
    t = best_of(lambda: gated_delta_rule_step(sq, sk, sv, sg, sb, state), 50 * reps, 1.0)
    print(f"  decode step (B={B}): {t * 1e6:.0f} us/token")


CONFIGS = {  # name -> (threads, extra environment); the environment must be set before OpenMP starts
    "1": (1, {}),
    "2": (2, {}),
    "2-passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
}
DEFAULT_CONFIGS = ["1", "2"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions and lengths")
    p.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS, help=f"thread configs, from {list(CONFIGS)}")
    p.add_argument("--no-hf", action="store_true", help="skip transformers")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is None:  # each config in a fresh process, so that OpenMP settings take effect
        for name in args.configs:
            threads, env = CONFIGS[name]
            env_text = " ".join(f"{k}={v}" for k, v in env.items())
            print(f"\n=== torch.set_num_threads({threads}) {env_text} ===", flush=True)
            cmd = [sys.executable, os.path.abspath(__file__), "--child", name] + ["--quick"] * args.quick
            cmd += ["--no-hf"] * args.no_hf
            subprocess.run(cmd, env={**os.environ, **env}, check=True)
        return
    torch.set_num_threads(CONFIGS[args.child][0])
    reps = 3 if args.quick else 7
    lengths = [512, 2048] if args.quick else [512, 1024, 2048, 4096]
    chunks = [32, 64] if args.quick else [32, 64, 128]
    with_hf = torch_chunk_gated_delta_rule is not None and not args.no_hf
    run(reps, lengths, chunks, with_hf, budget_s=6.0 if args.quick else 20.0)


if __name__ == "__main__":
    main()
