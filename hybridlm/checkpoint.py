"""Training checkpoints: safetensors + JSON only (no pickle), written atomically, resumable exactly.

A run directory holds step directories and a `latest` pointer:

    OUT/latest                      "step_000200\n", replaced atomically (temp file + fsync + os.replace)
    OUT/step_000200/
        model.safetensors           full (unsharded) model state: weights and persistent buffers (expert bias)
        optimizer.safetensors       optimizer tensors, keyed "<param name>::<state key>"
        optimizer.json              param groups (hyperparameters, parameter names) and non-tensor state
        rng.safetensors             torch RNG state of every rank ([world, S] per device kind)
        trainer.json                step, scheduler, data position, world size, last metrics
        model_config.json           ModelConfig.to_json
        train_config.json           TrainConfig as JSON
        tokenizer.json              only when the run used a BPE / Hugging Face tokenizer (otherwise bytes)
        hybridlm_checkpoint.json    the marker: format, step, and the size of every file above; written last

Saving writes everything into `step_000200.tmp/`, fsyncs each file, renames the directory to `step_000200/`,
fsyncs the parent, then moves `latest`. A process killed at any moment therefore leaves `latest` naming a
complete directory (the previous one until the rename and pointer move are both done). Older step directories
beyond `keep` are renamed `*.old` and removed; stale `*.tmp` / `*.old` directories are cleared on the next save.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MARKER = "hybridlm_checkpoint.json"
FORMAT = "hybridlm-checkpoint"
VERSION = 1
SEP = "::"


# -- atomic file primitives ------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    _fsync_file(path)


def replace_text(path: Path, text: str) -> None:
    """Atomically replace `path`'s contents (temp file in the same directory + fsync + os.replace)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def step_name(step: int) -> str:
    return f"step_{step:06d}"


# -- optimizer state <-> safetensors + JSON --------------------------------------------------------------------
def optimizer_to_files(osd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A name-keyed optimizer state dict (torch.distributed.checkpoint.state_dict form) -> (tensors, JSON)."""
    tensors, scalars = {}, {}
    for name, st in osd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}{SEP}{key}"] = value
            else:
                scalars.setdefault(name, {})[key] = value
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[str, dict] = {}
    for k, v in tensors.items():
        name, key = k.split(SEP, 1)
        state.setdefault(name, {})[key] = v
    for name, st in meta["scalars"].items():
        state.setdefault(name, {}).update(st)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# -- save ------------------------------------------------------------------------------------------------------
def save(out: str | Path, step: int, *, model_state: dict[str, torch.Tensor], optim_state: dict,
         trainer: dict, model_config_json: str, train_config: dict, rng: dict[str, torch.Tensor],
         tokenizer_file: str | Path | None = None, keep: int = 3) -> Path:
    """Write one complete checkpoint of `step` under `out` (see the module docstring); returns its directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("step_*.tmp")) + list(out.glob("step_*.old")):
        shutil.rmtree(stale, ignore_errors=True)
    final = out / step_name(step)
    tmp = out / (step_name(step) + ".tmp")
    tmp.mkdir()
    write_tensors(tmp / "model.safetensors", model_state)
    opt_tensors, opt_meta = optimizer_to_files(optim_state)
    write_tensors(tmp / "optimizer.safetensors", opt_tensors)
    write_json(tmp / "optimizer.json", opt_meta)
    write_tensors(tmp / "rng.safetensors", rng)
    write_json(tmp / "trainer.json", {"step": step, **trainer})
    write_json(tmp / "train_config.json", train_config)
    (tmp / "model_config.json").write_text(model_config_json + "\n")
    _fsync_file(tmp / "model_config.json")
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        _fsync_file(tmp / "tokenizer.json")
    files = {f.name: f.stat().st_size for f in sorted(tmp.iterdir())}
    write_json(tmp / MARKER, {"format": FORMAT, "version": VERSION, "step": step, "files": files})
    _fsync_dir(tmp)
    if final.exists():  # re-saving a step (e.g. the final save after a periodic one): swap the old one out
        final.rename(final.with_name(final.name + ".old"))
    tmp.rename(final)
    _fsync_dir(out)
    replace_text(out / "latest", final.name + "\n")
    _prune(out, keep, final.name)
    return final


def _prune(out: Path, keep: int, current: str) -> None:
    steps = sorted(p for p in out.glob("step_*") if p.is_dir() and p.name[5:].isdigit())
    for old in steps[:-keep] if keep > 0 else []:
        if old.name != current:
            doomed = old.rename(old.with_name(old.name + ".old"))  # never a half-deleted step_ directory
            shutil.rmtree(doomed, ignore_errors=True)
    for leftover in out.glob("step_*.old"):
        shutil.rmtree(leftover, ignore_errors=True)


