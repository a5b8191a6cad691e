"""`hybridlm compare`: one --quick end-to-end run checks every output for every default preset, a failing model
that does not sink the others, and --resume reusing finished work; plus fast checks of the CLI's user errors."""

import json

import pytest

from hybridlm.analysis import families
from hybridlm.analysis.compare import CompareConfig, default_presets, run_compare
from hybridlm.cli import main


def test_default_presets_are_the_tiny_families():
    names = default_presets()
    assert {"tiny-hybrid", "tiny-attention", "tiny-gdn", "tiny-llama4", "tiny-deepseek",
            "tiny-deepseek-v4", "tiny-jamba", "tiny-mamba2-hybrid"} <= set(names)
    assert names[:3] == ["tiny-hybrid", "tiny-attention", "tiny-gdn"]
    assert all(n.startswith("tiny-") for n in names)


@pytest.mark.parametrize("argv, match", [
    (["compare", "no-such-preset", "--quick"], "unknown preset 'no-such-preset'"),
    (["compare", "tiny-gdn", "--sweep-ratio"], "--sweep-ratio trains its own models"),
    (["compare", "tiny-gdn", "--sweep-sparsity"], "--sweep-sparsity trains its own models"),
    (["compare", "--quick", "--budget", "large"], "--quick is --budget quick"),
    (["compare", "--quick", "--recall-steps", "0"], "recall steps=0"),
    (["compare", "--quick", "--seeds", "0"], "--seeds 0"),
])
def test_user_errors_exit_2(argv, match, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    assert match in capsys.readouterr().err


def _png_ok(path):
    import matplotlib.image as mpimg
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100


def _light(**changes) -> CompareConfig:
    """--quick with fewer speed / needle contexts and a shorter recall run: every output and every default preset
    still goes through the whole pipeline, in half the time (the suite's budget)."""
    from hybridlm.analysis.recall import RecallSettings
    return CompareConfig.quick(seeds=2, speed_contexts=[128, 512], needle_contexts=[128, 256],
                               recall=RecallSettings(steps=6, seeds=1, batch_size=8, mqar_pairs=(2, 4),
                                                     eval_mqar_pairs=(2, 4), eval_seq_lens=(64, 128),
                                                     eval_needle_lens=(128,), eval_copy_lengths=(8,), eval_examples=8,
                                                     states=(0.5,)),
                               **changes)


# The end-to-end run's line-up: claim (a)'s three, Llama 4 (the other origin) and SambaY (a twin that keeps its
# context wiring); every tiny family's twin is checked without training in test_every_tiny_familys_recall_twin.
LINEUP = ["tiny-hybrid", "tiny-attention", "tiny-gdn", "tiny-llama4", "tiny-sambay"]


def test_every_tiny_familys_recall_twin_builds_within_its_layer_budget():
    from hybridlm.analysis.recall import twin_config, twin_plan
    from hybridlm.model.model import HybridLM
    from hybridlm.presets import get_config
    for name in default_presets():
        cfg = get_config(name)
        twin = twin_config(cfg, width=64, max_layers=2, state=0.5)
        model = HybridLM(twin, device="meta")
        assert model.num_params() > 0 and twin.d_model == 64
        reads = any(r for _, r in cfg.layer_context_io())
        assert len(twin_plan(cfg, 2)) <= (len(cfg.layer_mixers) if reads else 2), name


def test_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "cmp"
    broken = tmp_path / "broken-hf"  # a directory that is not a loadable checkpoint: reported, not fatal
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "nothing-known"}')
    cfg = _light(specs=LINEUP + [str(broken)], out=str(out), progress=False)
    summary = run_compare(cfg)
    models = {m["label"]: m for m in summary["models"]}
    assert models["broken-hf"]["status"] == "failed" and models["broken-hf"]["error"]
    assert summary["failed"] == ["broken-hf"]
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for name in LINEUP:
        m = models[name]
        assert m["status"] == "ok", m.get("traceback")
        assert m["params"]["total"] > 1e6 and 0 < m["params"]["active"] <= m["params"]["total"]  # = : dense
        assert len(m["val_loss_seeds"]) == len(m["val_bpb_seeds"]) == len(m["needle_seeds"]) == cfg.seeds
        assert all(0 < v < 6 for v in m["val_loss_seeds"]) and all(0 < b < 9 for b in m["val_bpb_seeds"])
        for run in m["train"]["runs"]:  # every family trains: its next-token CE falls, on every seed
            ce = [c for _, c in run["ce_curve"]]
            assert len(ce) == cfg.steps and ce[-1] < ce[0] - 1.0 and run["unigram_loss"] > 0
        assert 2.5 < m["unigram"]["loss"] < 5.5  # bytes of Python source: far below ln 256, far above a trained LM
        assert set(m["needle_seeds"][0]) == {str(c) for c in cfg.needle_contexts}
        assert all(0 <= v <= 1 for v in m["mqar"]["acc"].values()) and len(m["mqar"]["acc"]) >= 4
        assert m["mqar"]["chance"] == 1 / 32  # vocabulary 64: values are one of 32 tokens
        assert any(int(k.split("@T")[1]) > cfg.recall.seq_len for k in m["mqar"]["acc"])  # beyond trained
        twin = m["recall"]["twins"]["s0.5"]
        assert twin["params"] > 0 and twin["state_bytes"] > 0
        assert len(twin["plan"].split()) <= (4 if name == "tiny-sambay" else cfg.recall.max_layers)  # W F G X
        assert set(m["recall"]["seeds"][0]["s0.5"]) >= {"mqar", "needle", "copy", "final_loss"}
        for ctx in cfg.speed_contexts:
            sp = m["speed"][str(ctx)]
            assert sp["prefill_tok_s"] > 0 and sp["decode_ms_per_token"] > 0
            assert sp["cache_bytes"] == sp["cache_bytes_analytic"] > 0
        assert results["models"][list(models).index(name)]["speed_load"]["other_cores"] >= 0
        # the table shows the mean over seeds that results.json holds (not seed 0)
        row = next(ln for ln in report.split("## Results")[1].splitlines() if ln.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        r = results["models"][list(models).index(name)]
        assert cells[3].split(" ± ")[0] == f"{sum(r['val_loss_seeds']) / cfg.seeds:.3f}"
        assert cells[4].split(" ± ")[0] == f"{sum(r['val_bpb_seeds']) / cfg.seeds:.3f}"
    assert [m["label"] for m in results["models"]] == list(models)
    assert "*baseline: unigram (bytes) / chance*" in report and "*chance (1/32 values)*" in report
    assert "### Recall suite" in report
    assert "How far this can be trusted" in report and "Machine" in report
    assert report.index("## Verdict") < report.index("## Statistics") < report.index("## Full scale") < report.index(
        "## Results") and "**Claim (a)**" in report and set(results["statistics"]) >= {"val_loss", "mqar_mean"}
    assert {r["label"] for r in results["full_scale"]} == set(LINEUP) & set(families.TINY)
    failed_rows = [ln for ln in report.splitlines() if ln.startswith("| broken-hf |")]
    assert len(failed_rows) == 1 and "**failed**" in failed_rows[0]
    assert models["broken-hf"]["traceback"].strip() in report.split("## Failures")[1]
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == sorted(summary["figures"]) == ["context_cost.png", "loss_curves.png", "pareto.png", "recall.png"]
    assert all(f"]({f})" in report for f in figures) and "sweep.png" not in report
    for fig in figures:
        _png_ok(out / fig)
    # without a terminal: one flushed line per finished stage (seeds x train + 3 evaluations + 1 recall twin per
    # preset), with the
    # time so far and an estimate of the rest; one line per model
    stages = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    n_stages = len(LINEUP) * (cfg.seeds + 4) + 4
    assert len(stages) == len(LINEUP) * (cfg.seeds + 4)  # the broken model fails before its first
    assert stages[0].startswith(f"[1/{n_stages}] {LINEUP[0]}: train seed 0 done in ")
    assert all(" | elapsed " in ln and ln.endswith(" left") for ln in stages)
    # --resume: finished runs and evaluations are reused; a rerun without it is refused
    again = run_compare(_light(specs=["tiny-gdn"], out=str(out), progress=False, resume=True))
    assert again["models"][0].get("reused") and again["models"][0]["val_bpb_seeds"] == models["tiny-gdn"]["val_bpb_seeds"]
    with pytest.raises(ValueError, match="--resume"):
        run_compare(_light(specs=["tiny-gdn"], out=str(out), progress=False))


def test_a_failing_model_exits_1_and_the_report_is_still_written(tmp_path, capsys):
    from hybridlm.cli import build_parser
    from hybridlm.cli.commands.compare import cmd_compare
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")  # training it raises at once
    out = tmp_path / "o"
    assert cmd_compare(build_parser().parse_args(["compare", str(bad), "--quick", "--out", str(out)])) == 1
    captured = capsys.readouterr()
    assert "bad: FAILED after" in captured.out and "1 of 1 models failed: bad" in captured.err
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    error = results["models"][0]["error"]
    assert results["failed"] == ["bad"] and "bad.json" in error
    rows = [ln for ln in report.splitlines() if ln.startswith("| bad |")]
    assert len(rows) == 1 and "**failed**: ValueError: " in rows[0]
    failures = report.split("## Failures")[1]
    assert error in failures and "Traceback (most recent call last)" in failures


def test_out_naming_a_file_is_refused_before_anything_runs(tmp_path, capsys):
    f = tmp_path / "report.txt"
    f.write_text("")
    with pytest.raises(ValueError, match=f"--out {f}: is a file, not a directory"):
        run_compare(CompareConfig.quick(specs=["tiny-gdn"], out=str(f)))
    assert main(["compare", "tiny-gdn", "--quick", "--out", str(f)]) == 2
    assert f"--out {f}: is a file" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--speed-contexts", "abc"), ("--needle-contexts", "0"),
                                         ("--speed-contexts", "-256"), ("--needle-contexts", "1K,,2K")])
