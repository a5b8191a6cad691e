"""`hybridlm compare`: the architecture families side by side on the same data, budget and active-parameter size.

    CompareConfig          the settings of one comparison (profiles: default ~10 min, --quick ~2 min on 2 cores)
    run_compare(cfg)       train (via `hybridlm train`) -> evaluate -> DIR/report.md, results.json, figures
    add_compare_parser     registers `hybridlm compare`

Each model spec is a preset (trained here), a hybridlm checkpoint or a Hugging Face directory (evaluated as is).
Per model: validation loss and bits per byte, MQAR recall (a twin trained on the same synthetic budget), needle
retrieval, speed (training tok/s, prefill tok/s, decode ms/token at several contexts), cache bytes measured
beside the analytic figure (with the load other processes put on the machine meanwhile), parameters. A model
that fails is recorded with its error; the others go on, the report is written, and the command exits 1.
`--quantize experts-int8` quantises each model's routed experts after training / loading (docs/quantize.md) and
evaluates the quantised model; its logit error against the fp32 model is measured first (results.json: "quantize").
`--resume` reuses finished training runs and finished evaluations in DIR/runs/<label>/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .recall import RecallSettings

# The default profile's line-up, sized for about 15 minutes on 2 cores: the hybrid and its all-attention and
# all-linear baselines (claim (a)), Llama 4 beside it (the Western attention + MoE path, for --group-by origin), and
# the hybrid at 1x and 16x total / active experts (claim (b); tiny-hybrid itself is the 4x point,
# sweeps.sparsity_config). --quick and --budget large run every tiny family instead. tiny-mamba2-hybrid (a Western
# Mamba-2 hybrid) was in it and took 2:49 of a 17:55 run: it no longer fits.
DEFAULT_LINEUP = ("tiny-attention", "tiny-gdn", "tiny-hybrid", "tiny-llama4")
DEFAULT_SPARSITY = ("sparsity-1x", "sparsity-16x")


def default_pairs(cfg: CompareConfig, out: Path) -> list[tuple[str, str]]:
    """-> [(label, spec)] when no models are named: the default profile's DEFAULT_LINEUP and its sparsity points
    (configs written to DIR/configs/), or every tiny family (default_presets) for --quick and --budget large, the
    latter with the sparsity points too."""
    from . import sweeps
    presets = list(DEFAULT_LINEUP) if cfg.profile == "default" else default_presets()
    pairs = [(p, p) for p in presets]
    if cfg.profile != "quick":
        pairs += sweeps.write_configs({n: sweeps.sparsity_config(sweeps.EXPERTS[n], n) for n in DEFAULT_SPARSITY}, out)
    return pairs


def default_presets() -> list[str]:
    """Every tiny family preset that exists (name starts with 'tiny-'): later families join as they land. The
    presets of presets/tiny.py (the hybrid and its all-attention / all-linear baselines first) lead."""
    from ..presets import preset_names, tiny
    names = [n for n in preset_names() if n.startswith("tiny-")]
    return sorted(names, key=lambda n: n not in tiny.PRESETS)  # stable within each group


@dataclass
class CompareConfig:
    specs: list[str] = field(default_factory=list)  # empty: default_pairs (the profile's line-up)
    out: str = "runs/compare"
    profile: str = "default"  # "default", "quick" or "large": the budgets below, stated in the report
    budget_tokens: int = 40_960  # training tokens per model and seed
    seq_len: int = 128
    batch_size: int = 8
    lr: float = 3e-3
    seeds: int = 2  # training seeds per preset (the spread of bits per byte over them is reported)
    val_sequences: int = 48
    corpus_max_bytes: int = 4_000_000
    speed_contexts: list[int] = field(default_factory=lambda: [1024, 4096, 8192])
    decode_steps: int = 8
    speed_repeats: int = 3  # speed figures are the best of this many timings (the least disturbed one)
    needle_contexts: list[int] = field(default_factory=lambda: [128, 512, 1024])
    needle_depths: tuple[float, ...] = (0.1, 0.5, 0.9)
    needle_trials: int = 2
    recall: RecallSettings = field(default_factory=RecallSettings)  # the recall suite (analysis/recall.py)
    max_recall_params: int = 20_000_000  # a larger recall twin (of a real checkpoint at a large width) is skipped
    resume: bool = False
    sweep_ratio: bool = False
    sweep_sparsity: bool = False
    progress: bool = True
    quantize: str | None = None  # "experts-int8": evaluate every model with int8 routed experts (docs/quantize.md)
    group_by: str | None = None  # "origin": the verdict also groups the families by lab origin (analysis/families.py)

    @classmethod
    def quick(cls, **changes) -> CompareConfig:
        base = dict(profile="quick", budget_tokens=8 * 64 * 16, seq_len=64, seeds=1, val_sequences=16,
                    speed_contexts=[256, 1024, 2048], decode_steps=4, speed_repeats=2, needle_contexts=[128, 256, 512],
                    needle_depths=(0.25, 0.75), needle_trials=1,
                    recall=RecallSettings(steps=24, seeds=1, states=(0.5,), batch_size=16, mqar_pairs=(2, 4, 8),
                                          eval_mqar_pairs=(2, 4, 8), eval_seq_lens=(64,), eval_needle_lens=(128,),
                                          eval_copy_lengths=(8,), eval_examples=16))
        return cls(**{**base, **changes})

    @classmethod
    def large(cls, **changes) -> CompareConfig:
        """--budget large: for a GPU or a long night (hours on 2 CPU cores): 25x the default's training tokens,
        3 seeds, the recall suite with 4-layer twins, 4x the steps and 3 state sizes, longer contexts."""
        base = dict(profile="large", budget_tokens=1_024_000, seq_len=256, seeds=3, val_sequences=128,
                    speed_contexts=[1024, 8192, 32768], needle_contexts=[256, 1024, 4096], needle_trials=4,
                    recall=RecallSettings(max_layers=4, states=(0.25, 0.5, 1.0), seeds=3, steps=2400,
                                          eval_examples=256))
        return cls(**{**base, **changes})

    @classmethod
    def for_profile(cls, profile: str, **changes) -> CompareConfig:
        makers = {"default": cls, "quick": cls.quick, "large": cls.large}
        if profile not in makers:
            raise ValueError(f"--budget {profile!r}: must be one of {', '.join(makers)}")
        return makers[profile](**changes)

    @property
    def steps(self) -> int:
        return max(1, self.budget_tokens // (self.batch_size * self.seq_len))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- one model ----------------------------------------------------------------------------------------------------
def _kind(spec: str) -> str:
    """preset | config | checkpoint | hf, as the one resolver (interop.specs) tells them apart."""
    from ..interop.specs import resolve
    return resolve(spec).kind


def label_of(spec: str) -> str:
    p = Path(spec)
    return p.stem if p.suffix == ".json" else (p.name if p.exists() else spec)


def _train_runs(spec: str, cfg: CompareConfig, run_dir: Path, tick) -> list[dict]:
    """Train (or reuse) one run per seed with `hybridlm train`; -> per seed {seed, dir, tokens_per_s, ce_curve,
    loss_curve, val_curve, unigram_loss, load}. The CE curve is the next-token term alone (comparable with validation
    CE); the loss curve adds the aux and MTP terms the optimiser saw."""
    from .evals import measure_load
    from ..training import TrainConfig, train
    runs = []
    for seed in range(cfg.seeds):
        out = run_dir / f"seed{seed}"
        tc = TrainConfig(model=spec, seq_len=cfg.seq_len, batch_size=cfg.batch_size, steps=cfg.steps, lr=cfg.lr,
                         warmup_steps=max(1, cfg.steps // 10), val_sequences=cfg.val_sequences, seed=seed,
                         corpus_max_bytes=cfg.corpus_max_bytes, out=str(out), resume=cfg.resume, log_every=1,
                         eval_every=max(1, cfg.steps // 4), save_every=0, keep=1, progress=False, device="cpu")
        with open(run_dir / f"train_seed{seed}.log", "a") as f, contextlib.redirect_stdout(f), measure_load() as load:
            result = train(tc)
        records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        tok_s = [r["tok_s"] for r in records if "tok_s" in r]
        runs.append({"seed": seed, "dir": str(out),
                     "ce_curve": [[r["step"], r["ce"]] for r in records if "ce" in r],
                     "loss_curve": [[r["step"], r["loss"]] for r in records if "loss" in r],
                     "val_curve": [[r["step"], r["val_loss"], r["val_bpb"]] for r in records if "val_loss" in r],
                     "unigram_loss": result.unigram_loss,  # over train's whole validation split
                     "load": load,
                     "tokens_per_s": result.tokens_per_s if result.losses else (sum(tok_s) / len(tok_s) if tok_s else None)})
        tick(f"train seed {seed}")
    return runs


def evaluate_model(seeds: list[tuple], cfg: CompareConfig, progress=None) -> dict:
    """Every measurement except training, on one model's loaded weights per training seed [(model, tokenizer,
    data)] (fp32, CPU): validation and needle on every seed (the report gives their mean and spread), speed on the
    first (with the load other processes put on the machine meanwhile), the recall suite on twins of its mixers
    (one per recall seed and state size, trained here)."""
    from . import evals
    tick = progress or (lambda what: None)
    model, _, data = seeds[0]
    vals = [_val(m, d, cfg) for m, _, d in seeds]
    res: dict = {"val_loss_seeds": [v for v, _ in vals], "val_bpb_seeds": [b for _, b in vals],
                 "unigram": _unigram(data, cfg)}
    tick("validation")
    res["needle_seeds"] = [evals.needle_eval(m, t, d.val.flatten().tolist(), cfg.needle_contexts, cfg.needle_depths,
                                             cfg.needle_trials) for m, t, d in seeds]
    tick("needle")
    with evals.measure_load() as load:
        res["speed"] = evals.speed(model, cfg.speed_contexts, cfg.decode_steps, repeats=cfg.speed_repeats)
    res["speed_load"] = load
    tick("speed")
    res.update(recall_record(model.config, cfg, tick))
    return res


def recall_record(model_cfg, cfg: CompareConfig, tick=None) -> dict:
    """The recall suite on one model's twin (analysis/recall.py): {"recall": run_recall's record, "mqar_seeds":
    one MQAR accuracy dict per seed at the smallest state (where the mixers separate; the verdict's MQAR metrics),
    "mqar": that twin, its per-setting seed means and chance (the tables and figures)}."""
    from . import recall
    ffn = "own" if cfg.sweep_sparsity else "dense"  # the sparsity sweep's variable is the FFN: its twins keep it
    rec = recall.run_recall(model_cfg, cfg.recall, ffn=ffn, max_params=cfg.max_recall_params, progress=tick)
    out = {"recall": rec, "mqar": {"chance": recall.chance("mqar", cfg.recall.vocab)}}
    trained = recall.trained_states(rec)
    if not trained:
        out["mqar"]["skipped"] = "; ".join(rec["skipped"].values()) or "no twin"
        return out
    w = trained[0]
    accs = [sd[w]["mqar"] for sd in rec["seeds"] if "mqar" in sd.get(w, {})]
    out["mqar_seeds"] = accs
    if accs:
        out["mqar"].update(twin=rec["twins"][w]["plan"], twin_state=w, twin_params=rec["twins"][w]["params"],
                           acc={k: sum(a[k] for a in accs) / len(accs) for k in accs[0]})
    return out


QUANT_SEQUENCES = 8  # validation sequences the fp32 and quantised logits are compared on


def logit_error(ref_BTV: torch.Tensor, got_BTV: torch.Tensor, ids_BT: torch.Tensor) -> dict:
    """A quantised model's logits against the fp32 model's on the same ids: the largest and the root-mean-square
    difference, also as fractions of the fp32 logits' standard deviation; how often the argmax agrees; and the
    next-token cross-entropy (nats/token) of each."""
    err_BTV = got_BTV.double() - ref_BTV.double()
    std = ref_BTV.double().std().item()
    ce = [torch.nn.functional.cross_entropy(x[:, :-1].flatten(0, 1).double(), ids_BT[:, 1:].flatten()).item()
          for x in (ref_BTV, got_BTV)]
    max_abs, rms = err_BTV.abs().max().item(), err_BTV.pow(2).mean().sqrt().item()
    agree = (got_BTV.argmax(-1) == ref_BTV.argmax(-1)).double().mean().item()
    return {"max_abs": max_abs, "rms": rms, "logit_std": std, "max_abs_over_std": max_abs / std,
            "rms_over_std": rms / std, "top1_agreement": agree, "ce_fp32": ce[0], "ce_quantized": ce[1]}


def quantize_models(seeds: list[tuple], method: str) -> dict:
    """--quantize: each seed's model [(model, tokenizer, data)] is quantised in place (layers.ffn.moe.QUANTIZATIONS)
    after its fp32 logits on the first QUANT_SEQUENCES validation sequences are kept; -> per seed the logit error
    (logit_error) and the bytes of the model's tensors before and after, and the worst error over the seeds. A
    model without routed experts stays as it is ("skipped")."""
    from ..layers.ffn.moe import QUANTIZATIONS
    per_seed = []
    for model, _, data in seeds:
        ids_BT = data.val[:QUANT_SEQUENCES]
        with torch.no_grad():
            ref_BTV = model(ids_BT).logits
        q = QUANTIZATIONS[method](model)
        if not q.moe_layers:
            return {"method": method, "skipped": "no routed experts (no MoE layer): evaluated unquantised"}
        with torch.no_grad():
            got_BTV = model(ids_BT).logits
        per_seed.append({**logit_error(ref_BTV, got_BTV, ids_BT), "bytes_before": q.bytes_before,
                         "bytes_after": q.bytes_after})
    return {"method": method, "moe_layers": q.moe_layers, "expert_weights": q.expert_weights,
            "sequences": int(ids_BT.shape[0]), "tokens_per_sequence": int(ids_BT.shape[1]), "seeds": per_seed,
            "max_abs_over_std": max(s["max_abs_over_std"] for s in per_seed),
            "rms_over_std": max(s["rms_over_std"] for s in per_seed),
            "top1_agreement": min(s["top1_agreement"] for s in per_seed),
            "ce_increase": max(s["ce_quantized"] - s["ce_fp32"] for s in per_seed)}


def _params(model) -> dict:
    return {"total": model.num_params(mtp=False), "total_with_mtp": model.num_params(mtp=True),
            "active": model.active_params(), "active_without_embedding": model.active_params(embedding=False)}


def run_model(spec: str, cfg: CompareConfig, out: Path, label: str, progress=None) -> dict:
    from ..interop.specs import load_model
    from ..interop.tokenizer import tokenizer_for
    from . import families
    run_dir = out / "runs" / label
    run_dir.mkdir(parents=True, exist_ok=True)
    done_file = run_dir / "result.json"
    settings = json.loads(json.dumps(  # as stored: tuples become lists
        {k: v for k, v in cfg.to_dict().items()
         if k not in ("specs", "out", "resume", "progress", "sweep_ratio", "sweep_sparsity", "group_by")}))  # report-only flags
    if cfg.resume and done_file.is_file():
        prev = json.loads(done_file.read_text())
        if prev.get("settings") == settings and prev.get("status") == "ok":
            return {**prev, "reused": True}
    tick = progress or (lambda what: None)
    kind = _kind(spec)
    res: dict = {"label": label, "spec": spec, "kind": kind, "settings": settings}
    if kind in ("preset", "config"):
        runs = _train_runs(spec, cfg, run_dir, tick)
        res["train"] = {"steps": cfg.steps, "tokens": cfg.steps * cfg.batch_size * cfg.seq_len, "runs": runs}
        from ..interop.checkpoint import Checkpoint
        loaded = [(c.load_model(), c.path) for c in (Checkpoint.open(r["dir"]) for r in runs)]
    else:
        loaded = [load_model(spec)]
        res["train"] = None
    seeds = []
    for model, tok_dir in loaded:
        tok = tokenizer_for(tok_dir)
        seeds.append((model.float().eval(), tok, _data(tok, cfg)))
    res["tokenizer"] = seeds[0][1].name
    res["params"] = _params(seeds[0][0])
    res["layout"] = families.layout(seeds[0][0].config)
    if cfg.quantize:  # before every evaluation, so all of them see the quantised model
        res["quantize"] = quantize_models(seeds, cfg.quantize)
    res.update(evaluate_model(seeds, cfg, tick))
    res["status"] = "ok"
    done_file.write_text(json.dumps(res, indent=1) + "\n")
    return res


_DATA_CACHE: dict = {}


def _data(tok, cfg: CompareConfig):
    from ..training.data import pack, read_documents
    key = (tok.name, cfg.seq_len, cfg.corpus_max_bytes)
    if key not in _DATA_CACHE:
        docs = read_documents(None, max_bytes=cfg.corpus_max_bytes)
        _DATA_CACHE[key] = pack(docs, tok, cfg.seq_len, 0.05)
    return _DATA_CACHE[key]


def _val(model, data, cfg: CompareConfig) -> tuple[float, float]:
    from .evals import validation
    n = min(cfg.val_sequences, len(data.val))
    return validation(model.float().eval(), data.val[:n], data.val_bytes[:n])


def _unigram(data, cfg: CompareConfig) -> dict:
    """The unigram baseline (token frequencies of the train split) on exactly the validation sequences the models
    are scored on: {'loss': nats/token, 'bpb'}. A model above it has learned nothing beyond token frequencies."""
    from ..training.data import PackedData, unigram_loss
    n = min(cfg.val_sequences, len(data.val))
    loss = unigram_loss(PackedData(train=data.train, val=data.val[:n], val_bytes=data.val_bytes[:n],
                                   num_tokens=data.num_tokens))
    tokens = data.val[:n, 1:].numel()
    return {"loss": loss, "bpb": loss * tokens / (math.log(2) * float(data.val_bytes[:n].sum()))}


# -- the pipeline -------------------------------------------------------------------------------------------------
EVAL_STAGES = ("validation", "needle", "speed")  # after one "train seed N" stage per seed (trained specs); then
# one "recall sX seed N" stage per recall state size and seed


def _stages(spec: str, cfg: CompareConfig) -> int:
    return ((cfg.seeds if _kind(spec) in ("preset", "config") else 0) + len(EVAL_STAGES)
            + len(cfg.recall.states) * cfg.recall.seeds)


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class Progress:
    """Stage-by-stage progress over the whole comparison. On a terminal: rich bars. Otherwise (CI, nohup, `| tee`,
    --no-progress): one flushed line per finished stage with the model, the time overall and an estimate of what
    remains (the mean time of the stages run so far x the stages left), and one line per finished model."""

    def __init__(self, stages: dict[str, int], bars: bool):
        self.stages, self.total = stages, sum(stages.values())
        self.done = self.ran = 0  # stages finished, and of those the ones that ran (not reused or skipped)
        self.t0 = self.t_last = time.perf_counter()
        self.bars = None
        if bars:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bars
            self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self.overall = self.bars.add_task("models", total=len(stages))
        self.task: dict[str, int] = {}
        self.model_done: dict[str, int] = {}

    def __enter__(self):
        if self.bars:
            self.bars.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bars:
            self.bars.__exit__(*exc)

    def _say(self, line: str) -> None:
        if self.bars:
            self.bars.console.print(line)
        else:
            print(line, flush=True)

    def start(self, label: str) -> None:
        self.model_done[label] = 0
        self.t_last = time.perf_counter()
        if self.bars:
            self.task[label] = self.bars.add_task(f"  {label}", total=self.stages[label])

    def stage(self, label: str, what: str) -> None:
        now = time.perf_counter()
        self.done, self.ran, self.model_done[label] = self.done + 1, self.ran + 1, self.model_done[label] + 1
        if self.bars:
            self.bars.update(self.task[label], advance=1, description=f"  {label}: {what}")
        else:
            elapsed = now - self.t0
            left = elapsed / self.ran * (self.total - self.done)
            print(f"[{self.done}/{self.total}] {label}: {what} done in {_clock(now - self.t_last)} | elapsed "
                  f"{_clock(elapsed)} | ~{_clock(left)} left", flush=True)
        self.t_last = now

    def finish(self, label: str, res: dict) -> None:
        """The model's remaining stages (all of them when reused, the rest when it failed) count as done."""
        from . import report
        self.done += self.stages[label] - self.model_done[label]
        if res.get("reused"):
            status = "reused (finished in an earlier run)"
        elif res["status"] == "ok":
            status = f"ok in {_clock(res['seconds'])}"
        else:
            status = f"FAILED after {_clock(res['seconds'])}: {report.first_line(res['error'])}"
        if self.bars:
            self.bars.update(self.task[label], completed=self.stages[label], visible=False)
            self.bars.update(self.overall, advance=1)
        self._say(f"{label}: {status}")


