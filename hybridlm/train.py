"""`hybridlm train`: pretrain any preset or config file on the built-in corpus or the user's text.

    TrainConfig          every knob of a run; the CLI's flags are generated from its fields (help from metadata)
    train(cfg)           the loop: data -> model (FSDP2 under torchrun) -> AdamW/Muon + warmup-cosine ->
                         log / validate / checkpoint; resumes exactly from OUT/latest with resume=True
    add_train_parser     registers `hybridlm train` and `hybridlm export` (checkpoint -> Hugging Face dir)

Per optimizer step: `batch_size` sequences (global, over all ranks) = world x grad_accum micro-batches.
loss = CE + aux_loss_weight * sum(aux losses: MoE balance, trained indexers' KL) + mtp_loss_weight * CE(token after
next); every MoE's aux-loss-free expert bias is updated after every optimizer step. A non-finite loss or gradient norm stops the run
before the optimizer step, naming the step and the last good checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from . import checkpoint as ckpt
from .data import Batches, load_tokenizer, pack, read_documents, train_bpe, unigram_loss


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
    precision: Literal["auto", "fp32", "bf16"] = _f("auto", "auto = fp32 on CPU, bf16 autocast on CUDA")
    out: str = _f("runs/hybridlm", "run directory: checkpoints, metrics.jsonl, tokenizer")
    resume: bool = _f(False, "continue from OUT/latest (starts fresh when OUT has no checkpoint)")
    log_every: int = _f(10, "steps between step lines / metrics records")
    eval_every: int = _f(100, "steps between validations (and at the end; 0 = only at the end)")
    save_every: int = _f(100, "steps between checkpoints (and at the end; 0 = only at the end)")
    keep: int = _f(3, "checkpoints kept")
    tensorboard: bool = _f(False, "also write TensorBoard events to OUT/tb (needs tensorboard)")
    progress: bool = _f(True, "show a progress bar")
    stop_at: int | None = _f(None, "end this process after this step, with a checkpoint (the schedule still spans "
                                   "--steps; --resume continues): for jobs split into time slots")
    debug_nan_step: int | None = _f(None, "testing aid: make the loss NaN at this step")

    def __post_init__(self) -> None:
        positive = ("seq_len", "steps", "batch_size", "grad_accum", "val_sequences", "log_every", "corpus_max_bytes")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: must be a positive integer")
        for name in ("eval_every", "save_every", "warmup_steps", "keep"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: must be >= 0")
        for name in ("lr", "muon_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: must be > 0")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"TrainConfig.optimizer={self.optimizer!r}: must be 'adamw' or 'muon'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"TrainConfig.precision={self.precision!r}: must be auto, fp32 or bf16")
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


# -- setup helpers -------------------------------------------------------------------------------------------
def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes in the environment; True when this call created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return True
    return False


def _device(spec: str) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if spec != "cpu":
        raise ValueError(f"--device {spec!r}: must be auto, cpu or cuda")
    return torch.device("cpu")


def _model_config(cfg: TrainConfig):
    from .config import ModelConfig
    from .presets import get_config
    p = Path(cfg.model)
    if p.is_dir():
        raise ValueError(f"model {p}: a directory; pass a preset or a ModelConfig .json (to continue a run: "
                         f"--out {p} --resume; starting from a checkpoint's weights is not supported yet)")
    if p.suffix == ".json":
        if not p.is_file():
            raise ValueError(f"model config {p}: no such file")
        mc = ModelConfig.from_json(p)
    else:
        mc = get_config(cfg.model)
    changes: dict = {}
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
    mc = mc.replace(**changes) if changes else mc
    if cfg.seq_len > mc.max_seq_len:
        raise ValueError(f"seq_len={cfg.seq_len} exceeds the model's max_seq_len={mc.max_seq_len}")
    return mc


def _tokenizer(cfg: TrainConfig, docs, vocab_size: int, out: Path, resume_from: Path | None, rank: int):
    """The run's tokenizer and the file to store with checkpoints (None for bytes)."""
    if resume_from is not None:
        f = resume_from / "tokenizer.json"
        return (load_tokenizer(str(f)), f) if f.is_file() else (load_tokenizer("bytes"), None)
    if cfg.tokenizer != "bpe":
        tok = load_tokenizer(cfg.tokenizer)
        return tok, (None if cfg.tokenizer == "bytes" else Path(tok.path))
    path = out / "tokenizer.json"
    if rank == 0:
        train_bpe([t for _, t in docs], vocab_size, path)
    if dist.is_initialized():
        dist.barrier()
    return load_tokenizer(str(path)), path


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's RNG states, gathered as [world, S] rows (rank order)."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    if not dist.is_initialized():
        return {k: v[None] for k, v in states.items()}
    out = {}
    for k, v in states.items():
        v = v.to(device)
        rows = [torch.empty_like(v) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, v)
        out[k] = torch.stack(rows).cpu()
    return out


