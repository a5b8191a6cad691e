"""The verdict of `hybridlm compare`, generated from the seed statistics (analysis/stats.py): who wins which metric
and by how much, or that they tie within noise; whether the brief's claims (a) and (b) held at this budget; with
--group-by origin the same by lab origin; and the full-scale table. report.py puts these lines first.

    METRICS                  the per-seed metrics: direction, reference level (baseline / chance) and its margin
    statistics(summary)      per metric: each model's mean and interval, its reference check, the ranking
    verdict_lines(summary)   the Verdict section; statistics_lines / full_scale_lines: the two tables after it

The words follow fixed rules, stated in the report: a model *wins* a metric when it beats every other model under
stats' tie rule (Welch p < alpha); a metric is *not established at this budget* when the best model is at its
reference level (within the margin of the unigram baseline / chance, or its interval reaches it), when every model
has one seed (no interval), or when no pair differs beyond noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import families, stats
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
    Metric("needle_exact", "needle exact match (mean over contexts)", "", True, ".2f", 0.05, "chance"),
    Metric("needle_gain", "needle gain (mean over contexts)", "nats/token", True, "+.3f", 0.02, "zero gain"),
    Metric("train_tok_s", "training tokens/s", "tok/s", True, ".0f", None, ""),
]
BY_KEY = {m.key: m for m in METRICS}
VERDICT_METRICS = ("val_loss", "mqar_mean", "mqar_hard", "needle_exact", "needle_gain")
HYBRID_RATIO = (3, 10)  # claim (a): about 1 attention layer per 3-10 linear layers
MATCHED_ACTIVE = 0.10  # claim (b): active parameters within 10% count as matched
SPARSITY_STEP = 1.5  # claim (b): total/active must differ by at least this factor to compare sparsity


# -- per-seed values --------------------------------------------------------------------------------------------
def _mqar_seeds(m: dict) -> list[dict]:
    """One accuracy dict per seed: `mqar_seeds` where the run trained one recall twin per seed, else the one twin."""
    if m.get("mqar_seeds"):
        return m["mqar_seeds"]
    acc = (m.get("mqar") or {}).get("acc")
    return [acc] if acc else []


def _pairs(key: str) -> int:
    return int(key[1:].split("@")[0])


def seed_values(m: dict, key: str) -> list[float] | None:
    """The model's per-seed values of one metric (None: not measured)."""
    if key in ("val_loss", "val_bpb"):
        return list(m.get(f"{key}_seeds") or []) or None
    if key.startswith("mqar"):
        accs = _mqar_seeds(m)
        if not accs:
            return None
        if key == "mqar_mean":
            return [sum(a.values()) / len(a) for a in accs]
        hard = max(_pairs(k) for k in accs[0])
        return [sum(v for k, v in a.items() if _pairs(k) == hard) / sum(_pairs(k) == hard for k in a) for a in accs]
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


def _diff(metric: Metric, d: float) -> str:
    """'0.200 nats/token lower' / '0.31 higher' for a difference of means d = a - b."""
    unit = f" {metric.unit}" if metric.unit else ""
    return f"{format(abs(d), metric.fmt.lstrip('+'))}{unit} {'higher' if d > 0 else 'lower'}"


def _p(w: stats.Welch | None) -> str:
    return "no test: one seed" if w is None else f"Welch p = {w.p:.2g}"


def _names(labels: list[str]) -> str:
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
                f"{second} ({ci(b, metric.fmt)}), is {_diff(metric, b['mean'] - a['mean'])} ({_p(w)}; the "
                f"difference's interval [{format(-w.hi, '.3g')}, {format(-w.lo, '.3g')}]); {winner} beats all "
                f"{len(ranking) - 1} others at alpha = {alpha:g}.")
    top = [r["label"] for r in ranking if r["rank"] == 1]
    behind = [r["label"] for r in ranking if r["rank"] > 1]
    if not behind:
        return (f"{head}: not established at this budget: all {len(ranking)} models tie within noise (no pair "
                f"differs at alpha = {alpha:g}); {lead} leads on the point estimate ({ci(a, metric.fmt)}), "
                f"{_diff(metric, a['mean'] - b['mean'])} than {second} ({_p(w)}).")
    return (f"{head}: no single winner: {_names(top)} tie for first within noise ({lead} leads on the point "
            f"estimate, {ci(a, metric.fmt)}; {second} {ci(b, metric.fmt)}, {_p(w)}); significantly behind: "
            f"{_names(behind)}.")


# -- claim (a): hybrids against their all-attention and all-linear baselines --------------------------------------
def _layout(m: dict) -> dict | None:
    if m.get("layout"):
        return m["layout"]
    if m.get("kind") == "preset":  # results written before layouts were stored
        from ..presets import get_config
        try:
            return families.layout(get_config(m["spec"]))
        except ValueError:
            return None
    return None