def run_compare(cfg: CompareConfig) -> dict:
    """Run every model (failures recorded, not raised), then write DIR/results.json, report.md and figures.
    summary["failed"] lists the labels of the models that failed."""
    from . import report
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a directory")
    if cfg.quantize not in (None, "experts-int8"):
        raise ValueError(f"--quantize {cfg.quantize!r}: must be experts-int8 (docs/quantize.md)")
    if cfg.group_by not in (None, "origin"):
        raise ValueError(f"--group-by {cfg.group_by!r}: must be origin")
    if cfg.sweep_ratio or cfg.sweep_sparsity:
        from .sweeps import RATIO_LAYERS, sweep_pairs
        pairs = sweep_pairs(cfg, out)
        if cfg.sweep_ratio:  # the twin keeps each point's whole period (15:1 = 16 layers), so its ratio shows in recall
            cfg = dataclasses.replace(cfg, recall=dataclasses.replace(cfg.recall, max_layers=RATIO_LAYERS))
    elif cfg.specs:
        pairs = [(label_of(s), s) for s in cfg.specs]
    else:
        pairs = default_pairs(cfg, out)
    labels = [lbl for lbl, _ in pairs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two models share a label: {labels}")
    for label, spec in pairs:
        kind = _kind(spec)
        if kind == "preset":
            from ..presets import get_config
            get_config(spec)  # unknown names fail here, before any training
        elif kind == "config" and not Path(spec).is_file():
            raise ValueError(f"{spec}: no such config file")
        if not cfg.resume and any((out / "runs" / label).glob("seed*/latest")):
            raise ValueError(f"{out / 'runs' / label} already holds a training run; pass --resume to reuse it, "
                             f"or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results = []
    with Progress({label: _stages(spec, cfg) for label, spec in pairs},
                  bars=cfg.progress and sys.stdout.isatty()) as prog:
        for label, spec in pairs:
            prog.start(label)
            t0 = time.perf_counter()
            try:
                res = run_model(spec, cfg, out, label, lambda what, label=label: prog.stage(label, what))
            except Exception as e:  # noqa: BLE001 (one failing model is reported and does not sink the others)
                res = {"label": label, "spec": spec, "kind": _kind(spec), "status": "failed",
                       "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            res["seconds"] = time.perf_counter() - t0
            results.append(res)
            prog.finish(label, res)
    summary = {"schema": "hybridlm.compare/2", "settings": cfg.to_dict(), "machine": report.machine(),
               "seconds": time.perf_counter() - t_start, "models": results,
               "failed": [m["label"] for m in results if m["status"] != "ok"]}
    from .sweeps import facts
    if (sweep := facts(cfg)) is not None:
        summary["sweep"] = sweep
    from .families import full_scale
    try:  # analytic, on the meta device: a second or two; it must not cost the report
        summary["full_scale"] = full_scale(labels)
    except Exception as e:  # noqa: BLE001
        summary["full_scale_error"] = f"{type(e).__name__}: {e}"
    report.write_all(summary, out)
    return summary