def _set_rng_state(rng: dict[str, torch.Tensor], device: torch.device) -> None:
    rank, world = _dist_info()
    row = rank if rng["cpu"].shape[0] == world else 0  # another world size: every rank takes rank 0's
    torch.set_rng_state(rng["cpu"][row].clone())
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"][row].clone(), device)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Metrics:
    """metrics.jsonl (and TensorBoard) on rank 0; on resume, records after the checkpoint's step are dropped."""

    def __init__(self, out: Path, resume_step: int, tensorboard: bool, enabled: bool):
        self.enabled, self.path, self.tb = enabled, out / "metrics.jsonl", None
        if not enabled:
            return
        if self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            ckpt.replace_text(self.path, "".join(ln + "\n" for ln in kept))
        self.file = self.path.open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tb"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


# -- the loop ------------------------------------------------------------------------------------------------
def _moe_modules(model) -> list:
    return [m for m in model.modules() if hasattr(m, "update_bias")]


def _aux_modules(model) -> list:
    """Modules that may carry an auxiliary loss after a forward: MoE (balance) and indexed attention (KL)."""
    return [m for m in model.modules() if hasattr(m, "aux_loss") and not callable(m.aux_loss)]  # not HybridLM's method


def _loss(out, aux_mods, cfg: TrainConfig, mtp_weight: float) -> torch.Tensor:
    loss = out.ce_loss
    aux = [m.aux_loss for m in aux_mods if m.aux_loss is not None]  # main layers and the MTP block
    if aux:
        loss = loss + cfg.aux_loss_weight * torch.stack(aux).sum()
    if out.mtp_loss is not None:
        loss = loss + mtp_weight * out.mtp_loss
    return loss


