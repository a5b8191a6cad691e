"""What a model costs to serve at long context: exact parameter / FLOP / cache accounting plus a roofline model.

The accounting lives on the modules (mixer and FFN `num_params`, `flops_per_token`, `decode_flops`, `cache_bytes`;
HybridLM's aggregates); this file adds the serving model on a `hardware.Hardware`, assembles the tables, the
JSON report (schema: JSON_SCHEMA below and docs/cost.md), the plot, and the `hybridlm cost` command.
Every assumption of the serving model is listed in `assumptions()` and printed with the results.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .hardware import HARDWARE, Hardware, get_hardware

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
# Published hyperparameters and stated parameter counts, with their sources (package data: hybridlm/data/README.md).
REFERENCE = Path(__file__).resolve().parent / "data" / "published-configs.json"
NOT_IMPLEMENTED = "not implemented yet (issue 5)"
# The motivating comparison: (name prefix in published-configs.json, label, preset that will implement it).
ARTICLE = [
    ("DeepSeek-V4-Flash", "DeepSeek-V4-Flash", "deepseek-v4-flash"),
    ("DeepSeek-V4-Pro", "DeepSeek-V4-Pro", "deepseek-v4-pro"),
    ("Qwen3.5-35B-A3B / Qwen3.6-35B-A3B", "Qwen3.6-35B-A3B", "qwen3.6-35b-a3b"),
    ("Llama-4-Scout-17B-16E", "Llama-4-Scout", "llama4-scout-17b-16e"),
    ("Llama-4-Maverick-17B-128E", "Llama-4-Maverick", "llama4-maverick-17b-128e"),
]


@dataclass
class Assumptions:
    weights_dtype: str = "bf16"
    cache_dtype: str = "bf16"
    state_dtype: str = "fp32"  # Gated DeltaNet state: fp32 as in hybridlm and the fla kernels; vLLM: model dtype
    hbm_fraction: float = 0.9  # share of HBM usable for weights + cache (vLLM's gpu_memory_utilization default)
    usd_per_hour: float | None = None  # per device

    def __post_init__(self) -> None:
        for name in ("weights_dtype", "cache_dtype", "state_dtype"):
            if getattr(self, name) not in DTYPE_BYTES:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be one of {sorted(DTYPE_BYTES)}")
        if self.weights_dtype not in ("bf16", "fp8"):
            raise ValueError(f"weights_dtype={self.weights_dtype!r}: must be 'bf16' or 'fp8'")
        if not 0 < self.hbm_fraction <= 1:
            raise ValueError(f"hbm_fraction={self.hbm_fraction}: must be in (0, 1]")
        if self.usd_per_hour is not None and self.usd_per_hour <= 0:
            raise ValueError(f"usd_per_hour={self.usd_per_hour}: must be > 0")


def assumptions(a: Assumptions, hw: Hardware) -> list[str]:
    fp8_note = (" (this chip has no FP8 matmul: the bf16 peak is used)"
                if a.weights_dtype == "fp8" and hw.fp8_flops is None else "")
    return [
        "Roofline bounds at the datasheet peaks (dense); real kernels reach a fraction of them, none is assumed.",
        (f"Weights in {a.weights_dtype} ({DTYPE_BYTES[a.weights_dtype]} B/param) for every non-MTP parameter, "
         f"matmuls at the {a.weights_dtype} peak{fp8_note}; the MTP module is not loaded (no speculative decoding)."),
        (f"KV cache and conv windows in {a.cache_dtype}; Gated DeltaNet recurrent state in {a.state_dtype} "
         "(hybridlm keeps it in fp32; vLLM keeps it in the model dtype: use --state-dtype bf16 for that)."),
        (f"Devices = ceil((weights + one sequence's cache) / ({a.hbm_fraction:g} x HBM)); the rest of that usable HBM "
         "holds more sequences' cache (max batch). Activations and fragmentation are not costed beyond the fraction."),
        "Tensor parallelism over the devices is ideal: FLOPs and bytes split evenly, communication takes no time.",
        ("FLOPs: 2 per multiply-add over the matmuls (projections, experts, attention scores and values, the delta "
         "rule's state products); elementwise ops (norms, gates, softmax, RoPE) are not counted."),
        ("Prefill of one sequence: max(FLOPs / (devices x peak), (all weights + its cache) / (devices x "
         "bandwidth)), compute-bound but for short prompts; attention FLOPs averaged over causal positions "
         "(kernels skip masked blocks); logits for the last position only."),
        ("Decode step for B sequences: max(B x FLOPs per token / (devices x peak), (weights read + B x cache traffic) "
         "/ (devices x bandwidth)). Weights read: all but the input embedding (B rows gathered) and routed experts "
         "no token picked; a MoE layer with E experts, top-k, touches E(1-(1-k/E)^B) distinct experts in "
         "expectation (uniform, independent routing). Cache traffic per sequence: the KV cache read once, conv "
         "windows and recurrent state read and written once."),
        ("$ per million tokens = $/hour per device x devices / tokens per hour: output tokens decoded at the max "
         "batch, input tokens from the prefill time of one sequence."),
        "Contexts beyond the model's max_position_embeddings are marked '*' (costed anyway).",
        "Numbers are shown to 3 significant figures; parameter counts and cache bytes are exact.",
    ]


# -- parsing ------------------------------------------------------------------------------------------------
def parse_contexts(text: str) -> list[int]:
    """'8K,128K,1M' -> [8192, 131072, 1048576] (K = 1024, M = 1024^2, as context lengths are quoted)."""
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", part)
        if not m:
            raise ValueError(f"--context {text!r}: {part.strip()!r} is not a positive context like 4096, 8K or 1M")
        n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[m.group(2).lower()]
        if n < 1:
            raise ValueError(f"--context {text!r}: contexts must be >= 1")
        out.append(n)
    return out


def _context_label(n: int) -> str:
    for unit, scale in (("M", 1024 ** 2), ("K", 1024)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


# -- the serving model --------------------------------------------------------------------------------------
def expected_experts(num_experts: int, top_k: int, batch: int) -> float:
    """Distinct experts B tokens touch in expectation when each picks top_k of E uniformly and independently."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** batch)


