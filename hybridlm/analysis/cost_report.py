"""The `hybridlm cost` report: the tables (rich, printed on a console the caller passes), the plot, the motivating
article table (DeepSeek V4 / Qwen 3.6 / Llama 4, stated against computed) and the JSON report with its schema
(JSON_SCHEMA, documented in docs/cost.md), all assembled from accounting.py's serving model; with
`quantize="experts-int8"` also the weight memory with and without ExpertsInt8 (docs/quantize.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from .accounting import DTYPE_BYTES, Assumptions, assumptions, context_label, load_meta, model_summary, serving_point
from .hardware import Hardware

# Published hyperparameters and stated parameter counts, with their sources (package data: hybridlm/resources/README.md).
REFERENCE = Path(__file__).resolve().parents[1] / "resources" / "published-configs.json"
NOT_IMPLEMENTED = "not implemented yet (issue 5)"
# The motivating comparison: (name prefix in published-configs.json, label, preset that will implement it).
ARTICLE = [
    ("DeepSeek-V4-Flash", "DeepSeek-V4-Flash", "deepseek-v4-flash"),
    ("DeepSeek-V4-Pro", "DeepSeek-V4-Pro", "deepseek-v4-pro"),
    ("Qwen3.5-35B-A3B / Qwen3.6-35B-A3B", "Qwen3.6-35B-A3B", "qwen3.6-35b-a3b"),
    ("Llama-4-Scout-17B-16E", "Llama-4-Scout", "llama4-scout-17b-16e"),
    ("Llama-4-Maverick-17B-128E", "Llama-4-Maverick", "llama4-maverick-17b-128e"),
]


def experts_int8_weights(model, a: Assumptions) -> dict:
    """ExpertsInt8's weight memory, from the modules' declarations: the routed expert weights (MoE.expert_weights)
    at 1 B each plus one fp32 scale per output channel (MoE.expert_scales), every other non-MTP parameter in
    a.weights_dtype, beside all of them in a.weights_dtype. The MTP module is left out, as in the serving model."""
    from ..layers.ffn.moe import MoE
    if a.weights_dtype != "bf16":
        raise ValueError(f"--quantize experts-int8 stores bf16 expert weights (2 B) in int8 (1 B); with "
                         f"--weights-dtype {a.weights_dtype} they are {DTYPE_BYTES[a.weights_dtype]} B already: "
                         f"choose one of the two")
    moes = [b.ffn for b in model.layers if isinstance(b.ffn, MoE)]
    experts, scales = sum(m.expert_weights() for m in moes), sum(m.expert_scales() for m in moes)
    without = model.num_params(mtp=False) * DTYPE_BYTES[a.weights_dtype]
    with_int8 = without - experts * (DTYPE_BYTES[a.weights_dtype] - 1) + 4 * scales
    return {"method": "experts-int8", "moe_layers": len(moes), "expert_weights": experts, "scales": scales,
            "weights_bytes": without, "weights_bytes_quantized": with_int8, "saved_bytes": without - with_int8}


def cost_report(specs: list[str], contexts: list[int], hw: Hardware, a: Assumptions,
                quantize: str | None = None) -> dict:
    """quantize="experts-int8": each model also gets a "quantize" entry (experts_int8_weights)."""
    if quantize not in (None, "experts-int8"):
        raise ValueError(f"--quantize {quantize!r}: must be experts-int8 (the one quantisation cost models)")
    models = []
    for spec in specs:
        model = load_meta(spec)
        entry = model_summary(model, spec)
        entry["points"] = [serving_point(model, L, hw, a) for L in contexts]
        if quantize is not None:
            entry["quantize"] = experts_int8_weights(model, a)
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
            row = [m["name"], context_label(p["context"]) + ("" if p["within_max_seq_len"] else "*"), cache,
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
    if any("quantize" in m for m in report["models"]):
        print_quantize(report, con)
    con.print("[bold]assumptions[/]:")
    for line in a["notes"]:
        con.print(f"  - {line}")


def print_quantize(report: dict, con) -> None:
    from rich.table import Table
    t = Table(title="weight memory with ExpertsInt8 (routed experts: int8 + one fp32 scale per output channel; "
                    "everything else bf16; no MTP)")
    for col in ("model", "MoE layers", "routed expert weights", "scales", "weights bf16", "weights experts-int8",
                "saved"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for m in report["models"]:
        q = m["quantize"]
        saved = q["saved_bytes"] / q["weights_bytes"] if q["weights_bytes"] else 0.0
        t.add_row(m["name"], str(q["moe_layers"]), f"{q['expert_weights']:,}", f"{q['scales']:,}",
                  si(q["weights_bytes"], "B"), si(q["weights_bytes_quantized"], "B"),
                  f"{si(q['saved_bytes'], 'B')} ({saved:.1%})")
    con.print(t)
    con.print("The serving figures above keep every weight in bf16; docs/quantize.md has the format and its "
              "measured logit error.")


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
    from ..presets import get_config
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
                    f"{context_label(L)} tokens (cache {a['cache_dtype']}, state {a['state_dtype']})")
    for col in ("model", "context (stated)", "stated total / active", "computed total (no MTP / +MTP)",
                "computed active (emb+head / head / neither)", "attention layout",
                f"cache/seq @ {context_label(L)}", f"{hw['key']} devices, 1 seq @ {context_label(L)}"):
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
_NUM_OR_NULL, _INT_OR_NULL = {"type": ["number", "null"]}, {"type": ["integer", "null"]}


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": required or list(props)}


_MODEL = {
    "name": _STR, "spec": _STR, "layers": _INT, "mixer_pattern": _STR, "ffn_pattern": _STR, "layout": _STR,
    "max_seq_len": _INT,
    "quantize": _obj({"method": {"type": "string", "enum": ["experts-int8"]}, "moe_layers": _INT,
                      "expert_weights": _INT, "scales": _INT, "weights_bytes": _INT,
                      "weights_bytes_quantized": _INT, "saved_bytes": _INT}),
    "params": _obj({"total_without_mtp": _INT, "total_with_mtp": _INT, "mtp": _INT,
                    "checkpoint_total": _INT_OR_NULL}),
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
}
_OPTIONAL = {"quantize"}  # only with --quantize: the weight memory with and without it (experts_int8_weights)

JSON_SCHEMA = _obj({
    "schema": {"type": "string", "enum": ["hybridlm.cost/1"]},
    "hardware": _obj({"key": _STR, "name": _STR, "bf16_flops": _NUM, "fp8_flops": _NUM_OR_NULL,
                      "hbm_bandwidth": _NUM, "hbm_capacity": _NUM, "source": _STR, "note": _STR}),
    "assumptions": _obj({"weights_dtype": _STR, "cache_dtype": _STR, "state_dtype": _STR, "hbm_fraction": _NUM,
                         "usd_per_hour": _NUM_OR_NULL, "notes": {"type": "array", "items": _STR}}),
    "contexts": {"type": "array", "items": _INT},
    "models": {"type": "array", "items": _obj(_MODEL, [k for k in _MODEL if k not in _OPTIONAL])},
})