def _roles(ok: list[dict]) -> dict[str, list[dict]]:
    roles: dict[str, list[dict]] = {"hybrid": [], "other_hybrid": [], "attention": [], "linear": []}
    for m in ok:
        lay = _layout(m)
        if lay is None:
            continue
        att, lin = lay["attention"], lay["linear"]
        if att and lin:
            lo, hi = HYBRID_RATIO
            roles["hybrid" if lo <= lin / att <= hi else "other_hybrid"].append(m)
        elif att:
            roles["attention"].append(m)
        elif lin:
            roles["linear"].append(m)
    return roles


def _match(h: dict, candidates: list[dict]) -> tuple[dict | None, bool]:
    """The baseline for hybrid h: one with the same non-mixer base if any (True), else the first (False)."""
    same = [c for c in candidates if _layout(c)["base"] == _layout(h)["base"]]
    return (same[0], True) if same else ((candidates[0], False) if candidates else (None, False))


def keeps(metric: Metric, st: dict, h: str, att: str, lin: str, alpha: float) -> tuple[str, str]:
    """-> (held | did not hold | not established, the sentence) for hybrid h on one metric."""
    ms = st.get(metric.key, {}).get("models", {})
    if not all(x in ms for x in (h, att, lin)):
        return "not established", f"{metric.name}: not measured for all three"
    sh, sa, sl = ms[h], ms[att], ms[lin]
    gap = sa["mean"] - sl["mean"]
    rec = (sh["mean"] - sl["mean"]) / gap if gap else float("nan")
    better = 1 if metric.higher_is_better else -1
    points = f"{h} {ci(sh, metric.fmt)}, {att} {ci(sa, metric.fmt)}, {lin} {ci(sl, metric.fmt)}"
    if better * gap > 0:  # a recovered share means something only where attention is ahead
        points += f"; recovers {rec:.0%} of the attention / all-linear gap"
    if stats.welch(sa["values"], sl["values"], alpha) is None or stats.welch(sh["values"], sa["values"], alpha) is None:
        return "not established", f"{metric.name}: one seed, no interval ({points})"
    if sa["at_reference"]:
        return "not established", f"{metric.name}: attention itself is at {metric.reference} ({points})"
    if not stats.beats(sa["values"], sl["values"], metric.higher_is_better, alpha) or better * gap <= 0:
        w = stats.welch(sa["values"], sl["values"], alpha)
        return "not established", (f"{metric.name}: attention and all-linear tie within noise ({_p(w)}), so there "
                                   f"is no gap to keep ({points})")
    if not stats.beats(sa["values"], sh["values"], metric.higher_is_better, alpha):
        return "held", f"{metric.name}: ties attention within noise or beats it ({points})"
    above_linear = stats.beats(sh["values"], sl["values"], metric.higher_is_better, alpha)
    if above_linear and rec >= 0.5:
        return "held", f"{metric.name}: below attention but significantly above all-linear ({points})"
    if rec < 0.5:
        return "did not hold", f"{metric.name}: significantly below attention ({points})"
    return "not established", f"{metric.name}: below attention, not beyond noise above all-linear ({points})"


def _cost(summary: dict, h: dict, att: dict) -> tuple[float | None, str]:
    """(hybrid cache / attention cache at the longest timed context, the sentence with decode and full scale)."""
    common = sorted(set(h.get("speed", {})) & set(att.get("speed", {})), key=int)
    if not common:
        return None, "cost: not measured"
    L = common[-1]
    ch, ca = h["speed"][L]["cache_bytes_analytic"], att["speed"][L]["cache_bytes_analytic"]
    dh, da = h["speed"][L]["decode_ms_per_token"], att["speed"][L]["decode_ms_per_token"]
    text = (f"cost: cache at {int(L):,} tokens {ch / ca:.0%} of attention's ({ch:,} vs {ca:,} bytes, exact), decode "
            f"{dh:.1f} vs {da:.1f} ms/token (one timing each: no interval)")
    fs = {r["label"]: r for r in summary.get("full_scale") or [] if r.get("full_scale")}
    if h["label"] in fs and att["label"] in fs:
        big = str(max(int(k) for k in fs[h["label"]]["cache_bytes"]))
        bh, ba = fs[h["label"]]["cache_bytes"][big], fs[att["label"]]["cache_bytes"][big]
        text += (f"; at full scale {fs[h['label']]['full_scale']} keeps {bh / 1e9:.1f} GB per sequence at "
                 f"{int(big) // 1024 ** 2}M against {fs[att['label']]['full_scale']}'s {ba / 1e9:.1f} GB "
                 f"({bh / ba:.0%})")
        usd = f"h100@{big}"
        uh, ua = fs[h["label"]]["usd_per_mtok"].get(usd), fs[att["label"]]["usd_per_mtok"].get(usd)
        if uh and ua:
            text += f" and decodes at ${uh:.2f} against ${ua:.2f} per M output tokens on H100 ({uh / ua:.0%})"
    return ch / ca, text


