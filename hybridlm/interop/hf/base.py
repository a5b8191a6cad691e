"""The shared Hugging Face pipeline: the Converter protocol, the reader, the tensor check, one load and one atomic
save. A format is one converter (interop/hf/<format>.py) registered under its model_types; nothing here branches
on a family.

Load:  config.json -> converter.config_from_hf -> Reader over the safetensors files -> meta model -> the names,
       shapes and dtypes the converter says the model needs, checked against the file headers (check_tensors,
       before any weight is read) -> converter.from_hf_state -> to_empty -> init_weights (buffers the checkpoint
       does not carry) -> load_state_dict -> the kept buffers (routing biases) restored in float32.
Save:  converter.config_to_hf + converter.to_hf_state -> write_hf_dir (free space checked, temporaries fsynced,
       then renamed into place).

Errors: a directory whose config.json, index or safetensors files cannot be read as they are (truncated, not
safetensors, wrong names / shapes / dtypes, NaN or inf weights, fields of the wrong type) raises
safeio.CheckpointError, a ValueError with a one-line message naming the file and tensor or field, before any weight
is copied into the model; so does a failed write_hf_dir (which leaves the directory's previous files whole).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import ClassVar

import torch

from ...model.config import ModelConfig
from ...registry import CONVERTERS
from ..safeio import (
    CheckpointError,
    Spec,
    check_free_space,
    header_specs,
    open_safetensors,
    read_json,
    read_tensor,
    spec,
    tensor_bytes,
    tensor_mismatch,
    writing,
)

SWIGLU = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")  # a SwiGLU's tensors, same names on both sides


def runs(letters: list[str]) -> str:
    """['G','G','G','A',...] -> 'GGGA*12' when periodic, else the whole string."""
    n = len(letters)
    for period in range(1, n + 1):
        if n % period == 0 and letters == letters[:period] * (n // period):
            unit = "".join(letters[:period])
            return unit if n == period else f"{unit}*{n // period}"
    raise AssertionError("unreachable")


# -- the converter protocol -----------------------------------------------------------------------
class Converter:
    """One Hugging Face format. Subclass it in interop/hf/<format>.py, fill in the hooks, and register an instance
    with registry.register_converter; load() and save() below do the rest."""

    model_types: tuple[str, ...] = ()  # config.json model_type values this converter reads
    weight_types: tuple[str, ...] | None = None  # those whose weights it reads and writes (None: all model_types)
    kept_buffers: ClassVar[dict[str, str]] = {}  # our buffer suffix -> its HF tensor suffix (stored, float32)
    skip: re.Pattern | None = None  # checkpoint tensors that are not the language model's (a vision tower)
    strict: bool = True  # load_state_dict(strict=): False where init_weights supplies buffers the file lacks

    def config_from_hf(self, hf: dict) -> ModelConfig:
        raise NotImplementedError

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        raise NotImplementedError

    def default_model_type(self, cfg: ModelConfig) -> str | None:
        """The model_type to write a config with no hf_model_type as, if this format is the one for it."""
        return None

    def view(self, reader: Reader):
        """The reader as from_hf_state sees it (a converter may rename the checkpoint's spellings)."""
        return reader

    def prepare(self, path: Path, cfg: ModelConfig, get) -> ModelConfig:
        """Checks of the file set beyond the tensor check, and the config adjusted to what the file holds (an MTP
        layer the checkpoint does not ship is dropped)."""
        return cfg

    def label(self, hf: dict, cfg: ModelConfig) -> str:
        """The format's name in a tensor-mismatch error."""
        return cfg.hf_model_type

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        """Our state dict -> HF names and layouts (run on a meta model to list what a checkpoint must hold; with
        `get`, in the layout that checkpoint uses: prefix, fused experts)."""
        raise NotImplementedError

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors under our state-dict names."""
        raise NotImplementedError

    def checkpoint_total(self, cfg: ModelConfig) -> int:
        """Numbers a checkpoint of this format stores: the parameters, the stored buffers (routing biases, hash
        tables) and any copies the format keeps (DeepSeek's MTP layer has its own embedding and head)."""
        from ...model import HybridLM
        model = HybridLM(cfg, device="meta")
        return sum(t.numel() for t in self.to_hf_state(model, cfg.hf_model_type).values())

    def reads_weights(self, model_type: str | None) -> bool:
        return model_type in (self.model_types if self.weight_types is None else self.weight_types)


def converters() -> list[Converter]:
    """Every registered converter, once each, in registration order."""
    return list(dict.fromkeys(CONVERTERS.values()))


def weight_types() -> tuple[str, ...]:
    return tuple(t for c in converters() for t in (c.model_types if c.weight_types is None else c.weight_types))


def converter_for(model_type: str | None) -> Converter | None:
    return CONVERTERS.get(model_type)


# -- reading --------------------------------------------------------------------------------------
class Reader:
    """Lazy access to a checkpoint's tensors by name, remembering which were used; every tensor read is checked
    finite, and any file that is not readable safetensors raises CheckpointError naming it."""

    def __init__(self, files: list[Path]):
        self.handles, self.where, self.file, self.used = [], {}, {}, set()
        self.specs: dict[str, Spec] = {}  # (shape, dtype) of every tensor, from the headers
        for f in files:
            h = open_safetensors(f)
            self.handles.append(h)
            for k, s in header_specs(f, h).items():
                if k in self.file:
                    raise CheckpointError(f"{f}: tensor {k} is also in {self.file[k].name}")
                self.where[k], self.file[k], self.specs[k] = h, f, s
        self.prefix = "model.language_model." if any(k.startswith("model.language_model.") for k in self.where) else "model."

    def has(self, name: str) -> bool:
        return name in self.where

    def __call__(self, name: str) -> torch.Tensor:
        if name not in self.where:
            raise KeyError(name)
        self.used.add(name)
        return read_tensor(self.file[name], self.where[name], name)


class RenamedReader:
    """A Reader seen through other names: `rename(name in the file) -> the name from_hf_state asks for`, so one
    converter reads every spelling a format has had (a converter's `view`)."""

    def __init__(self, reader: Reader, rename):
        self.reader = reader
        self.names = {rename(k): k for k in reader.specs}  # our name -> the file's
        self.specs = {n: reader.specs[k] for n, k in self.names.items()}

    def has(self, name: str) -> bool:
        return name in self.names

    def __call__(self, name: str) -> torch.Tensor:
        return self.reader(self.names.get(name, name))


def checkpoint_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory: the shards its index names, else every *.safetensors."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index, required=("weight_map",))["weight_map"]
        if not isinstance(weight_map, dict) or not all(
                isinstance(s, str) and Path(s).name == s and s.endswith(".safetensors") for s in weight_map.values()):
            raise CheckpointError(f"{index}: weight_map must map tensor names to .safetensors file names in {path}")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise CheckpointError(f"{index}: shard file(s) missing: {missing}")
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json (only safetensors are read)")
    return files


def check_tensors(path, model_type: str, need: dict[str, Spec], have: dict[str, Spec]) -> None:
    """Compare a checkpoint's tensor names, shapes and dtypes (safeio.spec / the file headers) with what the model
    needs, before anything is read: one single-line error listing every missing, unexpected, mis-shaped and
    wrong-dtype (integer where a float is needed, or the reverse) tensor."""
    problems = tensor_mismatch(need, have, exact_dtype=False)
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match the {model_type} model described by its "
                              f"config.json: {problems}")


def read_config(path) -> dict:
    """The config.json of a Hugging Face checkpoint directory, as a dict (CheckpointError naming it otherwise)."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise CheckpointError(f"{path}: no config.json (expected a Hugging Face checkpoint directory)")
    return read_json(path / "config.json")


def config_from_hf(hf: dict) -> ModelConfig:
    """config.json (as a dict) -> ModelConfig, by the converter registered for its model_type."""
    model_type = hf.get("model_type")
    conv = converter_for(model_type) if isinstance(model_type, str) else None
    if conv is None:
        raise ValueError(f"config.json model_type={model_type!r} is not supported; supported: {tuple(CONVERTERS)}")
    return conv.config_from_hf(hf)


_COUNTS = ("num_hidden_layers", "num_experts", "n_routed_experts", "num_local_experts")
_MAX_COUNT = 1 << 16


def checked_config(path, hf: dict) -> ModelConfig:
    """config_from_hf, with every problem of the file's fields (a missing one, a wrong type or value) reported as
    one CheckpointError naming config.json; the result passes the same type checks as a ModelConfig JSON file."""
    where = Path(path) / "config.json"
    text = hf.get("text_config") if isinstance(hf.get("text_config"), dict) else hf
    for name in _COUNTS:  # the converters loop over layers and experts: refuse a count no model has, not hang
        n = text.get(name, hf.get(name))
        if n is not None and (type(n) is not int or not 0 <= n <= _MAX_COUNT):
            raise CheckpointError(f"{where}: {name}={n!r} must be an integer in [0, {_MAX_COUNT}]")
    try:
        cfg = config_from_hf(hf)
        ModelConfig.from_dict(json.loads(cfg.to_json()))
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}" if str(e).startswith("config.json") else f"{where}: {e}") from None
    except (KeyError, TypeError, AttributeError, ArithmeticError) as e:  # a field of the wrong type or value
        raise CheckpointError(f"{where}: a field has the wrong type or value ({type(e).__name__}: {e})") from None
    return cfg


def load(path, device=None, dtype: torch.dtype = torch.float32):
    """A Hugging Face checkpoint directory -> HybridLM with its weights (the one load pipeline of every format)."""
    from ...model import HybridLM
    path = Path(path)
    hf = read_config(path)
    cfg = checked_config(path, hf)
    conv = converter_for(hf.get("model_type"))
    if not conv.reads_weights(cfg.hf_model_type):
        raise ValueError(f"{path}: reading weights of this model_type is not supported yet (its config.json "
                         f"works with `hybridlm info` and `hybridlm cost`); supported: {weight_types()}")
    reader = Reader(checkpoint_files(path))
    get = conv.view(reader)
    cfg = conv.prepare(path, cfg, get)

    # Check names, shapes and dtypes against what this config needs, before converting anything.
    model = HybridLM(cfg, device="meta")
    need = {k: spec(t) for k, t in conv.to_hf_state(model, cfg.hf_model_type, get).items()}
    have = {k: s for k, s in get.specs.items() if conv.skip is None or not conv.skip.match(k)}
    check_tensors(path, conv.label(hf, cfg), need, have)

    state = conv.from_hf_state(get, model)
    model.to_empty(device=torch.device(device or "cpu"))
    model.init_weights()  # buffers a checkpoint does not carry (expert_bias in the Qwen and Llama formats)
    model.load_state_dict({k: (v.to(dtype) if v.is_floating_point() else v.long()) for k, v in state.items()},
                          strict=conv.strict)
    model = model.to(dtype)
    for name in [n for n in state if n.endswith(tuple(conv.kept_buffers))]:  # the selection bias stays float32
        buf = model.get_buffer(name)
        buf.data = state[name].float().to(buf.device)
    return model


# -- writing --------------------------------------------------------------------------------------
def write_hf_dir(path, tensors: dict[str, torch.Tensor], hf_cfg: dict, dtype: torch.dtype | None = None,
                 keep: tuple[str, ...] = ()) -> None:
    """Write model.safetensors + config.json atomically: the free space checked first, both files written under
    temporary names and fsynced, then renamed into place. A failed write removes the temporaries and raises
    CheckpointError naming the file, so a half-written checkpoint never appears under the final names (a previous
    one there stays whole). Floating tensors are cast to `dtype`, but for names ending in `keep`."""
    from safetensors.torch import save_file
    out = {k: (v.to(dtype) if dtype and v.is_floating_point() and not k.endswith(keep) else v).contiguous().cpu()
           for k, v in tensors.items()}
    # safetensors refuses tensors that share memory (e.g. DeepSeek's MTP copies of the embedding): clone those.
    seen: set[int] = set()
    for k, v in out.items():
        if v.data_ptr() in seen:
            out[k] = v.clone()
        seen.add(out[k].data_ptr())
    if dtype is not None:
        hf_cfg = {**hf_cfg, "torch_dtype": str(dtype).removeprefix("torch.")}
    config_text = json.dumps(hf_cfg, indent=2) + "\n"
    path = Path(path)
    created = not path.exists()
    check_free_space(next(p for p in (path, *path.parents) if p.exists()), tensor_bytes(out) + len(config_text))
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for name, write in (("model.safetensors", lambda p: save_file(out, p, metadata={"format": "pt"})),
                            ("config.json", lambda p: Path(p).write_text(config_text))):
            with writing(path / name):
                fd, tmp = tempfile.mkstemp(dir=path, prefix=f".{name}.", suffix=".tmp")
                os.close(fd)
                temps[name] = Path(tmp)
                write(tmp)
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
        with writing(path):
            for name, tmp in temps.items():
                os.replace(tmp, path / name)
    except CheckpointError as e:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        if created and not any(path.iterdir()):
            path.rmdir()
        raise CheckpointError(f"{e}; removed the temporary files") from None


def save_target(cfg: ModelConfig, model_type: str | None = None) -> tuple[Converter, str]:
    """(converter, model_type) that save() writes `cfg` as: the given model_type, else the config's
    hf_model_type, else the first converter that claims the config's layout."""
    model_type = model_type or cfg.hf_model_type or next(
        (t for c in converters() if (t := c.default_model_type(cfg)) is not None), None)
    if model_type is None:
        kinds = sorted({m.kind for m in cfg.mixers.values()})
        raise ValueError(f"config {cfg.name!r} (mixers {kinds}) has no Hugging Face format: no converter writes this "
                         f"layout (supported model types: {weight_types()}); keep it in hybridlm's own checkpoint "
                         "format (hybridlm train writes it; docs/architecture.md)")
    conv = converter_for(model_type)
    if conv is None or not conv.reads_weights(model_type):
        raise ValueError(f"model_type={model_type!r} is not supported; supported: {weight_types()}")
    return conv, model_type


def save(model, path, dtype: torch.dtype | None = None, model_type: str | None = None) -> None:
    """Write config.json + model.safetensors that transformers loads (AutoModelForCausalLM)."""
    if any(getattr(m, "is_int8", False) for m in model.modules()):
        raise ValueError("the model's routed experts are int8 (ExpertsInt8, applied at load for serving): "
                         "save the float model instead")
    conv, model_type = save_target(model.config, model_type)
    hf_cfg = conv.config_to_hf(model.config, model_type)
    write_hf_dir(path, conv.to_hf_state(model, hf_cfg["model_type"]), hf_cfg, dtype,
                 keep=tuple(conv.kept_buffers.values()))


def checkpoint_total(cfg: ModelConfig) -> int | None:
    """Numbers a Hugging Face checkpoint of `cfg` stores (parameters + stored buffers + the copies the format
    keeps), or None when no converter writes the config's hf_model_type."""
    conv = converter_for(cfg.hf_model_type)
    if conv is None or not conv.reads_weights(cfg.hf_model_type):
        return None
    return conv.checkpoint_total(cfg)
