"""The training loop: data -> model (FSDP2 under torchrun) -> AdamW/Muon + warmup-cosine -> log / validate /
checkpoint; resumes exactly from OUT/latest with resume=True.

    train(cfg)      setup (checks, data, tokenizer, model, optimizer, resumed state), then per step: one optimizer
                    step (`_train_step`), the step line, validation (`evaluate`), checkpoint (`_save`)

Per optimizer step: `batch_size` sequences (global, over all ranks) = world x grad_accum micro-batches. The loss is
the model's total (`HybridLM.forward(...).loss`: CE + aux_loss_weight * aux losses + mtp_loss_weight * MTP CE, the
weights on the model config, TrainConfig's mapped onto it); every MoE's aux-loss-free expert bias is updated after
every optimizer step. A non-finite loss or gradient norm stops the run before the optimizer step, naming the step
and the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..interop import checkpoint as ckpt
from .config import NonFiniteLossError, TrainConfig, TrainResult, model_config
from .dcp import load_sharded, save_sharded
from .data import Batches, PackedData, load_tokenizer, pack, read_documents, train_bpe, unigram_loss
from .distributed import (
    all_reduce_sum,
    barrier,
    close_distributed,
    dist_info,
    grad_norm_and_clip,
    init_distributed,
    parallel_mesh,
    resolve_device,
    rng_state,
    seed_all,
    set_rng_state,
    shard,
)
from .metrics import Metrics, StepStats, progress_bar, step_line, step_record, val_line
from .sharded_init import init_sharded


def _moe_modules(model) -> list:
    return [m for m in model.modules() if hasattr(m, "update_bias")]


def _aux_modules(model) -> list:
    """Modules that may carry an auxiliary loss after a forward: MoE (balance) and indexed attention (KL)."""
    return [m for m in model.modules() if hasattr(m, "aux_loss") and not callable(m.aux_loss)]  # not HybridLM's method


@torch.no_grad()
def evaluate(model, val_NT: torch.Tensor, val_bytes: torch.Tensor, micro: int, device, autocast) -> tuple[float, float]:
    """-> (mean CE nats/token, bits per byte) over val_NT, sharded over ranks."""
    rank, world = dist_info()
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
    sums = all_reduce_sum(sums, device)
    model.train(was_training)
    nats, tokens, nbytes = sums.tolist()
    return nats / tokens, nats / (math.log(2) * nbytes)


# -- setup -----------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """Everything one training process holds: the settings, the data, the sharded model and its optimizer state."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    micro: int  # sequences per micro-batch on one rank
    out: Path
    mc: object  # the ModelConfig (TrainConfig's overrides applied)
    data: PackedData
    tok: object
    tok_file: Path | None  # stored with every checkpoint (None for bytes)
    resume_from: Path | None
    model: torch.nn.Module
    moes: list
    aux_mods: list
    opt: torch.optim.Optimizer
    sched: object
    batches: Batches
    autocast: object  # () -> context manager: bf16 autocast or nothing
    step: int = 0
    last_saved: Path | None = None


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
    barrier()
    return load_tokenizer(str(path)), path


