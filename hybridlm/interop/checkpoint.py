"""Training checkpoints: safetensors + JSON only (no pickle), written atomically, resumable exactly.

A run directory holds step directories and a `latest` pointer:

    OUT/latest                      "step_000200\n", replaced atomically (temp file + fsync + os.replace)
    OUT/step_000200/
        model.safetensors           whole (unsharded) model state: weights and persistent buffers (expert bias)
        optimizer.safetensors       optimizer tensors, keyed "<param name>::<state key>"
        optimizer.json              param groups (hyperparameters, parameter names) and non-tensor state
        rng.safetensors             torch RNG state of every rank ([world, S] per device kind)
        trainer.json                step, scheduler, data position, world size, last metrics
        model_config.json           ModelConfig.to_json
        train_config.json           TrainConfig as JSON
        tokenizer.json              only when the run used a BPE / Hugging Face tokenizer (otherwise bytes)
        hybridlm_checkpoint.json    the marker: format, layout, step, and the size of every file above; written last

That is the `full` layout. The `dcp` layout (training/dcp.py: torch.distributed.checkpoint, every rank writing its
own pieces) replaces model.safetensors / optimizer.safetensors with the folders model/ and optim/, one safetensors
shard file per rank, each piece's place in the whole tensor in its header (interop/shards.py reads them in one
process); the other files, the marker (listing model/<file> and optim/<file> too) and the atomic scheme below are
the same. `Checkpoint` reads both layouts; `export_full` turns any checkpoint into a `full` run directory.

Saving writes everything into `step_000200.tmp/`, fsyncs each file, renames the directory to `step_000200/`,
fsyncs the parent, then moves `latest`. A process killed at any moment therefore leaves `latest` naming a
complete directory (the previous one until the rename and pointer move are both done). Older step directories
beyond `keep` are renamed `*.old` and removed; stale `*.tmp` / `*.old` directories are cleared on the next save.
Before writing, the free space is checked against the bytes about to be written; a write that fails anyway (disk
full, I/O error) removes the partial `*.tmp` directory and raises, leaving `latest` on the last good checkpoint.

Errors (safeio.py): every bad file (a truncated or modified one, a tensor of the wrong name, shape or dtype, a NaN
or inf weight, JSON that is not an object with the expected fields) and every failed write raises
`safeio.CheckpointError`, a ValueError whose one-line message names the file and the tensor or field. Loading
checks the header against the model before anything is copied.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import shards
from .safeio import (
    CheckpointError,
    check_free_space,
    header_specs,
    is_float,
    open_safetensors,
    read_json,
    read_safetensors,
    read_tensor,
    spec,
    tensor_bytes,
    tensor_mismatch,
    writing,
)

MARKER = "hybridlm_checkpoint.json"
FORMAT = "hybridlm-checkpoint"
VERSION = 1
SEP = "::"
SHARD_DIRS = ("model", "optim")  # a dcp checkpoint's shard folders: model weights, optimizer tensors
LAYOUTS = ("full", "dcp")  # the marker's "layout" (absent: full, as written before sharded checkpoints)


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


def write_text(path: Path, text: str) -> None:
    with writing(path), open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with writing(path):
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
        _fsync_file(path)


def replace_text(path: Path, text: str) -> None:
    """Atomically replace `path`'s contents (temp file in the same directory + fsync + os.replace)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write_text(tmp, text)
        with writing(path):
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


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
    """Write one complete checkpoint of `step` under `out` (see the module docstring); returns its directory.
    Raises CheckpointError, before writing anything, when the disk lacks the space, and after removing the partial
    temporary directory when a write fails; `latest` then still names the last good checkpoint."""
    opt_tensors, opt_meta = optimizer_to_files(optim_state)
    tensors = {"model.safetensors": model_state, "optimizer.safetensors": opt_tensors}
    final, tmp = begin(out, step, sum(tensor_bytes(t) for t in tensors.values()) + tensor_bytes(rng)
                       + (Path(tokenizer_file).stat().st_size if tokenizer_file is not None else 0) + 65536)
    try:
        for name, t in tensors.items():
            write_tensors(tmp / name, t)
        write_run_files(tmp, step, optim_meta=opt_meta, trainer=trainer, model_config_json=model_config_json,
                        train_config=train_config, rng=rng, tokenizer_file=tokenizer_file)
    except CheckpointError as e:
        raise abandon(tmp, e) from None
    return commit(tmp, final, step, keep, "full")


