"""`hybridlm compare`: the architecture families side by side on the same data, budget and active-parameter size.

    CompareConfig          the settings of one comparison (profiles: default ~10 min, --quick ~2 min on 2 cores)
    run_compare(cfg)       train (via `hybridlm train`) -> evaluate -> DIR/report.md, results.json, figures
    sweep_specs()          --sweep-ratio: the tiny hybrid from all-attention to all-linear
    add_compare_parser     registers `hybridlm compare`

Each model spec is a preset (trained here), a hybridlm checkpoint or a Hugging Face directory (evaluated as is).
Per model: validation loss and bits per byte, MQAR recall (a twin trained on the same synthetic budget), needle
retrieval, speed (training tok/s, prefill tok/s, decode ms/token at several contexts), cache bytes measured
beside the analytic figure, parameters. A model that fails is recorded with its error; the others go on.
`--resume` reuses finished training runs and finished evaluations in DIR/runs/<label>/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .evals import MQARSettings

# Linear:attention ratios of the sweep, from all-attention to all-linear (8 layers: G = Gated DeltaNet).
SWEEP = {"0:1 (all attention)": "A*8", "1:1": "GA*4", "3:1": "GGGA*2", "7:1": "GGGGGGGA", "1:0 (all linear)": "G*8"}


def default_presets() -> list[str]:
    """Every tiny family preset that exists (name starts with 'tiny-'): later families join as they land."""
    from .presets import preset_names
    return [n for n in preset_names() if n.startswith("tiny-")]


@dataclass
class CompareConfig:
    specs: list[str] = field(default_factory=list)  # empty: default_presets()
    out: str = "runs/compare"
    profile: str = "default"  # "default" or "quick": the budgets below, stated in the report
    budget_tokens: int = 40_960  # training tokens per model and seed
    seq_len: int = 128
    batch_size: int = 8
    lr: float = 3e-3
    seeds: int = 2  # training seeds per preset (the spread of bits per byte over them is reported)
    val_sequences: int = 48
    corpus_max_bytes: int = 4_000_000
    speed_contexts: list[int] = field(default_factory=lambda: [1024, 4096, 16384])
    decode_steps: int = 8
    needle_contexts: list[int] = field(default_factory=lambda: [128, 512, 1024])
    needle_depths: tuple[float, ...] = (0.1, 0.5, 0.9)
    needle_trials: int = 2
    mqar: MQARSettings = field(default_factory=MQARSettings)
    max_mqar_params: int = 20_000_000  # larger models (real checkpoints) skip the MQAR twin
    resume: bool = False
    sweep_ratio: bool = False
    progress: bool = True

    @classmethod
    def quick(cls, **changes) -> CompareConfig:
        base = dict(profile="quick", budget_tokens=8 * 64 * 16, seq_len=64, seeds=2, val_sequences=16,
                    speed_contexts=[256, 1024, 2048], decode_steps=4, needle_contexts=[128, 256, 512],
                    needle_depths=(0.25, 0.75), needle_trials=1,
                    mqar=MQARSettings(steps=60, batch_size=16, train_pairs=(2, 4, 8), eval_pairs=(2, 4, 8), lr=3e-3,
                                      eval_seq_lens=(64, 128), eval_examples=32, vocab=64))
        return cls(**{**base, **changes})

    @property
    def steps(self) -> int:
        return max(1, self.budget_tokens // (self.batch_size * self.seq_len))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- one model ----------------------------------------------------------------------------------------------------
def _kind(spec: str) -> str:
    from .checkpoint import is_checkpoint
    p = Path(spec)
    if is_checkpoint(p):
        return "checkpoint"
    if p.is_dir():
        return "hf"
    return "config" if p.suffix == ".json" else "preset"


def label_of(spec: str) -> str:
    p = Path(spec)
    return p.stem if p.suffix == ".json" else (p.name if p.exists() else spec)


def _period(letters: list[str]) -> list[str]:
    """The shortest repeating unit of a layer plan, at least 2 layers (recall needs two mixing steps)."""
    n = len(letters)
    for p in range(1, n + 1):
        if n % p == 0 and letters == letters[:p] * (n // p):
            unit = letters[:p]
            return unit * 2 if p == 1 else unit
    return letters


def _train_runs(spec: str, cfg: CompareConfig, run_dir: Path, log) -> list[dict]:
    """Train (or reuse) one run per seed with `hybridlm train`; -> per seed {seed, dir, tokens_per_s, curve, val}."""
    from .train import TrainConfig, train
    runs = []
    for seed in range(cfg.seeds):
        out = run_dir / f"seed{seed}"
        tc = TrainConfig(model=spec, seq_len=cfg.seq_len, batch_size=cfg.batch_size, steps=cfg.steps, lr=cfg.lr,
                         warmup_steps=max(1, cfg.steps // 10), val_sequences=cfg.val_sequences, seed=seed,
                         corpus_max_bytes=cfg.corpus_max_bytes, out=str(out), resume=cfg.resume, log_every=1,
                         eval_every=max(1, cfg.steps // 4), save_every=0, keep=1, progress=False, device="cpu")
        with open(run_dir / f"train_seed{seed}.log", "a") as f, contextlib.redirect_stdout(f):
            result = train(tc)
        records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        curve = [[r["step"], r["loss"]] for r in records if "loss" in r]
        val = [[r["step"], r["val_loss"], r["val_bpb"]] for r in records if "val_loss" in r]
        tok_s = [r["tok_s"] for r in records if "tok_s" in r]
        runs.append({"seed": seed, "dir": str(out), "curve": curve, "val_curve": val,
                     "tokens_per_s": result.tokens_per_s if result.losses else (sum(tok_s) / len(tok_s) if tok_s else None)})
        log(f"trained seed {seed}")
    return runs


def evaluate_model(model, tok, data, cfg: CompareConfig, progress=None) -> dict:
    """Every measurement except training on one loaded model (fp32, CPU)."""
    from . import evals
    from .model import HybridLM
    res: dict = {}
    tick = progress or (lambda what: None)
    model.eval()
    n = min(cfg.val_sequences, len(data.val))
    res["val_loss"], res["val_bpb"] = evals.validation(model, data.val[:n], data.val_bytes[:n])
    tick("validation")
    filler = data.val.flatten().tolist()
    res["needle"] = evals.needle_eval(model, tok, filler, cfg.needle_contexts, cfg.needle_depths, cfg.needle_trials)
    tick("needle")
    res["speed"] = evals.speed(model, cfg.speed_contexts, cfg.decode_steps)
    tick("speed")
    twin_cfg = evals.mqar_config(model.config, _period(model.config.layer_mixers), cfg.mqar.vocab)
    n_twin = HybridLM(twin_cfg, device="meta").num_params()
    if n_twin > cfg.max_mqar_params:
        res["mqar"] = {"skipped": f"twin has {n_twin:,} parameters > {cfg.max_mqar_params:,} (too large to train here)"}
    else:
        torch.manual_seed(cfg.mqar.seed)
        twin = HybridLM(twin_cfg)
        t0 = time.perf_counter()
        losses = evals.train_mqar(twin, cfg.mqar)
        res["mqar"] = {"twin": " ".join(twin_cfg.layer_mixers), "twin_params": n_twin, "acc": evals.eval_mqar(twin, cfg.mqar),
                       "final_loss": sum(losses[-10:]) / len(losses[-10:]), "seconds": time.perf_counter() - t0}
    tick("mqar")
    return res


def _params(model) -> dict:
    return {"total": model.num_params(mtp=False), "total_with_mtp": model.num_params(mtp=True),
            "active": model.active_params(), "active_without_embedding": model.active_params(embedding=False)}


def run_model(spec: str, cfg: CompareConfig, out: Path, label: str, progress=None) -> dict:
    from .cli import load_model
    from .tokenizer import tokenizer_for
    run_dir = out / "runs" / label
    run_dir.mkdir(parents=True, exist_ok=True)
    done_file = run_dir / "result.json"
    settings = json.loads(json.dumps(  # as stored: tuples become lists
        {k: v for k, v in cfg.to_dict().items() if k not in ("specs", "out", "resume", "progress", "sweep_ratio")}))
    if cfg.resume and done_file.is_file():
        prev = json.loads(done_file.read_text())
        if prev.get("settings") == settings and prev.get("status") == "ok":
            return {**prev, "reused": True}
    tick = progress or (lambda what: None)
    kind = _kind(spec)
    res: dict = {"label": label, "spec": spec, "kind": kind, "settings": settings}
    if kind in ("preset", "config"):
        runs = _train_runs(spec, cfg, run_dir, tick)
        res["train"] = {"steps": cfg.steps, "tokens": cfg.steps * cfg.batch_size * cfg.seq_len, "runs": runs,
                        "tokens_per_s": sum(r["tokens_per_s"] for r in runs) / len(runs)}
        from .checkpoint import Checkpoint
        ckpts = [Checkpoint.open(r["dir"]) for r in runs]
        model, tok_dir = ckpts[0].load_model(), ckpts[0].path
        bpbs = []
        for c in ckpts[1:]:  # the other seeds: validation only (their spread says how far one run can be trusted)
            m = c.load_model()
            data_c = _data(tokenizer_for(c.path), cfg)
            bpbs.append(_val(m, data_c, cfg))
    else:
        model, tok_dir = load_model(spec)
        res["train"] = None
        bpbs = []
    model = model.float().eval()
    tok = tokenizer_for(tok_dir)
    data = _data(tok, cfg)
    res["tokenizer"] = tok.name
    res["params"] = _params(model)
    res.update(evaluate_model(model, tok, data, cfg, progress))
    all_bpb = [res["val_bpb"]] + [b for _, b in bpbs]
    res["val_bpb_seeds"] = all_bpb
    res["val_loss_seeds"] = [res["val_loss"]] + [v for v, _ in bpbs]
    res["status"] = "ok"
    done_file.write_text(json.dumps(res, indent=1) + "\n")
    return res


_DATA_CACHE: dict = {}


def _data(tok, cfg: CompareConfig):
    from .data import pack, read_documents
    key = (tok.name, cfg.seq_len, cfg.corpus_max_bytes)
    if key not in _DATA_CACHE:
        docs = read_documents(None, max_bytes=cfg.corpus_max_bytes)
        _DATA_CACHE[key] = pack(docs, tok, cfg.seq_len, 0.05)
    return _DATA_CACHE[key]


def _val(model, data, cfg: CompareConfig) -> tuple[float, float]:
    from .evals import validation
    n = min(cfg.val_sequences, len(data.val))
    return validation(model.float().eval(), data.val[:n], data.val_bytes[:n])


# -- the sweep ----------------------------------------------------------------------------------------------------
def sweep_specs(out: Path) -> list[tuple[str, str]]:
    """-> [(label, config file)]: the tiny hybrid with each linear:attention ratio of SWEEP, written to
    DIR/configs/ so `hybridlm train` reads them like any config file."""
    from .presets import get_config
    base = get_config("tiny-hybrid")
    cdir = out / "configs"
    cdir.mkdir(parents=True, exist_ok=True)
    specs = []
    for ratio, pattern in SWEEP.items():
        name = "ratio-" + ratio.split()[0].replace(":", "to")
        path = cdir / f"{name}.json"
        base.replace(name=name, mixer_pattern=pattern).to_json(path)
        specs.append((name, str(path)))
    return specs


# -- the pipeline -------------------------------------------------------------------------------------------------
STAGES = ("train", "validation", "needle", "speed", "mqar")


def run_compare(cfg: CompareConfig) -> dict:
    """Run every model (failures recorded, not raised), then write DIR/results.json, report.md and figures."""
    from . import report
    out = Path(cfg.out)
    if cfg.sweep_ratio:
        pairs = sweep_specs(out)
    else:
        specs = cfg.specs or default_presets()
        pairs = [(label_of(s), s) for s in specs]
    labels = [lbl for lbl, _ in pairs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two models share a label: {labels}")
    for label, spec in pairs:
        kind = _kind(spec)
        if kind == "preset":
            from .presets import get_config
            get_config(spec)  # unknown names fail here, before any training
        elif kind == "config" and not Path(spec).is_file():
            raise ValueError(f"{spec}: no such config file")
        if not cfg.resume and any((out / "runs" / label).glob("seed*/latest")):
            raise ValueError(f"{out / 'runs' / label} already holds a training run; pass --resume to reuse it, "
                             f"or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results = []
    prog = _progress(cfg.progress)
    with prog or contextlib.nullcontext():
        overall = prog.add_task("models", total=len(pairs)) if prog else None
        for label, spec in pairs:
            per = prog.add_task(f"  {label}", total=len(STAGES) + cfg.seeds - 1) if prog else None

            def tick(what, per=per, label=label):
                if prog:
                    prog.update(per, advance=1, description=f"  {label}: {what}")
            t0 = time.perf_counter()
            try:
                res = run_model(spec, cfg, out, label, tick)
            except Exception as e:  # noqa: BLE001 (one failing model is reported and does not sink the others)
                res = {"label": label, "spec": spec, "kind": _kind(spec), "status": "failed",
                       "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=4)}
            res["seconds"] = time.perf_counter() - t0
            results.append(res)
            if prog:
                prog.update(per, completed=len(STAGES) + cfg.seeds - 1, visible=False)
                prog.update(overall, advance=1)
            else:
                print(f"{label}: {res['status']} ({res['seconds']:.0f} s)", flush=True)
    summary = {"schema": "hybridlm.compare/1", "settings": cfg.to_dict(), "machine": report.machine(),
               "seconds": time.perf_counter() - t_start, "models": results}
    report.write_all(summary, out)
    return summary


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


# -- CLI ----------------------------------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    from .cost import parse_contexts
    return parse_contexts(text)


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="train and evaluate architecture families side by side (report + figures)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="presets, hybridlm checkpoints or Hugging Face directories "
                                             f"(default: every tiny family preset: {', '.join(default_presets())})")
    p.add_argument("--out", default="runs/compare", help="output directory (report.md, results.json, figures)")
    p.add_argument("--quick", action="store_true", help="the ~2-minute profile (tiny budgets; for tests and demos)")
    p.add_argument("--budget-tokens", type=int, default=None, help="training tokens per model and seed")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="training seeds per preset (spread reported)")
    p.add_argument("--speed-contexts", type=_ints, default=None, help="e.g. 1K,8K,32K")
    p.add_argument("--needle-contexts", type=_ints, default=None, help="e.g. 128,512,1K")
    p.add_argument("--mqar-steps", type=int, default=None, help="MQAR training steps per model")
    p.add_argument("--resume", action="store_true", help="reuse finished runs and evaluations under --out")
    p.add_argument("--sweep-ratio", action="store_true",
                   help="the tiny hybrid at linear:attention ratios 0, 1:1, 3:1, 7:1, all-linear (equal budgets)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(fn=cmd_compare)


def config_from_args(args) -> CompareConfig:
    changes = {"specs": list(args.models), "out": args.out, "resume": args.resume, "sweep_ratio": args.sweep_ratio,
               "progress": args.progress}
    for name in ("budget_tokens", "seq_len", "seeds", "speed_contexts", "needle_contexts"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    cfg = CompareConfig.quick(**changes) if args.quick else CompareConfig(**changes)
    if args.mqar_steps is not None:
        cfg.mqar = dataclasses.replace(cfg.mqar, steps=args.mqar_steps)
    if args.sweep_ratio and args.models:
        raise ValueError("--sweep-ratio trains its own models; give no model names with it")
    for name in ("budget_tokens", "seq_len", "seeds"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be >= 1")
    return cfg


def cmd_compare(args) -> None:
    cfg = config_from_args(args)
    summary = run_compare(cfg)
    out = Path(cfg.out)
    failed = [m["label"] for m in summary["models"] if m["status"] != "ok"]
    print(f"wrote {out / 'report.md'}, {out / 'results.json'} and {len(list(out.glob('*.png')))} figures "
          f"in {summary['seconds']:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
