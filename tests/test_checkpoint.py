"""Checkpoints: exact round trips through safetensors + JSON, completeness checks, pruning, SIGKILL at random
moments during checkpoint writes, loading in `generate` and export to a Hugging Face checkpoint."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_train import setup_run, small_config

from hybridlm import HybridLM
from hybridlm.interop.checkpoint import Checkpoint, export_hf, optimizer_from_files, optimizer_to_files, resolve, save
from hybridlm.training.optim import build_optimizer
from hybridlm.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_optimizer_state_round_trips_exactly(name):
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    model = HybridLM(small_config())
    opt = build_optimizer(model, name, 1e-3, 0.1, (0.9, 0.95))
    x = torch.randint(0, 256, (2, 17))
    for _ in range(2):
        model(x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    opts = StateDictOptions(full_state_dict=True)
    before = get_optimizer_state_dict(model, opt, options=opts)
    tensors, meta = optimizer_to_files(before)
    meta = json.loads(json.dumps(meta))  # what the JSON file gives back
    fresh = build_optimizer(model, name, 5e-2, 0.0, (0.5, 0.5))  # different hyperparameters, no state
    set_optimizer_state_dict(model, fresh, optimizer_from_files(tensors, meta), options=opts)
    after = get_optimizer_state_dict(model, fresh, options=opts)
    as_json = lambda groups: json.loads(json.dumps(groups))
    assert as_json(before["param_groups"]) == as_json(after["param_groups"])  # hyperparameters restored too
    assert before["state"].keys() == after["state"].keys()
    for k, st in before["state"].items():
        for key, v in st.items():
            assert torch.equal(v, after["state"][k][key]), (k, key)


def _fake_save(out, step, keep=2):
    model = HybridLM(small_config())
    return save(out, step, model_state=model.state_dict(), optim_state={"state": {}, "param_groups": []},
                trainer={"scheduler": {"step": step}}, model_config_json=small_config().to_json(),
                train_config={}, rng={"cpu": torch.get_rng_state()[None]}, keep=keep)


def test_save_layout_pointer_pruning_and_stale_temporaries(tmp_path):
    (tmp_path / "step_000009.tmp").mkdir(parents=True)  # left by a killed save
    for step in (1, 2, 3):
        _fake_save(tmp_path, step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000002", "step_000003"]
    assert (tmp_path / "latest").read_text() == "step_000003\n"
    files = sorted(p.name for p in (tmp_path / "step_000003").iterdir())
    assert all(f.endswith((".json", ".safetensors")) for f in files)  # no pickle anywhere
    assert resolve(tmp_path) == tmp_path / "step_000003"
    _fake_save(tmp_path, 3)  # re-saving a step replaces it whole
    assert resolve(tmp_path).name == "step_000003"


def test_incomplete_or_foreign_directories_are_refused(tmp_path):
    path = _fake_save(tmp_path, 1)
    with open(path / "model.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match=r"model.safetensors: size differs from the manifest \(100 vs \d+ bytes\): "
                                         r"the file was modified or truncated"):
        Checkpoint.open(tmp_path)
    (tmp_path / "latest").write_text("step_000777\n")
    with pytest.raises(ValueError, match="latest names 'step_000777', which does not exist"):
        Checkpoint.open(tmp_path)
    with pytest.raises(ValueError, match="not a hybridlm checkpoint"):
        Checkpoint.open(tmp_path / "nothing")


def test_sigkill_while_writing_checkpoints_leaves_a_loadable_latest(tmp_path):
    """A run saving every step is killed -9 six times: at random moments, and the instant a step_*.tmp directory
    (a checkpoint being written) is seen. After each kill the latest checkpoint opens, every file matches its
    manifest, the weights and optimizer load, and the next --resume continues from it."""
    cfg = setup_run(tmp_path, steps=10_000, save_every=1, eval_every=0, keep=2, seq_len=17, batch_size=2)
    cmd = [sys.executable, "-m", "hybridlm.cli", "train", cfg.model, "--data", cfg.data, "--out", cfg.out,
           "--steps", "10000", "--save-every", "1", "--eval-every", "0", "--keep", "2", "--seq-len", "17",
           "--batch-size", "2", "--log-every", "1000", "--no-progress", "--device", "cpu", "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run, rng = tmp_path / "run", random.Random(0)
    steps_seen, killed_mid_write = [], 0
    for attempt in range(6):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            start = steps_seen[-1] if steps_seen else 0
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None:  # wait until this process has saved twice
                if (run / "latest").exists() and int((run / "latest").read_text().strip()[5:] or 0) >= start + 2:
                    break
                time.sleep(0.01)
            assert proc.poll() is None, proc.stderr.read().decode()
            if attempt % 2:
                while time.time() < deadline and not any(p.suffix == ".tmp" for p in run.iterdir()):
                    pass  # busy-wait: kill inside the write window
                killed_mid_write += 1
            else:
                time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        ck = Checkpoint.open(run)  # checks every file against the manifest
        ck.load_model()
        ck.optimizer_state()
        assert ck.json("trainer.json")["data"]["index"] == ck.step * 2
        steps_seen.append(ck.step)
    assert killed_mid_write == 3
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]  # each restart resumed


def test_export_to_hugging_face_and_generate(tmp_path):
    train(setup_run(tmp_path / "biased", steps=3))  # an odd count of +-gamma steps: the bias cannot return to 0
    with pytest.raises(ValueError, match="non-zero expert_bias .* pass --drop-expert-bias"):
        export_hf(tmp_path / "biased" / "run", tmp_path / "refused")
    train(setup_run(tmp_path, steps=2, tokenizer="bpe", vocab_size=300, seq_len=16, bias_update_rate=0.0))
    ck = Checkpoint.open(tmp_path / "run")
    hf = export_hf(tmp_path / "run", tmp_path / "hf")
    assert (hf / "config.json").is_file() and (hf / "tokenizer.json").is_file()
    ours, theirs = ck.load_model().eval(), HybridLM.from_hf(hf).eval()
    x = torch.randint(0, 300, (1, 21))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x).logits)  # fp32 defaults: regrouped matmuls
    from hybridlm.cli import main
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf2")]) == 0
    assert main(["generate", str(tmp_path / "hf2"), "--prompt", "the", "--max-new-tokens", "3"]) == 0