def begin(out: str | Path, step: int, nbytes: int) -> tuple[Path, Path]:
    """Start a save of `step`: make OUT, clear stale temporaries, check `nbytes` fit, create the empty temporary
    directory. -> (the step directory it will become, the temporary directory)."""
    out = Path(out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("step_*.tmp")) + list(out.glob("step_*.old")):
        shutil.rmtree(stale, ignore_errors=True)
    check_free_space(out, nbytes)
    final, tmp = out / step_name(step), out / (step_name(step) + ".tmp")
    with writing(tmp):
        tmp.mkdir()
    return final, tmp


def write_run_files(tmp: Path, step: int, *, optim_meta: dict, trainer: dict, model_config_json: str,
                    train_config: dict, rng: dict[str, torch.Tensor], tokenizer_file: str | Path | None) -> None:
    """The files both layouts share: RNG states, optimizer / trainer / config JSON, the tokenizer."""
    write_tensors(tmp / "rng.safetensors", rng)
    texts = {"optimizer.json": json.dumps(optim_meta, indent=2) + "\n",
             "trainer.json": json.dumps({"step": step, **trainer}, indent=2) + "\n",
             "train_config.json": json.dumps(train_config, indent=2) + "\n",
             "model_config.json": model_config_json + "\n"}
    for name, text in texts.items():
        write_text(tmp / name, text)
    if tokenizer_file is not None:
        with writing(tmp / "tokenizer.json"):
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
            _fsync_file(tmp / "tokenizer.json")


def abandon(tmp: Path, e: CheckpointError) -> CheckpointError:
    """Remove a partial temporary directory; -> the error to raise, saying what `latest` still names."""
    shutil.rmtree(tmp, ignore_errors=True)
    return CheckpointError(f"{e}; removed the partial {tmp.name}, {_still_latest(tmp.parent)}")


