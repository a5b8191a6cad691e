"""Measurements for `hybridlm compare` on a model's own weights: needle retrieval, validation, speed and cache
memory (the recall suite, trained on twins, is analysis/recall.py).

    needle_eval                           single-needle retrieval at growing context (RULER S-NIAH style)
    validation                            loss and bits per byte on the held-out split of the training data
    speed                                 prefill tokens/s and decode latency per token at several contexts
    cache_memory                          measured HybridCache bytes after a prefill beside the analytic figure
    measure_load                          how many cores other processes kept busy while a measurement ran

Shape legend: B batch, T sequence length, V vocabulary.
"""

from __future__ import annotations

import contextlib
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..core.runtime import LoadSampler

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
