"""Benchmark: long context on CPU (issue 17, part 3). Prefill tiny-gdn (all linear) and tiny-hybrid (Gated DeltaNet
3 : 1 gated attention) in chunks to 64K, 256K and 1M tokens through one cache, decode a few tokens at each length,
and report:
- cumulative prefill time at each milestone and the time exponent between milestones (log t2/t1 / log T2/T1;
  1.0 = linear);
- decode ms/token at each length, and its ratio to decode at 1K;
- the cache held (measured) beside the analytic cache (`cache_bytes`), and the process's peak RSS;
- the largest tensor any op produced while prefilling the last chunk (a TorchDispatchMode watches every op's
  outputs), against T x T: no context-squared tensor is built.
Each model runs in a subprocess of its own, so its peak RSS is its own. fp32; 2 threads unless --threads.

    python3 benchmarks/long_context.py                 # tiny-gdn to 1M, tiny-hybrid to 256K (~15 min, 2 cores)
    python3 benchmarks/long_context.py --quick         # both to 64K
    python3 benchmarks/long_context.py --hybrid-max 1M # the hybrid to 1M too (hours: its attention is quadratic)

The attention layers' prefill work grows with the square of the context (each new chunk attends to every earlier
key), so at 1M tokens tiny-hybrid's two attention layers alone need ~5e14 FLOPs: hours on 2 cores. The report
gives the attention layers' share of the prefill FLOPs at each milestone (analytic, `flops_per_token`).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

K = 1024
CHUNK = 2048


def parse_len(s: str) -> int:
    s = s.strip().upper()
    return int(float(s[:-1]) * (K if s[-1] == "K" else K * K)) if s[-1] in "KM" else int(s)


class LargestTensor(TorchDispatchMode):
    """Records the largest numel among the outputs of every op dispatched while active."""

    def __init__(self):
        super().__init__()
        self.numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.op = t.numel(), str(func)
        return out


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


@torch.no_grad()
def run_model(name: str, milestones: list[int], decode_steps: int) -> dict:
    from hybridlm import HybridLM, get_config
    model = HybridLM(get_config(name)).eval()
    cache = model.new_cache()
    gen = torch.Generator().manual_seed(0)
    attn = [b.mixer for b in model.layers if b.mixer.cache_kind == "kv"]
    rows, pos, spent = [], 0, 0.0
    # decode at 1K first: the reference the longer contexts are held to
    for target in [K, *milestones]:
        while pos < target:
            n = min(CHUNK, target - pos)
            ids = torch.randint(0, model.config.vocab_size, (1, n), generator=gen)
            last = pos + n >= target and target == milestones[-1]
            watch = LargestTensor() if last else None
            t0 = time.perf_counter()
            if watch is not None:
                with watch:
                    model.prefill(ids, cache, chunk=CHUNK)
            else:
                model.prefill(ids, cache, chunk=CHUNK)
            spent += time.perf_counter() - t0
            cache.pos = pos = pos + n
        times = []
        for _ in range(decode_steps):
            ids = torch.randint(0, model.config.vocab_size, (1, 1), generator=gen)
            t0 = time.perf_counter()
            model(ids, cache=cache)
            times.append(time.perf_counter() - t0)
            cache.pos = pos = pos + 1
        total = model.prefill_flops(pos)
        attn_flops = pos * sum(m.flops_per_token(pos) for m in attn)
        rows.append({"context": pos, "prefill_s": spent, "decode_ms": 1e3 * min(times),
                     "cache_measured": cache.memory_bytes(),
                     "cache_analytic": model.cache_bytes(pos, batch=1, dtype_bytes=4, state_bytes=4),
                     "attention_flop_share": attn_flops / total, "peak_rss": peak_rss_bytes()})
        print(json.dumps({"model": name, **rows[-1]}), file=sys.stderr, flush=True)
    return {"model": name, "rows": rows, "largest_tensor": watch.numel, "largest_op": watch.op, "chunk": CHUNK}


def report(res: dict) -> None:
    rows = res["rows"]
    print(f"\n{res['model']}: prefill in {res['chunk']}-token chunks, fp32, {torch.get_num_threads()} threads")
    print(f"{'context':>9} {'prefill s':>10} {'exponent':>9} {'decode ms':>10} {'vs 1K':>6} {'cache MB':>9} "
          f"{'analytic':>9} {'peak RSS MB':>12} {'attn FLOP share':>16}")
    base = rows[0]["decode_ms"]
    for i, r in enumerate(rows):
        exp = ""
        if i >= 2:  # between milestones (the 1K row's prefill is too short to time against)
            a = rows[i - 1]
            exp = f"{math.log(r['prefill_s'] / a['prefill_s']) / math.log(r['context'] / a['context']):.3f}"
        print(f"{r['context']:>9} {r['prefill_s']:>10.1f} {exp:>9} {r['decode_ms']:>10.2f} {r['decode_ms'] / base:>6.2f} "
              f"{r['cache_measured'] / 1e6:>9.3f} {r['cache_analytic'] / 1e6:>9.3f} {r['peak_rss'] / 1e6:>12.0f} "
              f"{r['attention_flop_share']:>16.3f}")
    if len(rows) >= 3:
        a, b = rows[1], rows[-1]
        print(f"prefill time exponent {a['context']} -> {b['context']}: "
              f"{math.log(b['prefill_s'] / a['prefill_s']) / math.log(b['context'] / a['context']):.3f}")
    T = rows[-1]["context"]
    print(f"largest tensor while prefilling the last chunk: {res['largest_tensor']:,} elements ({res['largest_op']}); "
          f"T x T at T = {T:,} would be {T * T:,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--hybrid-max", default="256K")
    ap.add_argument("--decode-steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--milestones", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:  # the subprocess: one model, its results as JSON on stdout
        res = run_model(args.model, [parse_len(x) for x in args.milestones.split(",")], args.decode_steps)
        print(json.dumps(res))
        return
    plans = {"tiny-gdn": ["64K"] if args.quick else ["64K", "256K", "1M"]}
    hybrid = ["64K"] if args.quick else [m for m in ("64K", "256K", "1M") if parse_len(m) <= parse_len(args.hybrid_max)]
    plans["tiny-hybrid"] = hybrid
    for name, ms in plans.items():
        out = subprocess.run([sys.executable, __file__, "--model", name, "--milestones", ",".join(ms),
                              "--decode-steps", str(args.decode_steps), "--threads", str(args.threads)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        report(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
