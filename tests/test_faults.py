"""Bad files and failed writes give one-line ValueErrors (safeio.CheckpointError) naming the file and tensor or
field: each test really corrupts a file (or makes a write fail with ENOSPC) the way a user reported it."""

import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from test_train import setup_run, small_config

import hybridlm.interop.checkpoint as ckpt
from hybridlm import HybridLM
from hybridlm.interop.checkpoint import Checkpoint, export_hf
from hybridlm.model.config import ModelConfig
from hybridlm.interop.safeio import CheckpointError
from hybridlm.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread


def one_line_error(fn, *names, cls=CheckpointError) -> str:
    """fn() raises `cls` with a single-line message containing every one of `names`; returns the message."""
    with pytest.raises(cls) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and all(n in msg for n in names), msg
    return msg


def edit_tensors(path: Path, edit) -> None:
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def refresh_manifest(step_dir: Path) -> None:
    """Make the manifest agree with the files again: a consistent checkpoint whose contents are wrong."""
    meta = json.loads((step_dir / ckpt.MARKER).read_text())
    meta["files"] = {name: (step_dir / name).stat().st_size for name in meta["files"]}
    (step_dir / ckpt.MARKER).write_text(json.dumps(meta))


# -- a trained run, made once and copied per test ----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("trained")
    cfg = setup_run(base, steps=1, save_every=1, eval_every=0, seq_len=17, batch_size=2)
    with torch.random.fork_rng(devices=[]):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        train(cfg)
        torch.set_num_threads(n)
    return base, cfg


@pytest.fixture
def run(trained, tmp_path):
    """(a copy of the trained run's directory, a TrainConfig that resumes it for one more step)."""
    base, cfg = trained
    shutil.copytree(base, tmp_path / "r")
    r = tmp_path / "r"
    resume = dataclasses.replace(cfg, out=str(r / "run"), model=str(r / "model.json"), data=str(r / "data.txt"),
                                 steps=2, resume=True)
    return r / "run", resume


def step_dir(run_dir: Path) -> Path:
    return run_dir / (run_dir / "latest").read_text().strip()