def _setup(cfg: TrainConfig, device: torch.device) -> _Run:
    """Check everything a user can get wrong before any training step, then build the data, the model (every rank
    builds and initialises the same full model, then FSDP2 shards it) and the optimizer; resume their state."""
    from ..model import HybridLM, check_fits
    from .optim import WarmupCosine, build_optimizer

    rank, world = dist_info()
    out = Path(cfg.out)
    mc = model_config(cfg)
    micro, rem = divmod(cfg.batch_size, world * cfg.grad_accum)
    if rem or micro == 0:
        raise ValueError(f"batch_size={cfg.batch_size} must be a multiple of world size {world} x "
                         f"grad_accum={cfg.grad_accum}")
    if cfg.ep > 1:
        _check_expert_parallel(cfg.ep, world, mc)
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
        # aux_loss_weight is TrainConfig's (mapped onto the model config): a change is reported with the other
        # changed settings below, not refused
        diff = sorted(k for k in saved if saved[k] != mc.to_dict().get(k) and k != "aux_loss_weight")
        if diff:
            raise ValueError(f"--resume: the model config differs from {resume_from} in {diff}")

    seed_all(cfg.seed)
    check_fits(mc)
    model = HybridLM(mc, device="meta")
    if cfg.precision == "fp8":  # float8 linears swapped in on meta: before init, sharding and the optimizer
        from .float8 import prepare_fp8
        prepare_fp8(model, device)
    if world > 1:  # shard on the meta device, then allocate and initialise only this rank's shards
        shard(model, parallel_mesh(world, cfg.ep, device) if cfg.ep > 1 else None)
        model.to_empty(device=device)
        init_sharded(model, cfg.seed)
    else:
        model.to_empty(device=device)
        model.init_weights(seed=cfg.seed)
    model.train()
    opt = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                          muon_lr=cfg.muon_lr)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision in ("auto", "fp8") and device.type == "cuda")
    run = _Run(cfg=cfg, device=device, rank=rank, world=world, micro=micro, out=out, mc=mc, data=data, tok=tok,
               tok_file=tok_file, resume_from=resume_from, model=model, moes=_moe_modules(model),
               aux_mods=_aux_modules(model), opt=opt,
               sched=WarmupCosine(opt, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio),
               batches=Batches(len(data.train), cfg.seed),
               autocast=((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16
                         else contextlib.nullcontext),
               last_saved=resume_from)
    if resume_from is not None:
        _resume(run, ckpt.Checkpoint(resume_from))
    return run


def _check_expert_parallel(ep: int, world: int, mc) -> None:
    """--ep N: a world size that N divides, and a model whose every MoE has a multiple of N experts."""
    if world % ep:
        raise ValueError(f"--ep {ep}: the world size is {world}, not a multiple of {ep} (run under torchrun with "
                         f"--nproc_per_node a multiple of {ep})")
    moes = {name: f for name, f in mc.ffns.items() if f.kind == "moe"}
    if not moes:
        raise ValueError(f"--ep {ep}: the model has no MoE layer whose experts could be split")
    for name, f in moes.items():
        if f.num_experts % ep:
            raise ValueError(f"--ep {ep}: ffns[{name!r}].num_experts={f.num_experts} is not a multiple of {ep}")


def _resume(run: _Run, c) -> None:
    """Load the model, optimizer, scheduler, data position and RNG state of checkpoint c into run."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    cfg, model, opt = run.cfg, run.model, run.opt
    # The saved state tensors continue; the hyperparameters are this run's (identical when nothing changed),
    # so a flag changed on resume takes effect instead of being silently overridden by the checkpoint.
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    # Both states are checked against this model and optimizer (names, shapes, dtypes, finite) first.
    if c.layout == "dcp":  # each rank reads the slices it holds, whatever the world size that wrote them
        load_sharded(c, model, opt, run.device)
    else:
        set_model_state_dict(model, c.model_state(model), options=StateDictOptions(full_state_dict=True))
        set_optimizer_state_dict(model, opt, c.optimizer_state(model, opt),
                                 options=StateDictOptions(full_state_dict=True))
    for g, h in zip(opt.param_groups, hyper):
        g.update(h)
    saved_cfg = c.json("train_config.json")
    changed = {k: (saved_cfg.get(k), v) for k, v in cfg.to_dict().items()
               if k not in ("resume", "stop_at") and saved_cfg.get(k) != v}
    if changed and run.rank == 0:
        print("resuming with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                              for k, (a, b) in changed.items()), flush=True)
    trainer = c.json("trainer.json", required=("step", "scheduler", "data"))
    try:
        run.sched.load_state_dict(trainer["scheduler"])
        run.batches.load_state_dict(trainer["data"])
    except (KeyError, TypeError, ValueError) as e:  # ValueError: saved for other data (its own message)
        why = str(e) if type(e) is ValueError else f"{type(e).__name__}: {e}"
        raise ckpt.CheckpointError(f"{c.path / 'trainer.json'}: scheduler / data state unusable ({why})") from None
    set_rng_state(c.rng(), run.device)
    run.step = c.step


def _announce(run: _Run) -> None:
    """The full config as JSON at the start (rank 0)."""
    from ..model import HybridLM
    print(json.dumps({"model": run.mc.to_dict(), "train": run.cfg.to_dict(), "world_size": run.world,
                      "parallel": {"dp": run.world // run.cfg.ep, "ep": run.cfg.ep}, "device": str(run.device),
                      "data": run.data.summary(), "tokenizer": run.tok.name,
                      "parameters": run.model.num_params() if run.world == 1 else sum(
                          p.numel() for p in HybridLM(run.mc, device="meta").parameters()),
                      "resumed_from": str(run.resume_from) if run.resume_from else None}, indent=2), flush=True)


# -- one step, save ----------------------------------------------------------------------------------------------
def _train_step(run: _Run) -> StepStats:
    """One optimizer step over grad_accum micro-batches on every rank; raises NonFiniteLossError (before the update)
    on a non-finite loss or gradient norm."""
    cfg, model, world = run.cfg, run.model, run.world
    idx = run.batches.next(cfg.batch_size).view(world, cfg.grad_accum, run.micro)[run.rank]
    sums = torch.zeros(4, dtype=torch.float64)  # loss, ce, aux, mtp (means over micro-batches)
    for m in range(cfg.grad_accum):
        if world > 1:  # reduce-scatter gradients only on the last micro-batch
            model.set_requires_gradient_sync(m == cfg.grad_accum - 1)
        x = run.data.train[idx[m]].to(run.device)
        with run.autocast():
            o = model(x, labels=x)
            loss = o.loss  # the model's total (HybridLM.total_loss), with this run's weights on its config
        if cfg.debug_nan_step == run.step + 1:
            loss = loss * float("nan")
        (loss / cfg.grad_accum).backward()
        aux = sum(float(mo.aux_loss.detach()) for mo in run.aux_mods if mo.aux_loss is not None)
        mtp = float(o.mtp_loss.detach()) if o.mtp_loss is not None else 0.0
        sums += torch.tensor([float(loss.detach()), float(o.ce_loss.detach()), aux, mtp], dtype=torch.float64)
    sums /= cfg.grad_accum * world
    sums = all_reduce_sum(sums, run.device)
    if cfg.ep > 1:  # parameters on two meshes (experts over dp, the rest over all ranks): a norm of local shards
        gnorm = grad_norm_and_clip(model.parameters(), cfg.grad_clip or float("inf"), run.device)
    else:
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
        gnorm = float(gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm)
    loss_v = float(sums[0])
    if not (math.isfinite(loss_v) and math.isfinite(gnorm)):
        what = "loss" if not math.isfinite(loss_v) else "gradient norm"
        value = loss_v if not math.isfinite(loss_v) else gnorm
        raise NonFiniteLossError(
            f"step {run.step + 1}: {what} is {value} (non-finite); stopped before applying this step. "
            f"Last good checkpoint: {run.last_saved if run.last_saved else 'none (no checkpoint saved yet)'}. "
            f"Lower --lr or check the data, then rerun with --resume")
    lr = run.opt.param_groups[0]["lr"]
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    run.sched.step()
    if world > 1 and run.moes:  # the expert loads of the whole global batch, in one all-reduce
        loads = all_reduce_sum(torch.stack([mo.load_accum for mo in run.moes]), run.device)
        for mo, load in zip(run.moes, loads):
            mo.load_accum.copy_(load)
    imb = [float(mo.load_accum.max() / mo.load_accum.mean().clamp_min(1e-9)) for mo in run.moes]
    for mo in run.moes:
        mo.update_bias()  # on the loads summed over ranks above
    run.step += 1
    return StepStats(loss=loss_v, ce=float(sums[1]), aux=float(sums[2]), mtp=float(sums[3]), lr=lr, gnorm=gnorm,
                     imbalance=imb)


def _save(run: _Run, at: int) -> Path:
    """Checkpoint step `at`: the `full` layout (whole state dicts gathered to rank 0, which writes them atomically)
    or the `dcp` one (every rank writes its own shards; training/dcp.py), as --checkpoint-format says."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )
    fmt = run.cfg.checkpoint_format
    if fmt == "auto":
        fmt = "dcp" if run.world > 1 else "full"
    rng = rng_state(run.device)
    trainer = {"scheduler": run.sched.state_dict(), "data": run.batches.state_dict(), "world_size": run.world,
               "tokenizer": "tokenizer.json" if run.tok_file else "bytes"}
    common = {"trainer": trainer, "model_config_json": run.mc.to_json(), "train_config": run.cfg.to_dict(),
              "rng": rng, "tokenizer_file": run.tok_file, "keep": run.cfg.keep}
    if fmt == "dcp":
        return save_sharded(run.out, at, model=run.model, optimizer=run.opt, device=run.device, **common)
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(run.model, options=full)
    osd = get_optimizer_state_dict(run.model, run.opt, options=full)
    if run.rank == 0:
        ckpt.save(run.out, at, model_state=msd, optim_state=osd, **common)
    barrier()
    return run.out / ckpt.step_name(at)


# -- the loop ------------------------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> TrainResult | None:
    """Run (or resume) the training described by cfg; see the module docstring. cfg.plan: print the memory plan
    (plan.py) instead, and return None."""
    from ..core import runtime

    if cfg.plan:
        from .plan import print_plan
        print_plan(cfg)
        return None
    device = resolve_device(cfg.device)
    created_pg = init_distributed(device)
    governor = None
    try:
        run = _setup(cfg, device)
        data, out = run.data, run.out
        metrics = Metrics(out, run.step, cfg.tensorboard, enabled=run.rank == 0)
        show = run.rank == 0
        baseline = unigram_loss(data) if len(data.val) else None
        if show:
            _announce(run)
            if baseline is not None:
                print(f"unigram baseline on the validation targets: {baseline:.4f} nats/token", flush=True)

        losses, vals = [], []
        tokens_per_step = cfg.batch_size * cfg.seq_len
        first_step = run.step + 1
        t_train = 0.0
        progress = progress_bar(show and cfg.progress)
        emit = progress.console.print if progress is not None else (lambda s: print(s, flush=True))
        with progress or contextlib.nullcontext():
            task = progress.add_task("train", total=cfg.steps, completed=run.step) if progress is not None else None
            t_log, tokens_log = 0.0, 0  # training time and tokens since the last step line (no eval/save)
            governor = runtime.LoadGovernor()  # fewer threads while other processes use the cores (closed below)
            while run.step < cfg.steps:
                governor.tick()
                t0 = time.perf_counter()
                stats = _train_step(run)
                step = run.step
                losses.append(stats.loss)
                dt = time.perf_counter() - t0
                t_train += dt
                t_log += dt
                tokens_log += tokens_per_step
                if progress is not None:
                    progress.update(task, completed=step)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    tok_s = tokens_log / max(t_log, 1e-9)
                    if show:
                        emit(step_line(step, stats, tok_s))
                    metrics.write(step_record(step, stats, tok_s))
                    t_log, tokens_log = 0.0, 0
                end = step == cfg.steps
                if len(data.val) and ((cfg.eval_every and step % cfg.eval_every == 0) or end):
                    vl, bpb = evaluate(run.model, data.val[:cfg.val_sequences], data.val_bytes[:cfg.val_sequences],
                                       run.micro, device, run.autocast)
                    vals.append({"step": step, "val_loss": vl, "val_bpb": bpb})
                    if show:
                        emit(val_line(vals[-1]))
                    metrics.write(vals[-1])
                halt = cfg.stop_at is not None and step >= cfg.stop_at
                if (cfg.save_every and step % cfg.save_every == 0) or end or halt:
                    run.last_saved = _save(run, step)
                if halt:
                    break
        metrics.close()
        if show:
            print(f"done: {len(losses)} steps, {len(losses) * tokens_per_step / max(t_train, 1e-9):.0f} tok/s; "
                  f"checkpoint {out / ckpt.step_name(run.step)} (load it with `hybridlm generate {out} --prompt ...`)",
                  flush=True)
        return TrainResult(out=out, losses=losses, first_step=first_step, val=vals, unigram_loss=baseline,
                           tokens_per_s=len(losses) * tokens_per_step / max(t_train, 1e-9))
    finally:
        if governor is not None:
            governor.close()
        if created_pg:
            close_distributed()
