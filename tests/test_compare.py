"""`hybridlm compare`: one --quick end-to-end run checks every output for every default preset, a failing model
that does not sink the others, and --resume reusing finished work; plus fast checks of the CLI's user errors."""

import json

import pytest

from hybridlm.cli import main
from hybridlm.compare import CompareConfig, _period, default_presets, run_compare, sweep_specs


def test_default_presets_are_the_tiny_families():
    names = default_presets()
    assert {"tiny-hybrid", "tiny-attention", "tiny-gdn", "tiny-llama4", "tiny-deepseek",
            "tiny-deepseek-v4"} <= set(names)
    assert all(n.startswith("tiny-") for n in names)


def test_period_of_layer_plans():
    assert _period(list("GGGAGGGA")) == list("GGGA")
    assert _period(list("AAAA")) == list("AA")
    assert _period(list("GGGGGGGA")) == list("GGGGGGGA")


def test_sweep_covers_all_attention_to_all_linear(tmp_path):
    from hybridlm.config import ModelConfig
    plans = [ModelConfig.from_json(p).layer_mixers for _, p in sweep_specs(tmp_path)]
    linear = [plan.count("G") for plan in plans]
    assert linear == [0, 4, 6, 7, 8] and all(len(p) == 8 for p in plans)


@pytest.mark.parametrize("argv, match", [
    (["compare", "no-such-preset", "--quick"], "unknown preset 'no-such-preset'"),
    (["compare", "tiny-gdn", "--sweep-ratio"], "--sweep-ratio trains its own models"),
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


def test_quick_end_to_end(tmp_path):
    out = tmp_path / "cmp"
    broken = tmp_path / "broken-hf"  # a directory that is not a loadable checkpoint: reported, not fatal
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "nothing-known"}')
    cfg = CompareConfig.quick(specs=default_presets() + [str(broken)], out=str(out), progress=False)
    summary = run_compare(cfg)
    models = {m["label"]: m for m in summary["models"]}
    assert models["broken-hf"]["status"] == "failed" and models["broken-hf"]["error"]
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for name in default_presets():
        m = models[name]
        assert m["status"] == "ok", m.get("traceback")
        assert m["params"]["total"] > 1e6 and 0 < m["params"]["active"] < m["params"]["total"]
        assert 0 < m["val_loss"] < 6 and 0 < m["val_bpb"] < 9
        curve = [loss for _, loss in m["train"]["runs"][0]["curve"]]
        assert m["train"]["tokens_per_s"] > 0 and curve[-1] < curve[0] - 1.0  # every family trains: its loss falls
        assert set(m["needle"]) == {str(c) for c in cfg.needle_contexts}
        assert all(0 <= v <= 1 for v in m["mqar"]["acc"].values()) and len(m["mqar"]["acc"]) >= 4
        assert any(int(k.split("@T")[1]) > cfg.mqar.train_seq_len for k in m["mqar"]["acc"])  # beyond trained
        for ctx in cfg.speed_contexts:
            sp = m["speed"][str(ctx)]
            assert sp["prefill_tok_s"] > 0 and sp["decode_ms_per_token"] > 0
            assert sp["cache_bytes"] == sp["cache_bytes_analytic"] > 0
        assert f"| {name} |" in report
    assert [m["label"] for m in results["models"]] == list(models)
    assert "failed" in report and "How far this can be trusted" in report and "AMD" in report or "Machine" in report
    for fig in ("loss_curves.png", "pareto.png", "context_cost.png", "recall.png"):
        _png_ok(out / fig)
    # --resume: finished runs and evaluations are reused; a rerun without it is refused
    again = run_compare(CompareConfig.quick(specs=["tiny-gdn"], out=str(out), progress=False, resume=True))
    assert again["models"][0].get("reused") and again["models"][0]["val_bpb"] == models["tiny-gdn"]["val_bpb"]
    with pytest.raises(ValueError, match="--resume"):
        run_compare(CompareConfig.quick(specs=["tiny-gdn"], out=str(out), progress=False))
