"""`hybridlm compare`: the flags of analysis/compare.py's CompareConfig, run_compare, and the exit code (1 when a
model failed). The command's help text is analysis/compare.py's docstring."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ...analysis import compare as _compare
from ...analysis.accounting import parse_contexts
from ...analysis.compare import CompareConfig, default_presets, run_compare
from ..arguments import add_quantize


def _contexts(text: str) -> list[int]:
    """argparse type of --speed-contexts / --needle-contexts: '256,1K,8K' -> [256, 1024, 8192]."""
    try:
        contexts = parse_contexts(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a context list like 256,1K,8K (positive token counts, "
                                         f"K = 1024)") from None
    if len(set(contexts)) != len(contexts):
        raise argparse.ArgumentTypeError(f"{text!r} names a context twice")
    return contexts


def _scales(text: str) -> tuple[float, ...]:
    """argparse type of --recall-states: '0.5,1' -> (0.5, 1.0)."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of state scales like 0.5,1") from None


def register(sub) -> None:
    p = sub.add_parser("compare", help="train and evaluate architecture families side by side (report + figures)",
                       description=_compare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="presets, hybridlm checkpoints or Hugging Face directories "
                                             f"(default profile: {', '.join(_compare.DEFAULT_LINEUP)} and the "
                                             f"hybrid at 1x / 16x experts; --quick and --budget large: every tiny "
                                             f"family preset, {', '.join(default_presets())})")
    p.add_argument("--out", default="runs/compare", help="output directory (report.md, results.json, figures)")
    p.add_argument("--quick", action="store_true", help="the ~2-minute pipeline smoke run (= --budget quick)")
    p.add_argument("--budget", choices=["quick", "default", "large"], default=None,
                   help="the profile: quick (smoke run, ~2 min), default (~15 min on 2 cores), large (a GPU or a "
                        "long night: 25x the tokens, 3 seeds, recall at two state sizes)")
    p.add_argument("--budget-tokens", type=int, default=None, help="training tokens per model and seed")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="training seeds per preset (spread reported)")
    p.add_argument("--speed-contexts", type=_contexts, default=None, help="e.g. 1K,8K,32K")
    p.add_argument("--needle-contexts", type=_contexts, default=None, help="e.g. 128,512,1K")
    p.add_argument("--recall-steps", type=int, default=None, help="recall-suite training steps per twin and seed")
    p.add_argument("--recall-seeds", type=int, default=None, help="recall twins (seeds) per model and state size")
    p.add_argument("--recall-states", type=_scales, default=None,
                   help="state scales of the recall twins, e.g. 0.5,1 (each multiplies the per-head state dimensions)")
    add_quantize(p, "on every evaluated model after training / loading, with its logit error against fp32")
    p.add_argument("--resume", action="store_true", help="reuse finished runs and evaluations under --out")
    p.add_argument("--sweep-ratio", action="store_true",
                   help="the tiny hybrid at 16 layers, linear:attention 0:1, 1:1, 3:1, 7:1, 15:1 and 1:0 (equal "
                        "budgets), with the full-scale cache of each ratio at 1M tokens (docs/sweeps.md)")
    p.add_argument("--sweep-sparsity", action="store_true",
                   help="claim (b): the tiny hybrid with 2, 8, 32 routed experts at top-2 (active parameters fixed, "
                        "total 1x / 4x / 16x; docs/sweeps.md)")
    p.add_argument("--group-by", choices=["origin"], default=None,
                   help="also group the verdict by lab origin: Chinese labs (compute-constrained) against Western "
                        "labs (compute-abundant), analysis/families.py")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars: one log line per finished stage (the default when output is not a terminal)")
    p.set_defaults(fn=cmd_compare)


def config_from_args(args) -> CompareConfig:
    changes = {"specs": list(args.models), "out": args.out, "resume": args.resume, "sweep_ratio": args.sweep_ratio,
               "sweep_sparsity": args.sweep_sparsity, "progress": args.progress, "quantize": args.quantize,
               "group_by": args.group_by}
    for name in ("budget_tokens", "seq_len", "seeds", "speed_contexts", "needle_contexts"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.quick and args.budget not in (None, "quick"):
        raise ValueError(f"--quick is --budget quick: it cannot go with --budget {args.budget}")
    cfg = CompareConfig.for_profile("quick" if args.quick else args.budget or "default", **changes)
    recall = {k: v for k, v in (("steps", args.recall_steps), ("seeds", args.recall_seeds),
                                ("states", args.recall_states)) if v is not None}
    if recall:
        cfg.recall = dataclasses.replace(cfg.recall, **recall)  # RecallSettings checks them
    if args.sweep_ratio and args.sweep_sparsity:
        raise ValueError("--sweep-ratio and --sweep-sparsity are separate runs: give one of them (each with its --out)")
    for flag, on in (("--sweep-ratio", args.sweep_ratio), ("--sweep-sparsity", args.sweep_sparsity)):
        if on and args.models:
            raise ValueError(f"{flag} trains its own models; give no model names with it")
    for name in ("budget_tokens", "seq_len", "seeds"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 1")
    return cfg


def cmd_compare(args) -> int:
    """-> 1 when any model failed (the report is written all the same), else 0."""
    cfg = config_from_args(args)
    summary = run_compare(cfg)
    out = Path(cfg.out)
    print(f"wrote {out / 'report.md'}, {out / 'results.json'} and {len(summary['figures'])} figures in "
          f"{summary['seconds']:.0f} s", flush=True)
    if summary["failed"]:
        print(f"hybridlm compare: {len(summary['failed'])} of {len(summary['models'])} models failed: "
              f"{', '.join(summary['failed'])} (errors in {out / 'report.md'}, Failures)", file=sys.stderr)
        return 1
    return 0
