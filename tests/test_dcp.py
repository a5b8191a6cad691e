"""Sharded (`dcp`) checkpoints under torchrun on gloo: every rank writes its own shard files; a checkpoint written by
2 ranks resumes on 4, that one on 1 process, and every step's loss is the uninterrupted run's; `hybridlm export`
turns one into the single-directory layout or a Hugging Face directory in one process; damaged shards give one-line
errors; a 2-rank run killed -9 inside a save keeps `latest` on the previous checkpoint, which resumes."""

import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_distributed import RTOL, torchrun, torchrun_cmd
from test_faults import one_line_error
from test_train import metrics, setup_run

from hybridlm import HybridLM
from hybridlm.cli import main
from hybridlm.interop import checkpoint as ckpt
from hybridlm.interop.checkpoint import Checkpoint
from hybridlm.training.dcp import PAUSE_ENV
from hybridlm.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread

# One global batch of 4 sequences a step, always as 4 micro-batches of 1 sequence (the MoE balance loss is a
# per-micro-batch statistic): 2 ranks x grad_accum 2, 4 ranks x 1, 1 process x 4. Only the summation order differs.
KW = {"steps": 4, "batch_size": 4, "seq_len": 33, "warmup_steps": 1, "save_every": 1, "eval_every": 0,
      "val_sequences": 4, "keep": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(base, the uninterrupted 1-process run's losses, the 2-rank run stopped after step 2: dcp checkpoints 1, 2)."""
    base = tmp_path_factory.mktemp("dcp")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        ref = train(setup_run(base / "one", grad_accum=4, **KW))
    torch.set_num_threads(n)
    cfg = setup_run(base / "two", grad_accum=2, **KW)
    two = torchrun(cfg, "--grad-accum", "2", "--stop-at", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    return base, ref, cfg


def copy_run(runs, tmp_path, **changes):
    """A copy of the 2-rank run and a TrainConfig (1 process, grad_accum 4) resuming it."""
    base, _, cfg = runs
    shutil.copytree(base / "two", tmp_path / "two")
    c = dataclasses.replace(cfg, out=str(tmp_path / "two" / "run"), model=str(tmp_path / "two" / "model.json"),
                            data=str(tmp_path / "two" / "data.txt"), grad_accum=4, resume=True)
    return dataclasses.replace(c, **changes)


def losses(out) -> list[float]:
    return [r["loss"] for r in metrics(out) if "loss" in r]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def refresh_manifest(d):
    meta = json.loads((d / ckpt.MARKER).read_text())
    meta["files"] = {f.relative_to(d).as_posix(): f.stat().st_size for f in sorted(d.rglob("*"))
                     if f.is_file() and f.name != ckpt.MARKER}
    (d / ckpt.MARKER).write_text(json.dumps(meta))


def test_two_ranks_then_four_then_one_process_match_the_uninterrupted_run(runs, tmp_path, monkeypatch):
    base, ref, _ = runs
    cfg = copy_run(runs, tmp_path)
    out = tmp_path / "two" / "run"
    ck2 = Checkpoint.open(out)
    assert ck2.step == 2 and ck2.layout == "dcp"
    assert sorted(f.name for f in (ck2.path / "model").iterdir()) == [
        "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]
    assert not list(ck2.path.rglob("*.metadata")) and all(f.suffix in (".json", ".safetensors")
                                                          for f in ck2.path.rglob("*") if f.is_file())

    four = torchrun(cfg, "--resume", "--grad-accum", "1", "--stop-at", "3", nproc=4)
    assert four.returncode == 0, four.stderr[-3000:]
    ck3 = Checkpoint.open(out)
    assert ck3.step == 3 and ck3.json("trainer.json")["world_size"] == 4 and ck3.rng()["cpu"].shape[0] == 4
    assert len(list((ck3.path / "optim").glob("*.safetensors"))) == 4  # every rank wrote its own pieces

    # The last step in one process, with unpickling made impossible: DCP's reader of these files never unpickles.
    def refuse(*a, **kw):
        raise AssertionError("unpickled while resuming")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    train(cfg)
    monkeypatch.undo()

    got = losses(out)
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2, 3, 4]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref.losses), rtol=RTOL, atol=0)
    gn = [r["gnorm"] for r in metrics(out) if "loss" in r]
    torch.testing.assert_close(torch.tensor(gn), torch.tensor([r["gnorm"] for r in metrics(base / "one" / "run")
                                                               if "loss" in r]), rtol=RTOL, atol=0)
    # The 4-rank shards, put together in one process, are the uninterrupted run's step-3 state.
    one3 = Checkpoint.open(base / "one" / "run" / "step_000003")
    w_diff = max_diff(ck3.model_state(), one3.model_state())
    a, b = ck3.optimizer_state()["state"], one3.optimizer_state()["state"]
    assert a.keys() == b.keys()
    o_diff = max(max_diff(a[k], b[k]) for k in a)
    assert w_diff < 1e-5 and o_diff < 1e-5, (w_diff, o_diff)
    assert Checkpoint.open(out).layout == "full"  # one process writes the single-directory layout (auto)
    print(json.dumps({"max_rel_loss_diff": max(abs(x - y) / abs(y) for x, y in zip(got, ref.losses)),
                      "per_step_loss_diff": [x - y for x, y in zip(got, ref.losses)],
                      "step3_max_abs_weight_diff": w_diff, "step3_max_abs_optimizer_state_diff": o_diff}))


def test_export_a_sharded_checkpoint_to_the_single_directory_layout_and_to_hugging_face(runs, tmp_path):
    base, ref, _ = runs
    cfg = copy_run(runs, tmp_path)
    out, single, hf = tmp_path / "two" / "run", tmp_path / "single", tmp_path / "hf"
    assert main(["export", str(out), str(single), "--format", "hybridlm"]) == 0
    src, dst = Checkpoint.open(out), Checkpoint.open(single)
    assert dst.layout == "full" and dst.step == 2 and (single / "step_000002" / "model.safetensors").is_file()
    a, b = src.model_state(), dst.model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert max_diff(b, Checkpoint.open(base / "one" / "run" / "step_000002").model_state()) < 1e-5
    # The converted run resumes (one process) onto the uninterrupted run's step 3.
    train(dataclasses.replace(cfg, out=str(single), stop_at=3))
    torch.testing.assert_close(torch.tensor(losses(single)[-1]), torch.tensor(ref.losses[2]), rtol=RTOL, atol=0)
    with pytest.raises(SystemExit):  # argparse: the format is hf or hybridlm
        main(["export", str(out), str(tmp_path / "x"), "--format", "dcp"])
    assert main(["export", str(out), str(single), "--format", "hybridlm"]) == 2  # holds a run already

    assert main(["generate", str(out), "--prompt", "the", "--max-new-tokens", "3"]) == 0  # reads the shards too
    assert main(["export", str(out), str(hf), "--drop-expert-bias"]) == 0  # the default: Hugging Face
    x = torch.randint(0, 256, (1, 19))
    with torch.no_grad():
        torch.testing.assert_close(HybridLM.from_hf(hf).eval()(x).logits, src.load_model().eval()(x).logits)


def _edit_shard(f, edit):
    """Rewrite a shard file with `edit(tensors, offsets)` applied, keeping its DCP header."""
    with safe_open(str(f), framework="pt") as h:
        meta, tensors = h.metadata(), {k: h.get_tensor(k) for k in h.keys()}
    info = json.loads(meta["DCP_SHARDING_INFO"])
    edit(tensors, info)
    save_file(tensors, str(f), metadata={**meta, "DCP_SHARDING_INFO": json.dumps(info)})


def test_missing_truncated_and_misshaped_shards_give_one_line_errors(runs, tmp_path):
    cfg = copy_run(runs, tmp_path)
    d = Checkpoint.open(cfg.out).path
    first = d / "model" / "shard-00001-model-00001-of-00001.safetensors"  # rank 0's pieces
    keep = first.read_bytes()
    first.unlink()
    one_line_error(lambda: train(cfg), f"{first}: missing (the manifest {ckpt.MARKER} lists it)")
    refresh_manifest(d)  # a manifest that agrees: the pieces left no longer tile the tensors
    one_line_error(lambda: train(cfg), f"{d / 'model'}: tensor embed.weight (256, 48): its pieces hold 6144 of "
                   f"12288 elements (in shard-00002-model-00001-of-00001.safetensors): a shard file is missing")
    one_line_error(lambda: Checkpoint.open(cfg.out).load_model(), "a shard file is missing")
    first.write_bytes(keep)
    refresh_manifest(d)

    (d / "model" / "stray.safetensors").write_bytes(keep)
    one_line_error(lambda: Checkpoint.open(cfg.out), "stray.safetensors: not in the manifest")
    (d / "model" / "stray.safetensors").unlink()

    opt = d / "optim" / "shard-00001-model-00001-of-00001.safetensors"
    opt_bytes = opt.read_bytes()
    opt.write_bytes(opt_bytes[: len(opt_bytes) // 2])
    one_line_error(lambda: train(cfg), str(opt), "size differs from the manifest")
    refresh_manifest(d)
    one_line_error(lambda: train(cfg), str(opt), "not a readable safetensors file")
    opt.write_bytes(opt_bytes)
    refresh_manifest(d)

    # DCP writes a replicated tensor (the expert bias) once, from one rank
    holder = next(f for f in sorted((d / "model").iterdir())
                  if "layers.1.ffn.expert_bias" in safe_open(str(f), framework="pt").keys())
    first, first_bytes = holder, holder.read_bytes()
    _edit_shard(first, lambda t, info: t.update({"layers.1.ffn.expert_bias": torch.zeros(5)}))
    refresh_manifest(d)
    one_line_error(lambda: train(cfg), f"{d / 'model'} does not match the model", "mis-shaped (1): "
                   "layers.1.ffn.expert_bias: checkpoint (5,) vs model (4,)")
    two = torchrun(cfg, "--resume")  # both ranks check the headers before DCP reads: both stop, neither hangs
    assert two.returncode != 0
    assert two.stderr.count("hybridlm train: error: ") == 2 and "CheckpointException" not in two.stderr
    assert "layers.1.ffn.expert_bias: checkpoint (5,) vs model (4,)" in two.stderr

    def nan(t, info):
        t["layers.1.ffn.expert_bias"] = torch.full((4,), float("nan"))
    _edit_shard(first, nan)
    refresh_manifest(d)
    one_line_error(lambda: train(cfg), "layers.1.ffn.expert_bias", "NaN/inf")
    first.write_bytes(first_bytes)
    refresh_manifest(d)
    one_line_error(lambda: train(dataclasses.replace(cfg, optimizer="muon")), "optimizer.json",
                   "param groups do not match", "--optimizer")


def test_sigkill_inside_a_two_rank_save_keeps_the_previous_checkpoint(runs, tmp_path):
    base, ref, _ = runs
    cfg = copy_run(runs, tmp_path)
    out = tmp_path / "two" / "run"
    tmp = out / "step_000003.tmp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", PAUSE_ENV: "120"}
    proc = subprocess.Popen(torchrun_cmd(cfg, "--resume", "--grad-accum", "2", "--stop-at", "3"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        # rank 0 pauses once both ranks' shards and the JSON files are in the temporary directory
        while time.time() < deadline and proc.poll() is None and not (tmp / "trainer.json").is_file():
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert len(list((tmp / "model").glob("*.safetensors"))) == 2 and not (tmp / ckpt.MARKER).exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks at once
        proc.wait()
    assert (out / "latest").read_text() == "step_000002\n" and tmp.is_dir() and not (out / "step_000003").exists()
    ck = Checkpoint.open(out)
    assert ck.step == 2 and ck.layout == "dcp"
    train(dataclasses.replace(cfg, stop_at=3, checkpoint_format="dcp"))  # resumes; its own save clears the .tmp
    torch.testing.assert_close(torch.tensor(losses(out)[-1]), torch.tensor(ref.losses[2]), rtol=RTOL, atol=0)
    assert not tmp.exists() and Checkpoint.open(out).step == 3 and Checkpoint.open(out).layout == "dcp"


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_one_process_dcp_resume_is_bitwise_and_a_failed_shard_write_keeps_latest(tmp_path, monkeypatch, optimizer):
    kw = {**KW, "steps": 3, "grad_accum": 2, "optimizer": optimizer}
    straight = train(setup_run(tmp_path / "a", **kw))
    cfg = setup_run(tmp_path / "b", checkpoint_format="dcp", stop_at=2, **kw)
    first = train(cfg)
    assert Checkpoint.open(cfg.out).layout == "dcp"
    second = train(dataclasses.replace(cfg, stop_at=None, resume=True))
    assert first.losses + second.losses == straight.losses  # bitwise: same process layout, same order

    import safetensors.torch  # DCP's writer serialises each rank's file with safetensors.torch.save

    def full_disk(*a, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save", full_disk)
    msg = one_line_error(lambda: train(dataclasses.replace(cfg, steps=4, resume=True)),
                         "step_000004.tmp: could not write the shard files", "No space left on device",
                         "removed the partial step_000004.tmp", "latest still names step_000003")
    assert "Traceback" not in msg
    assert (tmp_path / "b" / "run" / "latest").read_text() == "step_000003\n"
    assert not list((tmp_path / "b" / "run").glob("*.tmp"))
