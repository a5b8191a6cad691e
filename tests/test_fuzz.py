"""200 seeded random mutations of a ModelConfig JSON, a training checkpoint and a Hugging Face directory: each load
either succeeds (the mutation was harmless: then every weight is finite) or raises a ValueError (the documented
family: safeio.CheckpointError for files, ValueError naming the field for config values) with a one-line
message; never another exception type, never a hang. Mutations that cannot be harmless (a dropped or renamed
tensor, NaN weights, a deleted file...) must fail."""

import json
import random
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hybridlm.interop.checkpoint as ckpt
from hybridlm import HybridLM, get_config
from hybridlm.interop.checkpoint import Checkpoint
from hybridlm.model.config import ModelConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread

N_CONFIG, N_CHECKPOINT, N_HF = 70, 65, 65  # 200 mutations

TINY = {"name": "fuzz", "vocab_size": 32, "d_model": 16, "num_layers": 2, "mixer_pattern": "GA", "ffn_pattern": "M*2",
        "mixers": {"G": {"kind": "gated_deltanet", "num_qk_heads": 1, "num_v_heads": 1, "head_k_dim": 8,
                         "head_v_dim": 8, "chunk_size": 8},
                   "A": {"kind": "attention", "num_heads": 2, "num_kv_heads": 1, "head_dim": 8, "output_gate": True}},
        "ffns": {"M": {"kind": "moe", "num_experts": 2, "top_k": 1, "expert_size": 8, "shared_size": 8,
                       "shared_gate": True}},
        "tie_embeddings": True, "mtp_depth": 1, "max_seq_len": 64, "hf_model_type": "qwen3_next"}


def outcome(load, must_fail: bool) -> None:
    """Run load(): success (a model with finite weights, or a config that round-trips) or a one-line ValueError."""
    start = time.time()
    try:
        result = load()
    except ValueError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
    else:
        assert not must_fail, "a mutation that cannot be harmless loaded"
        if isinstance(result, ModelConfig):
            assert ModelConfig.from_json(result.to_json()) == result
        else:
            assert all(bool(torch.isfinite(t).all()) for t in result.state_dict().values() if t.is_floating_point())
    assert time.time() - start < 10


# -- mutations -------------------------------------------------------------------------------------------------
def _paths(obj, prefix=()):
    """Every (path of keys) into nested JSON objects."""
    for k, v in obj.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


def mutate_json(obj: dict, rng: random.Random) -> tuple[dict, str]:
    """One structural edit of a JSON object: drop, retype, a bad number, rename."""
    obj = json.loads(json.dumps(obj))
    path = rng.choice(list(_paths(obj)))
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    kind = rng.choice(["drop", "type", "number", "rename"])
    if kind == "drop":
        del parent[key]
    elif kind == "type":
        parent[key] = rng.choice(["x", 1.5, None, [], {}, True, -3, [1, 2]])
    elif kind == "number":
        parent[key] = rng.choice([-1, 0, -0.5, 10**12, 1e308, 2**63, -(10**9)])
    else:
        parent[key + rng.choice(["_", "s", "X"])] = parent.pop(key)
    return obj, f"{kind} {'.'.join(path)}"


def flip_byte(f: Path, rng: random.Random) -> None:
    data = bytearray(f.read_bytes())
    if data:
        i = rng.randrange(len(data))
        data[i] = (data[i] + rng.randrange(1, 256)) % 256
        f.write_bytes(bytes(data))


def truncate(f: Path, rng: random.Random, keep_at_most: int) -> None:
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(rng.randrange(0, max(1, min(size, keep_at_most))))


