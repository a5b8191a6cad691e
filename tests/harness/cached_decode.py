"""Cached decode against one full forward: the same ids fed as a first chunk, further chunks after a cached prefix,
then single-token steps, must give the full forward's logits; and a chunked prefill equals a one-piece one."""

import torch


def split_steps(total: int, cuts=(), singles_from: int | None = None) -> list[tuple[int, int]]:
    """[(0, cuts[0]), (cuts[0], cuts[1]), ...] as chunks, then one-token steps from the last cut (or from
    `singles_from`) up to `total`."""
    bounds = [0, *cuts]
    steps = list(zip(bounds[:-1], bounds[1:]))
    start = bounds[-1] if singles_from is None else singles_from
    return steps + [(t, t + 1) for t in range(start, total)]


def cached_logits(model, ids: torch.Tensor, steps, cache=None):
    """Logits of `ids` fed through one cache in the (start, end) pieces `steps`; returns (logits, cache)."""
    cache = model.new_cache() if cache is None else cache
    with torch.no_grad():
        parts = [model(ids[:, a:b], cache=cache).logits for a, b in steps]
    return torch.cat(parts, 1), cache


def assert_cached_decode_matches(model, ids: torch.Tensor, steps, ref: torch.Tensor | None = None,
                                 atol: float = 1e-4, rtol: float | None = None):
    """The cached pieces' logits equal `ref` (by default the model's own full forward): max |diff| <= atol, or
    torch.testing.assert_close(atol, rtol) when rtol is given. Returns the cache for the caller's own checks."""
    if ref is None:
        with torch.no_grad():
            ref = model(ids).logits
    got, cache = cached_logits(model, ids, steps)
    if rtol is None:
        assert (got - ref).abs().max().item() <= atol
    else:
        torch.testing.assert_close(got, ref, atol=atol, rtol=rtol)
    return cache


def assert_chunked_prefill_matches(model, ids: torch.Tensor, chunk: int, atol: float = 1e-4, rtol: float = 1e-4):
    """model.prefill in `chunk`-token pieces returns what one piece returns."""
    c1, c2 = model.new_cache(), model.new_cache()
    torch.testing.assert_close(model.prefill(ids, c1, chunk=chunk), model.prefill(ids, c2, chunk=1000),
                               atol=atol, rtol=rtol)