def claim_a(summary: dict, st: dict, alpha: float) -> list[str]:
    ok = [m for m in summary["models"] if m.get("status") == "ok"]
    roles = _roles(ok)
    lo, hi = HYBRID_RATIO
    wanted = (("hybrid with 1 attention layer per 3-10 linear layers", "hybrid"),
              ("all-attention baseline", "attention"), ("all-linear baseline", "linear"))
    missing = ["no " + what for what, key in wanted if not roles[key]]
    head = (f"**Claim (a)**, hybrids with about 1 attention layer per {lo}-{hi} linear layers keep most of "
            f"attention's quality and recall at a fraction of its cost: ")
    if missing:
        return [head + f"cannot be tested by this run: it holds {_names(missing)} (the default line-up has "
                       "tiny-hybrid, tiny-attention and tiny-gdn; so does --sweep-ratio)."]
    lines, outcomes = [], {}
    for h in roles["hybrid"]:
        att, same_a = _match(h, roles["attention"])
        lin, same_l = _match(h, roles["linear"])
        q = keeps(BY_KEY["val_loss"], st, h["label"], att["label"], lin["label"], alpha)
        r = keeps(BY_KEY["mqar_hard"], st, h["label"], att["label"], lin["label"], alpha)
        ratio, cost = _cost(summary, h, att)
        cheap = ratio is not None and ratio < 1
        results = {q[0], r[0]}
        outcome = ("did not hold" if "did not hold" in results or (ratio is not None and not cheap) else
                   "held" if results == {"held"} and cheap else "not established at this budget")
        outcomes[h["label"]] = outcome
        lay = _layout(h)
        note = "" if same_a and same_l else " (the baselines differ from it in more than the token mixers)"
        lines.append(f"- {h['label']} ({lay['linear']}:{lay['attention']} linear:attention) against {att['label']} "
                     f"and {lin['label']}{note}: **{outcome}**. Quality, {q[1]}. Recall, {r[1]}. {cost[0].upper()}"
                     f"{cost[1:]}.")
    values = set(outcomes.values())
    if values == {"held"}:
        overall = "**held at this budget**"
    elif values == {"did not hold"}:
        overall = "**did not hold at this budget**"
    elif "did not hold" in values or "held" in values:
        overall = "; ".join(f"**{o}** for {lbl}" for lbl, o in outcomes.items())
    else:
        overall = "**not established at this budget**"
    rule = ("(Quality = validation loss, recall = MQAR at the most pairs; a hybrid keeps a metric when it ties "
            "attention within noise, or beats all-linear significantly and recovers at least half of the "
            "attention / all-linear gap; it needs attention to beat all-linear there first.)")
    others = (f" Hybrids outside the {lo}-{hi} range, not used for the claim: "
              f"{', '.join(m['label'] for m in roles['other_hybrid'])}." if roles["other_hybrid"] else "")
    return [head + overall + ". " + rule + others, ""] + lines


# -- claim (b): sparsity at matched active parameters -------------------------------------------------------------
def _sparsity(m: dict) -> float:
    return m["params"]["total"] / m["params"]["active"]


