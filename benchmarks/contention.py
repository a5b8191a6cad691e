"""Two hybridlm processes on the same cores: how much of its solo speed does each keep?

    python benchmarks/contention.py                     # the default settings against the alternatives
    python benchmarks/contention.py --settings default --beside-tests

Each worker is a fresh interpreter (OpenMP reads its environment once, when torch loads), running either
    train   tiny-hybrid forward + backward + AdamW, batch 8 x 128 tokens   -> tokens/s
    decode  tiny-hybrid prefill 256, then single-token steps with the cache -> ms/token
for a fixed wall-clock window. For every thread setting the driver runs the worker alone, then two at once, and
again (best of --reps), so neither side gets a quieter moment; it prints each process's share of its solo speed
(50% is the fair share of two processes on two cores). --beside-tests runs one worker beside a pytest process
(tests/test_gated_delta_rule.py + tests/test_model.py in a loop), the load a developer's machine sees most.

Settings (environment given to the worker before torch loads):
    default    hybridlm's own defaults (hybridlm/runtime.py: threads from the affinity mask, the LoadGovernor
               lowering them while other processes use the cores)
    torch      OMP_NUM_THREADS=2: the thread count fixed (the governor off), torch on its own, as before
    active     OMP_WAIT_POLICY=ACTIVE (spin-waiting workers, never sleeping)
    passive    OMP_WAIT_POLICY=PASSIVE
    spin0      GOMP_SPINCOUNT=0: libgomp's workers sleep at once
    threads1   HYBRIDLM_THREADS=1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": {},
    "torch": {"OMP_NUM_THREADS": "2"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin0": {"GOMP_SPINCOUNT": "0"},
    "threads1": {"HYBRIDLM_THREADS": "1"},
}


def worker(kind: str, seconds: float) -> dict:
    import torch

    from hybridlm import HybridLM, get_config
    from hybridlm.core.runtime import LoadGovernor, configure_threads
    threads = configure_threads()
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-hybrid"))
    ids = torch.randint(0, 256, (8, 128))
    if kind == "train":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step() -> int:
            model(ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return ids.numel()
    else:
        model.eval()
        prompt = torch.randint(0, 256, (1, 256))

        @torch.no_grad()
        def step() -> int:
            cache = model.new_cache()
            tok = model.prefill(prompt, cache).argmax(-1)
            t0 = time.perf_counter()
            for _ in range(16):
                tok = model(tok[:, None], cache=cache).logits[:, -1].argmax(-1)
            step.decode_s += time.perf_counter() - t0
            return 16
        step.decode_s = 0.0
    step()  # warm-up
    if kind == "decode":
        step.decode_s = 0.0
    governor = LoadGovernor()  # as train() and generate's stream() use it: one tick per step
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        governor.tick()
        done += step()
    wall = time.perf_counter() - t0
    rate = done / wall if kind == "train" else 1e3 * step.decode_s / done
    return {"kind": kind, "threads": threads, "rate": rate, "thread_changes": governor.changes}


def _spawn(kind: str, env: dict, seconds: float) -> subprocess.Popen:
    full = {**os.environ, **env}
    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "HYBRIDLM_THREADS", "OMP_NUM_THREADS"):
        if k not in env:
            full.pop(k, None)
    return subprocess.Popen([sys.executable, __file__, "--worker", kind, "--seconds", str(seconds)], env=full,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)


def _collect(procs: list[subprocess.Popen]) -> list[dict]:
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"worker failed (exit {p.returncode})")
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


def _better(a: float, b: float, kind: str) -> float:
    return max(a, b) if kind == "train" else min(a, b)


def measure(kind: str, env: dict, seconds: float, reps: int, beside_tests: bool) -> tuple[float, list[float], int]:
    """-> (best solo rate, best rate of each of the two concurrent processes, threads)."""
    init = 0.0 if kind == "train" else float("inf")
    solo, pair, threads = init, [init, init], 0
    for _ in range(reps):
        (r,) = _collect([_spawn(kind, env, seconds)])
        solo, threads = _better(solo, r["rate"], kind), r["threads"]
        if beside_tests:
            load = subprocess.Popen(
                [sys.executable, "-c", "import subprocess, sys\nwhile True: subprocess.run([sys.executable, '-m', "
                 "'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_gated_delta_rule.py', 'tests/test_model.py'],"
                 " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"], cwd=ROOT, env={**os.environ, **env},
                start_new_session=True)
            time.sleep(3)  # let pytest get going
            try:
                rs = _collect([_spawn(kind, env, seconds)])
            finally:
                os.killpg(load.pid, 9)
                load.wait()
            pair[0] = _better(pair[0], rs[0]["rate"], kind)
        else:
            rs = _collect([_spawn(kind, env, seconds), _spawn(kind, env, seconds)])
            pair = [_better(p, r["rate"], kind) for p, r in zip(pair, rs)]
    return solo, pair[:1] if beside_tests else pair, threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--worker", choices=["train", "decode"], help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=6.0, help="measuring window of each worker")
    ap.add_argument("--reps", type=int, default=2, help="solo / together alternations (best of)")
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help=f"comma-separated, of {list(SETTINGS)} or environments like GOMP_SPINCOUNT=1000+HYBRIDLM_THREADS=2")
    ap.add_argument("--kinds", default="train,decode")
    ap.add_argument("--beside-tests", action="store_true", help="second process: the pytest loop, not a twin")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seconds)))
        return
    print(f"{os.cpu_count()} cores, affinity {len(os.sched_getaffinity(0))}, {args.seconds:g} s windows, "
          f"best of {args.reps}; second process: {'pytest loop' if args.beside_tests else 'a twin'}")
    for name in args.settings.split(","):
        for kind in args.kinds.split(","):
            env = SETTINGS[name] if name in SETTINGS else dict(kv.split("=", 1) for kv in name.split("+"))
            solo, pair, threads = measure(kind, env, args.seconds, args.reps, args.beside_tests)
            unit = "tok/s" if kind == "train" else "ms/token"
            shares = [(p / solo if kind == "train" else solo / p) for p in pair]
            print(f"{name:9s} {kind:6s} threads {threads}  solo {solo:8.1f} {unit:8s}  together "
                  + "  ".join(f"{p:8.1f}" for p in pair) + "   share of solo "
                  + "  ".join(f"{100 * s:4.0f}%" for s in shares), flush=True)


if __name__ == "__main__":
    main()
