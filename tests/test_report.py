"""The report of `hybridlm compare` agrees with itself and with the disk: built from a hand-made summary (no training),
so every number it must show is known in advance."""

import re

import pytest

from hybridlm.analysis import report
from hybridlm.analysis.compare import CompareConfig

ERROR = "ValueError: bad | value\nsecond line of the message"
TRACEBACK = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n" + ERROR


def _model(label, val_loss, val_bpb, other_cores=0.0, mqar=True):
    needle = [{"128": {"exact": e, "loss": 3.0, "loss_without": 3.0 + g}} for e, g in ((0.0, 0.1), (0.5, 0.3))]
    speed = {str(c): {"prefill_tok_s": 1000.0 + c, "decode_ms_per_token": 2.0 + c / 1024, "cache_bytes": 64 * c,
                      "cache_bytes_analytic": 64 * c} for c in (256, 1024, 2048)}
    runs = [{"seed": s, "dir": "", "tokens_per_s": 900.0 + 100 * s, "unigram_loss": 3.2,
             "load": {"other_cores": 0.0, "seconds": 1.0, "loadavg_1min": 1.0},
             "ce_curve": [[1, 5.5], [2, 4.0 + s], [3, 3.0 + s]], "loss_curve": [[1, 5.6], [2, 4.1], [3, 3.1]],
             "val_curve": [[2, 4.2 + s, 6.0], [3, 3.2 + s, 4.6]]} for s in range(len(val_loss))]
    return {"label": label, "spec": label, "kind": "preset", "status": "ok", "seconds": 10.0, "tokenizer": "bytes",
            "params": {"total": 4e6, "active": 2e6}, "train": {"steps": 3, "tokens": 100, "runs": runs},
            "val_loss_seeds": val_loss, "val_bpb_seeds": val_bpb, "needle_seeds": needle,
            "unigram": {"loss": 3.0, "bpb": 4.3}, "speed": speed,
            "speed_load": {"other_cores": other_cores, "seconds": 2.0, "loadavg_1min": 1.5},
            "mqar": ({"twin": "A A", "acc": {"P2@T64": 0.5, "P4@T64": 0.25}, "chance": 1 / 32} if mqar
                     else {"skipped": "too large", "chance": 1 / 32})}


def _summary(models):
    return {"schema": "hybridlm.compare/2", "settings": CompareConfig.quick(needle_contexts=[128]).to_dict(),
            "machine": report.machine(), "seconds": 12.0, "models": models,
            "failed": [m["label"] for m in models if m["status"] != "ok"]}


@pytest.fixture
def written(tmp_path):
    good = _model("good", [2.0, 2.5], [2.9, 3.6])
    loaded = _model("loaded", [3.5, 3.1], [5.0, 4.5], other_cores=1.2, mqar=False)  # worse than unigram (3.0)
    bad = {"label": "bad", "spec": "bad.json", "kind": "config", "status": "failed", "seconds": 1.0,
           "error": ERROR, "traceback": TRACEBACK}
    (tmp_path / "sweep.png").write_bytes(b"left by an earlier run")
    summary = _summary([good, loaded, bad])
    figures = report.write_all(summary, tmp_path)
    return summary, figures, (tmp_path / "report.md").read_text(), tmp_path


def _table_row(text, label, section="## Results"):
    rows = [ln for ln in text.split(section)[1].splitlines() if ln.startswith(f"| {label} |")]
    assert rows, label
    return rows[0]


def test_figures_listed_are_the_figures_on_disk(written):
    _, figures, text, out = written
    on_disk = sorted(p.name for p in out.glob("*.png"))
    assert sorted(figures) == on_disk == sorted(re.findall(r"\]\((\w+\.png)\)", text))
    assert "sweep.png" not in on_disk  # not a sweep: the stale file is gone, and not linked
    assert set(on_disk) == {"loss_curves.png", "pareto.png", "context_cost.png", "recall.png"}


