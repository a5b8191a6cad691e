"""One training run's settings: `TrainConfig` (every field is a `hybridlm train` flag, help from its metadata),
the `TrainResult` it produces, and `model_config(cfg)`, the ModelConfig a run trains (the spec resolved by
interop.specs, with the run's overrides applied)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """One training run. Every field is a `hybridlm train` flag (`--field-name`)."""

    model: str = _f("tiny-hybrid", "preset name or ModelConfig .json file")
    data: str | None = _f(None, "a .txt/.jsonl/.parquet file or a directory of them; default: the built-in corpus "
                                "(this interpreter's standard-library .py sources)")
    text_field: str = _f("text", "the text field of .jsonl rows / .parquet columns")
    corpus_max_bytes: int = _f(4_000_000, "cap on the built-in corpus size in bytes")
    tokenizer: str = _f("bytes", "'bytes', 'bpe' (trained on the data, saved as tokenizer.json), or a tokenizer.json "
                                 "/ a Hugging Face checkpoint directory holding one")
    vocab_size: int | None = _f(None, "override the model's vocab_size (e.g. to fit a BPE); also the BPE's size")
    seq_len: int = _f(256, "tokens per training sequence")
    val_fraction: float = _f(0.05, "share of sequences held out for validation (0 = none)")
    val_sequences: int = _f(64, "validation sequences evaluated at each eval (at most)")
    steps: int = _f(200, "optimizer steps in total")
    batch_size: int = _f(8, "sequences per optimizer step, over all ranks and micro-batches")
    grad_accum: int = _f(1, "micro-batches per optimizer step (per rank)")
    optimizer: Literal["adamw", "muon"] = _f("adamw", "adamw, or muon for hidden matrices + adamw for the rest")
    lr: float = _f(3e-3, "peak AdamW learning rate")
    muon_lr: float = _f(0.02, "peak Muon learning rate (optimizer=muon)")
    min_lr_ratio: float = _f(0.1, "final lr as a fraction of the peak (cosine)")
    warmup_steps: int = _f(20, "linear warmup steps")
    weight_decay: float = _f(0.1, "decoupled weight decay on matrices")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = no clipping; the norm is still logged)")
    aux_loss_weight: float = _f(1.0, "weight of the auxiliary losses (MoE balance, trained indexers' KL)")
    mtp_loss_weight: float | None = _f(None, "weight of the MTP loss (default: the model config's)")
    bias_update_rate: float | None = _f(None, "aux-loss-free expert-bias step per optimizer step "
                                              "(default: the model config's; e.g. 1e-3)")
    seed: int = _f(0, "seeds init, data order and every RNG")
    device: str = _f("auto", "auto (cuda when available), cpu, cuda")
    ep: int = _f(1, "expert-parallel degree: every MoE's routed experts split over this many ranks, tokens sent to "
                    "them by all-to-all; the world size must be a multiple (data parallel = world / ep)")
    plan: bool = _f(False, "dry run: print the per-rank memory plan (parameters, gradients, optimizer state, "
                           "activations, FSDP2 all-gather peak) and whether it fits --hardware; no training")
    plan_json: bool = _f(False, "with --plan: print the plan as JSON")
    world_size: int | None = _f(None, "the plan's world size (default: WORLD_SIZE, else 1); training uses torchrun's")
    hardware: str | None = _f(None, "the plan's accelerator (a hybridlm.analysis.hardware key: h100, h200, b200, "
                                    "mi300x, 910b, 910c); default: every one")
    precision: Literal["auto", "fp32", "bf16", "fp8"] = _f(
        "auto", "auto = fp32 on CPU, bf16 autocast on CUDA; fp8 = float8 matmuls in the linear layers (torchao on "
                "CUDA sm_89+ with bf16 autocast, an fp32 emulation on CPU; docs/training.md)")
    out: str = _f("runs/hybridlm", "run directory: checkpoints, metrics.jsonl, tokenizer")
    resume: bool = _f(False, "continue from OUT/latest (starts fresh when OUT has no checkpoint)")
    log_every: int = _f(10, "steps between step lines / metrics records")
    eval_every: int = _f(100, "steps between validations (and at the end; 0 = only at the end)")
    save_every: int = _f(100, "steps between checkpoints (and at the end; 0 = only at the end)")
    keep: int = _f(3, "checkpoints kept")
    checkpoint_format: Literal["auto", "full", "dcp"] = _f(
        "auto", "auto = dcp when the world size is > 1, else full; full = whole tensors gathered to rank 0 into "
                "model.safetensors; dcp = every rank writes its own shard files (torch.distributed.checkpoint)")
    tensorboard: bool = _f(False, "also write TensorBoard events to OUT/tb (needs tensorboard)")
    progress: bool = _f(True, "show a progress bar")
    stop_at: int | None = _f(None, "end this process after this step, with a checkpoint (the schedule still spans "
                                   "--steps; --resume continues): for jobs split into time slots")
    debug_nan_step: int | None = _f(None, "testing aid: make the loss NaN at this step")

    def __post_init__(self) -> None:
        positive = ("seq_len", "steps", "batch_size", "grad_accum", "val_sequences", "log_every", "corpus_max_bytes", "ep")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: must be a positive integer")
        if self.world_size is not None and (not isinstance(self.world_size, int) or self.world_size < 1):
            raise ValueError(f"TrainConfig.world_size={self.world_size!r}: must be a positive integer")
        for name in ("eval_every", "save_every", "warmup_steps", "keep"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: must be >= 0")
        for name in ("lr", "muon_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: must be > 0")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"TrainConfig.optimizer={self.optimizer!r}: must be 'adamw' or 'muon'")
        if self.precision not in ("auto", "fp32", "bf16", "fp8"):
            raise ValueError(f"TrainConfig.precision={self.precision!r}: must be auto, fp32, bf16 or fp8")
        if self.checkpoint_format not in ("auto", "full", "dcp"):
            raise ValueError(f"TrainConfig.checkpoint_format={self.checkpoint_format!r}: must be auto, full or dcp")
        if self.keep < 1:
            raise ValueError(f"TrainConfig.keep={self.keep}: must keep at least 1 checkpoint")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass
class TrainResult:
    out: Path
    losses: list[float]  # total loss of every step this process ran, in order (steps start after a resume)
    first_step: int  # the step number of losses[0]
    val: list[dict]  # {"step", "val_loss", "val_bpb"}
    unigram_loss: float | None  # the unigram baseline on the same validation targets (nats/token)
    tokens_per_s: float


class NonFiniteLossError(ValueError):
    """The loss or gradient norm became NaN/inf: the run stopped before applying that step."""


def model_config(cfg: TrainConfig):
    """The ModelConfig this run trains: a preset or a ModelConfig .json (resolved by interop.specs), with the run's
    vocab_size / aux and MTP loss weights / expert-bias step applied. A checkpoint or HF directory is refused (no warm start)."""
    from ..interop.specs import resolve
    spec = resolve(cfg.model)
    if spec.path is not None and spec.path.is_dir():
        raise ValueError(f"model {spec.path}: a directory; pass a preset or a ModelConfig .json (to continue a run: "
                         f"--out {spec.path} --resume; starting from a checkpoint's weights is not supported yet)")
    if spec.kind == "config" and not spec.path.is_file():
        raise ValueError(f"model config {spec.path}: no such file")
    mc = spec.model_config()
    changes: dict = {"aux_loss_weight": cfg.aux_loss_weight}  # the trainer's weight is the one the model applies
    if cfg.vocab_size is not None:
        changes["vocab_size"] = cfg.vocab_size
    if cfg.mtp_loss_weight is not None:
        changes["mtp_loss_weight"] = cfg.mtp_loss_weight
    if cfg.bias_update_rate is not None:
        ffns = {k: dataclasses.asdict(v) for k, v in mc.ffns.items()}
        for v in ffns.values():
            if v["kind"] == "moe":
                v["bias_update_rate"] = cfg.bias_update_rate
        changes["ffns"] = ffns
    mc = mc.replace(**changes)
    if cfg.seq_len > mc.max_seq_len:
        raise ValueError(f"seq_len={cfg.seq_len} exceeds the model's max_seq_len={mc.max_seq_len}")
    return mc
