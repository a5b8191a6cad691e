"""The sweeps of `hybridlm compare` (analysis/sweeps.py): the configs each trains, the full-scale cache beside them,
and the report's sections and figures, from hand-made summaries (no training), so every outcome is known in advance."""

import json

import pytest
from test_report import _fam, _summary

from hybridlm.analysis import claims, families, report, sweeps, verdict
from hybridlm.analysis.compare import CompareConfig
from hybridlm.analysis.sweeps import EXPERTS, RATIOS, full_scale_cache, sweep_pairs
from hybridlm.cli import build_parser, main
from hybridlm.cli.commands.compare import config_from_args
from hybridlm.model import HybridLM
from hybridlm.model.config import ModelConfig
from hybridlm.presets import get_config


# -- what each sweep trains ------------------------------------------------------------------------------------
def test_ratio_sweep_is_tiny_hybrid_at_16_layers_from_all_attention_to_all_linear(tmp_path):
    pairs = sweep_pairs(CompareConfig(sweep_ratio=True), tmp_path)
    assert [label for label, _ in pairs] == list(RATIOS)
    cfgs = [ModelConfig.from_json(p) for _, p in pairs]
    assert [c.layer_mixers.count("G") for c in cfgs] == [0, 8, 12, 14, 15, 16]
    assert all(len(c.layer_mixers) == 16 and c.layer_ffns == ["M"] * 16 for c in cfgs)
    assert cfgs[4].layer_mixers == ["G"] * 15 + ["A"]  # 15:1
    assert cfgs[3].layer_mixers == (["G"] * 7 + ["A"]) * 2
    base = get_config("tiny-hybrid")
    assert all(c.mixers == base.mixers and c.ffns == base.ffns and c.d_model == base.d_model for c in cfgs)


def _every(layers, r):
    """An independent plan: attention at every (r+1)-th layer (1-based), the rest Gated DeltaNet."""
    if r is None:
        return "G" * layers
    return "".join("A" if (i + 1) % (r + 1) == 0 else "G" for i in range(layers))


def test_full_scale_cache_at_1m_falls_from_all_attention_to_all_linear():
    base = get_config(sweeps.FULL_SCALE)
    caches = [full_scale_cache(r)["cache_bytes"] for r in RATIOS.values()]
    assert all(a > b for a, b in zip(caches, caches[1:])), caches
    for r in RATIOS.values():
        meta = HybridLM(base.replace(mixer_pattern=_every(base.num_layers, r)), device="meta")
        assert full_scale_cache(r)["cache_bytes"] == meta.cache_bytes(1 << 20, 1, dtype_bytes=2, state_bytes=4)
    # 3:1 is the published Qwen3.5 layout: the same figure as the report's full-scale table for tiny-hybrid
    row = families.full_scale(["tiny-hybrid"])[0]
    assert full_scale_cache(3)["cache_bytes"] == row["cache_bytes"][str(1 << 20)]
    assert (full_scale_cache(7)["linear"], full_scale_cache(7)["attention"]) == (53, 7)
    json.dumps(sweeps.facts(CompareConfig(sweep_ratio=True)))  # results.json can hold it
    assert sweeps.facts(CompareConfig(sweep_ratio=True))["points"]["ratio-1to0"]["cache_bytes"] == caches[-1]
    assert sweeps.facts(CompareConfig(sweep_sparsity=True))["points"]["sparsity-16x"] == {"experts": 32, "top_k": 2}
    assert sweeps.facts(CompareConfig()) is None


def test_sparsity_sweep_holds_active_and_top_k_and_grows_the_routed_total(tmp_path):
    pairs = sweep_pairs(CompareConfig(sweep_sparsity=True), tmp_path)
    assert [label for label, _ in pairs] == list(EXPERTS)
    cfgs = [ModelConfig.from_json(p) for _, p in pairs]
    moes = [c.ffns["M"] for c in cfgs]
    assert [m.num_experts for m in moes] == [2, 8, 32] and {m.top_k for m in moes} == {2}
    assert [m.num_experts / m.top_k for m in moes] == [1, 4, 16]  # routed total / routed active
    assert {(m.expert_size, m.shared_size) for m in moes} == {(128, 128)}
    assert cfgs[1].ffns == get_config("tiny-hybrid").ffns  # 4x is tiny-hybrid itself
    models = [HybridLM(c, device="meta") for c in cfgs]
    active = [m.active_params() for m in models]
    # the only active difference is the router (d_model x experts per MoE layer), within claim (b)'s match
    assert [a - active[0] for a in active] == [128 * (e - 2) * 8 for e in (2, 8, 32)]
    assert max(active) <= (1 + claims.MATCHED_ACTIVE) * min(active)
    routed = [m.num_params(mtp=False) - a for m, a in zip(models, active)]  # the inactive experts
    assert routed == [0, 6 * 3 * 128 * 128 * 8, 30 * 3 * 128 * 128 * 8]


