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


def _table_row(text, label):
    rows = [ln for ln in text.splitlines() if ln.startswith(f"| {label} |")]
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
