"""The recall suite of `hybridlm compare`: three synthetic tasks, trained from scratch on a small twin of each
model's token mixers, per seed and at one or more state sizes.

    RecallSettings                 the budget and tasks, the same for every model (profiles in compare.py)
    twin_config(cfg, width, state) the recall twin: the model's mixer plan at a small width, dense FFNs
    mqar_batch / needle_batch / copy_batch    the tasks' data: (inputs [B, T], targets [B, T], -100 = no loss)
    train_recall / eval_recall     one twin trained on the task mixture / scored on fresh data
    run_recall(cfg, settings)      every seed and state size of one model -> the record compare stores

Why twins: recall is a property of the token mixers, and the tasks need a few hundred optimiser steps to reach
the regime where mixers separate (Zoology: Arora et al. 2023); a twin with the model's mixers in its own layer
plan, at a width where such training takes a minute on a CPU, measures that within the budget. The twin's plan
is one period of the model's layer plan, at most `max_layers` layers, keeping one layer of each of its mixers
(Jamba's M M M M A M M M -> M M M A); heads scale with the width. The state size is the second axis (Zoology
plots recall against it): a state scale multiplies every mixer's per-head state dimensions (head_dim, head_k_dim,
head_v_dim, d_state, MLA's latent and head dims), so Gated DeltaNet's k x v state per head and Mamba's d_state
shrink with it, and so does attention's KV per token; the report gives each twin's measured state bytes.

The tasks (vocabulary 64: keys 1-31, values 32-63, filler 0; copying uses 1-62 and separator 63):
- **MQAR** (Zoology's multi-query associative recall, zoology/data/associative_recall.py): P key-value pairs
  listed first, then every key queried once at a power-law gap; accuracy on the queried values.
- **Needle past the window**: 4 key-value needles in the first quarter of a 128-token sequence of random value
  tokens, all 4 keys queried in the last 8 positions. The gap (> 90 tokens) is longer than the sliding windows
  and chunks of the tiny presets (32, 64), so a model can only answer through a layer that sees the whole past.
- **In-context copying** (Jelassi et al. 2024, "Repeat After Me: Transformers are Better than State Space Models
  at Copying"): n random tokens, a separator, the same n tokens again; accuracy on the copy. A fixed-size state
  holds a bounded number of tokens, attention holds them all.

Shape legend: B batch, T sequence length, P key-value pairs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..layers.ffn.dense import DenseFFNConfig
from ..model.config import ModelConfig

TASKS = ("mqar", "needle", "copy")


# -- the tasks ---------------------------------------------------------------------------------------------------
def mqar_batch(batch: int, seq_len: int, pairs: int, vocab: int = 64, power_a: float = 0.01,
               rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoology's MQAR: -> (inputs [B, T], targets [B, T]); targets[b, t] is the token to predict after
    inputs[b, :t+1], or -100. Keys from the first half of the vocabulary, values from the second."""
    rng = rng if rng is not None else np.random.default_rng(0)
    ctx = 2 * pairs
    space = (seq_len - ctx) // 2
    half = vocab // 2
    if pairs < 1 or space < pairs or pairs > half - 1:
        raise ValueError(f"MQAR: {pairs} pairs do not fit seq_len={seq_len} / vocab={vocab} (need seq_len >= "
                         f"{4 * pairs} and pairs < {half})")
    keys_BP = np.argsort(rng.random((batch, half - 1)), axis=1)[:, :pairs] + 1  # 1 .. half-1, distinct per row
    vals_BP = np.argsort(rng.random((batch, half)), axis=1)[:, :pairs] + half  # half .. vocab-1
    kvs_BC = np.stack([keys_BP, vals_BP], axis=2).reshape(batch, ctx)
    p = power_a * np.arange(1, space + 1) ** (power_a - 1)
    p = p / p.sum()
    gaps_BP = np.stack([rng.choice(space, pairs, replace=False, p=p) for _ in range(batch)])
    queries = np.zeros((batch, seq_len - ctx + 1), dtype=np.int64)
    np.put_along_axis(queries, gaps_BP * 2, keys_BP, axis=1)
    seq = np.concatenate([kvs_BC, queries], axis=1)  # [B, T + 1]
    labels = np.full((batch, seq_len + 1), -100, dtype=np.int64)
    np.put_along_axis(labels, gaps_BP * 2 + ctx + 1, vals_BP, axis=1)
    return torch.from_numpy(seq[:, :-1].copy()), torch.from_numpy(labels[:, 1:].copy())


