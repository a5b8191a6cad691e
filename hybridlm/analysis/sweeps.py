"""The sweeps of `hybridlm compare` (docs/sweeps.md): --sweep-ratio (the tiny hybrid from all-attention to all-linear)
and --sweep-sparsity (claim (b): active parameters and top-k fixed, the total grown by adding experts).

    RATIOS / ratio_pattern      the linear:attention ratios and the layer plan of each at any depth
    full_scale_cache(r)         the full-scale counterpart's cache per sequence at 1M tokens with that ratio
    EXPERTS / sparsity_config   the sparsity points: tiny-hybrid with 2, 8, 32 routed experts, top-2
    sweep_pairs(cfg, out)       -> [(label, config file)] the models a sweep trains (written to DIR/configs/)
    facts(cfg)                  what each point varies, for results.json
    knee(summary)               where the ratio sweep's quality or recall first falls below all-attention
    sweep_lines(summary)        the report's "Ratio sweep" / "Sparsity sweep" section (empty when not a sweep)
    FIGURES / draws             the sweep figures and whether this run draws each
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from . import claims, families, stats, verdict
from .plotting import pyplot, save

# label -> linear layers per attention layer: 0 = all attention, None = all linear (G = Gated DeltaNet, A = gated
# attention). 15:1 needs 16 layers, so every ratio point is tiny-hybrid at RATIO_LAYERS layers.
RATIOS: dict[str, int | None] = {"ratio-0to1": 0, "ratio-1to1": 1, "ratio-3to1": 3, "ratio-7to1": 7,
                                 "ratio-15to1": 15, "ratio-1to0": None}
RATIO_LAYERS = 16
CONTEXT = 1 << 20  # the full-scale cache is reported at 1M tokens
FULL_SCALE = families.full_scale_of("tiny-hybrid")  # qwen3.5-397b-a17b: 60 layers
# label -> routed experts, all top-2: routed total / routed active = 1, 4, 16 (1x = every expert active). The shared
# expert stays, as tiny-hybrid has it (sparsity-4x is tiny-hybrid itself); it is active in all three alike.
EXPERTS = {"sparsity-1x": 2, "sparsity-4x": 8, "sparsity-16x": 32}
TOP_K = 2
RECALL, QUALITY = verdict.BY_KEY["mqar_hard"], verdict.BY_KEY["val_loss"]


def ratio_text(r: int | None) -> str:
    return "1:0 (all linear)" if r is None else "0:1 (all attention)" if r == 0 else f"{r}:1"


def ratio_pattern(layers: int, r: int | None) -> str:
    """The mixer plan with r linear layers per attention layer: attention at every (r+1)-th layer, linear layers
    left over at the end; r = 0 all attention, None all linear. (16, 3) -> 'GGGA*4', (60, 7) -> 'GGGGGGGA*7 GGGG'."""
    if r is None:
        return f"G*{layers}"
    if r == 0:
        return f"A*{layers}"
    unit, (n, rest) = "G" * r + "A", divmod(layers, r + 1)
    if n == 0:
        raise ValueError(f"ratio {r}:1 needs at least {r + 1} layers, got {layers}")
    return " ".join(t for t in (unit if n == 1 else f"{unit}*{n}", "G" * rest) if t)


def ratio_config(r: int | None, name: str):
    """tiny-hybrid at RATIO_LAYERS layers (the same MoE on every layer) with ratio r."""
    from ..presets import get_config
    base = get_config("tiny-hybrid")
    letter = base.ffn_pattern.split("*")[0]
    return base.replace(name=name, num_layers=RATIO_LAYERS, mixer_pattern=ratio_pattern(RATIO_LAYERS, r),
                        ffn_pattern=f"{letter}*{RATIO_LAYERS}")


@functools.cache
def full_scale_cache(r: int | None) -> dict:
    """FULL_SCALE rebuilt with ratio r over its own layers, on the meta device (analytic, no weights): its plan,
    layer counts and cache bytes per sequence at CONTEXT (bf16 KV, fp32 recurrent state: `hybridlm cost`'s model)."""
    from ..model import HybridLM
    from ..presets import get_config
    base = get_config(FULL_SCALE)
    cfg = base.replace(mixer_pattern=ratio_pattern(base.num_layers, r))
    model = HybridLM(cfg, device="meta")
    return {"model": FULL_SCALE, "pattern": cfg.mixer_pattern, "linear": cfg.layer_mixers.count("G"),
            "attention": cfg.layer_mixers.count("A"),
            "cache_bytes": model.cache_bytes(CONTEXT, 1, dtype_bytes=2, state_bytes=4)}


def sparsity_config(experts: int, name: str):
    """tiny-hybrid with `experts` routed experts, top-k TOP_K; width, shared expert and MTP as the preset has them."""
    from ..presets import get_config
    base = get_config("tiny-hybrid")
    ffns = {k: dataclasses.asdict(dataclasses.replace(v, num_experts=experts, top_k=TOP_K)) if v.kind == "moe"
            else dataclasses.asdict(v) for k, v in base.ffns.items()}
    return base.replace(name=name, ffns=ffns)


def sweep_pairs(cfg, out: Path) -> list[tuple[str, str]]:
    """-> [(label, config file)]: the configs of --sweep-ratio (RATIOS) or --sweep-sparsity (EXPERTS), written to
    DIR/configs/ so `hybridlm train` reads them like any config file."""
    if cfg.sweep_ratio and cfg.sweep_sparsity:
        raise ValueError("--sweep-ratio and --sweep-sparsity are separate runs: give one of them (each with its --out)")
    points = ({n: ratio_config(r, n) for n, r in RATIOS.items()} if cfg.sweep_ratio else
              {n: sparsity_config(e, n) for n, e in EXPERTS.items()})
    return write_configs(points, out)


def write_configs(points: dict, out: Path) -> list[tuple[str, str]]:
    """{label: ModelConfig} -> [(label, config file)], each written to DIR/configs/<label>.json."""
    cdir = Path(out) / "configs"
    cdir.mkdir(parents=True, exist_ok=True)
    specs = []
    for name, model_cfg in points.items():
        path = cdir / f"{name}.json"
        model_cfg.to_json(path)
        specs.append((name, str(path)))
    return specs


def facts(cfg) -> dict | None:
    """For results.json ("sweep"): which sweep ran and, per label, what the sweep varies: for --sweep-ratio the ratio
    and the full-scale cache at 1M (full_scale_cache), for --sweep-sparsity the routed experts and top-k. None when
    the run is not a sweep. The report recomputes these (analytic, exact), so older results.json files need none."""
    if cfg.sweep_ratio:
        return {"sweep": "ratio", "context": CONTEXT,
                "points": {n: {"ratio": ratio_text(r), **full_scale_cache(r)} for n, r in RATIOS.items()}}
    if cfg.sweep_sparsity:
        return {"sweep": "sparsity", "points": {n: {"experts": e, "top_k": TOP_K} for n, e in EXPERTS.items()}}
    return None


# -- the numbers ---------------------------------------------------------------------------------------------------
def _st(summary: dict) -> dict:
    return summary.get("statistics") or verdict.statistics(summary)


def _points(summary: dict, table: dict) -> list[dict]:
    """The finished models of a sweep, in the sweep's order."""
    ok = {m["label"]: m for m in summary["models"] if m.get("status") == "ok"}
    return [ok[label] for label in table if label in ok]


def _of(st: dict, metric, label: str) -> dict | None:
    return st.get(metric.key, {}).get("models", {}).get(label)


def _cell(st: dict, metric, label: str) -> str:
    s = _of(st, metric, label)
    return "n/a" if s is None else verdict.ci(s, metric.fmt)


def _worse(st: dict, metric, ref: str, label: str) -> tuple[bool, stats.Welch | None]:
    """label is significantly worse than ref on the metric (stats' tie rule), and the test."""
    a, b = _of(st, metric, ref), _of(st, metric, label)
    if a is None or b is None:
        return False, None
    w = stats.welch(a["values"], b["values"])
    return stats.beats(a["values"], b["values"], metric.higher_is_better), w


def knee(summary: dict) -> dict:
    """The ratio sweep's knee, by the fixed rule of docs/sweeps.md: going from all-attention toward all-linear, the
    knee is the last ratio before the first one whose recall (MQAR at the most pairs) or validation loss is
    significantly worse than all-attention's (Welch p < ALPHA). -> {"kind": knee | first_step | tied | no_reference
    | untested, "label", "loser", "why": [sentences about the first loser's metrics]}."""
    st, ref = _st(summary), "ratio-0to1"
    labels = [m["label"] for m in _points(summary, RATIOS)]
    if ref not in labels:
        return {"kind": "no_reference", "label": None, "loser": None, "why": []}
    rest = labels[labels.index(ref) + 1:]
    tested = any(_worse(st, m, ref, x)[1] is not None for x in rest for m in (RECALL, QUALITY))
    for i, label in enumerate(rest):
        why = []
        for metric in (RECALL, QUALITY):
            worse, w = _worse(st, metric, ref, label)
            if worse:
                why.append(f"{metric.name}: {_cell(st, metric, label)} against all-attention's "
                           f"{_cell(st, metric, ref)} ({verdict.p_words(w)})")
        if why:
            return {"kind": "first_step" if i == 0 else "knee", "label": ref if i == 0 else rest[i - 1],
                    "loser": label, "why": why}
    return {"kind": "tied" if tested else "untested", "label": labels[-1], "loser": None, "why": []}


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f}"


