"""The report of `hybridlm compare`: DIR/results.json, DIR/report.md (tables, definitions, machine and settings)
and PNG figures (loss curves, quality vs decode cost, cost vs context, recall vs key-value pairs, the sweep)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

FIGURES = ("loss_curves.png", "pareto.png", "context_cost.png", "recall.png")

DEFINITIONS = """\
- **val loss / bpb**: mean next-token cross-entropy (nats/token) on held-out sequences of the training corpus (every
  20th sequence, never trained on), and bits per byte = sum(CE nats) / (ln 2 x UTF-8 bytes the predicted tokens
  encode), comparable across tokenizers. With several seeds: mean and spread (max - min) over seeds.
- **MQAR**: multi-query associative recall in the style of Zoology (Arora et al. 2023): P key-value pairs (keys
  from one half of the vocabulary, values from the other) followed by every key queried once at power-law gaps;
  accuracy = share of queried values predicted exactly. Each model's *recall twin* (its own token mixers in one
  period of its layer plan, a small dense FFN, fresh weights) is trained on the same synthetic budget, then tested at
  several P and sequence lengths, including lengths longer than trained on.
- **needle**: one "The magic number is NNNN." in held-out corpus text at several depths, then the question; exact =
  share of cases where every answer token is the greedy choice (what greedy decoding would produce); gain = answer
  loss without the needle minus with it (nats/token; > 0 means the model used the needle).
- **train tok/s**: training tokens per second of the `hybridlm train` run (eval and checkpoint time excluded).
- **prefill tok/s**: prompt tokens per second of `model.prefill` (1024-token chunks, batch 1, fp32, random ids).
- **decode ms/token**: mean latency of single-token steps right after a prefill of that context, with the cache.
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


def _ok(summary: dict) -> list[dict]:
    return [m for m in summary["models"] if m.get("status") == "ok"]


