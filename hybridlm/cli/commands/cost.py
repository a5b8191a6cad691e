"""`hybridlm cost`: exact accounting and a roofline serving model for presets, config files and checkpoints
(analysis/accounting.py), printed as tables, optionally plotted and written as JSON (analysis/cost_report.py)."""

from __future__ import annotations

import json
from pathlib import Path

from ...analysis.accounting import DTYPE_BYTES, Assumptions, parse_contexts
from ...analysis.cost_report import article_report, cost_report, plot_cost, print_article, print_report
from ...analysis.hardware import HARDWARE, get_hardware
from ..arguments import add_quantize
from ..format import console


# -- CLI ----------------------------------------------------------------------------------------------------
def cmd_cost(args) -> None:
    hw = get_hardware(args.hardware)
    a = Assumptions(weights_dtype=args.weights_dtype, cache_dtype=args.cache_dtype, state_dtype=args.state_dtype,
                    hbm_fraction=args.hbm_fraction, usd_per_hour=args.usd_per_hour)
    con = console()
    if args.article:
        if args.quantize:
            raise ValueError("--quantize applies to the models given, not to --article")
        report = article_report(hw, a, args.reference)
        print_article(report, con)
    else:
        if not args.models:
            raise ValueError("give at least one PRESET|DIR|CONFIG.json, or --article")
        contexts = parse_contexts(args.context)
        report = cost_report(args.models, contexts, hw, a, quantize=args.quantize)
        print_report(report, con)
        if args.plot:
            plot_cost(args.models, args.plot, contexts, a)
            con.print(f"plot written to {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        con.print(f"JSON written to {args.json}")


def register(sub) -> None:
    p = sub.add_parser("cost", help="parameters, FLOPs, cache and a roofline serving cost at long context",
                       description="Exact accounting (parameters, FLOPs, cache bytes) and a roofline serving "
                                   "model; docs/cost.md lists the assumptions and the --json schema.")
    p.add_argument("models", nargs="*", metavar="PRESET|DIR|CONFIG.json")
    p.add_argument("--context", default="8K,128K,1M", help="comma-separated context lengths (K=1024, M=1024^2)")
    p.add_argument("--hardware", default="h100", help=f"one of {', '.join(HARDWARE)}")
    p.add_argument("--cache-dtype", default="bf16", choices=sorted(DTYPE_BYTES), help="KV cache / conv window dtype")
    p.add_argument("--state-dtype", default="fp32", choices=sorted(DTYPE_BYTES),
                   help="Gated DeltaNet recurrent state dtype (hybridlm: fp32; vLLM: the model dtype)")
    p.add_argument("--weights-dtype", default="bf16", choices=["bf16", "fp8"])
    p.add_argument("--hbm-fraction", type=float, default=0.9, help="share of HBM usable for weights + cache")
    p.add_argument("--usd-per-hour", type=float, default=None, help="price of one device-hour, for $/M tokens")
    add_quantize(p, "as vLLM serves Jamba 1.5: the weight memory with and without it")
    p.add_argument("--json", metavar="FILE", help="write machine-readable results (schema: docs/cost.md)")
    p.add_argument("--plot", metavar="FILE.png", help="cache and decode FLOPs against context, log-log")
    p.add_argument("--article", action="store_true",
                   help="the motivating table: DeepSeek V4, Qwen 3.6, Llama 4, stated vs computed")
    p.add_argument("--reference", default=None, help="path to published-configs.json (for --article)")
    p.set_defaults(fn=cmd_cost)
