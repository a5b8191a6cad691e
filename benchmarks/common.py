"""Shared by the benchmarks (model_vs_transformers.py, deepseek_v4_vs_transformers.py; best_of also gdn_chunked.py,
ssm_scan.py): the command line,
best-of-N timing that alternates hybridlm and the reference in one process (this machine's timings vary up to 5x,
so neither side gets a quieter moment), and the report lines."""

from __future__ import annotations

import argparse
import time

import torch


def setup(doc: str) -> tuple[argparse.Namespace, int]:
    """--quick / --threads / --reps; applies hybridlm's thread default (or --threads). -> (args, reps)."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args()
    from hybridlm.core.runtime import configure_threads
    configure_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, args.reps or (2 if args.quick else 4)


def best_of(fn, reps: int, budget_s: float = float("inf")) -> float:
    """Best wall time of up to `reps` calls, stopping early once `budget_s` seconds have been spent."""
    best, spent = float("inf"), 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best


@torch.no_grad()
def alternate(cases: dict[str, tuple], reps: int) -> dict[str, tuple[float, float]]:
    """{name: (hybridlm fn, reference fn)} -> {name: (best hybridlm s, best reference s)}, one call of each in turn."""
    out = {name: [float("inf"), float("inf")] for name in cases}
    for _ in range(reps):
        for name, (ours, ref) in cases.items():
            out[name][0] = min(out[name][0], best_of(ours, 1))
            out[name][1] = min(out[name][1], best_of(ref, 1))
    return {name: (a, b) for name, (a, b) in out.items()}


def line(name: str, ours: float, ref: float, unit: str = "s") -> str:
    scale = 1e3 if unit == "ms" else 1.0
    return (f"{name:22s} hybridlm {ours * scale:7.3f} {unit}   transformers {ref * scale:7.3f} {unit}   "
            f"speed-up {ref / ours:.2f}x")


def greedy_agreement(ours: torch.Tensor, ref: torch.Tensor) -> str:
    """Random weights give near-tied logits; after the first differing token the continuations diverge."""
    n = ours.numel()
    agree = int((ours != ref).nonzero()[0, 0]) if not torch.equal(ours, ref) else n
    return f"greedy tokens identical for the first {agree} of {n}"