def test_a_failure_takes_one_table_line_and_its_details_below(written):
    _, _, text, _ = written
    row = _table_row(text, "bad")
    results = text.split("## Results")[1].split("###")[0]
    assert row in results and row.count("|") - row.count("\\|") == 8  # the results table's 7 columns
    assert "bad \\| value" in row and "second line" not in row
    failures = text.split("## Failures")[1].split("## How far")[0]
    assert ERROR in failures and TRACEBACK in failures


def test_table_numbers_are_the_seed_means_and_spreads(written):
    summary, _, text, _ = written
    row = [c.strip() for c in _table_row(text, "good").strip("|").split(" | ")]
    assert row[1] == "2" and row[3] == "2.250 ± 0.250" and row[4] == "3.250 ± 0.350"
    assert row[6] == "0.25 ± 0.25 / +0.20 ± 0.10"  # needle exact and gain at 128, over the two seeds
    agg = summary["models"][0]["aggregate"]
    assert agg["val_loss"]["mean"] == pytest.approx(2.25) and agg["ce_curve"][-1] == [3, 3.5, 3.0, 4.0]
    assert "2.250 ± 0.250" in text.split("### MQAR")[0]


def test_baseline_chance_and_worse_than_unigram(written):
    _, _, text, _ = written
    base = _table_row(text, "*baseline: unigram (bytes) / chance*")
    assert "3.000" in base and "4.300" in base and "0.03" in base and "0.0001" in base
    assert "*chance (1/32 values)*" in text and "*chance (guess one of 9000 numbers)*" in text
    assert "**Worse than the unigram baseline** (mean validation loss at or above it): loaded." in text
    assert "loaded did not beat the unigram baseline" in text.split("## How far")[1]


def test_load_warning_in_speed_section_and_trust(written):
    _, _, text, _ = written
    speed = text.split("### Speed and memory")[1].split("###")[0]
    assert speed.lstrip().startswith("**Warning: timed under load.**") and "loaded prefill/decode timing (1.20 cores)" in speed
    assert "good prefill" not in speed
    assert "Warning: timed under load" in text.split("## How far this can be trusted")[1]


def test_settings_print_contexts_plainly(written):
    _, _, text, _ = written
    assert "contexts 256, 1K, 2K" in text and "['256'" not in text


def test_no_model_finished_writes_a_report_without_figures(tmp_path):
    bad = {"label": "bad", "spec": "x", "kind": "preset", "status": "failed", "error": "E: x", "traceback": "t"}
    assert report.write_all(_summary([bad]), tmp_path) == []
    assert not list(tmp_path.glob("*.png")) and "No model finished." in (tmp_path / "report.md").read_text()


# -- the verdict: its sentences follow from the numbers --------------------------------------------------------
def _lay(att, lin, mixers, base="b", experts=8, model_type=None):
    return {"attention": att, "linear": lin, "mixers": mixers, "model_type": model_type,
            "moe_layers": 8 if experts else 0, "experts": experts, "top_k": 2, "base": base}


HYB, ATT, LIN = _lay(2, 6, "G G G A G G G A"), _lay(8, 0, "A A A A A A A A"), _lay(0, 8, "G G G G G G G G")


def _fam(label, loss, mqar, layout, cache_per_token, total=4e6, active=2e6):
    """A finished model: validation loss per seed (unigram 3.3), MQAR per recall-twin seed (a list) or one twin
    (a float), its layout, its cache bytes per token (exact)."""
    m = _model(label, loss, [x / 0.7 for x in loss])
    m.update(unigram={"loss": 3.3, "bpb": 4.7}, layout=layout, params={"total": total, "active": active})
    if isinstance(mqar, list):
        m["mqar_seeds"] = [{"P4@T64": a, "P16@T64": a} for a in mqar]
    else:
        m["mqar"]["acc"] = {"P4@T64": mqar, "P16@T64": mqar}
    for c, sp in m["speed"].items():
        sp["cache_bytes"] = sp["cache_bytes_analytic"] = cache_per_token * int(c)
    return m