def test_bad_context_lists_exit_2_naming_the_value(flag, value, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--quick", f"{flag}={value}", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: '{value}' is not a context list like 256,1K,8K" in err and "Traceback" not in err


def test_progress_lines_without_a_terminal(capsys):
    from hybridlm.analysis.compare import Progress
    with Progress({"a": 2, "b": 3}, bars=False) as prog:
        prog.start("a")
        prog.stage("a", "train seed 0")
        prog.stage("a", "validation")
        prog.finish("a", {"status": "ok", "seconds": 1.0})
        prog.start("b")
        prog.stage("b", "validation")
        prog.finish("b", {"status": "failed", "seconds": 2.0, "error": "ValueError: x\nmore"})
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(" done in ")[0] for ln in lines if ln.startswith("[")] == [
        "[1/5] a: train seed 0", "[2/5] a: validation", "[3/5] b: validation"]
    assert lines[2] == "a: ok in 0:01" and lines[-1] == "b: FAILED after 0:02: ValueError: x"
    assert prog.done == 5  # b's two stages that never ran count as done


def test_load_of_other_processes_is_measured():
    import subprocess
    import sys

    from hybridlm.analysis.evals import measure_load
    with measure_load() as load:  # a child spinning one core for ~1 s while this process sleeps
        subprocess.run([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"],
                       check=True)
    assert load["seconds"] >= 1.0 and load["other_cores"] > 0.5 and load["loadavg_1min"] >= 0