def _untested(summary: dict, metric) -> bool:
    """No ratio point can be tested against all-attention on this metric (one value per model)."""
    st, labels = _st(summary), [m["label"] for m in _points(summary, RATIOS)]
    return all(_worse(st, metric, "ratio-0to1", x)[1] is None for x in labels if x != "ratio-0to1")


def knee_sentence(summary: dict) -> str:
    text = _knee_words(summary)
    if knee(summary)["kind"] in ("knee", "first_step", "tied") and _untested(summary, RECALL):
        text += (" Recall has one value per model here (one MQAR twin each), so it could not be tested: this rests "
                 "on validation loss alone.")
    return text


def _knee_words(summary: dict) -> str:
    k = knee(summary)
    if k["kind"] == "no_reference":
        return "No knee: the all-attention point (ratio-0to1) did not finish, and the rule measures against it."
    if k["kind"] == "untested":
        return ("Knee not established at this budget: every point has one seed (or one recall twin), so no "
                "difference can be tested.")
    if k["kind"] == "tied":
        return ("Recall and quality did not separate at this budget: no ratio, all-linear included, is "
                "significantly worse than all-attention on MQAR at the most pairs or on validation loss, so there "
                "is no knee to place.")
    loser = ratio_text(RATIOS[k["loser"]])
    if k["kind"] == "first_step":
        return (f"No knee: the first step already loses: {loser} is significantly worse than all-attention on "
                f"{'; '.join(k['why'])}.")
    at, full = full_scale_cache(RATIOS[k["label"]]), full_scale_cache(0)
    saved = full["cache_bytes"] - at["cache_bytes"]
    return (f"**The knee falls at {ratio_text(RATIOS[k['label']])}**: every ratio up to it ties all-attention on "
            f"recall and quality, and {loser} is significantly worse on {'; '.join(k['why'])}. At the knee "
            f"{FULL_SCALE} would keep {_gb(at['cache_bytes'])} GB per sequence at 1M tokens instead of "
            f"{_gb(full['cache_bytes'])} GB, saving {_gb(saved)} GB ({saved / full['cache_bytes']:.0%}).")