def claim_b(summary: dict, st: dict, alpha: float) -> list[str]:
    ok = [m for m in summary["models"] if m.get("status") == "ok" and m.get("params") and _layout(m)]
    head = "**Claim (b)**, extreme MoE sparsity buys quality per active parameter: "
    groups: dict[str, list[dict]] = {}
    for m in ok:
        groups.setdefault(_layout(m)["mixers"], []).append(m)
    tests = []
    for members in groups.values():
        members = sorted(members, key=_sparsity)
        dense, sparse = members[0], members[-1]
        active = [m["params"]["active"] for m in members]
        if (_sparsity(sparse) / _sparsity(dense) >= SPARSITY_STEP
                and max(active) <= (1 + MATCHED_ACTIVE) * min(active)):
            tests.append((dense, sparse))
    if not tests:
        moe = [f"{m['label']} ({_layout(m)['experts']} experts, top-{_layout(m)['top_k']}, total/active "
               f"{_sparsity(m):.1f})" for m in ok if _layout(m)["moe_layers"]]
        return [head + "cannot be tested by this run: no two models share a token-mixer plan and active parameters "
                f"(within {MATCHED_ACTIVE:.0%}) while differing in total parameters (by {SPARSITY_STEP}x or more), "
                "so sparsity is confounded with the mixers. " + (f"MoE models here: {'; '.join(moe)}. " if moe else "")
                + "`--sweep-sparsity` (a later step) holds active parameters and top-k fixed and grows the total "
                "1x / 4x / 16x by adding experts."]
    lines, outcomes = [], []
    metric = BY_KEY["val_loss"]
    ms = st.get("val_loss", {}).get("models", {})
    for dense, sparse in tests:
        d, s = ms.get(dense["label"]), ms.get(sparse["label"])
        if d is None or s is None:
            continue
        w = stats.welch(s["values"], d["values"], alpha)
        if w is None:
            out = "not established at this budget (one seed: no interval)"
        elif s["at_reference"] and d["at_reference"]:
            out = "not established at this budget (both at the unigram baseline)"
        elif stats.beats(s["values"], d["values"], False, alpha):
            out = "held"
        elif stats.beats(d["values"], s["values"], False, alpha):
            out = "did not hold"
        else:
            out = "not established at this budget (tie within noise)"
        outcomes.append(out.split(" (")[0])
        lines.append(f"- {sparse['label']} (total/active {_sparsity(sparse):.1f}) against {dense['label']} "
                     f"({_sparsity(dense):.1f}), active {sparse['params']['active'] / 1e6:.2f}M vs "
                     f"{dense['params']['active'] / 1e6:.2f}M: **{out}**; validation loss {ci(s, metric.fmt)} vs "
                     f"{ci(d, metric.fmt)} ({_p(w)}).")
    overall = (f"**{outcomes[0]}**" if outcomes and len(set(outcomes)) == 1 else
               "mixed (below)" if outcomes else "**not established at this budget**")
    return [head + overall + " (the sparsest model against the least sparse at matched active parameters and the "
                             "same token mixers; quality = validation loss).", ""] + lines


# -- --group-by origin ------------------------------------------------------------------------------------------
def origin_lines(summary: dict, st: dict, alpha: float) -> list[str]:
    ok = [m for m in summary["models"] if m.get("status") == "ok"]
    groups: dict[str, list[str]] = {}
    for m in ok:
        group = families.origin_group(m["label"], (_layout(m) or {}).get("model_type"))
        groups.setdefault(group, []).append(m["label"])
    lines = ["### By lab origin", "", "| origin | labs | models |", "|---|---|---|"]
    for g, labels in groups.items():
        labs = sorted({families.lab_of(x, (_layout(next(m for m in ok if m['label'] == x)) or {}).get('model_type'))
                       or "-" for x in labels})
        lines.append(f"| {g} | {', '.join(labs)} | {', '.join(labels)} |")
    lines.append("")
    china, west = (families.ORIGINS[k] for k in ("china", "west"))
    if china not in groups or west not in groups:
        return lines + ["The run holds models of only one origin: nothing to compare by origin.", ""]
    for key in VERDICT_METRICS:
        if key not in st:
            continue
        metric, ms = BY_KEY[key], st[key]["models"]
        best = {}
        for g in (china, west):
            cands = [x for x in groups[g] if x in ms]
            if cands:
                best[g] = (min if not metric.higher_is_better else max)(cands, key=lambda x: ms[x]["mean"])
        if len(best) < 2:
            continue
        c, w_ = ms[best[china]], ms[best[west]]
        w = stats.welch(c["values"], w_["values"], alpha)
        text = (f"- **{metric.name}**: Chinese labs' best {best[china]} {ci(c, metric.fmt)}, Western labs' best "
                f"{best[west]} {ci(w_, metric.fmt)}: ")
        if w is None:
            text += "not established at this budget (one seed: no interval)."
        elif c["at_reference"] and w_["at_reference"]:
            text += f"not established at this budget (both at {metric.reference})."
        elif stats.beats(c["values"], w_["values"], metric.higher_is_better, alpha):
            text += f"the Chinese labs' lead, {_diff(metric, c['mean'] - w_['mean'])} ({_p(w)})."
        elif stats.beats(w_["values"], c["values"], metric.higher_is_better, alpha):
            text += f"the Western labs' lead, {_diff(metric, w_['mean'] - c['mean'])} ({_p(w)})."
        else:
            text += f"tie within noise ({_p(w)}): not established at this budget."
        lines.append(text)
    return lines + [""]


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
    lines += [*claim_a(summary, st, alpha), "", *claim_b(summary, st, alpha), ""]
    if summary["settings"].get("group_by") == "origin":
        lines += origin_lines(summary, st, alpha)
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
        return ["## Full scale", "", "No full-scale counterpart for " + _names([r["label"] for r in rows])
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
