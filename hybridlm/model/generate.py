"""Sampling: greedy, temperature, top-k, top-p; stop tokens; streaming.

Prefill runs the prompt into a HybridCache in chunks, then each new token costs one single-token forward:
attention layers read their KV cache, linear layers update a constant-size state.
"""

from __future__ import annotations

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


@torch.no_grad()
def stream(model, input_ids: torch.Tensor, max_new_tokens: int = 32, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, stop_tokens: list[int] | tuple[int, ...] = (),
           seed: int | None = None, prefill_chunk: int = 1024, max_len: int | None = None) -> Iterator[torch.Tensor]:
    """Yield one [B] tensor of new token ids per step. Rows that hit a stop token keep repeating it;
    iteration ends when every row has stopped or after max_new_tokens.

    Prompt + new tokens may not pass max_len (default: the model's max_seq_len, the context it was built for);
    raise it to generate further anyway. The intra-op thread count follows the machine's load (LoadGovernor)."""
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
    cache = model.new_cache()
    logits = model.prefill(input_ids, cache, chunk=prefill_chunk)
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
            logits = model(tok[:, None], cache=cache).logits[:, -1]
    finally:
        governor.close()


def generate(model, input_ids: torch.Tensor, max_new_tokens: int = 32, **kwargs) -> torch.Tensor:
    squeeze = input_ids.dim() == 1
    ids = input_ids[None] if squeeze else input_ids
    new = list(stream(model, ids, max_new_tokens=max_new_tokens, **kwargs))
    out = torch.cat([ids] + [t[:, None] for t in new], dim=1) if new else ids
    return out[0] if squeeze else out