@pytest.mark.parametrize("argv, match", [
    (["compare", "tiny-gdn", "--sweep-sparsity"], "--sweep-sparsity trains its own models"),
    (["compare", "--sweep-ratio", "--sweep-sparsity"], "--sweep-ratio and --sweep-sparsity are separate runs"),
])
def test_sweep_flag_errors_exit_2(argv, match, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_sweep_sparsity_flag_reaches_the_config():
    cfg = config_from_args(build_parser().parse_args(["compare", "--sweep-sparsity", "--quick"]))
    assert cfg.sweep_sparsity and not cfg.sweep_ratio and cfg.specs == []


# -- the ratio sweep's knee -------------------------------------------------------------------------------------
HOLD = [2.00, 2.02, 1.98], [0.90, 0.92, 0.88]  # all-attention; a point with these numbers ties it


def _ratio_summary(points: dict, seeds_ok=True, recall_seeds=True):
    """points: label -> (val loss per seed, MQAR per recall-twin seed); the layout is the real config's. seeds_ok
    False: one seed of everything; recall_seeds False: one MQAR twin per model (its first value)."""
    models = []
    for label, (loss, mqar) in points.items():
        lay = families.layout(sweeps.ratio_config(RATIOS[label], label))
        models.append(_fam(label, loss if seeds_ok else loss[:1], mqar if seeds_ok and recall_seeds else mqar[0],
                           lay, 1))
    s = _summary(models)
    s["settings"]["sweep_ratio"] = True
    s["statistics"] = verdict.statistics(s)  # as write_all stores it
    return s


KNEE_AT_7 = {"ratio-0to1": HOLD, "ratio-1to1": ([2.01, 2.03, 1.99], [0.91, 0.89, 0.90]),
             "ratio-3to1": ([2.00, 2.03, 2.01], [0.90, 0.88, 0.89]),
             "ratio-7to1": ([2.02, 2.04, 2.00], [0.88, 0.90, 0.86]),  # 0.88 vs 0.90: Welch p = 0.29, a tie
             "ratio-15to1": ([2.03, 2.05, 2.01], [0.40, 0.42, 0.38]),  # recall drops; loss p = 0.14, a tie
             "ratio-1to0": ([2.60, 2.62, 2.58], [0.10, 0.12, 0.08])}


def test_knee_falls_at_the_last_ratio_before_recall_drops():
    s = _ratio_summary(KNEE_AT_7)
    k = sweeps.knee(s)
    assert (k["kind"], k["label"], k["loser"]) == ("knee", "ratio-7to1", "ratio-15to1")
    assert len(k["why"]) == 1 and k["why"][0].startswith("MQAR accuracy at the most key-value pairs: 0.40 [0.35, 0.45]")
    text = "\n".join(sweeps.sweep_lines(s))
    saved = full_scale_cache(0)["cache_bytes"] - full_scale_cache(7)["cache_bytes"]
    assert "**The knee falls at 7:1**" in text and "15:1 is significantly worse on MQAR" in text
    assert f"saving {saved / 1e9:.2f} GB ({saved / full_scale_cache(0)['cache_bytes']:.0%})" in text
    assert "saving 113.59 GB (88%)" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| ratio-7to1 |"))
    assert row == ("| ratio-7to1 | 7:1 | 14/2 | 2.020 [1.970, 2.070] | 0.88 [0.83, 0.93] | 53/7 | "
                   f"{full_scale_cache(7)['cache_bytes'] / 1e9:.2f} |")
    assert text.startswith("## Ratio sweep") and text.count("| ratio-") == 6


def test_knee_edge_cases_first_step_tie_and_one_seed():
    first = dict(KNEE_AT_7, **{"ratio-1to1": ([2.01, 2.03, 1.99], [0.50, 0.52, 0.48])})
    k = sweeps.knee(_ratio_summary(first))
    assert (k["kind"], k["loser"]) == ("first_step", "ratio-1to1")
    assert "the first step already loses: 1:1" in sweeps.knee_sentence(_ratio_summary(first))
    tied = {label: HOLD for label in RATIOS}
    assert sweeps.knee(_ratio_summary(tied))["kind"] == "tied"
    assert "did not separate at this budget" in sweeps.knee_sentence(_ratio_summary(tied))
    assert sweeps.knee(_ratio_summary(KNEE_AT_7, seeds_ok=False))["kind"] == "untested"
    # one MQAR twin per model: recall cannot lose, the knee rests on loss (all-linear's 2.6) and says so
    one_twin = _ratio_summary(KNEE_AT_7, recall_seeds=False)
    assert (sweeps.knee(one_twin)["label"], sweeps.knee(one_twin)["loser"]) == ("ratio-15to1", "ratio-1to0")
    assert "rests on validation loss alone" in sweeps.knee_sentence(one_twin)
    assert "rests on validation loss alone" not in sweeps.knee_sentence(_ratio_summary(KNEE_AT_7))
    no_ref = {k: v for k, v in KNEE_AT_7.items() if k != "ratio-0to1"}
    assert sweeps.knee(_ratio_summary(no_ref))["kind"] == "no_reference"


# -- the sparsity sweep's verdict -------------------------------------------------------------------------------
def _sparsity_summary(losses: dict):
    models = []
    for label, loss in losses.items():
        model = HybridLM(sweeps.sparsity_config(EXPERTS[label], label), device="meta")
        models.append(_fam(label, loss, [0.5, 0.52, 0.48], families.layout(model.config), 1,
                           total=model.num_params(mtp=False), active=model.active_params()))
    s = _summary(models)
    s["settings"]["sweep_sparsity"] = True
    s["statistics"] = verdict.statistics(s)
    return s


def test_sparsity_sweep_section_and_claim_b_held():
    s = _sparsity_summary({"sparsity-1x": [2.30, 2.31, 2.29], "sparsity-4x": [2.15, 2.16, 2.14],
                           "sparsity-16x": [2.00, 2.01, 1.99]})
    text = "\n".join(sweeps.sweep_lines(s))
    assert text.startswith("## Sparsity sweep") and "**Sparsity paid at this budget** (claim (b) held)" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| sparsity-16x |"))
    assert row.startswith("| sparsity-16x | 32 | 2 | 13,581,808 | 1,785,328 | 7.61 | 16 | 2.000 [1.975, 2.025] |")
    b = "\n".join(claims.claim_lines(s))
    assert "**Claim (b)**, extreme MoE sparsity buys quality per active parameter: **held**" in b
    assert "- sparsity-16x (total/active 7.6) against sparsity-1x (1.0)" in b


def test_sparsity_sweep_tie_is_not_established():
    s = _sparsity_summary({"sparsity-1x": [2.0, 2.2, 2.1], "sparsity-4x": [2.0, 2.2, 2.1],
                           "sparsity-16x": [2.05, 2.25, 2.15]})
    text = "\n".join(sweeps.sweep_lines(s))
    assert "**Whether sparsity paid is not established at this budget** (claim (b): tie within noise;" in text
    assert "not established at this budget (tie within noise)" in "\n".join(claims.claim_lines(s))


def test_claim_b_points_to_the_sparsity_sweep_when_untestable():
    s = _ratio_summary(KNEE_AT_7)  # the same MoE everywhere: no sparsity contrast
    b = next(ln for ln in claims.claim_lines(s) if ln.startswith("**Claim (b)**"))
    assert "cannot be tested by this run" in b and "Run `hybridlm compare` with `--sweep-sparsity` to test it" in b


# -- figures and the report -------------------------------------------------------------------------------------
def test_ratio_sweep_draws_sweep_png_and_its_section_after_the_claims(tmp_path):
    figs = report.write_all(_ratio_summary(KNEE_AT_7), tmp_path)
    assert "sweep.png" in figs and "sparsity.png" not in figs and (tmp_path / "sweep.png").stat().st_size > 10_000
    text = (tmp_path / "report.md").read_text()
    assert text.index("**Claim (b)**") < text.index("## Ratio sweep") < text.index("## Statistics")
    assert "](sweep.png)" in text and "## Sparsity sweep" not in text


def test_sparsity_sweep_draws_sparsity_png(tmp_path):
    (tmp_path / "sweep.png").write_bytes(b"left by an earlier ratio sweep")
    figs = report.write_all(_sparsity_summary({"sparsity-1x": [2.3, 2.31, 2.29], "sparsity-16x": [2.0, 2.01, 1.99]}),
                            tmp_path)
    assert "sparsity.png" in figs and (tmp_path / "sparsity.png").stat().st_size > 10_000
    assert "sweep.png" not in figs and not (tmp_path / "sweep.png").exists()
    text = (tmp_path / "report.md").read_text()
    assert "## Sparsity sweep" in text and "](sparsity.png)" in text and "## Ratio sweep" not in text


def test_not_a_sweep_has_no_section_and_no_sweep_figure():
    s = _ratio_summary(KNEE_AT_7)
    s["settings"]["sweep_ratio"] = False
    assert sweeps.sweep_lines(s) == []
    assert not any(sweeps.draws(name, s) for name in sweeps.FIGURES)
