"""Sampling: greedy, temperature, top-k, top-p; stop tokens; streaming.

Prefill runs the prompt into a HybridCache in chunks, then each new token costs one single-token forward:
attention layers read their KV cache, linear layers update a constant-size state. With compile=True that forward
runs through torch.compile (decode_step).
"""

from __future__ import annotations

import time
from typing import Iterator

import torch


def sample_next(logits_BV: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """-> token ids [B]. temperature 0 is greedy."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: must be >= 0")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p}: must be in (0, 1]")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}: must be >= 1")
    if temperature == 0.0:
        return logits_BV.argmax(-1)
    logits = logits_BV.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p  # keep the smallest prefix reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def decode_step(model, compile: bool = False):
    """The one-token forward of a decode step, (ids [B, 1], cache) -> logits [B, V].

    compile=True: the step through torch.compile, built once per model and reused by every later generate call
    (torch's on-disk graph cache also serves later processes). dynamic=True: the position, the KV length and the
    batch are symbolic, so the step compiles once rather than once per position. A decode step is hundreds of small
    ops whose dispatch, not arithmetic, is its time; compiled, they fuse (docs/decode.md). Every tiny family's step
    traces as one graph with no breaks (tests/test_generate_compile.py)."""
    def one_token(tok: torch.Tensor, cache) -> torch.Tensor:
        return model(tok, cache=cache).logits[:, -1]

    if not compile:
        return one_token
    step = model.__dict__.get("_compiled_decode_step")
    if step is None:
        # Dynamo keeps one cache per code object, so every model's step (and DeepSeek-V4's few graphs, one per shape
        # class of its compressors' pending tokens: 0, 1, more) counts toward one limit; at its default of 8 a
        # second model in the process fell back to eager (measured in benchmarks/decode.py)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        # cpp_wrapper: the compiled step's launcher in C++ rather than Python, 1.62 -> 1.30 ms/token on tiny-hybrid
        # for a longer first compile (27 -> 43 s), measured on 2 cores
        step = torch.compile(one_token, dynamic=True, options={"cpp_wrapper": True})
        model.__dict__["_compiled_decode_step"] = step
    return step


@torch.no_grad()
def stream(model, input_ids: torch.Tensor, max_new_tokens: int = 32, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, stop_tokens: list[int] | tuple[int, ...] = (),
           seed: int | None = None, prefill_chunk: int = 1024, max_len: int | None = None, compile: bool = False,
           timings: dict | None = None) -> Iterator[torch.Tensor]:
    """Yield one [B] tensor of new token ids per step. Rows that hit a stop token keep repeating it;
    iteration ends when every row has stopped or after max_new_tokens.

    Prompt + new tokens may not pass max_len (default: the model's max_seq_len, the context it was built for);
    raise it to generate further anyway. The intra-op thread count follows the machine's load (LoadGovernor).
    compile: run the decode steps through torch.compile (decode_step), all but the first. timings: a dict that
    receives "prefill_s", "first_step_s" (the second decode step: with compile, the warm-up, tracing and compiling
    or loading the compiled step) and "step_s" (the mean of the steps after it)."""
    from ..core.runtime import LoadGovernor
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 0")
    limit = model.config.max_seq_len if max_len is None else max_len
    if input_ids.shape[1] + max_new_tokens > limit:
        raise ValueError(f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) = "
                         f"{input_ids.shape[1] + max_new_tokens} passes "
                         + (f"max_len={limit}" if max_len is not None else
                            f"{model.config.name}'s max_seq_len {limit}")
                         + "; lower max_new_tokens, or raise max_len (CLI: --max-len) to generate past it anyway")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    # The first decode step runs eagerly even with compile: it turns the prefill's states (some are views into the
    # chunked forms' outputs, at other storage offsets) into the step's own, so the compiled step meets one layout
    # from its first call on (a second layout recompiled it: 18 s, measured on tiny-hybrid).
    eager_fn, step_fn = decode_step(model), decode_step(model, compile)
    cache = model.new_cache()
    t0 = time.perf_counter()
    logits = model.prefill(input_ids, cache, chunk=prefill_chunk)
    clock = {"prefill_s": time.perf_counter() - t0, "steps": []}
    stop = torch.tensor(list(stop_tokens), dtype=torch.long, device=input_ids.device)
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    governor = LoadGovernor()
    try:
        for step in range(max_new_tokens):
            governor.tick()
            tok = sample_next(logits, temperature, top_k, top_p, generator)
            if step:
                tok = torch.where(done, last, tok)  # finished rows repeat their stop token
            yield tok
            if stop.numel():
                done |= torch.isin(tok, stop)
            if bool(done.all()) or step == max_new_tokens - 1:
                return
            last = tok
            t0 = time.perf_counter()
            logits = (step_fn if step else eager_fn)(tok[:, None], cache)
            clock["steps"].append(time.perf_counter() - t0)
    finally:
        governor.close()
        if timings is not None:
            steps = clock.pop("steps")[1:]  # the eager first step (above) is neither the warm-up nor the steady state
            timings.update(clock, first_step_s=steps[0] if steps else None,
                           step_s=sum(steps[1:]) / (len(steps) - 1) if len(steps) > 1 else None)


def generate(model, input_ids: torch.Tensor, max_new_tokens: int = 32, **kwargs) -> torch.Tensor:
    squeeze = input_ids.dim() == 1
    ids = input_ids[None] if squeeze else input_ids
    new = list(stream(model, ids, max_new_tokens=max_new_tokens, **kwargs))
    out = torch.cat([ids] + [t[:, None] for t in new], dim=1) if new else ids
    return out[0] if squeeze else out
