"""The report of `hybridlm compare`: DIR/results.json, DIR/report.md (the verdict first, then statistics, the
full-scale table, tables, definitions, machine and settings) and PNG figures (loss curves, quality vs decode cost,
cost vs context, recall vs key-value pairs, the sweep). The verdict and statistics come from analysis/verdict.py.

    aggregate(m)      one model's numbers as every table and figure shows them (mean ± spread over its seeds)
    write_all(s, d)   results.json, the figures that have data, report.md listing exactly those figures
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from . import claims, recall, sweeps, verdict
from .plotting import pyplot as _plt
from .plotting import save as _save
from .evals import NEEDLE_CHANCE

LOADED_CORES = 0.25  # other processes using more than this many cores on average disturb a timing (warned)

DEFINITIONS = f"""\
- **seeds, ±**: every model trained here is trained once per seed; val loss, bpb, needle scores and train tok/s are
  the mean over those runs ± the spread, half the range ((max - min) / 2). Tables and figures show the same numbers.
- **interval [lo, hi]** (Verdict, Statistics): the 95% Student t interval of the mean over the seeds; one seed has
  none. **tie**: two models tie on a metric unless Welch's t-test on their per-seed values gives p < 0.05.
- **val loss / bpb**: mean next-token cross-entropy (nats/token) on held-out sequences of the training corpus (every
  20th sequence, never trained on), and bits per byte = sum(CE nats) / (ln 2 x UTF-8 bytes the predicted tokens
  encode), comparable across tokenizers.
- **unigram baseline**: the same validation targets scored by token frequencies of the train split (add-one
  smoothing); a model at or above it has learned nothing beyond how common each token is.
- **MQAR**: multi-query associative recall in the style of Zoology (Arora et al. 2023): P key-value pairs (keys
  from one half of the vocabulary, values from the other) followed by every key queried once at power-law gaps;
  accuracy = share of queried values predicted exactly. Each model's *recall twin* (its own token mixers from one
  period of its layer plan, width 64, a small dense FFN, fresh weights) is trained per seed and state size on the
  same synthetic budget (MQAR, the needle past the window, copying), then tested at several P and sequence lengths,
  including lengths longer than trained on. Chance = 1 / the number of value tokens; copying any value seen in the
  context scores 1/P.
- **needle past the window** (recall twin): 4 key-value needles in the first quarter of random value tokens, all 4
  keys queried at the end, more than 90 tokens after their needles (past sliding windows and chunks of 32-64).
- **copying** (recall twin): n random tokens, a separator, the same n again; accuracy per copied token (chance 1/62).
- **needle**: one "The magic number is NNNN." in held-out corpus text at several depths, then the question; exact =
  share of cases where every answer token is the greedy choice (what greedy decoding would produce; guessing one of
  the 9000 numbers: 0.0001); gain = answer loss without the needle minus with it (nats/token; > 0 means the model
  used the needle).
- **train tok/s**: training tokens per second of the `hybridlm train` runs (eval and checkpoint time excluded).
- **prefill tok/s**: prompt tokens per second of `model.prefill` (1024-token chunks, batch 1, fp32, random ids),
  seed 0's weights, the best of the repeated timings.
- **decode ms/token**: mean latency of single-token steps right after a prefill of that context, with the cache;
  the best of the repeated timings.
- **load**: while each speed measurement ran, the mean number of cores other processes kept busy (busy CPU time of
  this process's cores in /proc/stat minus this process's own CPU time, over the wall time); above
  {LOADED_CORES} core the timing is marked as taken under load.