def _verdict(models, **settings):
    from hybridlm.analysis import claims, verdict
    s = _summary(models)
    s["settings"].update(settings)
    return "\n".join(verdict.verdict_lines(s) + claims.claim_lines(s))


def _line(text, start):
    return next(ln for ln in text.splitlines() if ln.startswith(start))


ATTENTION = ("tiny-attention", [2.00, 2.02, 1.98], [0.95, 0.96, 0.94], ATT, 64)
LINEAR = ("tiny-gdn", [2.60, 2.62, 2.58], [0.10, 0.12, 0.08], LIN, 1)


def test_verdict_names_a_clear_winner_and_ties_within_noise():
    # hybrid 2.03 ± sd 0.02 against attention 2.00 ± 0.02 (n = 3): t = 1.84, df 4, p = 0.14: a tie; both far
    # below all-linear. MQAR: attention 0.95 beats the hybrid's 0.80 (t = 9.2) and all-linear's 0.10.
    text = _verdict([_fam(*ATTENTION), _fam("tiny-hybrid", [2.03, 2.05, 2.01], [0.80, 0.82, 0.78], HYB, 16),
                     _fam(*LINEAR)])
    loss = _line(text, "- **validation loss**")
    assert "no single winner: tiny-attention and tiny-hybrid tie for first within noise" in loss
    assert "significantly behind: tiny-gdn" in loss and "Welch p = 0.14" in loss
    mqar = _line(text, "- **MQAR accuracy (mean over settings)**")
    assert "**tiny-attention** wins with 0.95 [0.93, 0.97]" in mqar and "beats all 2 others" in mqar
    assert "the next best, tiny-hybrid (0.80 [0.75, 0.85]), is 0.15 lower" in mqar
    # claim (a): quality kept (tie), recall kept (82% of the gap, above all-linear), cache 16/64 = 25%
    claim = _line(text, "**Claim (a)**")
    assert "**held at this budget**" in claim
    hybrid = _line(text, "- tiny-hybrid (6:2 linear:attention)")
    assert "**held**" in hybrid and "recovers 82% of the attention / all-linear gap" in hybrid
    assert "25% of attention's" in hybrid


def test_verdict_refutes_claim_a_when_the_hybrid_is_no_better_than_all_linear():
    text = _verdict([_fam(*ATTENTION), _fam("tiny-hybrid", [2.59, 2.61, 2.63], [0.12, 0.10, 0.14], HYB, 16),
                     _fam(*LINEAR)])
    assert "**did not hold at this budget**" in _line(text, "**Claim (a)**")
    assert "significantly below attention" in _line(text, "- tiny-hybrid")
    assert "**tiny-attention** wins" in _line(text, "- **validation loss**")


def test_claim_a_when_all_linear_beats_attention_on_quality():
    # what a default run measured: all-linear 2.45 beats attention 2.69 on loss; a hybrid tying attention (or beating
    # it) keeps at least attention's quality; one tying everything establishes nothing
    att = ("tiny-attention", [2.70, 2.68, 2.72], [0.95, 0.96, 0.94], ATT, 64)
    lin = ("tiny-gdn", [2.45, 2.47, 2.43], [0.10, 0.12, 0.08], LIN, 1)
    text = _verdict([_fam(*att), _fam("tiny-hybrid", [2.44, 2.46, 2.42], [0.94, 0.95, 0.93], HYB, 16), _fam(*lin)])
    hybrid = _line(text, "- tiny-hybrid (6:2 linear:attention)")
    assert "**held**" in hybrid and "Quality, validation loss: beats attention" in hybrid
    tie = _verdict([_fam(*att), _fam("tiny-hybrid", [2.69, 2.71, 2.67], [0.94, 0.95, 0.93], HYB, 16), _fam(*lin)])
    assert "all-linear is better than attention here" in _line(tie, "- tiny-hybrid (6:2")
    flat = ("tiny-gdn", [2.70, 2.68, 2.72], [0.10, 0.12, 0.08], LIN, 1)
    none = _verdict([_fam(*att), _fam("tiny-hybrid", [2.69, 2.71, 2.67], [0.94, 0.95, 0.93], HYB, 16), _fam(*flat)])
    assert "attention and all-linear tie within noise" in _line(none, "- tiny-hybrid (6:2")