@torch.no_grad()
def evaluate(model, val_NT: torch.Tensor, val_bytes: torch.Tensor, micro: int, device, autocast) -> tuple[float, float]:
    """-> (mean CE nats/token, bits per byte) over val_NT, sharded over ranks."""
    rank, world = _dist_info()
    n = len(val_NT)
    if n >= world:
        n -= n % world
        mine = torch.arange(rank, n, world)
        share = 1.0
    else:  # fewer sequences than ranks: every rank evaluates all of them; the sum counts them world times
        mine, share = torch.arange(n), 1.0 / world
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # nats, tokens, bytes
    for s in range(0, len(mine), micro):
        idx = mine[s:s + micro]
        x = val_NT[idx].to(device)
        with autocast():
            ce = model(x, labels=x).ce_loss
        tokens = x.shape[0] * (x.shape[1] - 1)
        sums += torch.tensor([float(ce) * tokens, tokens, float(val_bytes[idx].sum())], dtype=torch.float64) * share
    if dist.is_initialized():
        sums_d = sums.to(device)
        dist.all_reduce(sums_d)
        sums = sums_d.cpu()
    model.train(was_training)
    nats, tokens, nbytes = sums.tolist()
    return nats / tokens, nats / (math.log(2) * nbytes)


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) the training described by cfg; see the module docstring."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from . import runtime
    from .model import HybridLM
    from .optim import WarmupCosine, build_optimizer

    device = _device(cfg.device)
    created_pg = _init_distributed(device)
    governor = None
    try:
        rank, world = _dist_info()
        out = Path(cfg.out)
        mc = _model_config(cfg)

        # Everything a user can get wrong is checked here, before any training step.
        micro, rem = divmod(cfg.batch_size, world * cfg.grad_accum)
        if rem or micro == 0:
            raise ValueError(f"batch_size={cfg.batch_size} must be a multiple of world size {world} x "
                             f"grad_accum={cfg.grad_accum}")
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out}: is a file, not a directory")
        resume_from = ckpt.latest_step_dir(out) if cfg.resume else None
        if not cfg.resume and (out / "latest").exists():
            raise ValueError(f"--out {out} already holds a run ({(out / 'latest').read_text().strip()}); pass "
                             f"--resume to continue it, or choose another --out")
        if cfg.tensorboard:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ValueError("--tensorboard needs the tensorboard package (pip install 'hybridlm[tensorboard]')") from None
        docs = read_documents(cfg.data, cfg.text_field, cfg.corpus_max_bytes)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        tok, tok_file = _tokenizer(cfg, docs, cfg.vocab_size or mc.vocab_size, out, resume_from, rank)
        if tok.vocab_size > mc.vocab_size:
            raise ValueError(f"tokenizer {tok.name} has vocab_size {tok.vocab_size} > the model's vocab_size "
                             f"{mc.vocab_size}; pass --vocab-size {tok.vocab_size} or use a smaller tokenizer")
        data = pack(docs, tok, cfg.seq_len, cfg.val_fraction)
        if len(data.train) < cfg.batch_size:
            raise ValueError(f"only {len(data.train)} training sequences of seq_len={cfg.seq_len}, fewer than "
                             f"batch_size={cfg.batch_size}; add data or lower --seq-len / --batch-size")
        if resume_from is not None:
            saved = ckpt.Checkpoint(resume_from).model_config().to_dict()
            diff = sorted(k for k in saved if saved[k] != mc.to_dict().get(k))
            if diff:
                raise ValueError(f"--resume: the model config differs from {resume_from} in {diff}")

        # The model: every rank builds and initialises the same full model, then FSDP2 shards it.
        _seed_all(cfg.seed)
        runtime.check_fits(mc)
        model = HybridLM(mc, device="meta")
        model.to_empty(device=device)
        model.init_weights(seed=cfg.seed)
        if world > 1:
            from torch.distributed.fsdp import fully_shard
            for block in model.layers:
                fully_shard(block)
            if model.mtp is not None:
                fully_shard(model.mtp)
            fully_shard(model)
        model.train()
        moes, aux_mods = _moe_modules(model), _aux_modules(model)
        opt = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                              muon_lr=cfg.muon_lr)
        sched = WarmupCosine(opt, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        batches = Batches(len(data.train), cfg.seed)
        step = 0
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        if resume_from is not None:
            c = ckpt.Checkpoint(resume_from)
            # Both states are checked against this model and optimizer (names, shapes, dtypes, finite) first.
            set_model_state_dict(model, c.model_state(model), options=StateDictOptions(full_state_dict=True))
            # The saved state tensors continue; the hyperparameters are this run's (identical when nothing changed),
            # so a flag changed on resume takes effect instead of being silently overridden by the checkpoint.
            hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            set_optimizer_state_dict(model, opt, c.optimizer_state(model, opt),
                                     options=StateDictOptions(full_state_dict=True))
            for g, h in zip(opt.param_groups, hyper):
                g.update(h)
            saved_cfg = c.json("train_config.json")
            changed = {k: (saved_cfg.get(k), v) for k, v in cfg.to_dict().items()
                       if k not in ("resume", "stop_at") and saved_cfg.get(k) != v}
            if changed and rank == 0:
                print("resuming with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                                      for k, (a, b) in changed.items()), flush=True)
            trainer = c.json("trainer.json", required=("step", "scheduler", "data"))
            try:
                sched.load_state_dict(trainer["scheduler"])
                batches.load_state_dict(trainer["data"])
            except (KeyError, TypeError, ValueError) as e:  # ValueError: saved for other data (its own message)
                why = str(e) if type(e) is ValueError else f"{type(e).__name__}: {e}"
                raise ckpt.CheckpointError(f"{c.path / 'trainer.json'}: scheduler / data state unusable ({why})") from None
            _set_rng_state(c.rng(), device)
            step = c.step

        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16
                    else contextlib.nullcontext)
        mtp_weight = mc.mtp_loss_weight
        last_saved = resume_from

        def save(at: int) -> Path:
            msd = get_model_state_dict(model, options=full)
            osd = get_optimizer_state_dict(model, opt, options=full)
            rng = _rng_state(device)
            if rank == 0:
                trainer = {"scheduler": sched.state_dict(), "data": batches.state_dict(), "world_size": world,
                           "tokenizer": "tokenizer.json" if tok_file else "bytes"}
                ckpt.save(out, at, model_state=msd, optim_state=osd, trainer=trainer, model_config_json=mc.to_json(),
                          train_config=cfg.to_dict(), rng=rng, tokenizer_file=tok_file, keep=cfg.keep)
            if dist.is_initialized():
                dist.barrier()
            return out / ckpt.step_name(at)

        metrics = _Metrics(out, step, cfg.tensorboard, enabled=rank == 0)
        show = rank == 0
        baseline = unigram_loss(data) if len(data.val) else None
        if show:
            print(json.dumps({"model": mc.to_dict(), "train": cfg.to_dict(), "world_size": world,
                              "device": str(device), "data": data.summary(), "tokenizer": tok.name,
                              "parameters": model.num_params() if world == 1 else sum(
                                  p.numel() for p in HybridLM(mc, device="meta").parameters()),
                              "resumed_from": str(resume_from) if resume_from else None}, indent=2), flush=True)
            if baseline is not None:
                print(f"unigram baseline on the validation targets: {baseline:.4f} nats/token", flush=True)

        losses, vals = [], []
        tokens_per_step = cfg.batch_size * cfg.seq_len
        first_step = step + 1
        t_train = 0.0
        progress = _progress(show and cfg.progress, cfg.steps, step)
        emit = progress.console.print if progress is not None else (lambda s: print(s, flush=True))
        with progress or contextlib.nullcontext():
            task = progress.add_task("train", total=cfg.steps, completed=step) if progress is not None else None
            t_log, tokens_log = 0.0, 0  # training time and tokens since the last step line (no eval/save)
            governor = runtime.LoadGovernor()  # fewer threads while other processes use the cores (closed below)
            while step < cfg.steps:
                governor.tick()
                t0 = time.perf_counter()
                idx = batches.next(cfg.batch_size).view(world, cfg.grad_accum, micro)[rank]
                sums = torch.zeros(4, dtype=torch.float64)  # loss, ce, aux, mtp (means over micro-batches)
                for m in range(cfg.grad_accum):
                    if world > 1:  # reduce-scatter gradients only on the last micro-batch
                        model.set_requires_gradient_sync(m == cfg.grad_accum - 1)
                    x = data.train[idx[m]].to(device)
                    with autocast():
                        o = model(x, labels=x)
                        loss = _loss(o, aux_mods, cfg, mtp_weight)
                    if cfg.debug_nan_step == step + 1:
                        loss = loss * float("nan")
                    (loss / cfg.grad_accum).backward()
                    aux = sum(float(mo.aux_loss.detach()) for mo in aux_mods if mo.aux_loss is not None)
                    mtp = float(o.mtp_loss.detach()) if o.mtp_loss is not None else 0.0
                    sums += torch.tensor([float(loss.detach()), float(o.ce_loss.detach()), aux, mtp], dtype=torch.float64)
                sums /= cfg.grad_accum * world
                if dist.is_initialized():
                    sums_d = sums.to(device)
                    dist.all_reduce(sums_d)
                    sums = sums_d.cpu()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
                gnorm = float(gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm)
                loss_v = float(sums[0])
                if not (math.isfinite(loss_v) and math.isfinite(gnorm)):
                    what = "loss" if not math.isfinite(loss_v) else "gradient norm"
                    value = loss_v if not math.isfinite(loss_v) else gnorm
                    raise NonFiniteLossError(
                        f"step {step + 1}: {what} is {value} (non-finite); stopped before applying this step. "
                        f"Last good checkpoint: {last_saved if last_saved else 'none (no checkpoint saved yet)'}. "
                        f"Lower --lr or check the data, then rerun with --resume")
                lr = opt.param_groups[0]["lr"]
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                imb = [float(mo.load_accum.max() / mo.load_accum.mean().clamp_min(1e-9)) for mo in moes]
                for mo in moes:
                    mo.update_bias()
                step += 1
                losses.append(loss_v)
                dt = time.perf_counter() - t0
                t_train += dt
                t_log += dt
                tokens_log += tokens_per_step
                if progress is not None:
                    progress.update(task, completed=step)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    tok_s = tokens_log / max(t_log, 1e-9)
                    imb_v = sum(imb) / len(imb) if imb else 1.0
                    if show:
                        emit(f"step {step:05d} | loss {loss_v:.4f} | lr {lr:.2e} | gnorm {gnorm:.2f} | "
                             f"tok/s {tok_s:.0f} | imb {imb_v:.2f}")
                    metrics.write({"step": step, "loss": loss_v, "ce": float(sums[1]), "aux": float(sums[2]),
                                   "mtp": float(sums[3]), "lr": lr, "gnorm": gnorm, "tok_s": tok_s,
                                   "imbalance": imb_v})
                    t_log, tokens_log = 0.0, 0
                end = step == cfg.steps
                if len(data.val) and ((cfg.eval_every and step % cfg.eval_every == 0) or end):
                    vl, bpb = evaluate(model, data.val[:cfg.val_sequences], data.val_bytes[:cfg.val_sequences],
                                       micro, device, autocast)
                    vals.append({"step": step, "val_loss": vl, "val_bpb": bpb})
                    if show:
                        emit(f"val  {step:05d} | loss {vl:.4f} | bpb {bpb:.4f}")
                    metrics.write(vals[-1])
                halt = cfg.stop_at is not None and step >= cfg.stop_at
                if (cfg.save_every and step % cfg.save_every == 0) or end or halt:
                    last_saved = save(step)
                if halt:
                    break
        metrics.close()
        if show:
            print(f"done: {len(losses)} steps, {len(losses) * tokens_per_step / max(t_train, 1e-9):.0f} tok/s; "
                  f"checkpoint {out / ckpt.step_name(step)} (load it with `hybridlm generate {out} --prompt ...`)",
                  flush=True)
        return TrainResult(out=out, losses=losses, first_step=first_step, val=vals, unigram_loss=baseline,
                           tokens_per_s=len(losses) * tokens_per_step / max(t_train, 1e-9))
    finally:
        if governor is not None:
            governor.close()
        if created_pg:
            dist.destroy_process_group()


def _progress(enabled: bool, total: int, done: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), transient=True)


