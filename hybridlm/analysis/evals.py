"""Measurements for `hybridlm compare`: associative recall (MQAR), needle retrieval, speed and cache memory.

    mqar_batch / train_mqar / eval_mqar   Zoology-style multi-query associative recall, trained per model
    needle_eval                           single-needle retrieval at growing context (RULER S-NIAH style)
    validation                            loss and bits per byte on the held-out split of the training data
    speed                                 prefill tokens/s and decode latency per token at several contexts
    cache_memory                          measured HybridCache bytes after a prefill beside the analytic figure
    measure_load                          how many cores other processes kept busy while a measurement ran

Shape legend: B batch, T sequence length, V vocabulary, P key-value pairs.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.runtime import LoadSampler
from ..layers.ffn.dense import DenseFFNConfig
from ..model.config import ModelConfig

# -- MQAR ------------------------------------------------------------------------------------------------------
# Zoology (Arora et al. 2023, "Zoology: measuring and improving recall in efficient language models",
# zoology/data/associative_recall.py): keys come from the first half of the vocabulary and values from the
# second, the P key-value pairs are listed first (k1 v1 k2 v2 ...), then every key is queried once at a
# position drawn with a power law over the remaining gap (short gaps likelier), filler 0 elsewhere. Loss and
# accuracy count only the positions whose next token is a queried value.
MQAR_VOCAB = 256


def mqar_batch(batch: int, seq_len: int, pairs: int, vocab: int = MQAR_VOCAB, power_a: float = 0.01,
               rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (inputs [B, T], targets [B, T]); targets[b, t] is the token to predict after inputs[b, :t+1], or -100."""
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


def mqar_chance(vocab: int = MQAR_VOCAB) -> float:
    """Accuracy of guessing: one of the vocab - vocab // 2 value tokens (mqar_batch draws values from that half)."""
    return 1.0 / (vocab - vocab // 2)


def mqar_config(cfg: ModelConfig, mixers: list[str] | None = None, vocab: int = MQAR_VOCAB) -> ModelConfig:
    """The recall twin of a model: its own token mixers in its own layer pattern, with a small dense SwiGLU FFN
    (2 x d_model) instead of its FFNs, a 256-token vocabulary and no MTP. Recall is a property of the token
    mixers; dense FFNs keep the per-model MQAR training cheap and the same for every family. num_layers keeps
    the first layers of the plan (None: all)."""
    mixers = mixers or cfg.layer_mixers
    return cfg.replace(name=f"{cfg.name}-mqar", vocab_size=vocab, num_layers=len(mixers),
                       mixer_pattern=" ".join(mixers), ffn_pattern=f"D*{len(mixers)}",
                       ffns={"D": DenseFFNConfig(intermediate_size=2 * cfg.d_model)},
                       mixers={k: v for k, v in cfg.mixers.items() if k in mixers},
                       mtp_depth=0, mtp_mixer=None, mtp_ffn=None, tie_embeddings=False)


@dataclass
class MQARSettings:
    """One synthetic budget, the same for every model (Zoology trains on a mix of pair counts)."""

    vocab: int = 64  # 32 keys, 32 values: small enough to learn within a CPU budget
    train_seq_len: int = 64
    train_pairs: tuple[int, ...] = (2, 4, 8, 16)  # the small counts act as a curriculum
    steps: int = 250
    batch_size: int = 32
    lr: float = 1e-3  # 3e-3 left 2-layer attention stuck at 1/P (copying any value) for 800 steps
    eval_pairs: tuple[int, ...] = (4, 8, 16)
    eval_seq_lens: tuple[int, ...] = (64, 128)  # beyond train_seq_len: length generalisation
    eval_examples: int = 64
    seed: int = 0


def _mqar_loss(model, x_BT: torch.Tensor, y_BT: torch.Tensor) -> torch.Tensor:
    logits = model(x_BT).logits
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y_BT.flatten(), ignore_index=-100)
    aux = model.aux_loss()
    return loss if aux is None else loss + aux


def train_mqar(model, s: MQARSettings, progress=None) -> list[float]:
    """A dedicated loop (not `hybridlm train`): the data is generated per step and the loss is taken on the
    answer positions only, which the text trainer's packed next-token loss cannot express. AdamW, warmup then
    cosine, grad clip 1. Returns the loss per step. `progress(step)` is called after each step."""
    rng = np.random.default_rng(s.seed)
    torch.manual_seed(s.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.1, betas=(0.9, 0.98))
    warm = max(1, s.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, s.steps) / s.steps))))
    model.train()
    losses = []
    for step in range(s.steps):
        pairs = s.train_pairs[step % len(s.train_pairs)]
        x, y = mqar_batch(s.batch_size, s.train_seq_len, pairs, s.vocab, rng=rng)
        loss = _mqar_loss(model, x, y)
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
def eval_mqar(model, s: MQARSettings) -> dict[str, float]:
    """Accuracy (share of queried values predicted exactly, greedy) per 'P<pairs>@T<seq_len>', on fresh data."""
    model.eval()
    rng = np.random.default_rng(s.seed + 10_007)
    out = {}
    for T in s.eval_seq_lens:
        for P in s.eval_pairs:
            if 4 * P > T:
                continue
            x, y = mqar_batch(s.eval_examples, T, P, s.vocab, rng=rng)
            pred = model(x).logits.argmax(-1)
            m = y != -100
            out[f"P{P}@T{T}"] = float((pred[m] == y[m]).float().mean())
    return out