def test_near_chance_recall_and_one_seed_are_not_established():
    chance = [0.03, 0.04, 0.035]  # chance is 1/32 = 0.031: every model within 0.05 of it
    text = _verdict([_fam("tiny-attention", ATTENTION[1], chance, ATT, 64),
                     _fam("tiny-hybrid", [2.03, 2.05, 2.01], chance, HYB, 16),
                     _fam("tiny-gdn", LINEAR[1], chance, LIN, 1)])
    mqar = _line(text, "- **MQAR accuracy (mean over settings)**")
    assert "not established at this budget: the best model" in mqar and "is at chance, 0.03" in mqar
    assert "**not established at this budget**" in _line(text, "**Claim (a)**")
    assert "attention itself is at chance" in _line(text, "- tiny-hybrid")
    # one recall twin per model (the current default): no interval, no winner, whatever the point estimates
    one = _verdict([_fam("tiny-attention", ATTENTION[1], 0.9, ATT, 64), _fam("tiny-gdn", LINEAR[1], 0.1, LIN, 1)])
    assert "not established at this budget: one seed per model, so no interval" in _line(one, "- **MQAR accuracy (mean")
    assert "**tiny-attention** wins" in _line(one, "- **validation loss**")  # its two seeds per model still test


def test_overlapping_intervals_tie_everyone():
    text = _verdict([_fam("a", [2.0, 2.2, 2.1], 0.5, ATT, 64), _fam("b", [2.05, 2.25, 2.15], 0.5, LIN, 1)])
    assert "not established at this budget: all 2 models tie within noise" in _line(text, "- **validation loss**")


def test_claim_b_needs_matched_active_parameters():
    text = _verdict([_fam(*ATTENTION), _fam(*LINEAR)])
    b = _line(text, "**Claim (b)**")
    assert "cannot be tested by this run" in b and "`--sweep-sparsity`" in b
    sparse = _fam("moe-16x", [2.00, 2.01, 1.99], 0.5, HYB, 16, total=30e6, active=2e6)
    dense = _fam("moe-1x", [2.30, 2.31, 2.29], 0.5, HYB, 16, total=2.2e6, active=2e6)
    text = _verdict([dense, sparse])
    assert "**held**" in _line(text, "**Claim (b)**")
    assert "- moe-16x (total/active 15.0) against moe-1x (1.1)" in text
    tied = _verdict([_fam("moe-1x", [2.0, 2.2, 2.1], 0.5, HYB, 16, total=2.2e6),
                     _fam("moe-16x", [2.05, 2.25, 2.15], 0.5, HYB, 16, total=30e6)])
    assert "not established at this budget (tie within noise)" in tied


def test_group_by_origin():
    china = _fam("tiny-hybrid", [2.00, 2.02, 1.98], [0.9, 0.92, 0.88], HYB, 16)
    west = _fam("tiny-jamba", [2.40, 2.42, 2.38], [0.5, 0.52, 0.48], _lay(1, 7, "M M M M A M M M", "j"), 8)
    base = _fam(*LINEAR)
    assert "By lab origin" not in _verdict([china, west, base])
    text = _verdict([china, west, base], group_by="origin")
    assert "| Chinese labs (the compute-constrained path) | Qwen (Alibaba) | tiny-hybrid |" in text
    assert "| Western labs (the compute-abundant path) | AI21 Labs (Jamba) | tiny-jamba |" in text
    assert "| project baselines (no lab) | - | tiny-gdn |" in text
    loss = _line(text, "- **validation loss**: Chinese labs' best")
    assert "tiny-hybrid 2.000 [1.950, 2.050]" in loss and "the Chinese labs' lead, 0.400 nats/token lower" in loss