def ratio_lines(summary: dict) -> list[str]:
    st = _st(summary)
    lines = ["## Ratio sweep", "",
             f"tiny-hybrid at {RATIO_LAYERS} layers (G = Gated DeltaNet, A = gated attention, the same MoE on every "
             f"layer) at each linear:attention ratio, on equal budgets. The last column is the full-scale "
             f"counterpart, {FULL_SCALE}, rebuilt with the same ratio over its own layers (attention at every "
             f"(r+1)-th layer): its cache per sequence at 1M tokens, bf16 KV and fp32 recurrent state, exact "
             f"(`hybridlm cost`'s model).", "",
             "| model | linear:attention | tiny layers G/A | validation loss | MQAR at the most pairs | "
             f"{FULL_SCALE} layers G/A | full-scale cache at 1M (GB) |", "|---" * 7 + "|"]
    for m in _points(summary, RATIOS):
        r, lay = RATIOS[m["label"]], claims.layout_of(m) or {}
        fs = full_scale_cache(r)
        lines.append(f"| {m['label']} | {ratio_text(r)} | {lay.get('linear', '?')}/{lay.get('attention', '?')} | "
                     f"{_cell(st, QUALITY, m['label'])} | {_cell(st, RECALL, m['label'])} | "
                     f"{fs['linear']}/{fs['attention']} | {_gb(fs['cache_bytes'])} |")
    return lines + ["", knee_sentence(summary), "",
                    "(The knee is the last ratio, going from all-attention toward all-linear, before the first one "
                    "whose MQAR accuracy at the most pairs or validation loss is significantly worse than "
                    f"all-attention's: Welch p < {stats.ALPHA:g} on the per-seed values, the Verdict's tie rule. A "
                    "metric with one value per model cannot be tested and counts as a tie.)", ""]