# -- needle retrieval ------------------------------------------------------------------------------------------
# RULER's S-NIAH (Hsieh et al. 2024) hides one "magic number" in filler text and asks for it at the end. Here the
# filler is held-out text of the training corpus, the needle sits at several depths, and the answer is scored by
# teacher forcing: exact match = every answer token is the greedy choice (what greedy decoding would produce),
# plus the answer's loss in nats per token, beside the same loss with the needle removed (the gain is what the
# model takes from the needle; a tiny model that cannot retrieve shows ~0 gain).
NEEDLE = "\nThe magic number is {n}.\n"
NEEDLE_CHANCE = 1 / 9000  # exact match by guessing one of the 4-digit numbers (1000-9999) needle_eval draws
QUESTION = "\nWhat is the magic number? The magic number is "


def _needle_case(tok, filler_ids: list[int], context: int, depth: float, number: str, with_needle: bool
                 ) -> tuple[list[int], int, int]:
    """-> (ids of exactly `context` tokens, first answer position, answer length)."""
    needle = tok.encode(NEEDLE.format(n=number)) if with_needle else []
    question, answer = tok.encode(QUESTION), tok.encode(number)
    room = context - len(needle) - len(question) - len(answer)
    if room < 1:
        raise ValueError(f"needle: context {context} is too short for the needle and the question")
    hay = filler_ids[:room]
    at = int(depth * len(hay))
    ids = hay[:at] + needle + hay[at:] + question + answer
    return ids, len(ids) - len(answer), len(answer)


@torch.no_grad()
def needle_eval(model, tok, filler_ids: list[int], contexts: list[int], depths: tuple[float, ...] = (0.1, 0.5, 0.9),
                trials: int = 2, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per context: {'exact': share of cases answered exactly, 'loss': answer nats/token with the needle,
    'loss_without': the same without it}. Each case uses a different window of the filler and a random 4-digit
    number."""
    model.eval()
    rng = np.random.default_rng(seed)
    out = {}
    for L in contexts:
        exact, loss, loss_wo = [], [], []
        for d in depths:
            for t in range(trials):
                number = str(rng.integers(1000, 10000))
                off = int(rng.integers(0, max(1, len(filler_ids) - L)))
                window = filler_ids[off:off + L]
                for with_needle in (True, False):
                    ids, a0, n = _needle_case(tok, window, L, d, number, with_needle)
                    x = torch.tensor([ids])
                    logits = model(x).logits[0, a0 - 1:a0 - 1 + n].float()  # predicts ids[a0 .. a0+n-1]
                    y = x[0, a0:a0 + n]
                    ce = float(F.cross_entropy(logits, y))
                    if with_needle:
                        loss.append(ce)
                        exact.append(float(bool((logits.argmax(-1) == y).all())))
                    else:
                        loss_wo.append(ce)
        out[str(L)] = {"exact": float(np.mean(exact)), "loss": float(np.mean(loss)),
                       "loss_without": float(np.mean(loss_wo))}
    return out


# -- validation ------------------------------------------------------------------------------------------------
@torch.no_grad()
def validation(model, val_NT: torch.Tensor, val_bytes: torch.Tensor, batch: int = 8) -> tuple[float, float]:
    """-> (mean CE nats/token, bits per byte) on held-out sequences, as `hybridlm train` reports them."""
    import contextlib

    from ..training.loop import evaluate
    return evaluate(model, val_NT, val_bytes, batch, torch.device("cpu"), contextlib.nullcontext)


# -- speed and memory ------------------------------------------------------------------------------------------
@torch.no_grad()
def speed(model, contexts: list[int], decode_steps: int = 8, seed: int = 0, repeats: int = 1) -> dict[str, dict]:
    """Per context L (batch 1, random tokens, fp32): prefill tokens/s (model.prefill in 1024-token chunks), then
    decode latency per token (mean of `decode_steps` single-token steps after that prefill), and the cache bytes
    measured right after the prefill (HybridCache.memory_bytes) beside the analytic model.cache_bytes(L)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    V = model.config.vocab_size
    out = {}
    for L in contexts:
        ids = torch.randint(0, V, (1, L), generator=g)
        best_prefill, best_decode = math.inf, math.inf
        for _ in range(repeats):
            cache = model.new_cache()
            t0 = time.perf_counter()
            logits = model.prefill(ids, cache)
            best_prefill = min(best_prefill, time.perf_counter() - t0)
            measured = cache.memory_bytes()
            by_kind = cache.memory_by_kind()
            tok = logits.argmax(-1)
            t0 = time.perf_counter()
            for _ in range(decode_steps):
                tok = model(tok[:, None], cache=cache).logits[:, -1].argmax(-1)
            best_decode = min(best_decode, (time.perf_counter() - t0) / decode_steps)
        out[str(L)] = {"prefill_tok_s": L / best_prefill, "decode_ms_per_token": 1e3 * best_decode,
                       "cache_bytes": measured, "cache_bytes_by_kind": by_kind,
                       "cache_bytes_analytic": cache_analytic(model, L)}
    return out


@contextlib.contextmanager
def measure_load():
    """Yields a dict, filled when the block ends: 'other_cores' = the mean number of cores that other processes
    kept busy during the block (busy CPU time on this process's cores minus this process's own, over the wall
    time; None without /proc/stat), 'loadavg_1min' (os.getloadavg, which counts this process too), 'seconds'.
    Timings taken while other processes use the cores are slower than the machine is."""
    load: dict = {}
    sampler, t0 = LoadSampler(), time.perf_counter()
    try:
        yield load
    finally:
        load.update(other_cores=sampler.sample(), seconds=max(time.perf_counter() - t0, 1e-9),
                    loadavg_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)


def cache_analytic(model, context: int, batch: int = 1) -> int:
    """`hybridlm cost`'s figure for this model's dtype (the delta-rule state is float32 whatever the dtype)."""
    nbytes = next(model.parameters()).element_size()
    return model.cache_bytes(context, batch, dtype_bytes=nbytes, state_bytes=4)