def weight_params_read(model, batch: int) -> float:
    """Parameters a decode step over `batch` sequences reads (see assumptions())."""
    D = model.config.d_model
    n = float(model.num_params(mtp=False))
    if model.lm_head is not None:  # untied: the embedding is gathered, B rows; tied: it is the head, read whole
        n -= model.embed.weight.numel() - batch * D
    for b in model.layers:
        c = b.ffn.cfg
        if c.kind == "moe":
            n -= (c.num_experts - expected_experts(c.num_experts, c.top_k, batch)) * 3 * c.expert_size * D
    return n


def serving_point(model, context: int, hw: Hardware, a: Assumptions) -> dict:
    wb = DTYPE_BYTES[a.weights_dtype]
    kinds = model.cache_bytes_by_kind(context, 1, DTYPE_BYTES[a.cache_dtype], DTYPE_BYTES[a.state_dtype])
    # 'kv' here is every cache that grows with context and is read once per step: KV and MLA latent ('latent')
    kv, rec = sum(v for k, v in kinds.items() if k != "recurrent"), kinds.get("recurrent", 0)
    cache_seq, traffic_seq = kv + rec, kv + 2 * rec
    weights = model.num_params(mtp=False) * wb
    usable = hw.hbm_capacity * a.hbm_fraction
    devices = math.ceil((weights + cache_seq) / usable)
    max_batch = math.floor((devices * usable - weights) / cache_seq)
    peak, bandwidth = devices * hw.peak_flops(a.weights_dtype), devices * hw.hbm_bandwidth
    prefill_flops, decode_flops = model.prefill_flops(context), model.decode_flops(context)

    def step(batch: int) -> tuple[float, str]:
        compute = batch * decode_flops / peak
        memory = (weight_params_read(model, batch) * wb + batch * traffic_seq) / bandwidth
        return max(compute, memory), ("compute" if compute > memory else "memory")

    t1, bound1 = step(1)
    tb, bound = step(max_batch)
    # a long prompt routes to (nearly) every expert: prefill reads all weights once and writes its cache
    prefill_compute, prefill_memory = prefill_flops / peak, (weights + cache_seq) / bandwidth
    prefill_s = max(prefill_compute, prefill_memory)
    per_device = max_batch / tb / devices
    usd = a.usd_per_hour
    return {
        "context": context,
        "within_max_seq_len": context <= model.config.max_seq_len,
        "cache_bytes": {"kv": kv, "recurrent": rec, "total": cache_seq},
        "prefill_flops_per_token": prefill_flops / context,
        "prefill_flops": prefill_flops,
        "decode_flops_per_token": decode_flops,
        "weights_bytes": weights,
        "devices": devices,
        "max_batch": max_batch,
        "prefill_seconds": prefill_s,
        "prefill_bound": "compute" if prefill_compute >= prefill_memory else "memory",
        "decode": {
            "batch1_tokens_per_s": 1.0 / t1, "batch1_bound": bound1,
            "max_batch_tokens_per_s_per_seq": 1.0 / tb, "max_batch_bound": bound,
            "tokens_per_s_per_device": per_device,
        },
        "usd_per_million_output_tokens": None if usd is None else usd / (per_device * 3600) * 1e6,
        "usd_per_million_input_tokens": None if usd is None else usd * devices * prefill_s / 3600 / context * 1e6,
    }


