"""The CLI: each command runs from a spec (preset, config file, checkpoint directory) and user errors exit 2
with a one-line message naming the problem."""

import json

import pytest
import torch

from hybridlm import HybridLM, get_config
from hybridlm.cli import main


def test_presets_lists_counts(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "qwen3-next-80b-a3b" in out and "79.674B" in out and "81.325B" in out and "3.875B" in out


def test_info_shows_the_plan(capsys):
    assert main(["info", "qwen3-next-80b-a3b"]) == 0
    out = capsys.readouterr().out
    assert out.count("gated deltanet 16qk/32v") == 36 and out.count("attention 16q/2kv x 256") == 12
    assert "79,674,391,296" in out and "3,563,764,480" in out


def test_generate_from_checkpoint_matches_api(tmp_path, capsys):
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-hybrid")).eval()
    model.save_hf(tmp_path)
    assert main(["generate", str(tmp_path), "--prompt", "abc", "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    want = model.generate(torch.tensor([list(b"abc")]), max_new_tokens=5)[0, 3:].tolist()
    assert out == "abc" + bytes(want).decode("utf-8", errors="replace") + "\n"


def test_generate_from_config_file(tmp_path, capsys):
    path = tmp_path / "cfg.json"
    get_config("tiny-gdn").to_json(path)
    assert main(["generate", str(path), "--prompt", "x", "--max-new-tokens", "3", "--temperature", "0.8",
                 "--top-p", "0.9"]) == 0
    assert capsys.readouterr().out.startswith("x")


@pytest.mark.parametrize("argv, match", [
    (["info", "no-such-model"], "unknown preset 'no-such-model'"),
    (["generate", "qwen3-next-80b-a3b", "--prompt", "hi"], "GiB in fp32"),
    (["generate", "tiny-hybrid", "--prompt", "hi", "--top-p", "2"], "top_p=2.0"),
])
def test_user_errors_exit_2(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_bad_config_file(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**get_config("tiny-hybrid").to_dict(), "mixer_pattern": "GGGA*3"}))
    assert main(["info", str(path)]) == 2
    assert "mixer_pattern='GGGA*3': expands to 12 layers, num_layers=8" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["cost", "tiny-hybrid", "--context", "-8K"], "'-8K' is not a positive context"),
    (["cost", "tiny-hybrid", "--context", "abc"], "'abc' is not a positive context"),
    (["generate", "tiny-hybrid", "--prompt", "hi", "--max-new-tokens", "1000000000"], "max_seq_len 2048"),
    (["generate", "tiny-hybrid", "--prompt", "hi", "--max-new-tokens", "10", "--max-len", "8"], "max_len=8"),
])
def test_values_reach_their_checks(argv, match, capsys):
    """A value starting with '-' is not mistaken for a flag; generation refuses to run past the model's context."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, match", [
    (["generate", "tiny-hybrid", "--prompt", "hi", "--stop", "abc"], "'abc' is not a comma-separated list"),
    (["train", "tiny-hybrid", "--step", "5"], "unrecognized arguments: --step"),  # not silently --steps
    (["generate", "tiny-hybrid", "--prompt", "hi", "--max-new", "5"], "unrecognized arguments: --max-new"),
])
def test_argparse_errors_name_the_flag(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and match in capsys.readouterr().err


def test_generate_past_max_seq_len_when_asked(capsys):
    cfg = get_config("tiny-hybrid").replace(max_seq_len=8)
    model = HybridLM(cfg).eval()
    with pytest.raises(ValueError, match="max_seq_len 8"):
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=6)
    assert model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=6, max_len=9).shape == (1, 9)


def test_ctrl_c_keeps_what_was_generated(monkeypatch, capsys):
    def stream(self, ids, max_new_tokens=0, **kwargs):
        for t in b"xyz":
            yield torch.tensor([t])
        raise KeyboardInterrupt

    monkeypatch.setattr(HybridLM, "stream", stream)
    assert main(["generate", "tiny-hybrid", "--prompt", "ab", "--max-new-tokens", "9"]) == 130
    out = capsys.readouterr()
    assert out.out == "abxyz\n" and "interrupted after 3 new tokens" in out.err


def test_train_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("not a directory")
    assert main(["train", "tiny-hybrid", "--steps", "1", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"--out {f}: is a file" in err and "Traceback" not in err


def test_info_on_a_broken_hf_config(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "qwen3_next", "num_hidden_layers": "eight"')
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("preset, stored", [("deepseek-v3", "684,489,845,504"), ("kimi-k2", "1,026,408,232,448")])
def test_info_shows_the_checkpoint_total(preset, stored, capsys):
    """The checkpoint holds more numbers than the model's parameters (routing biases, the MTP layer's own embedding
    and head): the totals the published checkpoints hold."""
    assert main(["info", preset]) == 0
    assert f"checkpoint total: {stored}" in capsys.readouterr().out