# -- CLI -----------------------------------------------------------------------------------------------------
def _arg_type(tp):
    """-> (argparse type, choices) for a TrainConfig annotation."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is Literal:
        return str, list(typing.get_args(tp))
    if args:  # X | None
        return _arg_type(args[0])
    return tp, None


def add_train_parser(sub) -> None:
    """Register `hybridlm train` (flags generated from TrainConfig) and `hybridlm export`."""
    p = sub.add_parser("train", help="train a preset or config on the built-in corpus or your data",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        help_text = f.metadata.get("help", "")
        if f.name == "model":
            p.add_argument("model", nargs="?", default=argparse.SUPPRESS, help=f"{help_text} (default: {f.default})")
            continue
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{help_text} (default: {f.default})")
        else:
            tp, choices = _arg_type(hints[f.name])
            p.add_argument(flag, type=tp, choices=choices, default=argparse.SUPPRESS,
                           help=f"{help_text} (default: {f.default})")
    p.add_argument("--train-config", default=None, help="a TrainConfig .json; flags given here override it")
    p.set_defaults(fn=cmd_train)
    e = sub.add_parser("export", help="write a training checkpoint as a Hugging Face checkpoint directory")
    e.add_argument("checkpoint", help="a run directory (uses its latest checkpoint) or a step_XXXXXX directory")
    e.add_argument("hf_dir", help="output directory (config.json + model.safetensors [+ tokenizer.json])")
    e.add_argument("--drop-expert-bias", action="store_true",
                   help="export even though the aux-loss-free expert bias moved (the HF format has no such bias)")
    e.set_defaults(fn=cmd_export)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict = {}
    if args.train_config:
        p = Path(args.train_config)
        if not p.is_file():
            raise ValueError(f"--train-config {p}: no such file")
        try:
            values = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--train-config {p}: not valid JSON ({e})") from None
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return TrainConfig.from_dict(values)


def cmd_train(args) -> None:
    train(config_from_args(args))


def cmd_export(args) -> None:
    path = ckpt.export_hf(args.checkpoint, args.hf_dir, drop_expert_bias=args.drop_expert_bias)
    print(f"wrote {path} (loads with HybridLM.from_hf / transformers)")