# -- finding 1: a mis-shaped tensor of the same file size ------------------------------------------------------
def test_misshaped_tensor_of_the_same_size_is_named_by_load_export_resume_and_the_cli(run, tmp_path, capsys):
    out, resume = run
    f = step_dir(out) / "model.safetensors"
    size = f.stat().st_size
    edit_tensors(f, lambda t: t.update({"embed.weight": t["embed.weight"].reshape(48, 256)}))
    assert f.stat().st_size == size  # the manifest cannot tell
    Checkpoint.open(out)
    names = ("model.safetensors", "mis-shaped (1)", "embed.weight: checkpoint (48, 256) vs model (256, 48)")
    one_line_error(lambda: Checkpoint.open(out).load_model(), *names)
    one_line_error(lambda: export_hf(out, tmp_path / "hf"), *names)
    assert not (tmp_path / "hf").exists()
    one_line_error(lambda: train(resume), *names)
    from hybridlm.cli import main
    assert main(["generate", str(out), "--prompt", "the", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridlm generate: error: ") and "\n" not in err and "embed.weight" in err, err


def test_nan_and_wrong_dtype_weights_are_named(run):
    out, resume = run
    f = step_dir(out) / "model.safetensors"
    keep = f.read_bytes()

    def nan(t):
        t["norm.weight"][3] = float("nan")
    edit_tensors(f, nan)  # same size: only the values changed
    one_line_error(lambda: Checkpoint.open(out).load_model(), "model.safetensors", "norm.weight", "NaN/inf")
    one_line_error(lambda: train(resume), "norm.weight", "NaN/inf")

    f.write_bytes(keep)
    edit_tensors(f, lambda t: t.update({"norm.weight": t["norm.weight"].double()}))
    refresh_manifest(step_dir(out))
    one_line_error(lambda: Checkpoint.open(out).load_model(), "wrong dtype (1)", "norm.weight: checkpoint F64 vs model F32")


# -- finding 2: an extra tensor, an honest manifest message, optimizer state on resume ----------------------------
def test_extra_tensor_manifest_says_modified_and_the_name_check_names_it(run):
    out, resume = run
    d = step_dir(out)
    manifest = json.loads((d / ckpt.MARKER).read_text())["files"]["model.safetensors"]
    edit_tensors(d / "model.safetensors", lambda t: t.update({"extra.weight": torch.zeros(7)}))
    size = (d / "model.safetensors").stat().st_size
    one_line_error(lambda: Checkpoint.open(out), f"{d / 'model.safetensors'}: size differs from the manifest "
                   f"({size} vs {manifest} bytes): the file was modified or truncated")
    refresh_manifest(d)
    one_line_error(lambda: Checkpoint.open(out).load_model(), "unexpected (1): extra.weight")
    one_line_error(lambda: train(resume), "unexpected (1): extra.weight")


def test_optimizer_state_that_does_not_fit_fails_resume_with_its_name(run):
    out, resume = run
    d = step_dir(out)
    keep = (d / "optimizer.safetensors").read_bytes()
    name = "layers.0.ffn_norm.weight::exp_avg"
    edit_tensors(d / "optimizer.safetensors", lambda t: t.update({name: torch.zeros(5)}))
    refresh_manifest(d)
    one_line_error(lambda: train(resume), "optimizer.safetensors", f"mis-shaped (1): {name}: checkpoint (5,) vs "
                   f"parameter (48,)")

    (d / "optimizer.safetensors").write_bytes(keep)
    edit_tensors(d / "optimizer.safetensors", lambda t: t.update({"no.such.param::exp_avg": torch.zeros(3)}))
    refresh_manifest(d)
    one_line_error(lambda: train(resume), "optimizer.safetensors", "for unknown parameters (1): no.such.param")

    (d / "optimizer.safetensors").write_bytes(keep)
    refresh_manifest(d)
    one_line_error(lambda: train(dataclasses.replace(resume, optimizer="muon")), "optimizer.json",
                   "param groups do not match", "--optimizer")

    (d / "trainer.json").write_text(json.dumps({"step": 1}))
    refresh_manifest(d)
    one_line_error(lambda: train(resume), "trainer.json", "missing field(s) ['scheduler', 'data']")


def test_trainer_and_rng_state_that_do_not_fit_fail_resume(run):
    out, resume = run
    d = step_dir(out)
    trainer = json.loads((d / "trainer.json").read_text())
    (d / "trainer.json").write_text(json.dumps({**trainer, "scheduler": {}}))
    refresh_manifest(d)
    one_line_error(lambda: train(resume), "trainer.json", "scheduler / data state unusable (KeyError: 'step')")
    (d / "trainer.json").write_text(json.dumps(trainer))
    save_file({"cpu": torch.zeros(1, 7, dtype=torch.uint8)}, d / "rng.safetensors")
    refresh_manifest(d)
    one_line_error(lambda: train(resume), "rng.safetensors", "tensor cpu is ((1, 7), 'U8')")


def test_damaged_manifest_pointer_and_json_files(run):
    out, _ = run
    d = step_dir(out)
    (out / "latest").write_text("../../elsewhere\n")
    one_line_error(lambda: Checkpoint.open(out), "latest", "not a step directory name")
    (out / "latest").write_text(d.name + "\n")
    (d / ckpt.MARKER).write_text('{"format": "hybridlm-checkpoint", "version": 1, "files": [1, 2]}')
    one_line_error(lambda: Checkpoint.open(out), ckpt.MARKER, "'files' must map")
    (d / ckpt.MARKER).write_bytes(b"\xff\xfe{")
    one_line_error(lambda: Checkpoint.open(out), ckpt.MARKER, "not UTF-8")
    (d / ckpt.MARKER).write_text("[]")
    one_line_error(lambda: Checkpoint.open(out), ckpt.MARKER, "expected a JSON object")


def test_model_config_json_errors_name_the_file_and_field(run, tmp_path):
    out, _ = run
    d = step_dir(out)
    cfg = json.loads((d / "model_config.json").read_text())
    (d / "model_config.json").write_text(json.dumps({**cfg, "d_model": "48"}))
    refresh_manifest(d)
    one_line_error(lambda: Checkpoint.open(out).load_model(), "model_config.json", "d_model='48': must be an integer",
                   cls=ValueError)
    for text, why in (("[1, 2]", "expected a JSON object"), ('{"vocab_size": ', "not valid JSON"),
                      (json.dumps({**cfg, "mixers": {"A": {**cfg["mixers"]["A"], "rope_theta": None}}}),
                       "mixers['A'].rope_theta=None: must be a finite number")):
        (tmp_path / "c.json").write_text(text)
        one_line_error(lambda: ModelConfig.from_json(tmp_path / "c.json"), "c.json", why, cls=ValueError)
    (tmp_path / "c.json").write_bytes(b'{"a": "\xff"}')
    one_line_error(lambda: ModelConfig.from_json(tmp_path / "c.json"), "c.json", "not UTF-8", cls=ValueError)


# -- finding 3: HF directories ---------------------------------------------------------------------------------
@pytest.fixture
def hf_dir(tmp_path):
    torch.manual_seed(0)
    HybridLM(small_config()).save_hf(tmp_path / "hf")
    return tmp_path / "hf"


def test_truncated_or_pickled_safetensors_are_refused_without_unpickling(hf_dir, tmp_path):
    f = hf_dir / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    one_line_error(lambda: HybridLM.from_hf(hf_dir), str(f), "not a readable safetensors file (truncated, or not "
                   "safetensors)", "incomplete metadata")

    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return open, (str(marker), "w")  # unpickling this creates the marker file
    torch.save({"embed": torch.zeros(3), "trap": Trap()}, f)
    one_line_error(lambda: HybridLM.from_hf(hf_dir), str(f), "not a readable safetensors file", "header too large")
    assert not marker.exists()


def test_hf_json_and_dtype_problems_name_the_file(hf_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text("{ not json")
    one_line_error(lambda: HybridLM.from_hf(hf_dir), "config.json", "not valid JSON")
    (hf_dir / "config.json").write_text("[]")
    one_line_error(lambda: HybridLM.from_hf(hf_dir), "config.json", "expected a JSON object")
    (hf_dir / "config.json").write_text(json.dumps({**cfg, "rope_parameters": "x"}))
    one_line_error(lambda: HybridLM.from_hf(hf_dir), "config.json", "wrong type or value")
    (hf_dir / "config.json").write_text(json.dumps({**cfg, "head_dim": 24.5}))
    one_line_error(lambda: HybridLM.from_hf(hf_dir), "config.json", "head_dim=24.5: must be an integer")
    (hf_dir / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 10**12}))
    one_line_error(lambda: HybridLM.from_hf(hf_dir), "config.json", "num_hidden_layers=")
    (hf_dir / "config.json").write_text(json.dumps(cfg))

    f = hf_dir / "model.safetensors"
    keep = f.read_bytes()
    edit_tensors(f, lambda t: t.update({"model.norm.weight": t["model.norm.weight"].long()}))
    one_line_error(lambda: HybridLM.from_hf(hf_dir), "wrong dtype (1): model.norm.weight: checkpoint I64 vs model F32")
    f.write_bytes(keep)

    def inf(t):
        t["model.layers.1.self_attn.q_proj.weight"][0, 0] = float("inf")
    edit_tensors(f, inf)
    one_line_error(lambda: HybridLM.from_hf(hf_dir), str(f), "model.layers.1.self_attn.q_proj.weight", "NaN/inf")
    f.write_bytes(keep)

    save_file({"model.norm.weight": torch.ones(48)}, hf_dir / "model-2.safetensors")  # a stray second copy
    one_line_error(lambda: HybridLM.from_hf(hf_dir), "model.norm.weight is also in")
    (hf_dir / "model-2.safetensors").unlink()

    index = hf_dir / "model.safetensors.index.json"
    for text, why in (("{", "not valid JSON"), ('{"metadata": {}}', "missing field(s) ['weight_map']"),
                      ('{"weight_map": {"a": "../model.safetensors"}}', "weight_map must map"),
                      ('{"weight_map": {"a": "other.safetensors"}}', "shard file(s) missing")):
        index.write_text(text)
        one_line_error(lambda: HybridLM.from_hf(hf_dir), str(index), why)


def test_check_tensors_message_is_one_line():
    from hybridlm.interop.hf.base import check_tensors
    need = {"a": ((4, 4), "F32"), "b": ((2,), "F32"), "c": ((3,), "F32")}
    have = {"a": ((3, 4), "F32"), "c": ((3,), "I32"), "d": ((1,), "F32")}
    msg = one_line_error(lambda: check_tensors("dir", "qwen3_next", need, have), "dir: checkpoint does not match")
    assert msg.endswith("missing (1): b; unexpected (1): d; mis-shaped (1): a: checkpoint (3, 4) vs model (4, 4); "
                        "wrong dtype (1): c: checkpoint I32 vs model F32"), msg


# -- finding 4: disk full while saving -------------------------------------------------------------------------
def _save(out, step):
    model = HybridLM(small_config())
    opt_state = {"state": {"embed.weight": {"step": torch.tensor(1.0), "exp_avg": torch.zeros(256, 48)}},
                 "param_groups": [{"lr": 1e-3, "params": ["embed.weight"]}]}
    return ckpt.save(out, step, model_state=model.state_dict(), optim_state=opt_state, trainer={"scheduler": {}},
                     model_config_json=small_config().to_json(), train_config={},
                     rng={"cpu": torch.get_rng_state()[None]}, keep=3)


def _no_space(after: int, kind=OSError):
    """A function that lets `after` calls through to the real one, then fails like a full disk."""
    def wrap(real):
        calls = [0]

        def fake(*a, **kw):
            calls[0] += 1
            if calls[0] > after:
                if kind is OSError:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                raise SafetensorError("No space left on device (os error 28)")
            return real(*a, **kw)
        return fake
    return wrap


def _assert_previous_intact(out: Path, step: str) -> None:
    assert (out / "latest").read_text().strip() == step
    Checkpoint.open(out).load_model()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def _count_fsyncs(tmp_path, monkeypatch) -> int:
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    _save(tmp_path / "count", 1)
    monkeypatch.setattr(os, "fsync", real)
    return len(calls)


@pytest.mark.parametrize("kind", [OSError, SafetensorError])
def test_disk_full_in_the_second_tensor_file_keeps_the_last_checkpoint(tmp_path, monkeypatch, kind):
    out = tmp_path / "run"
    _save(out, 1)
    monkeypatch.setattr(ckpt, "save_file", _no_space(1, kind)(ckpt.save_file))
    msg = one_line_error(lambda: _save(out, 2), "step_000002.tmp/optimizer.safetensors: could not write",
                         "No space left on device", f"{out / 'latest'} still names step_000001")
    assert "removed the partial step_000002.tmp" in msg
    _assert_previous_intact(out, "step_000001")


def test_a_failing_fsync_anywhere_in_a_save_keeps_a_loadable_latest(tmp_path, monkeypatch):
    """ENOSPC from each fsync of a save in turn (tensor files, JSON files, marker, directories, `latest`)."""
    n = _count_fsyncs(tmp_path, monkeypatch)
    assert n >= 10
    out = tmp_path / "run"
    _save(out, 1)
    real = os.fsync
    for k in range(n):
        monkeypatch.setattr(os, "fsync", _no_space(k)(real))
        one_line_error(lambda: _save(out, 2), "could not write", "No space left on device")
        monkeypatch.setattr(os, "fsync", real)
        latest = (out / "latest").read_text().strip()
        assert latest in ("step_000001", "step_000002"), latest  # the new one only once it is complete
        _assert_previous_intact(out, latest)
        shutil.rmtree(out / "step_000002", ignore_errors=True)
        (out / "latest").write_text("step_000001\n")


def test_failed_rename_when_resaving_a_step_puts_the_previous_save_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _save(out, 1)
    real = Path.rename

    def rename(self, target):
        if self.name.endswith(".tmp") and Path(target).name == "step_000001":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, target)
    monkeypatch.setattr(Path, "rename", rename)
    one_line_error(lambda: _save(out, 1), "step_000001: could not write", f"{out / 'latest'} still names step_000001")
    monkeypatch.setattr(Path, "rename", real)
    _assert_previous_intact(out, "step_000001")
    assert sorted(p.name for p in out.iterdir()) == ["latest", "step_000001"]


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _save(out, 1)
    free = shutil.disk_usage(out)._replace(free=200_000)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: free)
    one_line_error(lambda: _save(out, 2), str(out), "not enough free space", "0.2 MB (200000 bytes) free",
                   "nothing was written")
    assert sorted(p.name for p in out.iterdir()) == ["latest", "step_000001"]
    one_line_error(lambda: HybridLM(small_config()).save_hf(tmp_path / "hf"), "not enough free space")


def test_failed_hf_write_leaves_the_previous_files_whole(hf_dir, monkeypatch):
    import safetensors.torch
    before = HybridLM.from_hf(hf_dir).state_dict()
    names = sorted(p.name for p in hf_dir.iterdir())
    real = safetensors.torch.save_file

    def half_then_full(tensors, path, metadata=None):
        Path(path).write_bytes(b"\0" * 1000)  # some bytes made it to disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(safetensors.torch, "save_file", half_then_full)
    torch.manual_seed(1)
    one_line_error(lambda: HybridLM(small_config()).save_hf(hf_dir), "model.safetensors: could not write",
                   "No space left on device", "removed the temporary files")
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert sorted(p.name for p in hf_dir.iterdir()) == names
    after = HybridLM.from_hf(hf_dir).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_full)
    fresh = hf_dir.parent / "fresh"
    one_line_error(lambda: HybridLM(small_config()).save_hf(fresh), "could not write")
    assert not fresh.exists()