def test_full_scale_rows_come_from_the_cost_accounting():
    from hybridlm.analysis import families, verdict
    from hybridlm.analysis.accounting import Assumptions, load_meta, serving_point
    from hybridlm.analysis.hardware import PRICES, get_hardware
    rows = families.full_scale(["tiny-jamba", "tiny-gdn", "ratio-3to1"])
    assert [r["label"] for r in rows] == ["tiny-jamba", "tiny-gdn"] and rows[1]["full_scale"] is None
    model = load_meta("jamba-1.5-large")
    assert rows[0]["total"] == model.num_params(mtp=False) == 398_555_145_696
    p = serving_point(model, 1024 ** 2, get_hardware("910c"), Assumptions(usd_per_hour=PRICES["910c"].usd_per_hour))
    assert rows[0]["cache_bytes"][str(1024 ** 2)] == p["cache_bytes"]["total"] == model.cache_bytes(1024 ** 2)
    assert rows[0]["usd_per_mtok"][f"910c@{1024 ** 2}"] == p["usd_per_million_output_tokens"]
    lines = "\n".join(verdict.full_scale_lines({"full_scale": rows}))
    assert "| tiny-jamba | jamba-1.5-large | AI21 Labs (Jamba) | 94.1B / 398.6B |" in lines
    assert "| tiny-gdn | none" in lines and "Huawei Ascend 910C $2.50/device-hour (assumption:" in lines
    assert "decode $/M out, Ascend 910C @1M" in lines


def test_the_report_opens_with_the_verdict(tmp_path):
    models = [_fam(*ATTENTION), _fam("tiny-hybrid", [2.03, 2.05, 2.01], [0.80, 0.82, 0.78], HYB, 16), _fam(*LINEAR)]
    summary = _summary(models)
    summary["full_scale"] = [{"label": "tiny-gdn", "full_scale": None}]
    for m in models:
        m["aggregate"] = report.aggregate(m)
    summary["figures"] = []
    text = report.markdown(summary)
    heads = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert heads[:5] == ["## Verdict", "## Statistics", "## Full scale", "## Settings", "## Results"]
    assert heads[-2:] == ["## How far this can be trusted", "## Definitions"]
    stats_row = _table_row(text, "tiny-hybrid", "## Statistics")
    assert "2.030 [1.980, 2.080] (1)" in stats_row and "0.80 [0.75, 0.85] (2)" in stats_row
    assert "0.80 ± 0.02" in _table_row(text, "tiny-hybrid")  # the MQAR cell carries its spread over the twins
    assert "Welch's t-test" in text.split("## How far this can be trusted")[1]


def test_every_default_family_has_an_origin_and_a_layout_class():
    from hybridlm.analysis import families
    from hybridlm.analysis.compare import default_presets
    from hybridlm.presets import get_config
    for name in default_presets():  # a new tiny preset joins through TINY or its hf_model_type
        cfg = get_config(name)
        lay = families.layout(cfg)
        assert lay["attention"] + lay["linear"] > 0, name
        assert not families.origin_group(name, cfg.hf_model_type).startswith("origin unknown"), name
    assert families.origin_group("tiny-gdn") == families.BASELINE
    assert families.origin_group("x", "granitemoehybrid") == families.ORIGINS["west"]
    assert set(families.LABS.values()) == set(families.ORIGINS)


def test_group_by_flag_reaches_the_config(tmp_path):
    from hybridlm.analysis.compare import run_compare
    from hybridlm.cli import build_parser
    from hybridlm.cli.commands.compare import config_from_args
    args = build_parser().parse_args(["compare", "--quick", "--group-by", "origin", "--out", str(tmp_path / "o")])
    assert config_from_args(args).group_by == "origin"
    with pytest.raises(ValueError, match="--group-by 'lab': must be origin"):
        run_compare(CompareConfig.quick(specs=["tiny-gdn"], out=str(tmp_path / "o"), group_by="lab"))
    assert not (tmp_path / "o").exists()  # refused before anything ran