# -- load ------------------------------------------------------------------------------------------------------
def is_checkpoint(path: str | Path) -> bool:
    """A step directory (with the marker) or a run directory (with a `latest` pointer)."""
    p = Path(path)
    return p.is_dir() and ((p / MARKER).is_file() or (p / "latest").is_file())


def resolve(path: str | Path) -> Path:
    """A run directory -> the step directory `latest` names; a step directory -> itself. Checks completeness."""
    p = Path(path)
    if (p / "latest").is_file() and not (p / MARKER).is_file():
        name = (p / "latest").read_text().strip()
        p = p / name
        if not p.is_dir():
            raise ValueError(f"{path}/latest names {name!r}, which does not exist")
    if not (p / MARKER).is_file():
        raise ValueError(f"{p}: not a hybridlm checkpoint (no {MARKER})")
    try:
        meta = json.loads((p / MARKER).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p / MARKER}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{p / MARKER}: format {meta.get('format')!r} v{meta.get('version')!r}, "
                         f"expected {FORMAT!r} v{VERSION}")
    for name, size in meta["files"].items():
        f = p / name
        if not f.is_file() or f.stat().st_size != size:
            have = f.stat().st_size if f.is_file() else "missing"
            raise ValueError(f"{p}: file {name} is incomplete ({have} bytes, manifest says {size})")
    return p


def latest_step_dir(out: str | Path) -> Path | None:
    """The complete checkpoint `OUT/latest` names, or None when the run has none yet."""
    return resolve(out) if (Path(out) / "latest").is_file() else None


@dataclass
class Checkpoint:
    path: Path

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        return cls(resolve(path))

    def json(self, name: str) -> dict:
        return json.loads((self.path / name).read_text())

    @property
    def step(self) -> int:
        return self.json("trainer.json")["step"]

    def model_config(self):
        from .config import ModelConfig
        return ModelConfig.from_json(self.path / "model_config.json")

    def model_state(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "model.safetensors"))

    def optimizer_state(self) -> dict:
        return optimizer_from_files(load_file(str(self.path / "optimizer.safetensors")), self.json("optimizer.json"))

    def rng(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "rng.safetensors"))

    def tokenizer(self):
        from .tokenizer import tokenizer_for
        return tokenizer_for(self.path)  # tokenizer.json when the run had one, else bytes

    def tokenizer_file(self) -> Path | None:
        f = self.path / "tokenizer.json"
        return f if f.is_file() else None

    def load_model(self, device: str | torch.device = "cpu"):
        """-> HybridLM with the checkpoint's weights (fp32)."""
        from .model import HybridLM
        cfg = self.model_config()
        model = HybridLM(cfg, device="meta")
        model.to_empty(device=device)
        with torch.random.fork_rng(devices=[]):  # loading must not move the caller's RNG
            model.init_weights()  # non-persistent buffers (load_accum) and anything the file does not hold
        state = self.model_state()
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{self.path}/model.safetensors does not match model_config.json: "
                             f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        return model


def export_hf(checkpoint: str | Path, hf_dir: str | Path, drop_expert_bias: bool = False) -> Path:
    """Write a training checkpoint as a Hugging Face checkpoint (config.json + safetensors [+ tokenizer.json]).

    The Qwen and Llama 4 HF formats have no routing bias: a checkpoint whose aux-loss-free expert bias moved would
    route differently once exported, so that needs drop_expert_bias=True, said out loud. DeepSeek's formats keep it
    (e_score_correction_bias / gate.bias); a hash-routed layer's bias never routes."""
    ckpt = Checkpoint.open(checkpoint)
    model = ckpt.load_model()
    kinds = {m.kind for m in model.config.mixers.values()}
    keeps_bias = model.config.hf_model_type in ("deepseek_v3", "deepseek_v32", "deepseek_v4") or (
        model.config.hf_model_type is None and kinds & {"mla", "compressed_attention"})
    moved = [n for n, b in model.named_buffers() if n.endswith("expert_bias") and bool(b.any()) and not keeps_bias
             and not getattr(model.get_submodule(n.rsplit(".", 1)[0]).cfg, "hash_routing", False)]
    if moved and not drop_expert_bias:
        raise ValueError(f"{ckpt.path}: {len(moved)} MoE layers have a non-zero expert_bias (e.g. {moved[0]}), which "
                         f"the Hugging Face format cannot hold, so the exported model would route differently; "
                         f"pass --drop-expert-bias to export anyway, or train with --bias-update-rate 0")
    hf_dir = Path(hf_dir)
    model.save_hf(hf_dir)
    if ckpt.tokenizer_file() is not None:
        shutil.copyfile(ckpt.tokenizer_file(), hf_dir / "tokenizer.json")
    return hf_dir