def commit(tmp: Path, final: Path, step: int, keep: int, layout: str) -> Path:
    """Finish a save whose files are all in `tmp` (fsynced): write the marker listing every file (paths relative to
    the step directory) and its size, fsync, rename `tmp` to `final`, move `latest`, prune. -> final."""
    assert layout in LAYOUTS, layout
    out = final.parent
    try:
        files = {f.relative_to(tmp).as_posix(): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
        write_json(tmp / MARKER, {"format": FORMAT, "version": VERSION, "layout": layout, "step": step,
                                  "files": files})
        with writing(tmp):
            for d in [p for p in tmp.rglob("*") if p.is_dir()] + [tmp]:
                _fsync_dir(d)
    except CheckpointError as e:
        raise abandon(tmp, e) from None
    _publish(tmp, final)
    try:
        replace_text(out / "latest", final.name + "\n")
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {final.name} is complete but {_still_latest(out)}") from None
    _prune(out, keep, final.name)
    return final


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished temporary directory to its step name (swapping out a previous save of that step)."""
    old = final.with_name(final.name + ".old")
    try:
        with writing(final):
            if final.exists():  # re-saving a step (e.g. the final save after a periodic one)
                final.rename(old)
            tmp.rename(final)
            _fsync_dir(final.parent)
    except CheckpointError as e:
        if old.exists() and not final.exists():
            old.rename(final)  # put the previous save of this step back
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{e}; {_still_latest(final.parent)}") from None


def _still_latest(out: Path) -> str:
    latest = out / "latest"
    try:
        return f"{latest} still names {latest.read_text().strip()}" if latest.is_file() else "the run has no checkpoint yet"
    except (OSError, UnicodeDecodeError):
        return f"{latest} is unchanged"


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
    """A run directory -> the step directory `latest` names; a step directory -> itself. Checks every file against
    the manifest (present, same size)."""
    p = Path(path)
    if (p / "latest").is_file() and not (p / MARKER).is_file():
        try:
            name = (p / "latest").read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{p / 'latest'}: unreadable ({e})") from None
        if Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{p / 'latest'}: names {name!r}, which is not a step directory name")
        p = p / name
        if not p.is_dir():
            raise CheckpointError(f"{path}/latest names {name!r}, which does not exist")
    if not (p / MARKER).is_file():
        raise CheckpointError(f"{p}: not a hybridlm checkpoint (no {MARKER})")
    meta = read_json(p / MARKER, required=("format", "version", "files"))
    if meta["format"] != FORMAT or meta["version"] != VERSION:
        raise CheckpointError(f"{p / MARKER}: format {meta['format']!r} v{meta['version']!r}, "
                              f"expected {FORMAT!r} v{VERSION}")
    if meta.get("layout", "full") not in LAYOUTS:
        raise CheckpointError(f"{p / MARKER}: layout {meta['layout']!r}, expected one of {list(LAYOUTS)}")
    files = meta["files"]
    if not isinstance(files, dict) or not all(
            isinstance(n, str) and _inside(n) and type(size) is int for n, size in files.items()):
        raise CheckpointError(f"{p / MARKER}: 'files' must map file paths inside the step directory (a name, or "
                              f"folder/name) to sizes in bytes")
    for name, size in files.items():
        f = p / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing (the manifest {MARKER} lists it)")
        have = f.stat().st_size
        if have != size:
            raise CheckpointError(f"{f}: size differs from the manifest ({have} vs {size} bytes): the file was "
                                  f"modified or truncated")
    if meta.get("layout") == "dcp":  # DCP's reader takes every shard file in these folders: no strays
        for sub in SHARD_DIRS:
            stray = sorted(f.name for f in (p / sub).glob("*.safetensors") if f"{sub}/{f.name}" not in files)
            if stray:
                raise CheckpointError(f"{p / sub / stray[0]}: not in the manifest {MARKER} (a shard file from another "
                                      f"save?)")
    return p


def _inside(name: str) -> bool:
    """A manifest entry: a plain file name, or one folder deep (a sharded checkpoint's model/<shard file>)."""
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(x not in ("", ".", "..") and "\\" not in x for x in parts)


def latest_step_dir(out: str | Path) -> Path | None:
    """The complete checkpoint `OUT/latest` names, or None when the run has none yet."""
    return resolve(out) if (Path(out) / "latest").is_file() else None


@dataclass
class Checkpoint:
    path: Path

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        return cls(resolve(path))

    def json(self, name: str, required: tuple[str, ...] = ()) -> dict:
        """A JSON object file of the checkpoint, with the `required` keys (CheckpointError naming it otherwise)."""
        return read_json(self.path / name, required)

    @property
    def layout(self) -> str:
        """'full' (model.safetensors + optimizer.safetensors) or 'dcp' (model/ + optim/ shard files of every rank)."""
        return self.json(MARKER).get("layout", "full")

    def shard_layout(self, sub: str) -> dict[str, shards.Entry]:
        """A dcp checkpoint's model/ or optim/ tensors: dtype, whole shape, pieces (headers only)."""
        return shards.layout(self.path / sub)

    @property
    def step(self) -> int:
        step = self.json("trainer.json", ("step",))["step"]
        if type(step) is not int or step < 0:
            raise CheckpointError(f"{self.path / 'trainer.json'}: step={step!r} is not a step number")
        return step

    def model_config(self):
        from ..model import ModelConfig
        return ModelConfig.from_json(self.path / "model_config.json")

    def model_state(self, model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
        """The model's tensors. With `model` (a meta model will do), the file's names, shapes and dtypes are first
        checked against model.state_dict() from the header alone, so a mismatch is reported before anything is
        read; floating tensors are always checked finite."""
        if self.layout == "dcp":  # whole tensors copied together from every rank's shard file
            entries = self.shard_layout("model")
            if model is not None:
                check_model_specs(self.path / "model", shards.specs(entries), model)
            return shards.assemble(entries)
        f = self.path / "model.safetensors"
        if model is None:
            return read_safetensors(f)
        handle = open_safetensors(f)
        need = check_model_specs(f, header_specs(f, handle), model)
        return {k: read_tensor(f, handle, k) for k in need}

    def optimizer_state(self, model: torch.nn.Module | None = None,
                        optimizer: torch.optim.Optimizer | None = None) -> dict:
        """The name-keyed optimizer state dict. With `model` (and `optimizer`), every state tensor must belong to
        one of its parameters with that parameter's shape (or be a scalar such as `step`), and the param groups
        must hold the same parameter names as `optimizer`'s."""
        f = self.path / ("optim" if self.layout == "dcp" else "optimizer.safetensors")
        tensors = shards.read_whole(f) if self.layout == "dcp" else read_safetensors(f)
        meta = self.optimizer_meta()
        odd = [k for k in tensors if SEP not in k]
        if odd:
            raise CheckpointError(f"{f}: tensor {odd[0]!r} is not named '<parameter>{SEP}<state key>'")
        if model is not None:
            _check_optimizer(self.path, f, tensors, meta, model, optimizer)
        return optimizer_from_files(tensors, meta)

    def optimizer_meta(self) -> dict:
        """optimizer.json: param groups (hyperparameters, parameter names) and non-tensor state, checked in form."""
        meta = self.json("optimizer.json", ("param_groups", "scalars"))
        groups, scalars = meta["param_groups"], meta["scalars"]
        if not (isinstance(groups, list) and all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                                 for g in groups)
                and isinstance(scalars, dict) and all(isinstance(v, dict) for v in scalars.values())):
            raise CheckpointError(f"{self.path / 'optimizer.json'}: param_groups must be a list of objects with "
                                  f"'params' lists and scalars an object of objects")
        return meta

    def rng(self) -> dict[str, torch.Tensor]:
        f = self.path / "rng.safetensors"
        rng = read_safetensors(f)
        if "cpu" not in rng:
            raise CheckpointError(f"{f}: no 'cpu' RNG state")
        width = torch.get_rng_state().numel()
        for k, t in rng.items():
            if t.dtype != torch.uint8 or t.dim() != 2 or t.shape[0] < 1 or (k == "cpu" and t.shape[1] != width):
                raise CheckpointError(f"{f}: tensor {k} is {spec(t)}, not [world, {width if k == 'cpu' else 'S'}] "
                                      f"bytes of RNG state")
        return rng

    def tokenizer(self):
        from .tokenizer import tokenizer_for
        return tokenizer_for(self.path)  # tokenizer.json when the run had one, else bytes

    def tokenizer_file(self) -> Path | None:
        f = self.path / "tokenizer.json"
        return f if f.is_file() else None

    def load_model(self, device: str | torch.device = "cpu"):
        """-> HybridLM with the checkpoint's weights (fp32), checked against model_config.json before any copy."""
        from ..model import HybridLM
        model = HybridLM(self.model_config(), device="meta")
        state = self.model_state(model)
        model.to_empty(device=device)
        with torch.random.fork_rng(devices=[]):  # loading must not move the caller's RNG
            model.init_weights()  # non-persistent buffers (load_accum)
        model.load_state_dict(state)
        return model


def check_model_specs(f: Path, have: dict, model: torch.nn.Module) -> dict:
    """The checkpoint's tensors (`have`: name -> (shape, dtype) of the whole tensors) against model.state_dict()
    (a meta or sharded model will do: a DTensor's shape is the whole one); -> the model's specs."""
    need = {k: spec(v) for k, v in model.state_dict().items()}
    problems = tensor_mismatch(need, have, exact_dtype=True)
    if problems:
        raise CheckpointError(f"{f} does not match the model of model_config.json: {problems}")
    return need


def _check_optimizer(path: Path, f: Path, tensors: dict[str, torch.Tensor], meta: dict, model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer | None) -> None:
    """Optimizer state against the model it is about to be loaded into (see Checkpoint.optimizer_state)."""
    check_optimizer_specs(path, f, {k: spec(t) for k, t in tensors.items()}, meta, model, optimizer)


def check_optimizer_specs(path: Path, f: Path, have: dict, meta: dict, model: torch.nn.Module,
                          optimizer: torch.optim.Optimizer | None) -> None:
    """Optimizer tensors (`have`: "<param>::<key>" -> (shape, dtype) of the whole tensors, from a file or from shard
    headers) and optimizer.json's `meta` against the model's parameters and `optimizer`'s param groups."""
    params = dict(model.named_parameters())
    owners = {k.split(SEP, 1)[0] for k in have} | set(meta["scalars"])
    unexpected = sorted(owners - set(params))
    misshaped = [f"{k}: checkpoint {shape} vs parameter {tuple(params[n].shape)}" for k, (shape, _) in have.items()
                 if (n := k.split(SEP, 1)[0]) in params and shape not in (tuple(params[n].shape), ())]
    not_float = [f"{k}: {dtype}" for k, (_, dtype) in have.items() if not is_float(dtype)]
    parts = [f"{title} ({len(items)}): " + ", ".join(items[:20]) for title, items in (
        ("for unknown parameters", unexpected), ("mis-shaped", misshaped), ("not floating point", not_float)) if items]
    if parts:
        raise CheckpointError(f"{f} does not match the model's parameters: state " + "; ".join(parts))
    if optimizer is None:
        return
    names = {id(p): n for n, p in params.items()}
    ours = [sorted(names.get(id(p), "?") for p in g["params"]) for g in optimizer.param_groups]
    theirs = [sorted(map(str, g["params"])) for g in meta["param_groups"]]
    if ours != theirs:
        odd = sorted(set().union(*map(set, ours)) ^ set().union(*map(set, theirs)))
        raise CheckpointError(f"{path / 'optimizer.json'}: param groups do not match this run's optimizer (checkpoint "
                              f"{[len(g) for g in theirs]} parameters per group, this run {[len(g) for g in ours]}"
                              + (f"; names in only one: {', '.join(odd[:5])}" if odd else "")
                              + "): was it saved with another --optimizer?")


def export_hf(checkpoint: str | Path, hf_dir: str | Path, drop_expert_bias: bool = False) -> Path:
    """Write a training checkpoint as a Hugging Face checkpoint (config.json + safetensors [+ tokenizer.json]).

    The Qwen and Llama 4 HF formats have no routing bias: a checkpoint whose aux-loss-free expert bias moved would
    route differently once exported, so that needs drop_expert_bias=True, said out loud. A format whose converter
    lists expert_bias in kept_buffers keeps it (DeepSeek's e_score_correction_bias / gate.bias); a hash-routed
    layer's bias never routes."""
    ckpt = Checkpoint.open(checkpoint)
    model = ckpt.load_model()
    from .hf import save_target
    try:
        keeps_bias = "expert_bias" in save_target(model.config)[0].kept_buffers
    except ValueError:  # no format writes this config: save_hf below says so
        keeps_bias = False
    moved = [n for n, b in model.named_buffers() if n.endswith("expert_bias") and bool(b.any()) and not keeps_bias
             and not getattr(model.get_submodule(n.rsplit(".", 1)[0]).cfg, "hash_routing", False)]
    if moved and not drop_expert_bias:
        raise ValueError(f"{ckpt.path}: {len(moved)} MoE layers have a non-zero expert_bias (e.g. {moved[0]}), which "
                         f"the Hugging Face format cannot hold, so the exported model would route differently; "
                         f"pass --drop-expert-bias to export anyway, or train with --bias-update-rate 0")
    hf_dir = Path(hf_dir)
    model.save_hf(hf_dir)
    if ckpt.tokenizer_file() is not None:
        with writing(hf_dir / "tokenizer.json"):
            shutil.copyfile(ckpt.tokenizer_file(), hf_dir / "tokenizer.json")
    return hf_dir


def export_full(checkpoint: str | Path, out: str | Path) -> Path:
    """Any training checkpoint (a sharded `dcp` one included: read in this one process, no process group) -> a new
    run directory `out` holding it in the single-directory layout (out/step_XXXXXX + out/latest): the same weights,
    optimizer state, RNG rows, scheduler and data position, so `--out OUT --resume` continues it on any world size."""
    ck = Checkpoint.open(checkpoint)
    out = Path(out)
    if (out / "latest").exists():
        raise CheckpointError(f"{out}: already holds a run ({out / 'latest'}); choose another output directory")
    from ..model import HybridLM
    model = HybridLM(ck.model_config(), device="meta")  # names and shapes to check the files against
    trainer = ck.json("trainer.json", ("step",))
    step = ck.step
    return save(out, step, model_state=ck.model_state(model), optim_state=ck.optimizer_state(model),
                trainer={k: v for k, v in trainer.items() if k != "step"},
                model_config_json=(ck.path / "model_config.json").read_text(encoding="utf-8").strip(),
                train_config=ck.json("train_config.json"), rng=ck.rng(), tokenizer_file=ck.tokenizer_file(), keep=1)
