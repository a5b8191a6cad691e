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