def describe_layout(cfg) -> str:
    counts: dict[str, int] = {}
    for letter in cfg.layer_mixers:
        label = cfg.mixers[letter].describe(brief=True)
        counts[label] = counts.get(label, 0) + 1
    return " + ".join(f"{n} {label}" for label, n in counts.items())


def model_summary(model, spec: str) -> dict:
    cfg = model.config
    return {
        "name": cfg.name, "spec": spec, "layers": cfg.num_layers, "mixer_pattern": cfg.mixer_pattern,
        "ffn_pattern": cfg.ffn_pattern, "layout": describe_layout(cfg), "max_seq_len": cfg.max_seq_len,
        "params": {"total_without_mtp": model.num_params(mtp=False), "total_with_mtp": model.num_params(mtp=True),
                   "mtp": model.num_params(mtp=True) - model.num_params(mtp=False)},
        "active_params": {"embedding_and_head": model.active_params(),
                          "head_only": model.active_params(embedding=False),
                          "neither": model.active_params(embedding=False, head=False)},
    }


def load_meta(spec: str):
    from .cli import load_model  # late: cli imports this module to register the command
    model, _ = load_model(spec, meta=True)
    return model


def cost_report(specs: list[str], contexts: list[int], hw: Hardware, a: Assumptions) -> dict:
    models = []
    for spec in specs:
        model = load_meta(spec)
        entry = model_summary(model, spec)
        entry["points"] = [serving_point(model, L, hw, a) for L in contexts]
        models.append(entry)
    return {"schema": "hybridlm.cost/1", "hardware": hw.to_dict(), "assumptions": {**asdict(a),
            "notes": assumptions(a, hw)}, "contexts": contexts, "models": models}


# -- formatting ---------------------------------------------------------------------------------------------
def sig(x: float, digits: int = 3) -> str:
    """`digits` significant figures: 0.00123, 12.3, 4,560, 1,230,000."""
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{round(x, digits - 1 - math.floor(math.log10(abs(x)))):,.0f}"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 else f"{x:.{digits - 1}e}"


def si(x: float, unit: str = "") -> str:
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{sig(x / scale)} {prefix}{unit}"
    return f"{sig(x)} {unit}".rstrip()


def params_b(n: int) -> str:
    return f"{n / 1e9:.3f}B"


def seconds(s: float) -> str:
    if s < 1:
        return f"{sig(s * 1e3)} ms"
    return f"{sig(s)} s" if s < 120 else f"{sig(s / 60)} min"


