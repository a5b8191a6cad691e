"""`hybridlm train` under torchrun: 2 processes on gloo with FSDP2 (fully_shard) give the losses of one process on
the same global batch, stop together on a NaN keeping the last checkpoint, and resume from it."""

import json
import os
import subprocess
import sys

import pytest
import torch
from test_train import metrics, setup_run

from hybridlm.interop.checkpoint import Checkpoint
from hybridlm.training.loop import train

# Two ranks each run half of the global batch and FSDP2 averages their gradients; the reference is one process on
# the same global batch in two micro-batches (grad_accum=2), so the MoE balance loss, a per-micro-batch statistic,
# means the same thing in both. What differs is only the summation order: measured max relative loss difference
# over 6 steps 0.0 (bitwise equal here; fp32, CPU). Asserted for every step's loss, gradient norm and validation loss:
RTOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread


def torchrun_cmd(cfg, *extra: str, nproc: int = 2) -> list[str]:
    """`hybridlm train` under torchrun on `nproc` CPU processes with cfg's run settings (later flags override)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "hybridlm.cli", "train", cfg.model, "--data", cfg.data, "--out", cfg.out,
            "--steps", str(cfg.steps), "--batch-size", str(cfg.batch_size), "--seq-len", str(cfg.seq_len),
            "--warmup-steps", str(cfg.warmup_steps), "--save-every", str(cfg.save_every),
            "--eval-every", str(cfg.eval_every), "--val-sequences", str(cfg.val_sequences),
            "--log-every", "1", "--no-progress", "--device", "cpu", *extra]


def torchrun(cfg, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(torchrun_cmd(cfg, *extra, nproc=nproc), env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_two_ranks_match_one_process_stop_on_nan_and_resume(tmp_path):
    kw = {"steps": 6, "batch_size": 4, "seq_len": 33, "warmup_steps": 2, "save_every": 3, "eval_every": 3, "val_sequences": 6}
    ref = train(setup_run(tmp_path / "one", grad_accum=2, **kw))
    cfg = setup_run(tmp_path / "two", **kw)

    # Run 1: a NaN at step 5 stops both ranks; the step-3 checkpoint (dcp: each rank wrote its shards) stays.
    first = torchrun(cfg, "--debug-nan-step", "5")
    assert first.returncode != 0
    assert "hybridlm train: error: step 5: loss is nan" in first.stderr
    assert "fully_shard" not in first.stderr  # no traceback from the sharded model
    ck = Checkpoint.open(cfg.out)
    assert ck.step == 3 and ck.json("trainer.json")["world_size"] == 2
    assert torch.equal(ck.rng()["cpu"][0], ck.rng()["cpu"][1])  # one RNG row per rank

    # Run 2: resume on 2 ranks and finish.
    second = torchrun(cfg, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    recs = metrics(tmp_path / "two" / "run")
    losses = [r["loss"] for r in recs if "loss" in r]
    gnorm = [r["gnorm"] for r in recs if "loss" in r]
    vals = [r["val_loss"] for r in recs if "val_loss" in r]
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3, 4, 5, 6]  # steps 4-6 from the resumed run
    ref_recs = [r for r in metrics(tmp_path / "one" / "run") if "loss" in r]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref.losses), rtol=RTOL, atol=0)
    torch.testing.assert_close(torch.tensor(gnorm), torch.tensor([r["gnorm"] for r in ref_recs]), rtol=RTOL,
                               atol=0)  # the gradient norm too: gradients are averaged over ranks, not summed
    torch.testing.assert_close(torch.tensor(vals), torch.tensor([v["val_loss"] for v in ref.val]), rtol=RTOL, atol=0)
    # The checkpoint's shards, put together, are the 1-process run's weights, to well under one lr step (3e-3).
    a, b = Checkpoint.open(tmp_path / "one" / "run").model_state(), Checkpoint.open(cfg.out).model_state()
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    biases = [k for k in a if k.endswith("expert_bias")]
    assert all(torch.equal(a[k], b[k]) for k in biases)  # loads all-reduced
    assert any(a[k].abs().sum() > 0 for k in biases)  # and the bias really moved
    print(json.dumps({"max_rel_loss_diff": max(abs(x - y) / abs(y) for x, y in zip(losses, ref.losses))}))


def test_muon_under_fsdp2_matches_one_process(tmp_path):
    # Muon gathers each sharded matrix, orthogonalises it whole on every rank and keeps the local shard.
    kw = {"steps": 3, "batch_size": 4, "seq_len": 33, "warmup_steps": 1, "save_every": 0, "eval_every": 0, "optimizer": "muon"}
    ref = train(setup_run(tmp_path / "one", grad_accum=2, **kw))
    cfg = setup_run(tmp_path / "two", **kw)
    run = torchrun(cfg, "--optimizer", "muon")
    assert run.returncode == 0, run.stderr[-3000:]
    losses = [r["loss"] for r in metrics(tmp_path / "two" / "run") if "loss" in r]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref.losses), rtol=RTOL, atol=0)