def edit_tensors(f: Path, rng: random.Random, int_fails: bool, any_dtype_fails: bool) -> bool:
    """One edit of a safetensors file's tensors; returns whether the result can no longer load."""
    t = load_file(f)
    name = rng.choice(sorted(t))
    kind = rng.choice(["drop", "rename", "reshape", "dtype", "nan", "extra"])
    must_fail = True
    if kind == "drop":
        del t[name]
    elif kind == "rename":
        t[name + ".x"] = t.pop(name)
    elif kind == "reshape":
        v = t[name]
        t[name] = v.reshape(-1) if v.dim() > 1 else v.reshape(1, -1)
    elif kind == "dtype":
        dtype = rng.choice([torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32])
        t[name] = t[name].to(dtype)
        must_fail = any_dtype_fails or (int_fails and not dtype.is_floating_point)
    elif kind == "nan":
        target = rng.choice(sorted(k for k, v in t.items() if v.is_floating_point() and v.numel()))
        w = t[target].clone()
        w.view(-1)[rng.randrange(w.numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
        t[target] = w
    else:
        t["extra.weight"] = torch.zeros(3)
    save_file(t, f)
    return must_fail


# -- (a) ModelConfig JSON --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(N_CONFIG))
def test_fuzz_model_config_json(seed, tmp_path):
    rng = random.Random(seed)
    f = tmp_path / "config.json"
    get_config("tiny-hybrid").to_json(f)
    kind = rng.choice(["json", "json", "truncate", "flip"])
    if kind == "json":
        obj, _ = mutate_json(json.loads(f.read_text()), rng)
        f.write_text(json.dumps(obj))
    elif kind == "truncate":
        truncate(f, rng, f.stat().st_size - 1)
    else:
        flip_byte(f, rng)
    outcome(lambda: ModelConfig.from_json(f), must_fail=kind == "truncate")


# -- (b) a training checkpoint ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    torch.manual_seed(0)
    cfg = ModelConfig.from_dict(TINY)
    model = HybridLM(cfg)
    ckpt.save(out, 1, model_state=model.state_dict(), optim_state={"state": {}, "param_groups": []},
              trainer={"scheduler": {"step": 1}}, model_config_json=cfg.to_json(), train_config={},
              rng={"cpu": torch.get_rng_state()[None]})
    return out


def refresh_manifest(d: Path) -> None:
    try:
        meta = json.loads((d / ckpt.MARKER).read_text())
    except (ValueError, FileNotFoundError):
        return  # the mutation was to the manifest itself
    meta["files"] = {n: (d / n).stat().st_size for n in meta["files"] if (d / n).is_file()}
    (d / ckpt.MARKER).write_text(json.dumps(meta))


@pytest.mark.parametrize("seed", range(N_CHECKPOINT))
def test_fuzz_training_checkpoint(seed, run_dir, tmp_path):
    rng = random.Random(1000 + seed)
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    d = out / "step_000001"
    files = sorted(p.name for p in d.iterdir())
    kind = rng.choice(["truncate", "flip", "flip", "tensors", "tensors", "config", "delete"])
    consistent = rng.random() < 0.5  # also rewrite the manifest: a checkpoint that is whole but wrong
    must_fail = True
    if kind == "truncate":
        f = d / rng.choice(files)
        truncate(f, rng, f.stat().st_size - 1)  # a JSON file ends "}\n": cut the brace at least
        must_fail = not consistent or f.name in ("model.safetensors", "model_config.json", ckpt.MARKER)
    elif kind == "flip":
        f = d / rng.choice(["model.safetensors", "model.safetensors", "model_config.json", ckpt.MARKER,
                            rng.choice(files)])
        flip_byte(f, rng)
        must_fail = False
    elif kind == "tensors":
        must_fail = edit_tensors(d / "model.safetensors", rng, int_fails=True, any_dtype_fails=True)
    elif kind == "config":
        obj, _ = mutate_json(json.loads((d / "model_config.json").read_text()), rng)
        (d / "model_config.json").write_text(json.dumps(obj))
        must_fail = not consistent
    else:
        f = rng.choice([*files, "../latest"])
        (d / f).unlink()
        must_fail = f in ("../latest", ckpt.MARKER, "model.safetensors", "model_config.json") or not consistent
    if consistent and kind != "flip":
        refresh_manifest(d)
    outcome(lambda: Checkpoint.open(out).load_model(), must_fail)


# -- (c) a Hugging Face directory ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_hf") / "hf"
    torch.manual_seed(0)
    HybridLM(ModelConfig.from_dict(TINY)).save_hf(d)
    return d


@pytest.mark.parametrize("seed", range(N_HF))
def test_fuzz_hf_directory(seed, hf_dir, tmp_path):
    rng = random.Random(2000 + seed)
    d = tmp_path / "hf"
    shutil.copytree(hf_dir, d)
    kind = rng.choice(["truncate", "flip", "flip", "tensors", "tensors", "config", "delete"])
    must_fail = True
    if kind == "truncate":
        f = d / rng.choice(["model.safetensors", "config.json"])
        truncate(f, rng, f.stat().st_size - 1)  # config.json ends "}\n": cut the brace at least
    elif kind == "flip":
        flip_byte(d / rng.choice(["model.safetensors", "model.safetensors", "config.json"]), rng)
        must_fail = False
    elif kind == "tensors":
        must_fail = edit_tensors(d / "model.safetensors", rng, int_fails=True, any_dtype_fails=False)
    elif kind == "config":
        obj, _ = mutate_json(json.loads((d / "config.json").read_text()), rng)
        (d / "config.json").write_text(json.dumps(obj))
        must_fail = False
    else:
        (d / rng.choice(["model.safetensors", "config.json"])).unlink()
    outcome(lambda: HybridLM.from_hf(d), must_fail)
