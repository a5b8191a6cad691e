"""The verdict of `hybridlm compare`, generated from the seed statistics (analysis/stats.py): who wins which metric
and by how much, or that they tie within noise; then the statistics and full-scale tables. report.py puts these
lines first; analysis/claims.py continues the Verdict with the brief's claims (a) and (b) and --group-by origin.

    METRICS                  the per-seed metrics: direction, reference level (baseline / chance) and its margin
    statistics(summary)      per metric: each model's mean and interval, its reference check, the ranking
    verdict_lines(summary)   the Verdict's opening: the rules, one sentence per metric
    statistics_lines / full_scale_lines: the two tables after the Verdict
    ci / diff_words / p_words / names: the wording claims.py shares

The words follow fixed rules, stated in the report: a model *wins* a metric when it beats every other model under
stats' tie rule (Welch p < alpha); a metric is *not established at this budget* when the best model is at its
reference level (within the margin of the unigram baseline / chance, or its interval reaches it), when every model
has one seed (no interval), or when no pair differs beyond noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import families, recall, stats
from .evals import NEEDLE_CHANCE


@dataclass(frozen=True)
class Metric:
    key: str
    name: str
    unit: str  # after a difference: "0.20 nats/token lower"; "" for accuracies (points)
    higher_is_better: bool
    fmt: str
    margin: float | None  # "at the reference level" within this distance of it; None: no reference
    reference: str  # what the reference level is, in words


METRICS = [
    Metric("val_loss", "validation loss", "nats/token", False, ".3f", 0.05, "the unigram baseline"),
    Metric("val_bpb", "bits per byte", "bits/byte", False, ".3f", 0.05 / math.log(2), "the unigram baseline"),
    Metric("mqar_mean", "MQAR accuracy (mean over settings)", "", True, ".2f", 0.05, "chance"),
    Metric("mqar_hard", "MQAR accuracy at the most key-value pairs", "", True, ".2f", 0.05, "chance"),
    Metric("mqar_hard_large", "MQAR accuracy at the most pairs, largest state", "", True, ".2f", 0.05, "chance"),
    Metric("recall_needle", "needle past the window (recall twin, mean over lengths)", "", True, ".2f", 0.05,
           "chance"),
    Metric("copy", "in-context copying at the longest length (recall twin)", "", True, ".2f", 0.05, "chance"),
    Metric("needle_exact", "needle exact match (mean over contexts)", "", True, ".2f", 0.05, "chance"),
    Metric("needle_gain", "needle gain (mean over contexts)", "nats/token", True, "+.3f", 0.02, "zero gain"),
    Metric("train_tok_s", "training tokens/s", "tok/s", True, ".0f", None, ""),
]
BY_KEY = {m.key: m for m in METRICS}
VERDICT_METRICS = ("val_loss", "mqar_mean", "mqar_hard", "mqar_hard_large", "recall_needle", "copy", "needle_exact",
                   "needle_gain")


# -- per-seed values --------------------------------------------------------------------------------------------
def mqar_seeds(m: dict) -> list[dict]:
    """One accuracy dict per seed: `mqar_seeds` where the run trained one recall twin per seed, else the one twin."""
    if m.get("mqar_seeds"):
        return m["mqar_seeds"]
    acc = (m.get("mqar") or {}).get("acc")
    return [acc] if acc else []


def _pairs(key: str) -> int:
    return int(key[1:].split("@")[0])


def _hard(accs: list[dict]) -> list[float]:
    """Per seed: the mean accuracy over the settings with the most key-value pairs."""
    hard = max(_pairs(k) for k in accs[0])
    return [sum(v for k, v in a.items() if _pairs(k) == hard) / sum(_pairs(k) == hard for k in a) for a in accs]


def recall_seeds(m: dict, largest: bool = False) -> list[dict]:
    """Per recall seed the suite's scores at the smallest state (largest: at the largest, when there are two or
    more)."""
    rec = m.get("recall") or {}
    states = recall.trained_states(rec)
    if not states or (largest and len(states) < 2):
        return []
    w = states[-1] if largest else states[0]
    return [sd[w] for sd in rec["seeds"] if w in sd]


def seed_values(m: dict, key: str) -> list[float] | None:
    """The model's per-seed values of one metric (None: not measured)."""
    if key in ("val_loss", "val_bpb"):
        return list(m.get(f"{key}_seeds") or []) or None
    if key == "mqar_hard_large":
        accs = [r["mqar"] for r in recall_seeds(m, largest=True) if "mqar" in r]
        return _hard(accs) if accs else None
    if key == "recall_needle":
        return [sum(r["needle"].values()) / len(r["needle"]) for r in recall_seeds(m) if "needle" in r] or None
    if key == "copy":
        return [r["copy"][max(r["copy"], key=lambda k: int(k[1:]))] for r in recall_seeds(m) if "copy" in r] or None
    if key.startswith("mqar"):
        accs = mqar_seeds(m)
        if not accs:
            return None
        if key == "mqar_mean":
            return [sum(a.values()) / len(a) for a in accs]
        return _hard(accs)
    if key.startswith("needle"):
        seeds = m.get("needle_seeds") or []
        if not seeds:
            return None
        if key == "needle_exact":
            return [sum(n[c]["exact"] for c in n) / len(n) for n in seeds]
        return [sum(n[c]["loss_without"] - n[c]["loss"] for c in n) / len(n) for n in seeds]
    if key == "train_tok_s":
        return [r["tokens_per_s"] for r in (m.get("train") or {}).get("runs", []) if r.get("tokens_per_s")] or None
    raise KeyError(key)


