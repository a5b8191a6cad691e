"""The brief's claims, tested on the seed statistics for the report's Verdict (after verdict.py's per-metric lines):

    claim_a       hybrids with about 1 attention layer per 3-10 linear layers keep most of attention's quality and
                  recall at a fraction of its cost: each hybrid against its all-attention and all-linear baselines
    claim_b       extreme MoE sparsity buys quality per active parameter: sparsest against least sparse at matched
                  active parameters and the same token mixers, where the run holds such models
    origin_lines  --group-by origin: the best of the Chinese labs against the best of the Western labs per metric
    claim_lines   all of them, as the Verdict shows them

Outcomes per hybrid / pair: held, did not hold, or not established at this budget (stats' tie rule, verdict's
reference levels), each with the numbers it rests on.
"""

from __future__ import annotations

from . import families, stats
from .verdict import BY_KEY, VERDICT_METRICS, Metric, ci, diff_words, names, p_words, statistics

HYBRID_RATIO = (3, 10)  # claim (a): about 1 attention layer per 3-10 linear layers
MATCHED_ACTIVE = 0.10  # claim (b): active parameters within 10% count as matched
SPARSITY_STEP = 1.5  # claim (b): total/active must differ by at least this factor to compare sparsity


# -- claim (a): hybrids against their all-attention and all-linear baselines --------------------------------------
def layout_of(m: dict) -> dict | None:
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
        lay = layout_of(m)
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
    same = [c for c in candidates if layout_of(c)["base"] == layout_of(h)["base"]]
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
    hb = metric.higher_is_better
    att_wins = stats.beats(sa["values"], sl["values"], hb, alpha)  # attention ahead of all-linear, beyond noise
    lin_wins = stats.beats(sl["values"], sa["values"], hb, alpha)
    w = stats.welch(sa["values"], sl["values"], alpha)
    if stats.beats(sh["values"], sa["values"], hb, alpha):
        return "held", f"{metric.name}: beats attention ({points})"
    if not stats.beats(sa["values"], sh["values"], hb, alpha):  # the hybrid ties attention
        if att_wins:
            return "held", f"{metric.name}: ties attention within noise, and attention beats all-linear ({points})"
        if lin_wins:
            return "held", (f"{metric.name}: ties attention within noise; all-linear is better than attention here "
                            f"({p_words(w)}), so the hybrid keeps at least attention's level ({points})")
        return "not established", (f"{metric.name}: attention and all-linear tie within noise ({p_words(w)}), so "
                                   f"there is no gap to keep ({points})")
    # attention beats the hybrid beyond noise: it keeps "most" only by recovering half of a real gap to all-linear
    if not att_wins:
        return "did not hold", (f"{metric.name}: significantly below attention, and attention is not ahead of "
                                f"all-linear ({p_words(w)}) ({points})")
    above_linear = stats.beats(sh["values"], sl["values"], hb, alpha)
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
        return [head + f"cannot be tested by this run: it holds {names(missing)} (the default line-up has "
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
        lay = layout_of(h)
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
    rule = ("(Quality = validation loss, recall = MQAR at the most pairs at the smallest recall state; a hybrid "
            "keeps a metric when it beats attention, or ties it while attention and all-linear differ beyond noise, "
            "or is below attention but beats all-linear significantly and recovers at least half of the attention / "
            "all-linear gap; when all three tie nothing is established.)")
    others = (f" Hybrids outside the {lo}-{hi} range, not used for the claim: "
              f"{', '.join(m['label'] for m in roles['other_hybrid'])}." if roles["other_hybrid"] else "")
    return [head + overall + ". " + rule + others, ""] + lines


# -- claim (b): sparsity at matched active parameters -------------------------------------------------------------
def _sparsity(m: dict) -> float:
    return m["params"]["total"] / m["params"]["active"]


def sparsity_outcome(s: dict, d: dict, alpha: float) -> tuple[str, stats.Welch | None]:
    """Claim (b)'s rule on validation loss, sparse model s against dense model d (their statistics entries): held |
    did not hold | not established at this budget (why), and the Welch test it rests on. --sweep-sparsity's
    sentence uses the same rule."""
    w = stats.welch(s["values"], d["values"], alpha)
    if w is None:
        return "not established at this budget (one seed: no interval)", w
    if s["at_reference"] and d["at_reference"]:
        return "not established at this budget (both at the unigram baseline)", w
    if stats.beats(s["values"], d["values"], False, alpha):
        return "held", w
    if stats.beats(d["values"], s["values"], False, alpha):
        return "did not hold", w
    return "not established at this budget (tie within noise)", w


def claim_b(summary: dict, st: dict, alpha: float) -> list[str]:
    ok = [m for m in summary["models"] if m.get("status") == "ok" and m.get("params") and layout_of(m)]
    head = "**Claim (b)**, extreme MoE sparsity buys quality per active parameter: "
    groups: dict[str, list[dict]] = {}
    for m in ok:
        groups.setdefault(layout_of(m)["mixers"], []).append(m)
    tests = []
    for members in groups.values():
        members = sorted(members, key=_sparsity)
        dense, sparse = members[0], members[-1]
        active = [m["params"]["active"] for m in members]
        if (_sparsity(sparse) / _sparsity(dense) >= SPARSITY_STEP
                and max(active) <= (1 + MATCHED_ACTIVE) * min(active)):
            tests.append((dense, sparse))
    if not tests:
        moe = [f"{m['label']} ({layout_of(m)['experts']} experts, top-{layout_of(m)['top_k']}, total/active "
               f"{_sparsity(m):.1f})" for m in ok if layout_of(m)["moe_layers"]]
        return [head + "cannot be tested by this run: no two models share a token-mixer plan and active parameters "
                f"(within {MATCHED_ACTIVE:.0%}) while differing in total parameters (by {SPARSITY_STEP}x or more), "
                "so sparsity is confounded with the mixers. " + (f"MoE models here: {'; '.join(moe)}. " if moe else "")
                + "Run `hybridlm compare` with `--sweep-sparsity` to test it: that sweep holds active parameters "
                "and top-k fixed and grows the total 1x / 4x / 16x by adding experts (docs/sweeps.md)."]
    lines, outcomes = [], []
    metric = BY_KEY["val_loss"]
    ms = st.get("val_loss", {}).get("models", {})
    for dense, sparse in tests:
        d, s = ms.get(dense["label"]), ms.get(sparse["label"])
        if d is None or s is None:
            continue
        out, w = sparsity_outcome(s, d, alpha)
        outcomes.append(out.split(" (")[0])
        lines.append(f"- {sparse['label']} (total/active {_sparsity(sparse):.1f}) against {dense['label']} "
                     f"({_sparsity(dense):.1f}), active {sparse['params']['active'] / 1e6:.2f}M vs "
                     f"{dense['params']['active'] / 1e6:.2f}M: **{out}**; validation loss {ci(s, metric.fmt)} vs "
                     f"{ci(d, metric.fmt)} ({p_words(w)}).")
    overall = (f"**{outcomes[0]}**" if outcomes and len(set(outcomes)) == 1 else
               "mixed (below)" if outcomes else "**not established at this budget**")
    return [head + overall + " (the sparsest model against the least sparse at matched active parameters and the "
                             "same token mixers; quality = validation loss).", ""] + lines


# -- --group-by origin ------------------------------------------------------------------------------------------
def origin_lines(summary: dict, st: dict, alpha: float) -> list[str]:
    ok = [m for m in summary["models"] if m.get("status") == "ok"]
    groups: dict[str, list[str]] = {}
    for m in ok:
        group = families.origin_group(m["label"], (layout_of(m) or {}).get("model_type"))
        groups.setdefault(group, []).append(m["label"])
    lines = ["### By lab origin", "", "| origin | labs | models |", "|---|---|---|"]
    for g, labels in groups.items():
        labs = sorted({families.lab_of(x, (layout_of(next(m for m in ok if m['label'] == x)) or {}).get('model_type'))
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
            text += f"the Chinese labs' lead, {diff_words(metric, c['mean'] - w_['mean'])} ({p_words(w)})."
        elif stats.beats(w_["values"], c["values"], metric.higher_is_better, alpha):
            text += f"the Western labs' lead, {diff_words(metric, w_['mean'] - c['mean'])} ({p_words(w)})."
        else:
            text += f"tie within noise ({p_words(w)}): not established at this budget."
        lines.append(text)
    return lines + [""]


def claim_lines(summary: dict, alpha: float = stats.ALPHA) -> list[str]:
    """The Verdict's second half: claims (a), (b) and, with --group-by origin, the grouping by origin."""
    st = summary.get("statistics") or statistics(summary, alpha)
    if not st:
        return []
    lines = [*claim_a(summary, st, alpha), "", *claim_b(summary, st, alpha), ""]
    if summary["settings"].get("group_by") == "origin":
        lines += origin_lines(summary, st, alpha)
    return lines
