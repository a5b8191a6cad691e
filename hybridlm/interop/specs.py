"""The one model-spec resolver: a preset name, a ModelConfig .json file, a hybridlm training checkpoint (run or
step directory) or a Hugging Face directory (config.json + safetensors) -> a ModelConfig or a model.

Every command, compare, train and the lm-eval adapter resolve a spec here, so the four kinds are told apart in
exactly one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

SpecKind = Literal["preset", "config", "checkpoint", "hf"]


@dataclass(frozen=True)
class Spec:
    """A resolved model spec. `text` is what the user wrote; `path` is None for a preset."""

    text: str
    kind: SpecKind
    path: Path | None

    @property
    def trained(self) -> bool:
        """True when the spec carries weights (a checkpoint or an HF directory), False for random init."""
        return self.kind in ("checkpoint", "hf")

    def model_config(self):
        """The spec's ModelConfig, without building a model or reading any weights."""
        from ..model import ModelConfig
        from ..presets import get_config
        if self.kind == "checkpoint":
            from .checkpoint import Checkpoint
            return Checkpoint.open(self.path).model_config()
        if self.kind == "hf":
            from .hf import checked_config, read_config
            return checked_config(self.path, read_config(self.path))
        if self.kind == "config":
            return ModelConfig.from_json(self.path)
        return get_config(self.text)


def resolve(spec: str | Path) -> Spec:
    """Tell the four kinds of spec apart: a checkpoint directory (marker or `latest` pointer), any other directory
    (Hugging Face), a path ending in .json (a ModelConfig file), else a preset name. Nothing is read or checked
    here: model_config() and load_model() report a missing file or an unknown preset."""
    from .checkpoint import is_checkpoint
    text = str(spec)
    p = Path(text)
    if is_checkpoint(p):
        return Spec(text, "checkpoint", p)
    if p.is_dir():
        return Spec(text, "hf", p)
    if p.suffix == ".json":
        return Spec(text, "config", p)
    return Spec(text, "preset", None)


def load_model(spec: str | Path | Spec, device: str = "cpu", meta: bool = False, seed: int = 0):
    """-> (model, tokenizer_dir or None). A checkpoint or HF directory brings its weights and tokenizer; a preset or
    config file gets random weights from `seed` (after the memory check). meta=True builds on the meta device and
    reads no weights."""
    from ..model import HybridLM, check_fits
    s = spec if isinstance(spec, Spec) else resolve(spec)
    if s.kind == "checkpoint":  # a hybridlm training run or step directory: its weights and tokenizer
        from .checkpoint import Checkpoint
        ckpt = Checkpoint.open(s.path)
        if meta:
            return HybridLM(ckpt.model_config(), device="meta"), ckpt.path
        return ckpt.load_model(device), ckpt.path
    if s.kind == "hf":
        if meta:
            return HybridLM(s.model_config(), device="meta"), s.path
        return HybridLM.from_hf(s.path, device=device), s.path
    cfg = s.model_config()
    if meta:
        return HybridLM(cfg, device="meta"), None
    check_fits(cfg)
    torch.manual_seed(seed)
    return HybridLM(cfg, device=device), None