def reference(m: dict, key: str) -> float | None:
    if key in ("val_loss", "val_bpb"):
        return (m.get("unigram") or {}).get("loss" if key == "val_loss" else "bpb")
    if key.startswith("mqar"):
        return (m.get("mqar") or {}).get("chance")
    if key in ("recall_needle", "copy"):
        return (m.get("recall") or {}).get("chance", {}).get("needle" if key == "recall_needle" else "copy")
    return {"needle_exact": NEEDLE_CHANCE, "needle_gain": 0.0}.get(key)


def at_reference(st: dict, ref: float | None, metric: Metric) -> bool:
    """Within the metric's margin of its reference level, or its interval reaches it."""
    if ref is None or metric.margin is None:
        return False
    sign = 1 if metric.higher_is_better else -1
    if sign * (st["mean"] - ref) < metric.margin:
        return True
    edge = st["lo"] if metric.higher_is_better else st["hi"]
    return edge is not None and sign * (edge - ref) <= 0


def statistics(summary: dict, alpha: float = stats.ALPHA) -> dict:
    """metric key -> {"models": {label: summarize(...) + reference, at_reference, values}, "ranking": stats.rank}
    over the models that finished and have the metric."""
    ok = [m for m in summary["models"] if m.get("status") == "ok"]
    out = {}
    for metric in METRICS:
        groups = {m["label"]: v for m in ok if (v := seed_values(m, metric.key))}
        if not groups:
            continue
        models = {}
        for m in ok:
            if m["label"] in groups:
                st = stats.summarize(groups[m["label"]], alpha)
                ref = reference(m, metric.key)
                models[m["label"]] = {**st, "values": groups[m["label"]], "reference": ref,
                                      "at_reference": at_reference(st, ref, metric)}
        out[metric.key] = {"models": models, "ranking": stats.rank(groups, metric.higher_is_better, alpha)}
    return out


# -- words ------------------------------------------------------------------------------------------------------
def ci(st: dict, fmt: str) -> str:
    """'2.250 [1.93, 2.57]' (the interval), or '0.25 (one seed: no interval)'."""
    if st["lo"] is None:
        return f"{format(st['mean'], fmt)} (one seed: no interval)"
    return f"{format(st['mean'], fmt)} [{format(st['lo'], fmt.lstrip('+'))}, {format(st['hi'], fmt.lstrip('+'))}]"