- **cache bytes**: `HybridCache.memory_bytes()` measured after the prefill, beside `model.cache_bytes(L)` (the
  analytic figure of `hybridlm cost`, in the model's dtype, delta-rule state fp32); they must be equal.
- **params**: total without the MTP module; active = per token (routed experts actually used), embedding and head
  counted (tied: once)."""


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# -- the numbers -------------------------------------------------------------------------------------------------
def _ok(summary: dict) -> list[dict]:
    return [m for m in summary["models"] if m.get("status") == "ok"]


def _ctx(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _ints(xs) -> str:
    return ", ".join(str(x) for x in xs)


def _ctxs(ns) -> str:
    return ", ".join(_ctx(int(n)) for n in ns)


def _f(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _stat(values: list[float]) -> dict:
    return {"mean": sum(values) / len(values), "spread": (max(values) - min(values)) / 2, "n": len(values),
            "min": min(values), "max": max(values)}


def _curve(curves: list[list]) -> list[list[float]]:
    """[[step, value, ...] per point] per seed -> [[step, mean, min, max]] over the steps every seed has."""
    by_step = [{p[0]: p[1] for p in c} for c in curves]
    steps = sorted(set.intersection(*(set(c) for c in by_step))) if by_step else []
    return [[s, sum(c[s] for c in by_step) / len(by_step), min(c[s] for c in by_step), max(c[s] for c in by_step)]
            for s in steps]


def aggregate(m: dict) -> dict:
    """One model's numbers as every table and figure of the report shows them: over its training seeds the mean and
    spread (half the range) of validation loss, bits per byte, needle scores and training tok/s, and the mean
    training-CE and validation-CE curves; MQAR from the recall twins (mean over their seeds)."""
    runs = m["train"]["runs"] if m.get("train") else []
    seeds = m["needle_seeds"]
    needle = {c: {k: _stat([n[c][k] for n in seeds]) for k in ("exact", "loss", "loss_without")}
              | {"gain": _stat([n[c]["loss_without"] - n[c]["loss"] for n in seeds])} for c in seeds[0]}
    acc = m.get("mqar", {}).get("acc")
    tok_s = [r["tokens_per_s"] for r in runs if r.get("tokens_per_s")]
    return {"n": len(m["val_bpb_seeds"]), "val_loss": _stat(m["val_loss_seeds"]), "val_bpb": _stat(m["val_bpb_seeds"]),
            "needle": needle, "mqar_mean": sum(acc.values()) / len(acc) if acc else None,
            "train_tokens_per_s": _stat(tok_s) if tok_s else None,
            "ce_curve": _curve([r["ce_curve"] for r in runs]), "val_curve": _curve([r["val_curve"] for r in runs])}


def _pm(st: dict | None, fmt: str = ".3f") -> str:
    if st is None:
        return "n/a"
    return format(st["mean"], fmt) + (f" ± {format(st['spread'], fmt.lstrip('+'))}" if st["n"] > 1 else "")


def _unigrams(models: list[dict]) -> dict[str, dict]:
    """tokenizer name -> its unigram baseline {'loss', 'bpb'} (the same for every model with that tokenizer)."""
    return {m["tokenizer"]: m["unigram"] for m in models if m.get("unigram")}


def _mqar_chance(models: list[dict]) -> float | None:
    return next((m["mqar"]["chance"] for m in models if "chance" in m.get("mqar", {})), None)


def worse_than_unigram(summary: dict) -> list[str]:
    return [m["label"] for m in _ok(summary) if m["aggregate"]["val_loss"]["mean"] >= m["unigram"]["loss"]]


def loaded(summary: dict) -> list[tuple[str, str, float]]:
    """(model, what was timed, cores other processes used) for every timing taken under load."""
    out = []
    for m in _ok(summary):
        for r in (m.get("train") or {}).get("runs", []):
            cores = (r.get("load") or {}).get("other_cores")
            if cores is not None and cores > LOADED_CORES:
                out.append((m["label"], f"training seed {r['seed']}", cores))
        cores = (m.get("speed_load") or {}).get("other_cores")
        if cores is not None and cores > LOADED_CORES:
            out.append((m["label"], "prefill/decode timing", cores))
    return out


# -- figures -----------------------------------------------------------------------------------------------------
def _context_axis(ax, contexts: list[int]) -> None:
    """A log axis ticked at exactly these values, labelled plainly (256, 1K, 2K), no minor tick labels."""
    from matplotlib.ticker import FixedLocator, NullLocator
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(contexts))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([_ctx(c) for c in contexts])


def plot_loss_curves(summary: dict, path: Path) -> bool:
    trained = [(i, m) for i, m in enumerate(_ok(summary)) if m["aggregate"]["ce_curve"]]
    if not trained:
        return False
    plt = _plt()
    fig, (ax_t, ax_v) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for i, m in trained:
        a = m["aggregate"]
        steps, mean, lo, hi = zip(*a["ce_curve"])
        ax_t.plot(steps, mean, color=f"C{i}", label=f"{m['label']} (n={a['n']})")
        ax_t.fill_between(steps, lo, hi, color=f"C{i}", alpha=0.2, lw=0)
        if a["val_curve"]:
            vs, vm, vlo, vhi = zip(*a["val_curve"])
            ax_v.errorbar(vs, vm, yerr=[[x - y for x, y in zip(vm, vlo)], [y - x for x, y in zip(vm, vhi)]],
                          fmt="o-", color=f"C{i}", ms=4, capsize=3, label=m["label"])
    for name, u in _unigrams([m for _, m in trained]).items():
        for ax in (ax_t, ax_v):
            ax.axhline(u["loss"], color="k", ls=":", lw=1, label=f"unigram baseline ({name})")
    ax_t.set(xlabel="step", ylabel="cross-entropy (nats/token)",
             title="training CE (next-token term only, no aux / MTP)")
    ax_v.set(xlabel="step", title="validation CE (held-out sequences)")
    ax_v.tick_params(labelleft=True)
    ax_t.legend(fontsize=8)
    fig.suptitle("mean over seeds; band / bars: min to max over seeds", fontsize=9)
    return _save(fig, path)


def _decode_ms(m: dict) -> tuple[str, float]:
    L = max(m["speed"], key=int)
    return L, m["speed"][L]["decode_ms_per_token"]


def plot_pareto(summary: dict, path: Path) -> bool:
    models = _ok(summary)
    if not models:
        return False
    plt = _plt()
    fig, (ax_q, ax_r) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, m in enumerate(models):
        a = m["aggregate"]
        _, x = _decode_ms(m)
        ax_q.errorbar(x, a["val_bpb"]["mean"], yerr=a["val_bpb"]["spread"], fmt="o", color=f"C{i}", ms=7, capsize=3)
        ax_q.annotate(m["label"], (x, a["val_bpb"]["mean"]), fontsize=8, xytext=(5, 4), textcoords="offset points")
        if a["mqar_mean"] is not None:
            ax_r.scatter(x, a["mqar_mean"], color=f"C{i}", s=50)
            ax_r.annotate(m["label"], (x, a["mqar_mean"]), fontsize=8, xytext=(5, 4), textcoords="offset points")
    for name, u in _unigrams(models).items():
        ax_q.axhline(u["bpb"], color="k", ls=":", lw=1, label=f"unigram baseline ({name})")
    chance = _mqar_chance(models)
    if chance is not None:
        ax_r.axhline(chance, color="k", ls=":", lw=1, label=f"chance ({chance:.3f})")
    L = _ctx(int(_decode_ms(models[0])[0]))
    n = sorted({m["aggregate"]["n"] for m in models})
    ax_q.set(xlabel=f"decode ms/token at {L} context", ylabel="validation bits per byte (lower is better)",
             title=f"quality vs decode cost (mean ± half range, n={'/'.join(map(str, n))} seeds)")
    ax_r.set(xlabel=f"decode ms/token at {L} context", ylabel="MQAR accuracy (mean over settings)",
             title="recall vs decode cost (recall twins, mean over seeds)", ylim=(-0.05, 1.05))
    for ax in (ax_q, ax_r):
        ax.margins(x=0.2)  # room for the labels of the outermost points
    ax_q.legend(fontsize=8, loc="best")
    if chance is not None:
        ax_r.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_context_cost(summary: dict, path: Path) -> bool:
    models = _ok(summary)
    if not models:
        return False
    plt = _plt()
    fig, (ax_d, ax_c) = plt.subplots(1, 2, figsize=(11, 4.5))
    contexts = sorted({int(c) for m in models for c in m["speed"]})
    for i, m in enumerate(models):
        ctx = sorted(int(c) for c in m["speed"])
        ax_d.plot(ctx, [m["speed"][str(c)]["decode_ms_per_token"] for c in ctx], "o-", color=f"C{i}", label=m["label"])
        ax_c.plot(ctx, [m["speed"][str(c)]["cache_bytes"] for c in ctx], "o-", color=f"C{i}", label=m["label"])
        ax_c.plot(ctx, [m["speed"][str(c)]["cache_bytes_analytic"] for c in ctx], "x", color="k", ms=6,
                  label="analytic (hybridlm cost)" if i == 0 else None)
    _context_axis(ax_d, contexts)
    _context_axis(ax_c, contexts)
    ax_c.set_yscale("log")
    ax_d.set(xlabel="context (tokens)", ylabel="decode ms/token (best of the timings)", title="decode latency vs context")
    ax_c.set(xlabel="context (tokens)", ylabel="cache bytes per sequence", title="cache memory vs context (o measured, x analytic)")
    ax_d.legend(fontsize=8)
    ax_c.legend(handles=[h for h in ax_c.get_legend_handles_labels()[0] if h.get_label().startswith("analytic")],
                fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_recall(summary: dict, path: Path) -> bool:
    models = [(i, m) for i, m in enumerate(_ok(summary)) if m.get("mqar", {}).get("acc")]
    if not models:
        return False
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ["-", "--", ":", "-."]
    lens = sorted({int(k.split("@T")[1]) for _, m in models for k in m["mqar"]["acc"]})
    pairs = sorted({int(k[1:].split("@")[0]) for _, m in models for k in m["mqar"]["acc"]})
    for i, m in models:
        acc = m["mqar"]["acc"]
        for j, T in enumerate(lens):
            pts = sorted((int(k[1:].split("@")[0]), v) for k, v in acc.items() if k.endswith(f"@T{T}"))
            if pts:
                ax.plot([p for p, _ in pts], [v for _, v in pts], styles[j % 4], marker="o", color=f"C{i}")
    chance = _mqar_chance([m for _, m in models])
    ax.axhline(chance, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(pairs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(p) for p in pairs])
    ax.set(xlabel="key-value pairs P", ylabel="MQAR accuracy", ylim=(-0.05, 1.05),
           title="associative recall vs number of key-value pairs (recall twins, mean over seeds)")
    by_model = ax.legend(handles=[Line2D([], [], color=f"C{i}", lw=2, label=m["label"]) for i, m in models]
                         + [Line2D([], [], color="grey", ls=":", label=f"chance ({chance:.3f})")],
                         title="model", fontsize=8, loc="upper right")
    ax.add_artist(by_model)
    ax.legend(handles=[Line2D([], [], color="k", ls=styles[j % 4], label=f"T = {T}") for j, T in enumerate(lens)],
              title="sequence length", fontsize=8, loc="upper center")
    return _save(fig, path)


FIGURES = {  # file -> (drawing function, caption)
    "loss_curves.png": (plot_loss_curves, "training and validation cross-entropy"),
    "pareto.png": (plot_pareto, "quality and recall vs decode cost"),
    "context_cost.png": (plot_context_cost, "decode latency and cache memory vs context"),
    "recall.png": (plot_recall, "recall vs key-value pairs"),
    **sweeps.FIGURES,  # drawn only for the sweep they belong to (sweeps.draws)
}


# -- markdown ----------------------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}text\n{text.rstrip()}\n{ticks}"


def _settings(summary: dict) -> list[str]:
    s = summary["settings"]
    steps = max(1, s["budget_tokens"] // (s["batch_size"] * s["seq_len"]))
    rc = s["recall"]
    return ["## Settings", "",
            f"- Training: the built-in corpus (this Python's standard library, bytes), {steps} steps x "
            f"{s['batch_size']} sequences x {s['seq_len']} tokens = {steps * s['batch_size'] * s['seq_len']:,} "
            f"tokens per model and seed, AdamW lr {s['lr']}, {s['seeds']} seed(s). Validation on "
            f"{s['val_sequences']} held-out sequences.",
            f"- Recall suite: one twin per model (its mixer plan, at most {rc['max_layers']} layers, width "
            f"{rc['width']}, state scale(s) {_ints(rc['states'])}, dense FFNs, vocabulary {rc['vocab']}) per seed "
            f"({rc['seeds']} seed(s)), "
            f"{rc['steps']} steps of {rc['batch_size']} x {rc['seq_len']} tokens, lr {rc['lr']}, cycling MQAR at "
            f"pairs {_ints(rc['mqar_pairs'])}, the needle ({rc['needles']} needles in {rc['needle_seq_len']} tokens) "
            f"and copying ({rc['copy_lengths'][0]}-{rc['copy_lengths'][1]} tokens) over tasks {', '.join(rc['tasks'])}; "
            f"tested on {rc['eval_examples']} fresh sequences per setting: MQAR pairs {_ints(rc['eval_mqar_pairs'])} "
            f"at lengths {_ints(rc['eval_seq_lens'])}, the needle at {_ints(rc['eval_needle_lens'])} tokens, "
            f"copying {_ints(rc['eval_copy_lengths'])} tokens.",
            f"- Needle: contexts {_ctxs(s['needle_contexts'])}, depths {_ints(s['needle_depths'])}, "
            f"{s['needle_trials']} trial(s) each, on every seed's weights.",
            f"- Speed and memory: contexts {_ctxs(s['speed_contexts'])} (scaled to fit this machine's budget: the cost "
            f"trend with context, not serving-scale figures), {s['decode_steps']} decode steps after each prefill, "
            f"batch 1, fp32, CPU, best of {s.get('speed_repeats', 1)} timing(s), seed 0's weights.",
            "- The tiny presets share width (128), depth (8), vocabulary (256 bytes) and have comparable active "
            "parameters (see the table); the families differ in token mixers and MoE routing.", ""]


def _results(summary: dict) -> list[str]:
    ok = _ok(summary)
    s = summary["settings"]
    L = str(max(s["needle_contexts"]))
    lines = ["## Results", "",
             "Mean ± spread over each model's training seeds (spread = half the range; n in the seeds column). The "
             "figures plot these same numbers. MQAR: mean over its settings, ± spread over the recall twins' seeds "
             "(n = 1: one twin, no spread).", ""]
    head = ["model", "seeds", "params (total / active)", "val loss (nats/token)", "val bpb", "MQAR mean",
            f"needle exact / gain @{_ctx(int(L))}"]
    lines += [_row(head), "|" + "---|" * len(head)]
    for m in ok:
        a = m["aggregate"]
        n = a["needle"][L]
        lines.append(_row([_cell(m["label"]), str(a["n"]),
                           f"{m['params']['total'] / 1e6:.2f}M / {m['params']['active'] / 1e6:.2f}M",
                           _pm(a["val_loss"]), _pm(a["val_bpb"]), _mqar_cell(m),
                           f"{_pm(n['exact'], '.2f')} / {_pm(n['gain'], '+.2f')}"]))
    chance = _mqar_chance(ok)
    for name, u in _unigrams(ok).items():
        lines.append(_row([f"*baseline: unigram ({name}) / chance*", "", "", f"{u['loss']:.3f}", f"{u['bpb']:.3f}",
                           _f(chance, ".2f"), f"{NEEDLE_CHANCE:.4f} / 0"]))
    for m in summary["models"]:
        if m.get("status") != "ok":
            lines.append(_row([_cell(m["label"]), f"**failed**: {_cell(first_line(m.get('error', '')))} "
                               f"(see Failures)"] + [""] * (len(head) - 2)))
    worse = worse_than_unigram(summary)
    lines += ["", (f"**Worse than the unigram baseline** (mean validation loss at or above it): {', '.join(worse)}."
                   if worse else "Every model beat the unigram baseline on validation loss.") if ok else
              "No model finished."]
    return lines + [""]


def _mqar_cell(m: dict) -> str:
    """The MQAR mean over settings: ± spread over the recall twins' seeds, or 'n = 1' for one twin."""
    values = verdict.seed_values(m, "mqar_mean")
    if not values:
        return "n/a"
    return _pm(_stat(values), ".2f") + (" (n = 1)" if len(values) == 1 else "")


def first_line(text: str, limit: int = 120) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _load_warning(summary: dict) -> str | None:
    hits = loaded(summary)
    if not hits:
        return None
    return ("**Warning: timed under load.** Other processes kept more than "
            f"{LOADED_CORES} core busy on average (of {summary['machine']['cores']}) during: "
            + "; ".join(f"{lbl} {what} ({cores:.2f} cores)" for lbl, what, cores in hits)
            + ". Those speeds are lower than this machine gives; rerun on an idle machine before comparing them.")


def _speed(summary: dict) -> list[str]:
    ok = _ok(summary)
    if not ok:
        return []
    ctxs = summary["settings"]["speed_contexts"]
    lines = ["### Speed and memory", ""]
    warning = _load_warning(summary)
    if warning:
        lines += [warning, ""]
    lines += [(f"train tok/s: mean ± spread over the seeds. Prefill and decode: the best of "
               f"{summary['settings'].get('speed_repeats', 1)} timing(s) on seed 0's weights, one measurement per "
               "cell (no spread); cache bytes are exact."), ""]
    head = (["model", "train tok/s"] + [f"prefill tok/s @{_ctx(c)}" for c in ctxs]
            + [f"decode ms @{_ctx(c)}" for c in ctxs]
            + [f"cache bytes @{_ctx(ctxs[-1])} (measured = analytic)", "load during timing (cores, 1-min avg)"])
    lines += [_row(head), "|" + "---|" * len(head)]
    for m in ok:
        sp, last = m["speed"], m["speed"][str(ctxs[-1])]
        eq = "=" if last["cache_bytes"] == last["cache_bytes_analytic"] else "!="
        load = m.get("speed_load") or {}
        lines.append(_row([_cell(m["label"]), _pm(m["aggregate"]["train_tokens_per_s"], ".0f")]
                          + [f"{sp[str(c)]['prefill_tok_s']:.0f}" for c in ctxs]
                          + [f"{sp[str(c)]['decode_ms_per_token']:.1f}" for c in ctxs]
                          + [f"{last['cache_bytes']:,} {eq} {last['cache_bytes_analytic']:,}",
                             f"{_f(load.get('other_cores'), '.2f')} ({_f(load.get('loadavg_1min'), '.2f')})"]))
    return lines + [""]


def _mqar_table(summary: dict) -> list[str]:
    ok = _ok(summary)
    keys = sorted({k for m in ok for k in m.get("mqar", {}).get("acc", {})},
                  key=lambda k: (int(k.split("@T")[1]), int(k[1:].split("@")[0])))
    if not keys:
        return []
    lines = ["### MQAR accuracy per setting (P pairs @ T tokens)", "",
             "Mean ± spread over the recall twins' seeds; a model with one recall twin (n = 1) has no spread.", "",
             _row(["model", "twin layers", "n"] + keys), "|" + "---|" * (len(keys) + 3)]
    for m in ok:
        accs = verdict.mqar_seeds(m)
        cells = [_pm(_stat([a[k] for a in accs]), ".2f") if accs and k in accs[0] else "n/a" for k in keys]
        lines.append(_row([_cell(m["label"]), m["mqar"].get("twin", m["mqar"].get("skipped", "")), str(len(accs))]
                          + cells))
    chance = _mqar_chance(ok)
    lines.append(_row([f"*chance (1/{round(1 / chance)} values)*", "", ""] + [f"{chance:.2f}"] * len(keys)))
    return lines + [""]


def _recall_table(summary: dict) -> list[str]:
    """The recall suite per model and state size: the twin, its state bytes, MQAR at the most pairs, the needle past
    the window and copying (mean ± spread over the recall seeds)."""
    ok = [m for m in _ok(summary) if (m.get("recall") or {}).get("twins")]
    if not ok:
        return []
    tasks = {}
    for m in ok:
        for sd in m["recall"]["seeds"]:
            for r in sd.values():
                for t in ("needle", "copy"):
                    tasks.setdefault(t, set()).update(r.get(t, {}))
    needle = sorted(tasks.get("needle", ()), key=lambda k: int(k[1:]))
    copy = sorted(tasks.get("copy", ()), key=lambda k: int(k[1:]))
    head = (["model", "twin (layers, state scale)", "twin params", "state bytes", "n", "MQAR, most pairs"]
            + [f"needle {k}" for k in needle] + [f"copy {k}" for k in copy])
    lines = ["### Recall suite (twins trained on MQAR, the needle past the window and copying)", "",
             "Each model's recall twin (analysis/recall.py) trained from scratch per seed on the same synthetic budget; "
             "mean ± spread over the seeds. State bytes: the twin's cache for one sequence of "
             f"{summary['settings']['recall']['seq_len']} tokens (attention's grows with the context, a recurrent "
             "state does not).", "", _row(head), "|" + "---|" * len(head)]
    for m in ok:
        rec = m["recall"]
        for w, twin in sorted(rec["twins"].items(), key=lambda kv: recall.state_scale(kv[0])):
            runs = [sd[w] for sd in rec["seeds"] if w in sd]
            first = [_cell(m["label"]), f"{twin['plan']}, x{recall.state_scale(w):g}", f"{twin['params']:,}",
                     f"{twin['state_bytes']:,}", str(len(runs))]
            if not runs:
                lines.append(_row(first + [_cell(rec["skipped"].get(w, "not trained"))] + [""] * (len(head) - 6)))
                continue
            hard = verdict._hard([r["mqar"] for r in runs]) if "mqar" in runs[0] else None
            cells = [_pm(_stat(hard), ".2f") if hard else "n/a"]
            cells += [_pm(_stat([r["needle"][k] for r in runs]), ".2f") if k in runs[0].get("needle", {}) else "n/a"
                      for k in needle]
            cells += [_pm(_stat([r["copy"][k] for r in runs]), ".2f") if k in runs[0].get("copy", {}) else "n/a"
                      for k in copy]
            lines.append(_row(first + cells))
    ch = ok[0]["recall"]["chance"]
    lines.append(_row(["*chance*", "", "", "", "", _f(ch.get("mqar"), ".2f")] + [_f(ch.get("needle"), ".2f")] * len(needle)
                      + [_f(ch.get("copy"), ".2f")] * len(copy)))
    return lines + [""]


def _needle_table(summary: dict) -> list[str]:
    ok = _ok(summary)
    if not ok:
        return []
    nctx = [str(c) for c in summary["settings"]["needle_contexts"]]
    lines = [("### Needle retrieval (exact / answer loss with -> without the needle, nats/token; mean ± spread over "
              "seeds)"), "",
             _row(["model"] + [_ctx(int(c)) for c in nctx]), "|" + "---|" * (len(nctx) + 1)]
    for m in ok:
        nd = m["aggregate"]["needle"]
        lines.append(_row([_cell(m["label"])] + [f"{_pm(nd[c]['exact'], '.2f')} / {_pm(nd[c]['loss'], '.2f')} -> "
                                                 f"{_pm(nd[c]['loss_without'], '.2f')}" for c in nctx]))
    lines.append(_row(["*chance (guess one of 9000 numbers)*"] + [f"{NEEDLE_CHANCE:.4f}"] * len(nctx)))
    return lines + [""]


def _failures(summary: dict) -> list[str]:
    failed = [m for m in summary["models"] if m.get("status") != "ok"]
    if not failed:
        return []
    lines = ["## Failures", ""]
    for m in failed:
        lines += [f"### {m['label']}", "", f"`{m['spec']}` ({m['kind']}) failed after {m.get('seconds', 0):.0f} s:",
                  "", _fence(m.get("error", "")), ""]
        if m.get("traceback"):
            lines += [_fence(m["traceback"]), ""]
    return lines


def _quantize(summary: dict) -> list[str]:
    """ExpertsInt8 (compare --quantize experts-int8): each model's logits against its fp32 self."""
    ok = [m for m in _ok(summary) if m.get("quantize")]
    if not ok:
        return []
    head = ["model", "MoE layers", "max abs / logit std", "rms / logit std", "top-1 agreement",
            "CE increase (nats/token)", "tensor bytes fp32 -> int8"]
    lines = ["### ExpertsInt8: logits against fp32", "", "Routed experts in int8 (docs/quantize.md); every "
             "evaluation above ran on the quantised model. First 8 validation sequences, worst over seeds.", "",
             _row(head), "|" + "---|" * len(head)]
    for m in ok:
        q = m["quantize"]
        if "skipped" in q:
            lines.append(_row([_cell(m["label"]), q["skipped"]] + [""] * (len(head) - 2)))
            continue
        s = q["seeds"][0]
        lines.append(_row([_cell(m["label"]), str(q["moe_layers"]), f"{q['max_abs_over_std']:.4f}",
                           f"{q['rms_over_std']:.4f}", f"{q['top1_agreement']:.4f}", f"{q['ce_increase']:+.5f}",
                           f"{s['bytes_before']:,} -> {s['bytes_after']:,}"]))
    return lines + [""]


def markdown(summary: dict) -> str:
    s, mach = summary["settings"], summary["machine"]
    lines = ["# hybridlm compare", ""]
    failed = [m["label"] for m in summary["models"] if m.get("status") != "ok"]
    lines += [f"Profile **{s['profile']}**, {len(summary['models'])} models"
              + (f" (**{len(failed)} failed**: {', '.join(failed)})" if failed else "")
              + f", {summary['seconds']:.0f} s in all. "
              f"Machine: {mach['cpu']} ({mach['cores']} cores, {mach['torch_threads']} torch threads), "
              f"{mach['platform']}, torch {mach['torch']}, Python {mach['python']}"
              + (f", GPU {mach['cuda']} (not used: CPU fp32)" if mach.get("cuda") else "") + ".", ""]
    if s["profile"] == "quick":
        lines += ["**This is a `--quick` run: a smoke test of the pipeline, not a comparison.** Its budgets are "
                  "too small for quality or recall to separate the families; the verdict below says so metric by "
                  "metric. Run the default profile (no `--quick`) for conclusions.", ""]
    lines += verdict.verdict_lines(summary) + claims.claim_lines(summary) + sweeps.sweep_lines(summary)
    lines += verdict.statistics_lines(summary) + verdict.full_scale_lines(summary)
    lines += _settings(summary) + _results(summary) + _speed(summary) + _mqar_table(summary) + _recall_table(summary)
    lines += _needle_table(summary)
    lines += _quantize(summary)
    figures = summary.get("figures", [])
    lines += ["## Figures", ""]
    lines += [x for name in figures for x in (f"![{FIGURES[name][1]}]({name})", "")] or ["No figures (no model finished).", ""]
    for name, err in summary.get("figure_errors", {}).items():
        lines += [f"- {name} was not drawn: {_cell(err)}", ""]
    lines += _failures(summary)
    lines += ["## How far this can be trusted", "", _trust(summary), "", "## Definitions", "", DEFINITIONS, ""]
    return "\n".join(lines)


def _trust(summary: dict) -> str:
    s = summary["settings"]
    ok = _ok(summary)
    spreads = [m["aggregate"]["val_bpb"]["spread"] for m in ok if m["aggregate"]["n"] > 1]
    text = []
    warning = _load_warning(summary)
    if warning:
        text.append(warning)
    text.append(verdict.rule_text(verdict.stats.ALPHA))
    if spreads:
        text.append(f"Seed noise: over {s['seeds']} training seeds the bits per byte of one model spread by up to "
                    f"±{max(spreads):.3f} (half the range; mean ±{sum(spreads) / len(spreads):.3f}); differences "
                    f"between models smaller than about twice that are noise.")
    else:
        text.append("Only one training seed was run, so seed noise is not measured here; a default run (2 seeds) "
                    "measures it.")
    worse = worse_than_unigram(summary)
    if worse:
        text.append(f"{', '.join(worse)} did not beat the unigram baseline: at this budget they have learned no more "
                    f"than token frequencies, and their other quality numbers say nothing about the architecture.")
    if s["profile"] == "quick":
        text.append("This is a **quick** run, a pipeline smoke test: a few thousand training tokens and a few dozen "
                    "recall steps per model, one recall seed. "
                    "It checks that the pipeline runs end to end and shows the cost trends (speed, cache memory, "
                    "parameters are exact or directly measured); its quality, recall and needle numbers are close to "
                    "the baselines and chance and must not be used to rank architectures.")
    else:
        text.append("The language-model budget is small (tens of thousands of training tokens): quality differences "
                    "are early-training differences, and the text needle test is far beyond what such models "
                    "retrieve. Recall comes from the recall twins, trained per seed on synthetic tasks long enough "
                    "for attention to converge on MQAR: it measures the mixers at the twins' width and state size, "
                    "and a mixer that learns more slowly scores lower at this budget even where its capacity would "
                    "suffice. Cache bytes and parameters are exact; speeds are the best of a few timings on a CPU "
                    "that other processes may share (the load column says how much they did).")
    return " ".join(text)


def write_all(summary: dict, out: Path) -> list[str]:
    """Write DIR/results.json, every figure that has data and DIR/report.md, which lists exactly the figures written;
    a figure file left by an earlier run in DIR that this run does not draw is removed. -> the figures written."""
    out = Path(out)
    for m in _ok(summary):
        m["aggregate"] = aggregate(m)
    summary["statistics"] = verdict.statistics(summary)
    summary["figures"], summary["figure_errors"] = [], {}
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")  # the numbers are safe before any drawing
    for name, (plot, _) in FIGURES.items():
        path = out / name
        path.unlink(missing_ok=True)
        if name in sweeps.FIGURES and not sweeps.draws(name, summary):
            continue
        try:
            if plot(summary, path):
                summary["figures"].append(name)
        except Exception as e:  # noqa: BLE001 (a figure that cannot be drawn must not cost the report)
            summary["figure_errors"][name] = f"{type(e).__name__}: {e}"
            _plt().close("all")
            path.unlink(missing_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "report.md").write_text(markdown(summary))
    return summary["figures"]