def _routed(m: dict) -> tuple[int, int]:
    lay = claims.layout_of(m) or {}
    return lay.get("experts", 0), lay.get("top_k", 0)


def sparsity_sentence(summary: dict) -> str:
    st, ok = _st(summary), {m["label"]: m for m in _points(summary, EXPERTS)}
    sparse, dense = "sparsity-16x", "sparsity-1x"
    s, d = _of(st, QUALITY, sparse), _of(st, QUALITY, dense)
    if s is None or d is None or sparse not in ok or dense not in ok:
        return "Not established: sparsity-16x and sparsity-1x did not both finish, and the rule compares them."
    active = [ok[x]["params"]["active"] for x in (sparse, dense)]
    if max(active) > (1 + claims.MATCHED_ACTIVE) * min(active):
        return (f"Not established: active parameters differ by more than {claims.MATCHED_ACTIVE:.0%} "
                f"({active[0]:,} vs {active[1]:,}), so the comparison is not at matched active parameters.")
    out, w = claims.sparsity_outcome(s, d, stats.ALPHA)
    pts = (f"validation loss {verdict.ci(s, QUALITY.fmt)} for {sparse} against {verdict.ci(d, QUALITY.fmt)} for "
           f"{dense}, {verdict.p_words(w)}")
    if out == "held":
        return (f"**Sparsity paid at this budget** (claim (b) held): 16x the routed experts at matched active "
                f"parameters gave a significantly lower loss ({pts}).")
    if out == "did not hold":
        return (f"**Sparsity did not pay at this budget** (claim (b) did not hold): the sparsest model's loss is "
                f"significantly higher ({pts}).")
    why = out.split(" (", 1)[1].rstrip(")")
    return f"**Whether sparsity paid is not established at this budget** (claim (b): {why}; {pts})."


def sparsity_lines(summary: dict) -> list[str]:
    st = _st(summary)
    lines = ["## Sparsity sweep", "",
             f"tiny-hybrid with {', '.join(str(e) for e in EXPERTS.values())} routed experts, top-{TOP_K} each, on "
             "equal budgets: active parameters and top-k held, the routed total grown 1x / 4x / 16x by adding "
             "experts (the shared expert and the router are active in all; the router grows with the experts, which "
             "is the whole difference in active parameters). Totals and active counts exclude the MTP module.", "",
             "| model | experts | top-k | total params | active params | total/active | routed total/active | "
             "validation loss | MQAR at the most pairs |", "|---" * 9 + "|"]
    for m in _points(summary, EXPERTS):
        e, k = _routed(m)
        p = m["params"]
        lines.append(f"| {m['label']} | {e} | {k} | {p['total']:,} | {p['active']:,} | {p['total'] / p['active']:.2f} "
                     f"| {e / k if k else float('nan'):g} | {_cell(st, QUALITY, m['label'])} | "
                     f"{_cell(st, RECALL, m['label'])} |")
    return lines + ["", sparsity_sentence(summary), "",
                    "(The rule is claim (b)'s: the sparsest model against the least sparse at matched active "
                    f"parameters (within {claims.MATCHED_ACTIVE:.0%}); sparsity pays when its validation loss is "
                    f"significantly lower, Welch p < {stats.ALPHA:g} on the per-seed values.)", ""]


def sweep_lines(summary: dict) -> list[str]:
    s = summary["settings"]
    if not _points(summary, RATIOS if s.get("sweep_ratio") else EXPERTS if s.get("sweep_sparsity") else {}):
        return []
    return ratio_lines(summary) if s.get("sweep_ratio") else sparsity_lines(summary)


# -- figures --------------------------------------------------------------------------------------------------------
def _errorbar(ax, xs: list[float], sts: list[dict | None], **kw) -> None:
    """Means with their intervals as error bars (none where a point has one seed); points without the metric skipped."""
    pts = [(x, s) for x, s in zip(xs, sts) if s is not None]
    if not pts:
        return
    err = [[s["mean"] - s["lo"] if s["lo"] is not None else 0 for _, s in pts],
           [s["hi"] - s["mean"] if s["hi"] is not None else 0 for _, s in pts]]
    ax.errorbar([x for x, _ in pts], [s["mean"] for _, s in pts], yerr=err, capsize=3, **kw)