def print_report(report: dict, con) -> None:
    from rich.table import Table
    hw, a = report["hardware"], report["assumptions"]
    t = Table(title="parameters (exact counts on the meta-device model)")
    for col in ("model", "layers", "total (no MTP)", "total (+MTP)", "active: emb+head", "active: head only",
                "active: neither"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for m in report["models"]:
        p, ap = m["params"], m["active_params"]
        t.add_row(m["name"], f"{m['layers']}: {m['layout']}", params_b(p["total_without_mtp"]),
                  params_b(p["total_with_mtp"]), params_b(ap["embedding_and_head"]), params_b(ap["head_only"]),
                  params_b(ap["neither"]))
    con.print(t)
    price = a["usd_per_hour"] is not None
    t = Table(title=f"serving on {hw['name']}: weights {a['weights_dtype']}, cache {a['cache_dtype']}, "
                    f"recurrent state {a['state_dtype']} (roofline bounds)")
    cols = ["model", "context", "cache/seq (KV + recurrent)", "prefill FLOP/tok", "decode FLOP/tok", "devices",
            "prefill time", "decode tok/s (B=1)", "max batch", "tok/s/device (max B)"]
    cols += ["$/M out", "$/M in"] if price else []
    for col in cols:
        t.add_column(col, justify="left" if col == "model" else "right")
    for m in report["models"]:
        for p in m["points"]:
            c, d = p["cache_bytes"], p["decode"]
            cache = si(c["total"], "B") + (f" ({si(c['kv'], 'B')} + {si(c['recurrent'], 'B')})"
                                           if c["kv"] and c["recurrent"] else "")
            row = [m["name"], _context_label(p["context"]) + ("" if p["within_max_seq_len"] else "*"), cache,
                   si(p["prefill_flops_per_token"]), si(p["decode_flops_per_token"]), str(p["devices"]),
                   seconds(p["prefill_seconds"]) + ("" if p["prefill_bound"] == "compute" else " (memory)"),
                   f"{sig(d['batch1_tokens_per_s'])} ({d['batch1_bound']})",
                   f"{p['max_batch']:,}", f"{sig(d['tokens_per_s_per_device'])} ({d['max_batch_bound']})"]
            if price:
                row += [f"${sig(p['usd_per_million_output_tokens'])}", f"${sig(p['usd_per_million_input_tokens'])}"]
            t.add_row(*row)
    con.print(t)
    con.print(f"[bold]hardware[/]: {hw['name']}: {si(hw['bf16_flops'], 'FLOP/s')} bf16, "
              f"{si(hw['fp8_flops'], 'FLOP/s') + ' fp8' if hw['fp8_flops'] else 'no fp8'}, "
              f"{si(hw['hbm_bandwidth'], 'B/s')}, {si(hw['hbm_capacity'], 'B')} HBM. Source: {hw['source']}"
              + (f" ({hw['note']})" if hw["note"] else ""))
    con.print("[bold]assumptions[/]:")
    for line in a["notes"]:
        con.print(f"  - {line}")


# -- plot ---------------------------------------------------------------------------------------------------
def plot_cost(specs: list[str], path: str | Path, contexts: list[int], a: Assumptions):
    """Cache bytes per sequence and decode FLOPs per token against context, log-log, one line per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    hi = max([*contexts, 1024 ** 2])
    xs = sorted({int(x) for x in np.geomspace(1024, hi, 41)} | set(contexts))
    fig, (ax_cache, ax_flops) = plt.subplots(1, 2, figsize=(12, 4.8))
    cb, sb = DTYPE_BYTES[a.cache_dtype], DTYPE_BYTES[a.state_dtype]
    for spec in specs:
        model = load_meta(spec)
        ax_cache.plot(xs, [model.cache_bytes(x, 1, cb, sb) for x in xs], label=model.config.name)
        ax_flops.plot(xs, [model.decode_flops(x) for x in xs], label=model.config.name)
    ax_cache.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="cache per sequence (bytes)",
                 title=f"cache: {a.cache_dtype}, recurrent state {a.state_dtype}")
    ax_flops.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="decode FLOPs per token",
                 title="one decode step (2 FLOPs per multiply-add)")
    for ax in (ax_cache, ax_flops):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


# -- the motivating table -----------------------------------------------------------------------------------
def _stated_layout(ref: dict) -> str:
    layout_fields = ("compress_ratios", "sliding_window", "index_topk", "attention_chunk_size",
                     "no_rope_layer_interval", "num_key_value_heads", "num_attention_heads", "head_dim")
    fields = ref["fields"]
    unverified = [u for u in ref.get("unverified_fields") or [] if u.split()[0] in layout_fields]
    return _layout_from_fields(fields) + (f"; unverified: {', '.join(unverified)}" if unverified else "")


def _layout_from_fields(fields: dict) -> str:
    n = fields["num_hidden_layers"]
    if "compress_ratios" in fields:
        r = fields["compress_ratios"][:n]
        return (f"1 shared KV head x {fields['head_dim']} (MQA), window {fields.get('sliding_window')} on every "
                f"layer; {r.count(4)} CSA (4x, top-{fields.get('index_topk')}), {r.count(128)} HCA (128x), "
                f"{r.count(0)} window-only (stated)")
    if "attention_chunk_size" in fields:
        k = fields.get("no_rope_layer_interval", 4)
        return (f"GQA {fields['num_attention_heads']}q/{fields['num_key_value_heads']}kv; "
                f"{n - n // k} chunked local ({fields['attention_chunk_size']}) + {n // k} global NoPE (stated)")
    return "(not described)"


def article_report(hw: Hardware, a: Assumptions, reference: str | Path | None = None, context: int = 1024 ** 2):
    from .presets import get_config
    path = Path(reference) if reference else REFERENCE
    if not path.exists():
        raise ValueError(f"{path}: published-configs.json not found (pass --reference PATH)")
    published = json.loads(path.read_text())["models"]
    rows = []
    for prefix, label, preset in ARTICLE:
        ref = next((m for m in published if m["name"].startswith(prefix)), None)
        if ref is None:
            raise ValueError(f"{path}: no model named {prefix!r}")
        f = ref["fields"]
        row = {"model": label, "reference_name": ref["name"], "preset": preset,
               "stated_total": ref["stated_total_params"], "stated_active": ref["stated_active_params"],
               "stated_context": f.get("max_position_embeddings"), "implemented": True}
        try:
            get_config(preset)
        except ValueError:
            row.update(implemented=False, layout=_stated_layout(ref), computed=NOT_IMPLEMENTED)
            rows.append(row)
            continue
        model = load_meta(preset)
        row.update(model_summary(model, preset))
        row["point"] = serving_point(model, context, hw, a)
        rows.append(row)
    return {"schema": "hybridlm.cost-article/1", "context": context, "hardware": hw.to_dict(),
            "assumptions": {**asdict(a), "notes": assumptions(a, hw)}, "rows": rows}


def print_article(report: dict, con) -> None:
    from rich.table import Table
    a, hw, L = report["assumptions"], report["hardware"], report["context"]
    t = Table(title=f"DeepSeek V4 / Qwen 3.6 / Llama 4: stated vs computed, cache per sequence at "
                    f"{_context_label(L)} tokens (cache {a['cache_dtype']}, state {a['state_dtype']})")
    for col in ("model", "context (stated)", "stated total / active", "computed total (no MTP / +MTP)",
                "computed active (emb+head / head / neither)", "attention layout",
                f"cache/seq @ {_context_label(L)}", f"{hw['key']} devices, 1 seq @ {_context_label(L)}"):
        t.add_column(col, overflow="fold")
    for r in report["rows"]:
        ctx = f"{r['stated_context']:,}" if r["stated_context"] else "?"
        stated = f"{r['stated_total']} / {r['stated_active']}"
        if not r["implemented"]:
            t.add_row(r["model"], ctx, stated, NOT_IMPLEMENTED, NOT_IMPLEMENTED, r["layout"], NOT_IMPLEMENTED,
                      NOT_IMPLEMENTED)
            continue
        p, ap, pt = r["params"], r["active_params"], r["point"]
        mark = "" if pt["within_max_seq_len"] else "*"
        t.add_row(r["model"], ctx, stated, f"{params_b(p['total_without_mtp'])} / {params_b(p['total_with_mtp'])}",
                  f"{params_b(ap['embedding_and_head'])} / {params_b(ap['head_only'])} / {params_b(ap['neither'])}",
                  r["layout"], si(pt["cache_bytes"]["total"], "B") + mark, f"{pt['devices']}{mark}")
    con.print(t)
    con.print("Stated figures and context: published-configs.json (vendors' rounded labels; see its caveats for "
              "what each counts). '*': beyond the model's max_position_embeddings.")
    con.print(f"Devices: {hw['name']}, weights {a['weights_dtype']}, {a['hbm_fraction']:g} of HBM usable.")


# -- JSON schema (documented in docs/cost.md) ---------------------------------------------------------------
_NUM, _INT, _STR, _BOOL = {"type": "number"}, {"type": "integer"}, {"type": "string"}, {"type": "boolean"}
_NUM_OR_NULL = {"type": ["number", "null"]}


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": required or list(props)}


JSON_SCHEMA = _obj({
    "schema": {"type": "string", "enum": ["hybridlm.cost/1"]},
    "hardware": _obj({"key": _STR, "name": _STR, "bf16_flops": _NUM, "fp8_flops": _NUM_OR_NULL,
                      "hbm_bandwidth": _NUM, "hbm_capacity": _NUM, "source": _STR, "note": _STR}),
    "assumptions": _obj({"weights_dtype": _STR, "cache_dtype": _STR, "state_dtype": _STR, "hbm_fraction": _NUM,
                         "usd_per_hour": _NUM_OR_NULL, "notes": {"type": "array", "items": _STR}}),
    "contexts": {"type": "array", "items": _INT},
    "models": {"type": "array", "items": _obj({
        "name": _STR, "spec": _STR, "layers": _INT, "mixer_pattern": _STR, "ffn_pattern": _STR, "layout": _STR,
        "max_seq_len": _INT,
        "params": _obj({"total_without_mtp": _INT, "total_with_mtp": _INT, "mtp": _INT}),
        "active_params": _obj({"embedding_and_head": _INT, "head_only": _INT, "neither": _INT}),
        "points": {"type": "array", "items": _obj({
            "context": _INT, "within_max_seq_len": _BOOL,
            "cache_bytes": _obj({"kv": _INT, "recurrent": _INT, "total": _INT}),
            "prefill_flops_per_token": _NUM, "prefill_flops": _NUM, "decode_flops_per_token": _NUM,
            "weights_bytes": _INT, "devices": _INT, "max_batch": _INT, "prefill_seconds": _NUM,
            "prefill_bound": {"type": "string", "enum": ["compute", "memory"]},
            "decode": _obj({"batch1_tokens_per_s": _NUM, "batch1_bound": {"type": "string",
                                                                          "enum": ["compute", "memory"]},
                            "max_batch_tokens_per_s_per_seq": _NUM,
                            "max_batch_bound": {"type": "string", "enum": ["compute", "memory"]},
                            "tokens_per_s_per_device": _NUM}),
            "usd_per_million_output_tokens": _NUM_OR_NULL, "usd_per_million_input_tokens": _NUM_OR_NULL,
        })},
    })},
})


# -- CLI ----------------------------------------------------------------------------------------------------
def cmd_cost(args) -> None:
    from .cli import console
    hw = get_hardware(args.hardware)
    a = Assumptions(weights_dtype=args.weights_dtype, cache_dtype=args.cache_dtype, state_dtype=args.state_dtype,
                    hbm_fraction=args.hbm_fraction, usd_per_hour=args.usd_per_hour)
    con = console()
    if args.article:
        report = article_report(hw, a, args.reference)
        print_article(report, con)
    else:
        if not args.models:
            raise ValueError("give at least one PRESET|DIR|CONFIG.json, or --article")
        contexts = parse_contexts(args.context)
        report = cost_report(args.models, contexts, hw, a)
        print_report(report, con)
        if args.plot:
            plot_cost(args.models, args.plot, contexts, a)
            con.print(f"plot written to {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        con.print(f"JSON written to {args.json}")


def add_cost_parser(sub) -> None:
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
    p.add_argument("--json", metavar="FILE", help="write machine-readable results (schema: docs/cost.md)")
    p.add_argument("--plot", metavar="FILE.png", help="cache and decode FLOPs against context, log-log")
    p.add_argument("--article", action="store_true",
                   help="the motivating table: DeepSeek V4, Qwen 3.6, Llama 4, stated vs computed")
    p.add_argument("--reference", default=None, help="path to published-configs.json (for --article)")
    p.set_defaults(fn=cmd_cost)