def _ctx(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _mqar_mean(m: dict) -> float | None:
    acc = m.get("mqar", {}).get("acc")
    return sum(acc.values()) / len(acc) if acc else None


def _f(x, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


# -- figures -----------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_loss_curves(summary: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, m in enumerate(_ok(summary)):
        if not m.get("train"):
            continue
        for run in m["train"]["runs"]:
            steps, losses = zip(*run["curve"]) if run["curve"] else ((), ())
            ax.plot(steps, losses, color=f"C{i}", alpha=1.0 if run["seed"] == 0 else 0.4,
                    label=m["label"] if run["seed"] == 0 else None)
            if run["val_curve"]:
                vs, vl, _ = zip(*run["val_curve"])
                ax.plot(vs, vl, "o--", color=f"C{i}", ms=4, alpha=0.8 if run["seed"] == 0 else 0.3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token); dashed circles: validation")
    ax.set_title("training loss (same data and token budget)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(summary: dict, path: Path) -> None:
    plt = _plt()
    models = _ok(summary)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, m in enumerate(models):
        L = max(m["speed"], key=int)
        x = m["speed"][L]["decode_ms_per_token"]
        axes[0].scatter(x, m["val_bpb"], color=f"C{i}", s=50)
        axes[0].annotate(m["label"], (x, m["val_bpb"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        r = _mqar_mean(m)
        if r is not None:
            axes[1].scatter(x, r, color=f"C{i}", s=50)
            axes[1].annotate(m["label"], (x, r), fontsize=8, xytext=(4, 4), textcoords="offset points")
    L = _ctx(int(max(models[0]["speed"], key=int))) if models else "?"
    axes[0].set(xlabel=f"decode ms/token at {L} context", ylabel="validation bits per byte (lower is better)",
                title="quality vs decode cost")
    axes[1].set(xlabel=f"decode ms/token at {L} context", ylabel="MQAR accuracy (mean over settings)",
                title="recall vs decode cost", ylim=(-0.05, 1.05))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_context_cost(summary: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, m in enumerate(_ok(summary)):
        ctx = sorted(int(c) for c in m["speed"])
        axes[0].plot(ctx, [m["speed"][str(c)]["decode_ms_per_token"] for c in ctx], "o-", color=f"C{i}",
                     label=m["label"])
        axes[1].plot(ctx, [m["speed"][str(c)]["cache_bytes"] for c in ctx], "o-", color=f"C{i}", label=m["label"])
        axes[1].plot(ctx, [m["speed"][str(c)]["cache_bytes_analytic"] for c in ctx], "x", color="k", ms=5)
    axes[0].set(xscale="log", xlabel="context (tokens)", ylabel="decode ms/token", title="decode latency vs context")
    axes[1].set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="cache bytes per sequence",
                title="cache memory vs context (x: analytic)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_recall(summary: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", ":", "-."]
    for i, m in enumerate(_ok(summary)):
        acc = m.get("mqar", {}).get("acc")
        if not acc:
            continue
        lens = sorted({int(k.split("@T")[1]) for k in acc})
        for j, T in enumerate(lens):
            pts = sorted((int(k[1:].split("@")[0]), v) for k, v in acc.items() if k.endswith(f"@T{T}"))
            ax.plot([p for p, _ in pts], [v for _, v in pts], styles[j % 4], marker="o", color=f"C{i}",
                    label=f"{m['label']} (T={T})")
    ax.set(xscale="log", xlabel="key-value pairs", ylabel="MQAR accuracy", ylim=(-0.05, 1.05),
           title="associative recall vs number of key-value pairs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(summary: dict, path: Path) -> None:
    plt = _plt()
    models = _ok(summary)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = list(range(len(models)))
    ax.plot(x, [m["val_bpb"] for m in models], "o-", color="C0", label="bits per byte")
    ax.set_ylabel("validation bits per byte", color="C0")
    ax2 = ax.twinx()
    ax2.plot(x, [_mqar_mean(m) or 0.0 for m in models], "s--", color="C1", label="MQAR")
    ax2.set_ylabel("MQAR accuracy (mean)", color="C1")
    ax2.set_ylim(-0.05, 1.05)
    ax.set_xticks(x, [m["label"].removeprefix("ratio-").replace("to", ":") for m in models])
    ax.set_xlabel("linear : attention layers")
    ax.set_title("hybrid ratio sweep (equal budgets)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- markdown ----------------------------------------------------------------------------------------------------
def _bpb(m: dict) -> str:
    seeds = m.get("val_bpb_seeds") or [m["val_bpb"]]
    mean = sum(seeds) / len(seeds)
    return f"{mean:.3f} ± {(max(seeds) - min(seeds)) / 2:.3f} (n={len(seeds)})" if len(seeds) > 1 else f"{mean:.3f}"


def markdown(summary: dict) -> str:
    s, mach = summary["settings"], summary["machine"]
    ok = _ok(summary)
    lines = ["# hybridlm compare", ""]
    lines += [f"Profile **{s['profile']}**, {len(summary['models'])} models, {summary['seconds']:.0f} s in all. "
              f"Machine: {mach['cpu']} ({mach['cores']} cores, {mach['torch_threads']} torch threads), "
              f"{mach['platform']}, torch {mach['torch']}, Python {mach['python']}"
              + (f", GPU {mach['cuda']} (not used: CPU fp32)" if mach.get("cuda") else "") + ".", ""]
    steps = max(1, s["budget_tokens"] // (s["batch_size"] * s["seq_len"]))
    mq = s["mqar"]
    lines += ["## Settings", "",
              f"- Training: the built-in corpus (this Python's standard library, bytes), {steps} steps x "
              f"{s['batch_size']} sequences x {s['seq_len']} tokens = {steps * s['batch_size'] * s['seq_len']:,} "
              f"tokens per model and seed, AdamW lr {s['lr']}, {s['seeds']} seed(s). Validation on "
              f"{s['val_sequences']} held-out sequences.",
              f"- MQAR: vocabulary {mq['vocab']}, {mq['steps']} steps x {mq['batch_size']} sequences of "
              f"{mq['train_seq_len']} tokens, pairs {list(mq['train_pairs'])} in turn, lr {mq['lr']}; tested on "
              f"{mq['eval_examples']} fresh sequences per setting at pairs {list(mq['eval_pairs'])} and lengths "
              f"{list(mq['eval_seq_lens'])}.",
              f"- Needle: contexts {s['needle_contexts']}, depths {list(s['needle_depths'])}, "
              f"{s['needle_trials']} trial(s) each.",
              f"- Speed and memory: contexts {[_ctx(c) for c in s['speed_contexts']]} (scaled to fit this machine's "
              f"budget: the cost trend with context, not serving-scale figures), {s['decode_steps']} decode steps "
              f"after each prefill, batch 1, fp32, CPU.",
              "- The tiny presets share width (128), depth (8), vocabulary (256 bytes) and have comparable active "
              "parameters (see the table); the families differ in token mixers and MoE routing.", ""]
    lines += ["## Results", ""]
    head = ["model", "params (total / active)", "val loss", "val bpb", "MQAR mean", "needle exact / gain @ max ctx",
            "train tok/s"]
    ctxs = s["speed_contexts"]
    head += [f"prefill tok/s @{_ctx(c)}" for c in ctxs] + [f"decode ms @{_ctx(c)}" for c in ctxs]
    head += [f"cache bytes @{_ctx(ctxs[-1])} (measured = analytic)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in ok:
        n = m["needle"][str(max(int(c) for c in m["needle"]))]
        sp = m["speed"]
        last = sp[str(ctxs[-1])]
        eq = "=" if last["cache_bytes"] == last["cache_bytes_analytic"] else "!="
        tps = m["train"]["tokens_per_s"] if m.get("train") else None
        row = [m["label"], f"{m['params']['total'] / 1e6:.2f}M / {m['params']['active'] / 1e6:.2f}M",
               f"{m['val_loss']:.3f}", _bpb(m), _f(_mqar_mean(m), ".2f"),
               f"{n['exact']:.2f} / {n['loss_without'] - n['loss']:+.2f}", _f(tps, ".0f")]
        row += [f"{sp[str(c)]['prefill_tok_s']:.0f}" for c in ctxs] + [f"{sp[str(c)]['decode_ms_per_token']:.1f}"
                                                                      for c in ctxs]
        row += [f"{last['cache_bytes']:,} {eq} {last['cache_bytes_analytic']:,}"]
        lines.append("| " + " | ".join(row) + " |")
    failed = [m for m in summary["models"] if m.get("status") != "ok"]
    for m in failed:
        lines.append(f"| {m['label']} | **failed**: {m['error']} |" + " |" * (len(head) - 2))
    lines += ["", "### MQAR accuracy per setting (P pairs @ T tokens)", ""]
    keys = sorted({k for m in ok for k in m.get("mqar", {}).get("acc", {})},
                  key=lambda k: (int(k.split("@T")[1]), int(k[1:].split("@")[0])))
    if keys:
        lines += ["| model | twin layers | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
        for m in ok:
            acc = m["mqar"].get("acc", {})
            lines.append(f"| {m['label']} | {m['mqar'].get('twin', m['mqar'].get('skipped', ''))} | "
                         + " | ".join(_f(acc.get(k), ".2f") for k in keys) + " |")
    lines += ["", "### Needle retrieval (exact / answer loss with -> without the needle, nats/token)", ""]
    nctx = s["needle_contexts"]
    lines += ["| model | " + " | ".join(str(c) for c in nctx) + " |", "|" + "---|" * (len(nctx) + 1)]
    for m in ok:
        lines.append(f"| {m['label']} | " + " | ".join(
            f"{m['needle'][str(c)]['exact']:.2f} / {m['needle'][str(c)]['loss']:.2f} -> "
            f"{m['needle'][str(c)]['loss_without']:.2f}" for c in nctx) + " |")
    lines += ["", "## Figures", "", "![loss curves](loss_curves.png)", "", "![quality vs decode cost](pareto.png)", "",
              "![decode latency and cache memory vs context](context_cost.png)", "",
              "![recall vs key-value pairs](recall.png)", ""]
    if s.get("sweep_ratio"):
        lines += ["![hybrid ratio sweep](sweep.png)", ""]
    lines += ["## How far this can be trusted", "", _trust(summary), "", "## Definitions", "", DEFINITIONS, ""]
    return "\n".join(lines)


def _trust(summary: dict) -> str:
    s = summary["settings"]
    spreads = [max(m["val_bpb_seeds"]) - min(m["val_bpb_seeds"]) for m in _ok(summary)
               if len(m.get("val_bpb_seeds", [])) > 1]
    text = []
    if spreads:
        text.append(f"Seed noise: over {s['seeds']} training seeds the bits per byte of one model spread by up to "
                    f"{max(spreads):.3f} (mean {sum(spreads) / len(spreads):.3f}); differences between models "
                    f"smaller than that are noise.")
    else:
        text.append("Only one training seed was run, so seed noise is not measured here; a default run (2 seeds) "
                    "measures it.")
    if s["profile"] == "quick":
        text.append("This is a **quick** run: a few thousand training tokens and a few dozen MQAR steps per model. "
                    "It checks that the pipeline runs end to end and shows the cost trends (speed, cache memory, "
                    "parameters are exact or directly measured); its quality, recall and needle numbers are close to "
                    "chance and must not be used to rank architectures.")
    else:
        text.append("The default budget is small (tens of thousands of training tokens): quality differences are "
                    "early-training differences, the needle test is far beyond what such models retrieve, and MQAR "
                    "accuracy reflects how fast each mixer learns recall as much as its capacity. Cache bytes and "
                    "parameters are exact; speeds are single measurements on a shared CPU (expect +-20%).")
    return " ".join(text)


def write_all(summary: dict, out: Path) -> None:
    out = Path(out)
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    if _ok(summary):
        plot_loss_curves(summary, out / "loss_curves.png")
        plot_pareto(summary, out / "pareto.png")
        plot_context_cost(summary, out / "context_cost.png")
        plot_recall(summary, out / "recall.png")
        if summary["settings"].get("sweep_ratio"):
            plot_sweep(summary, out / "sweep.png")
    (out / "report.md").write_text(markdown(summary))