def plot_sweep(summary: dict, path: Path) -> bool:
    """Recall and loss against the full-scale cache at 1M (log x), intervals as error bars, the knee marked."""
    points = _points(summary, RATIOS)
    if not points:
        return False
    st, plt = _st(summary), pyplot()
    xs = [full_scale_cache(RATIOS[m["label"]])["cache_bytes"] / 1e9 for m in points]
    k = knee(summary)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, metric in zip(axes, (RECALL, QUALITY)):
        _errorbar(ax, xs, [_of(st, metric, m["label"]) for m in points], fmt="o-", color="C0")
        for x, m in zip(xs, points):
            s = _of(st, metric, m["label"])
            if s is not None:
                ax.annotate(ratio_text(RATIOS[m["label"]]).split()[0], (x, s["mean"]), fontsize=8, xytext=(5, 4),
                            textcoords="offset points")
        if k["kind"] == "knee":
            ax.axvline(full_scale_cache(RATIOS[k["label"]])["cache_bytes"] / 1e9, color="C3", ls="--", lw=1,
                       label=f"knee ({ratio_text(RATIOS[k['label']])})")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.margins(x=0.12)  # room for the labels of the outermost points
        ax.set(xlabel=f"{FULL_SCALE} cache per sequence at 1M tokens (GB)",
               ylabel=f"{metric.name} ({'higher' if metric.higher_is_better else 'lower'} is better)")
    axes[0].set(title="recall vs full-scale cache", ylim=(-0.05, 1.05))
    axes[1].set(title="quality vs full-scale cache")
    fig.suptitle(f"hybrid ratio sweep (tiny-hybrid, {RATIO_LAYERS} layers, equal budgets; bars: "
                 f"{1 - stats.ALPHA:.0%} intervals over seeds)", fontsize=9)
    return save(fig, path)


def _points_axis(ax, xs: list[float]) -> None:
    """A log axis ticked at the points themselves ('1.75M'): the active parameters span a few percent, where
    matplotlib's own log ticks would print overlapping minor labels."""
    from matplotlib.ticker import FixedLocator, NullLocator
    ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(xs))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{x / 1e6:.2f}M" for x in sorted(set(xs))])


def plot_sparsity(summary: dict, path: Path) -> bool:
    """Quality and recall against total parameters (left) and active parameters (right), log x."""
    points = _points(summary, EXPERTS)
    if not points:
        return False
    st, plt = _st(summary), pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key in zip(axes, ("total", "active")):
        xs = [m["params"][key] for m in points]
        _errorbar(ax, xs, [_of(st, QUALITY, m["label"]) for m in points], fmt="o-", color="C0",
                  label=QUALITY.name)
        for x, m in zip(xs, points):
            s = _of(st, QUALITY, m["label"])
            if s is not None:
                ax.annotate(m["label"].removeprefix("sparsity-"), (x, s["mean"]), fontsize=8, xytext=(5, 4),
                            textcoords="offset points")
        ax.set_ylabel(f"{QUALITY.name} (lower is better)", color="C0")
        twin = ax.twinx()
        _errorbar(twin, xs, [_of(st, RECALL, m["label"]) for m in points], fmt="s--", color="C1", label=RECALL.name)
        twin.set_ylabel(RECALL.name, color="C1")
        twin.set_ylim(-0.05, 1.05)
        _points_axis(ax, xs)
        spread = f" (they differ by {max(xs) / min(xs) - 1:.1%})" if key == "active" else ""
        ax.set(xlabel=f"{key} parameters (log scale)", title=f"against {key} parameters{spread}")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.suptitle(f"sparsity sweep (top-{TOP_K}, experts {'/'.join(str(e) for e in EXPERTS.values())}; bars: "
                 f"{1 - stats.ALPHA:.0%} intervals over seeds)", fontsize=9)
    return save(fig, path)


FIGURES = {  # file -> (drawing function, caption)
    "sweep.png": (plot_sweep, "ratio sweep: recall and quality vs full-scale cache at 1M"),
    "sparsity.png": (plot_sparsity, "sparsity sweep: quality and recall vs total and active parameters"),
}
_DRAWN_BY = {"sweep.png": "sweep_ratio", "sparsity.png": "sweep_sparsity"}


def draws(name: str, summary: dict) -> bool:
    return bool(summary["settings"].get(_DRAWN_BY[name]))