def needle_batch(batch: int, seq_len: int, needles: int = 4, vocab: int = 64,
                 rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Needles past the window: `needles` key-value pairs at random even positions of the first quarter, random
    value tokens elsewhere, and the keys queried again (in another order) in the last 2 x needles positions;
    targets = each queried key's value. -> (inputs [B, T], targets [B, T])."""
    rng = rng if rng is not None else np.random.default_rng(0)
    half = vocab // 2
    slots = seq_len // 4 // 2  # even positions 0, 2, .. of the first quarter
    if needles < 1 or slots < needles or needles > half - 1:
        raise ValueError(f"needle: {needles} needles do not fit seq_len={seq_len} / vocab={vocab} (need seq_len >= "
                         f"{8 * needles})")
    seq = rng.integers(half, vocab, (batch, seq_len + 1))  # filler: value tokens, so a value is not its own clue
    keys_BN = np.argsort(rng.random((batch, half - 1)), axis=1)[:, :needles] + 1
    vals_BN = rng.integers(half, vocab, (batch, needles))
    at_BN = np.sort(np.argsort(rng.random((batch, slots)), axis=1)[:, :needles], axis=1) * 2
    np.put_along_axis(seq, at_BN, keys_BN, axis=1)
    np.put_along_axis(seq, at_BN + 1, vals_BN, axis=1)
    order_BN = np.argsort(rng.random((batch, needles)), axis=1)
    q0 = seq_len + 1 - 2 * needles
    qpos = q0 + 2 * np.arange(needles)
    seq[:, qpos] = np.take_along_axis(keys_BN, order_BN, axis=1)
    seq[:, qpos + 1] = np.take_along_axis(vals_BN, order_BN, axis=1)
    labels = np.full((batch, seq_len + 1), -100, dtype=np.int64)
    labels[:, qpos + 1] = seq[:, qpos + 1]
    return torch.from_numpy(seq[:, :-1].copy()), torch.from_numpy(labels[:, 1:].copy())


def copy_batch(batch: int, seq_len: int, n: int, vocab: int = 64,
               rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """In-context copying: n random tokens (1 .. vocab-2), the separator vocab-1, the same n tokens, then filler 0;
    targets = the copy. -> (inputs [B, T], targets [B, T])."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if n < 1 or 2 * n + 1 > seq_len:
        raise ValueError(f"copy: {n} tokens do not fit seq_len={seq_len} (need seq_len >= {2 * n + 1})")
    src_BN = rng.integers(1, vocab - 1, (batch, n))
    seq = np.zeros((batch, seq_len + 1), dtype=np.int64)
    seq[:, :n], seq[:, n] = src_BN, vocab - 1
    seq[:, n + 1:2 * n + 1] = src_BN
    labels = np.full((batch, seq_len + 1), -100, dtype=np.int64)
    labels[:, n + 1:2 * n + 1] = src_BN
    return torch.from_numpy(seq[:, :-1].copy()), torch.from_numpy(labels[:, 1:].copy())


def chance(task: str, vocab: int = 64) -> float:
    """Accuracy of guessing: one of the value tokens (MQAR, needle) or of the copyable tokens."""
    return 1.0 / (vocab - 2) if task == "copy" else 1.0 / (vocab - vocab // 2)


# -- the settings --------------------------------------------------------------------------------------------------
@dataclass
class RecallSettings:
    """One synthetic budget, the same for every model. Each step trains one batch of one task, in the cycle
    MQAR at each of `mqar_pairs` (the small counts act as a curriculum), then the needle, then copying."""

    vocab: int = 64
    width: int = 64  # twin d_model (heads scale with it)
    states: tuple[float, ...] = (0.5,)  # state scales: the twins' per-head state dimensions x each (see twin_config)
    max_layers: int = 2  # the twin keeps one layer of each mixer; 4 keeps a 3:1 hybrid's ratio (--budget large)
    seeds: int = 2
    steps: int = 1000
    batch_size: int = 32  # sequences of seq_len tokens; the needle's longer sequences come in batches of equal tokens
    lr: float = 1e-3  # 3e-3 left attention stuck at copying any value for hundreds of steps (measured)
    seq_len: int = 64
    mqar_pairs: tuple[int, ...] = (2, 4, 8, 16)
    needle_seq_len: int = 128
    needles: int = 4
    copy_lengths: tuple[int, int] = (4, 31)  # trained on n drawn from this range, both ends included
    eval_mqar_pairs: tuple[int, ...] = (4, 8, 16)
    eval_seq_lens: tuple[int, ...] = (64, 128)  # MQAR beyond seq_len: length generalisation
    eval_needle_lens: tuple[int, ...] = (128, 256)
    eval_copy_lengths: tuple[int, ...] = (16, 31)
    eval_examples: int = 64
    tasks: tuple[str, ...] = TASKS

    def __post_init__(self):
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"recall tasks {list(self.tasks)}: each must be one of {', '.join(TASKS)}")
        if not self.states or any(not 0 < x <= 4 for x in self.states):
            raise ValueError(f"recall states {list(self.states)}: each state scale must be in (0, 4]")
        for name in ("steps", "batch_size", "seeds", "max_layers", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"recall {name}={getattr(self, name)}: must be >= 1")

    def schedule(self) -> list[tuple[str, int]]:
        """The task cycle: [(task, pairs or 0)]."""
        cycle = [("mqar", p) for p in self.mqar_pairs] if "mqar" in self.tasks else []
        return cycle + [(t, 0) for t in ("needle", "copy") if t in self.tasks]


# -- the twin ------------------------------------------------------------------------------------------------------
_HEADS = re.compile(r"(num_\w*heads|n_heads|index_heads|n_groups|o_groups)$")
# The per-head dimensions that set a mixer's state (and KV) size: scaled by the twin's state scale.
_STATE_DIMS = ("head_dim", "head_k_dim", "head_v_dim", "d_state", "qk_nope_head_dim", "v_head_dim", "kv_lora_rank")


def period(letters: list[str]) -> list[str]:
    """The shortest repeating unit of a layer plan, at least 2 layers (recall needs two mixing steps)."""
    n = len(letters)
    for p in range(1, n + 1):
        if n % p == 0 and letters == letters[:p] * (n // p):
            unit = letters[:p]
            return unit * 2 if p == 1 else unit
    return letters


def twin_plan(cfg: ModelConfig, max_layers: int = 2) -> list[int]:
    """Layer indices of the twin: one period of the plan; when it is longer than max_layers, the first layer of
    each distinct mixer (in plan order), then the earliest others, in plan order (Jamba's M M M M A M M M at 4 ->
    M M M A; Llama 4's R R R N at 2 -> R N: the global layer is kept). A plan whose layers read the forward context
    keeps its writers and readers together instead, whatever max_layers says (_context_span)."""
    letters = cfg.layer_mixers
    span = _context_span(cfg)
    if span is not None:  # layers that hand a memory / KV on through the forward context stay together
        return span
    idx = list(range(min(len(period(letters)), len(letters))))
    if len(idx) <= max_layers:
        return idx
    first: dict[str, int] = {}
    for i in idx:
        first.setdefault(letters[i], i)
    keep = sorted(first.values())[:max_layers]
    keep += [i for i in idx if i not in keep][:max_layers - len(keep)]
    return sorted(keep)


def _context_span(cfg: ModelConfig) -> list[int] | None:
    """For a plan whose layers read what earlier ones left in the forward context (SambaY's GMUs and YOCO
    cross-attention): the layers from the first writer through the first reader of every name, so the twin keeps
    the mechanism (tiny-sambay: W F G X). None when nothing reads the context."""
    first_write: dict[str, int] = {}
    first_read: dict[str, int] = {}
    for i, (writes, reads) in enumerate(cfg.layer_context_io()):
        for name in writes:
            first_write.setdefault(name, i)
        for name in reads:
            first_read.setdefault(name, i)
    if not first_read:
        return None
    return list(range(min(first_write[n] for n in first_read), max(first_read.values()) + 1))


def _scale_mixer(mixer, heads: float, state: float):
    """Head counts x heads (where they stay whole), the state dimensions x state (at least 2)."""
    changes = {}
    for f in dataclasses.fields(mixer):
        v = getattr(mixer, f.name)
        if not isinstance(v, int) or isinstance(v, bool):
            continue
        if _HEADS.match(f.name) and v > 1 and (n := v * heads) >= 1 and abs(n - round(n)) < 1e-9:
            changes[f.name] = int(round(n))
        elif f.name in _STATE_DIMS and state != 1:
            changes[f.name] = max(2, int(round(v * state)))
    if getattr(mixer, "differential", False) and any(v % 2 for k, v in changes.items() if _HEADS.match(k)):
        changes = {k: v for k, v in changes.items() if not _HEADS.match(k)}  # heads pair up: keep them even
    return dataclasses.replace(mixer, **changes)


def twin_config(cfg: ModelConfig, width: int, max_layers: int = 2, vocab: int = 64, ffn: str = "dense",
                state: float = 1.0) -> ModelConfig:
    """The recall twin of a model at d_model = width: the layers of twin_plan with their own mixers (head counts
    scaled by width / d_model where they stay whole, per-head state dimensions by `state`), a 64-token
    vocabulary, no MTP.
    ffn="dense": a SwiGLU FFN of 2 x width on every layer (recall is the mixers'; the same FFN for every family);
    ffn="own": the model's FFNs on those layers (the sparsity sweep, where the FFN is the variable)."""
    if ffn not in ("dense", "own"):
        raise ValueError(f"twin ffn={ffn!r}: must be 'dense' or 'own'")
    layers = twin_plan(cfg, max_layers)
    letters = [cfg.layer_mixers[i] for i in layers]
    factor = width / cfg.d_model
    mixers = {k: _scale_mixer(v, factor, state) for k, v in cfg.mixers.items() if k in letters}
    fl = [cfg.layer_ffns[i] for i in layers]
    # residual scales (MiniMax's alpha / beta) follow the letters kept; the dense FFN takes the kept FFNs' one if shared
    ffn_scales = {tuple(cfg.ffn_residual_scale[f]) for f in fl if f in cfg.ffn_residual_scale}
    if ffn == "dense":
        ffn_pattern, ffns = f"D*{len(layers)}", {"D": DenseFFNConfig(intermediate_size=2 * width)}
        ffn_scale = {"D": list(ffn_scales.pop())} if len(ffn_scales) == 1 else {}
    else:
        ffn_pattern, ffns = " ".join(fl), {k: v for k, v in cfg.ffns.items() if k in fl}
        ffn_scale = {k: v for k, v in cfg.ffn_residual_scale.items() if k in fl}
    return cfg.replace(name=f"{cfg.name}-recall-d{width}-s{state:g}", vocab_size=vocab, d_model=width, num_layers=len(layers),
                       mixer_pattern=" ".join(letters), ffn_pattern=ffn_pattern, ffns=ffns, mixers=mixers,
                       mtp_depth=0, mtp_mixer=None, mtp_ffn=None, tie_embeddings=False,
                       mixer_residual_scale={k: v for k, v in cfg.mixer_residual_scale.items() if k in letters},
                       ffn_residual_scale=ffn_scale)


# -- training and scoring --------------------------------------------------------------------------------------------
def _train_batch(task: str, pairs: int, s: RecallSettings, rng):
    """One training batch of a task of the cycle (RecallSettings.schedule); the needle's longer sequences come in
    a batch of as many tokens as the others'."""
    if task == "mqar":
        return mqar_batch(s.batch_size, s.seq_len, pairs, s.vocab, rng=rng)
    if task == "needle":
        T = s.needle_seq_len
        return needle_batch(max(1, s.batch_size * s.seq_len // T), T, s.needles, s.vocab, rng=rng)
    n = int(rng.integers(s.copy_lengths[0], s.copy_lengths[1] + 1))
    return copy_batch(s.batch_size, max(s.seq_len, 2 * n + 1), n, s.vocab, rng=rng)


def _loss(model, x_BT: torch.Tensor, y_BT: torch.Tensor) -> torch.Tensor:
    logits = model(x_BT).logits
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y_BT.flatten(), ignore_index=-100)
    aux = model.aux_loss()
    return loss if aux is None else loss + aux


def train_recall(model, s: RecallSettings, seed: int = 0, progress=None) -> list[float]:
    """A dedicated loop (not `hybridlm train`): fresh data per step, the loss on the answer positions only, which
    the text trainer's packed next-token loss cannot express. AdamW, warmup then cosine, grad clip 1. Returns the
    loss per step; `progress(step)` after each step."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    from ..training.optim import build_optimizer
    opt = build_optimizer(model, "adamw", s.lr, 0.1, (0.9, 0.98))  # decay on matrices only, as `hybridlm train`
    warm = max(1, s.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, s.steps) / s.steps))))
    cycle = s.schedule()
    model.train()
    losses = []
    for step in range(s.steps):
        x, y = _train_batch(*cycle[step % len(cycle)], s, rng)
        loss = _loss(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        for m in model.moe_layers():
            m.update_bias()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1)
    model.eval()
    return losses


@torch.no_grad()
def _accuracy(model, x_BT: torch.Tensor, y_BT: torch.Tensor) -> float:
    pred_BT = model(x_BT).logits.argmax(-1)
    m = y_BT != -100
    return float((pred_BT[m] == y_BT[m]).float().mean())


@torch.no_grad()
def eval_recall(model, s: RecallSettings, seed: int = 0) -> dict[str, dict[str, float]]:
    """Greedy accuracy on fresh data (another stream than training's): {"mqar": {"P16@T64": ..}, "needle":
    {"T128": ..}, "copy": {"n31": ..}} for the tasks of s."""
    model.eval()
    rng = np.random.default_rng(seed + 10_007)
    out: dict[str, dict[str, float]] = {}
    n = s.eval_examples
    if "mqar" in s.tasks:
        out["mqar"] = {f"P{P}@T{T}": _accuracy(model, *mqar_batch(n, T, P, s.vocab, rng=rng))
                       for T in s.eval_seq_lens for P in s.eval_mqar_pairs if 4 * P <= T}
    if "needle" in s.tasks:
        out["needle"] = {f"T{T}": _accuracy(model, *needle_batch(n, T, s.needles, s.vocab, rng=rng))
                         for T in s.eval_needle_lens}
    if "copy" in s.tasks:
        out["copy"] = {f"n{k}": _accuracy(model, *copy_batch(n, 2 * k + 1, k, s.vocab, rng=rng))
                       for k in s.eval_copy_lengths}
    return out


_TRAINED: dict[tuple[str, str, int], dict] = {}  # (twin config, settings, seed) -> its scores, within a process


def state_key(state: float) -> str:
    """A state scale's key in run_recall's record: 0.5 -> "s0.5"."""
    return f"s{state:g}"


def state_scale(key: str) -> float:
    """The inverse of state_key: "s0.5" -> 0.5."""
    return float(key[1:])


def trained_states(rec: dict) -> list[str]:
    """The state keys of a run_recall record whose twins were trained (not skipped), smallest state first."""
    return sorted((w for w in rec.get("twins", {}) if w not in rec.get("skipped", {})), key=state_scale)


def run_recall(cfg: ModelConfig, s: RecallSettings, ffn: str = "dense", max_params: int | None = None,
               progress=None) -> dict:
    """Every seed and state scale of one model's recall twin. -> {"twins": {"s0.5": {plan, params, active,
    state_bytes}}, "seeds": [{"s0.5": eval_recall + final_loss, seconds}], "chance": per task, "skipped": {key:
    why}}. state_bytes is the twin's cache for one sequence of seq_len tokens (KV grows with it, a recurrent state
    does not). A twin identical to one already trained in this process with the same settings and seed (models
    that differ only in what the twin replaces, like their FFNs) is not trained again: its record says "shared".
    `progress(what)` after each twin."""
    from ..model import HybridLM
    tick = progress or (lambda what: None)
    out: dict = {"twins": {}, "seeds": [{} for _ in range(s.seeds)], "skipped": {},
                 "chance": {t: chance(t, s.vocab) for t in s.tasks}}
    for state in s.states:
        w = state_key(state)
        try:
            tcfg = twin_config(cfg, s.width, s.max_layers, s.vocab, ffn, state)
            meta = HybridLM(tcfg, device="meta")
        except (ValueError, TypeError) as e:
            out["skipped"][w] = f"no twin at state scale {state:g}: {e}"
            continue
        n = meta.num_params()
        out["twins"][w] = {"plan": " ".join(tcfg.layer_mixers), "state_scale": state, "params": n,
                           "active": meta.active_params(),
                           "state_bytes": meta.cache_bytes(s.seq_len, 1, dtype_bytes=4, state_bytes=4)}
        if max_params is not None and n > max_params:
            out["skipped"][w] = f"twin has {n:,} parameters > {max_params:,} (too large to train here)"
            continue
        for seed in range(s.seeds):
            key = (tcfg.replace(name="twin").to_json(), repr(s), seed)
            if key in _TRAINED:
                out["seeds"][seed][w] = {**_TRAINED[key], "shared": True}
            else:
                torch.manual_seed(seed)
                twin = HybridLM(tcfg)
                t0 = time.perf_counter()
                losses = train_recall(twin, s, seed)
                res = eval_recall(twin, s, seed)
                _TRAINED[key] = out["seeds"][seed][w] = {**res, "final_loss": sum(losses[-12:]) / len(losses[-12:]),
                                                         "seconds": time.perf_counter() - t0}
            tick(f"recall {w} seed {seed}")
    return out