def diff_words(metric: Metric, d: float) -> str:
    """'0.200 nats/token lower' / '0.31 higher' for a difference of means d = a - b."""
    unit = f" {metric.unit}" if metric.unit else ""
    return f"{format(abs(d), metric.fmt.lstrip('+'))}{unit} {'higher' if d > 0 else 'lower'}"


def p_words(w: stats.Welch | None) -> str:
    return "no test: one seed" if w is None else f"Welch p = {w.p:.2g}"


def names(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _pct(level: float) -> str:
    return f"{level * 100:g}%"


def metric_sentence(metric: Metric, st: dict, alpha: float) -> str | None:
    models, ranking = st["models"], st["ranking"]
    if len(models) < 2:
        return None
    head = f"**{metric.name}**"
    lead, second = ranking[0]["label"], ranking[1]["label"]
    a, b = models[lead], models[second]
    if all(m["n"] == 1 for m in models.values()):
        last = ranking[-1]["label"]
        return (f"{head}: not established at this budget: one seed per model, so no interval and no test; by the "
                f"point estimates alone {lead} leads ({format(a['mean'], metric.fmt)}) and {last} trails "
                f"({format(models[last]['mean'], metric.fmt)}).")
    if a["at_reference"]:
        return (f"{head}: not established at this budget: the best model, {lead} ({ci(a, metric.fmt)}), is at "
                f"{metric.reference}, {format(a['reference'], metric.fmt.lstrip('+'))} (within "
                f"{format(metric.margin, '.2g')} of it, or its interval reaches it).")
    w = stats.welch(a["values"], b["values"], alpha)
    winner = stats.clear_winner(ranking)
    if winner:
        return (f"{head}: **{winner}** wins with {ci(a, metric.fmt)} ({_pct(a['level'])} interval); the next best, "
                f"{second} ({ci(b, metric.fmt)}), is {diff_words(metric, b['mean'] - a['mean'])} ({p_words(w)}; the "
                f"difference's interval [{format(-w.hi, '.3g')}, {format(-w.lo, '.3g')}]); {winner} beats all "
                f"{len(ranking) - 1} others at alpha = {alpha:g}.")
    top = [r["label"] for r in ranking if r["rank"] == 1]
    behind = [r["label"] for r in ranking if r["rank"] > 1]
    if not behind:
        return (f"{head}: not established at this budget: all {len(ranking)} models tie within noise (no pair "
                f"differs at alpha = {alpha:g}); {lead} leads on the point estimate ({ci(a, metric.fmt)}), "
                f"{diff_words(metric, a['mean'] - b['mean'])} than {second} ({p_words(w)}).")
    return (f"{head}: no single winner: {names(top)} tie for first within noise ({lead} leads on the point "
            f"estimate, {ci(a, metric.fmt)}; {second} {ci(b, metric.fmt)}, {p_words(w)}); significantly behind: "
            f"{names(behind)}.")


# -- the sections -----------------------------------------------------------------------------------------------
def rule_text(alpha: float) -> str:
    return (f"Intervals are {_pct(1 - alpha)} Student t intervals over the seeds (mean ± t x sd / sqrt(n); one seed: "
            f"no interval). Two models tie on a metric unless Welch's t-test on their per-seed values gives p < "
            f"{alpha:g} (each pair on its own, no correction for the number of pairs); a model *wins* when it beats "
            f"every other. A metric is *not established at this budget* when the best model is at its reference "
            f"level (within the margin of the unigram baseline or chance, or its interval reaches it), when every "
            f"model has one seed, or when no pair differs beyond noise.")


def verdict_lines(summary: dict, alpha: float = stats.ALPHA) -> list[str]:
    st = summary.get("statistics") or statistics(summary, alpha)
    lines = ["## Verdict", ""]
    if not st:
        return lines + ["No model finished: nothing to conclude.", ""]
    lines += [rule_text(alpha), ""]
    sentences = [f"- {s}" for key in VERDICT_METRICS
                 if key in st and (s := metric_sentence(BY_KEY[key], st[key], alpha))]
    lines += (sentences or ["One model finished: nothing to rank."]) + [""]
    return lines


def statistics_lines(summary: dict, alpha: float = stats.ALPHA) -> list[str]:
    st = summary.get("statistics") or statistics(summary, alpha)
    if not st:
        return []
    keys = [m.key for m in METRICS if m.key in st]
    labels = [m["label"] for m in summary["models"] if m.get("status") == "ok"]
    lines = ["## Statistics", "",
             (f"Per metric: mean [{_pct(1 - alpha)} interval] over the seeds, then (rank; models no one beats share "
              "rank 1; a metric at its reference level is marked *). One seed: no interval, and that model ties with "
              "every other."), "",
             "| model | " + " | ".join(BY_KEY[k].name for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for label in labels:
        cells = []
        for k in keys:
            ms = st[k]["models"].get(label)
            if ms is None:
                cells.append("n/a")
                continue
            r = next(x["rank"] for x in st[k]["ranking"] if x["label"] == label)
            mark = "*" if ms["at_reference"] else ""
            cells.append(f"{ci(ms, BY_KEY[k].fmt)}{mark} ({r})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _gb(x: float) -> str:
    return f"{x / 1e9:.1f} GB" if x >= 1e8 else f"{x / 1e6:.1f} MB"


def full_scale_lines(summary: dict) -> list[str]:
    rows = summary.get("full_scale")
    if rows is None:
        err = summary.get("full_scale_error")
        return ["## Full scale", "", f"Not computed: {err}", ""] if err else []
    if not rows:
        return []
    if not any(r.get("full_scale") for r in rows):
        return ["## Full scale", "", "No full-scale counterpart for " + names([r["label"] for r in rows])
                + " (no full-scale model of this layout is published).", ""]
    from .accounting import context_label
    from .hardware import PRICES, get_hardware
    ctx = [int(c) for c in next((r["cache_bytes"] for r in rows if r.get("full_scale")), {})]
    hws = sorted({k.split("@")[0] for r in rows if r.get("full_scale") for k in r["usd_per_mtok"]},
                 key=families.FULL_SCALE_HARDWARE.index)
    head = (["tiny family", "full-scale counterpart", "lab", "active / total params"]
            + [f"cache/seq @{context_label(c)}" for c in ctx]
            + [f"decode $/M out, {get_hardware(h).name.split(' ', 1)[1]} @{context_label(c)}"
               for h in hws for c in ctx])
    lines = ["## Full scale", "",
             "Each tiny family's full-scale counterpart, from `hybridlm cost`'s accounting (analysis/accounting.py: "
             "exact parameters and cache, bf16 weights and KV cache, fp32 recurrent state; decode $/M output tokens "
             "at the largest batch that fits the fewest devices holding the model, roofline bounds). Prices: "
             + "; ".join(f"{get_hardware(h).name} ${PRICES[h].usd_per_hour:.2f}/device-hour ({PRICES[h].source})"
                         for h in hws) + ".", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        if not r.get("full_scale"):
            lines.append(f"| {r['label']} | none (no full-scale model of this layout is published) |"
                         + " |" * (len(head) - 2))
            continue
        lines.append(f"| {r['label']} | {r['full_scale']} | {r['lab'] or 'baseline'} | "
                     f"{r['active'] / 1e9:.1f}B / {r['total'] / 1e9:.1f}B | "
                     + " | ".join(_gb(r["cache_bytes"][str(c)]) for c in ctx) + " | "
                     + " | ".join(f"${r['usd_per_mtok'][f'{h}@{c}']:.2f} ({r['devices'][f'{h}@{c}']} dev)"
                                  for h in hws for c in ctx) + " |")
    return lines + [""]
