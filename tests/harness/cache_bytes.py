"""Cache bytes, measured against analytic: after a (chunked) prefill and after each decode step, what the
HybridCache holds (memory_bytes / memory_by_kind) is exactly what the model's accounting says (cache_bytes /
cache_bytes_by_kind)."""

import torch


def assert_cache_bytes_match(model, vocab: int, context: int, batch: int = 2, dtype_bytes: int = 4,
                             chunk: int = 1024, state_bytes: int | None = None, decode_steps: int = 0, by_kind=True,
                             total=False):
    """Prefill `context` random tokens in `chunk`-token pieces, then compare: by kind (by_kind) and / or in total
    (total); then `decode_steps` single-token steps, each compared in total. state_bytes is passed to the analytic
    side only when given. Returns the cache for the caller's own checks."""
    kw = {} if state_bytes is None else {"state_bytes": state_bytes}
    cache = model.new_cache()
    model.prefill(torch.randint(0, vocab, (batch, context)), cache, chunk=chunk)
    if by_kind:
        assert cache.memory_by_kind() == model.cache_bytes_by_kind(context, batch=batch, dtype_bytes=dtype_bytes, **kw)
    if total:
        assert cache.memory_bytes() == model.cache_bytes(context, batch=batch, dtype_bytes=dtype_bytes)
    for n in range(context + 1, context + 1 + decode_steps):
        with torch.no_grad():
            model(torch.randint(0, vocab, (batch, 1)), cache=cache)
        assert cache.memory_bytes() == model.cache_bytes(n, batch=batch, dtype_bytes=dtype_bytes)
    return cache


def assert_layer_cache_bytes(model, cache, context: int, batch: int, dtype_bytes: int, per_token: int) -> None:
    """Every layer's cache holds `per_token` values per token and sequence, and its mixer's analytic cache_bytes
    says so."""
    for block, layer in zip(model.layers, cache.layers):
        assert layer.memory_bytes() == batch * context * per_token * dtype_bytes == \
            block.mixer.cache_bytes(context, batch, dtype_bytes)
