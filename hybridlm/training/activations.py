"""Activation memory of one training micro-batch, measured on the meta device: the bytes autograd saves for backward.

`saved_bytes(model, batch, seq_len)` runs `model(ids, labels=ids)` (the trainer's forward: the stack, the head, the
cross-entropy, the MTP module and the aux losses) under `torch.autograd.graph.saved_tensors_hooks` and sums the bytes
of the distinct storages saved for backward, plus the logits the step keeps (its ModelOutput). Parameters and buffers
are left out (they are the plan's parameter rows); a view of a parameter (a transposed or unbound expert weight) is
the parameter's storage and is left out with it. `measure_saved` does the same on any device: the tests run it on a
real CPU forward and hold `saved_bytes` (meta) against it.

On the meta device nothing is computed, so a full-scale preset at full width costs shapes only. Three things differ
from a real run and are replaced inside `meta_forward()` (nothing outside it changes):
  - scaled_dot_product_attention: meta runs the math fallback, which would save the [B, H, T, S] probabilities; a
    fused kernel (flash / memory-efficient on CUDA, flash on CPU) saves q, k, v, the output, the [B, H, T] fp32
    log-sum-exp, and the mask converted to q's dtype. The stand-in saves exactly those.
  - the MoE's experts: the per-expert loop needs the routing's counts on the host; the stand-in runs the grouped
    path (`torch._grouped_mm`, what the GPU uses) with a shape-only grouped matmul that saves its input, as the real
    one does. Whatever the routing, an MoE saves T*K assignment rows, so the figure does not depend on balance.
  - data-dependent branches (`bool(t)` on a meta tensor, e.g. the chunked delta rule's overflow check) take their
    usual path (True); `int(t)` reads 0 (the model's input-id range check); a boolean mask selects every row.
Blocks of the same kind (mixer letter, FFN letter) save the same bytes, so each kind is measured once and its later
blocks pass their input through (unless the block leaves a value in the forward context for later layers: those
always run). The bytes are a function of batch, seq_len and dtype; they are exact for what is counted, not a model
of allocator fragmentation or of transient workspaces inside one op.
"""

from __future__ import annotations

import collections
import contextlib
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _key(t: Tensor) -> int:
    return t.untyped_storage()._cdata  # the StorageImpl: one key per storage, views share it


class SavedStorages:
    """The distinct storages saved for backward so far, each with its bytes; only those some saved tensor still
    holds count (a graph piece nothing reaches any more is freed, and its storage's address may be reused)."""

    def __init__(self, exclude: set[int]):
        self.exclude, self.entries = exclude, {}  # key -> (bytes, weak references to the tensors saved)

    def add(self, t: Tensor) -> None:
        k = _key(t)
        if k in self.exclude:
            return
        entry = self.entries.get(k)
        if entry is None or not any(r() is not None for r in entry[1]):  # new, or a freed storage's address reused
            entry = self.entries[k] = (t.untyped_storage().nbytes(), [])
        entry[1].append(weakref.ref(t))

    def alive_bytes(self) -> int:
        return sum(n for n, refs in self.entries.values() if any(r() is not None for r in refs))


def measure_saved(model: nn.Module, run) -> tuple[int, object]:
    """Run `run(saved)` (a forward returning a ModelOutput; `saved`: the SavedStorages being filled) and -> (bytes
    of the distinct non-parameter storages saved for backward plus the output's logits, the output)."""
    saved = SavedStorages({_key(t) for t in (*model.parameters(), *model.buffers())})

    def pack(t: Tensor) -> Tensor:
        saved.add(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run(saved)
    for t in (out.logits, out.mtp_logits):  # held by the training step until its next micro-batch
        if t is not None:
            saved.add(t)
    return saved.alive_bytes(), out


# -- the meta stand-ins -------------------------------------------------------------------------------------------
class _FusedAttention(torch.autograd.Function):
    """What a fused attention kernel keeps for backward: q, k, v, out, the fp32 log-sum-exp [B, H, T] and the mask
    as q's dtype. Shapes only (meta)."""

    @staticmethod
    def forward(ctx, q, k, v, mask):
        # [B, H, T, dv] laid out as [B, T, H, dv], as the fused kernels return it (the o_proj reshape is then a view)
        out = q.new_empty((*q.shape[:-3], q.shape[-2], q.shape[-3], v.shape[-1])).transpose(-2, -3)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)  # [B, H, T]
        saved = [q, k, v, out, lse] + ([q.new_empty(mask.shape)] if mask is not None else [])
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the plan does not call backward
        raise NotImplementedError


class _GroupedMM(torch.autograd.Function):
    """torch._grouped_mm(x [N, in], w [E, in, out]) -> [N, out], shapes only; saves x and w, as the real op does."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x.new_empty((x.shape[0], w.shape[-1]))

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _FusedAttention.apply(q, k, v, attn_mask)


def _grouped_mm(x, w, offs=None, bias=None, out_dtype=None):
    return _GroupedMM.apply(x, w)


@contextlib.contextmanager
def meta_forward(model: nn.Module):
    """The stand-ins above, for one meta forward of `model` (restored on exit)."""
    from ..layers.ffn.moe import MoE
    moes = [m for m in model.modules() if isinstance(m, MoE)]
    saved = (F.scaled_dot_product_attention, torch._grouped_mm, torch.Tensor.__bool__, torch.Tensor.__int__)
    real_bool, real_int = saved[2], saved[3]
    F.scaled_dot_product_attention, torch._grouped_mm = _sdpa, _grouped_mm
    torch.Tensor.__bool__ = lambda t: True if t.is_meta else real_bool(t)
    torch.Tensor.__int__ = lambda t: 0 if t.is_meta else real_int(t)
    for m in moes:
        m._use_grouped_mm = lambda x, *_: True  # an instance attribute: MoE itself is unchanged
    from torch.fx.experimental import _config as fx_config
    nonzero = fx_config.meta_nonzero_assume_all_nonzero
    fx_config.meta_nonzero_assume_all_nonzero = True  # boolean-mask indexing (the indexer's KL rows): all selected
    try:
        yield
    finally:
        fx_config.meta_nonzero_assume_all_nonzero = nonzero
        F.scaled_dot_product_attention, torch._grouped_mm, torch.Tensor.__bool__, torch.Tensor.__int__ = saved
        for m in moes:
            del m._use_grouped_mm


@contextlib.contextmanager
def _once_per_kind(model: nn.Module, saved: SavedStorages, by_kind: dict[str, int], skipped: list[int]):
    """Blocks of a kind already measured return their input and add that kind's bytes to skipped[0]; every block's
    bytes go to by_kind['<mixer letter><ffn letter>']."""
    done: dict[str, int] = {}
    originals = []
    for block in model.layers:
        kind = block.mixer_letter + block.ffn_letter
        forward = block.forward

        def wrapped(x, pos0=0, cache=None, token_ids=None, ctx=None, _forward=forward, _kind=kind):
            if _kind in done:
                skipped[0] += done[_kind]
                by_kind[_kind] += done[_kind]
                return x
            before, written = saved.alive_bytes(), dict(ctx.values) if ctx is not None else {}
            y = _forward(x, pos0, cache, token_ids, ctx)
            n = saved.alive_bytes() - before
            by_kind[_kind] = by_kind.get(_kind, 0) + n
            wrote = ctx is not None and any(written.get(k) is not v for k, v in ctx.values.items())
            if not wrote:  # a block that leaves values for later layers always runs
                done[_kind] = n
            return y
        block.forward = wrapped
        originals.append(block)
    try:
        yield
    finally:
        for block in originals:
            del block.forward


def saved_bytes_by_part(model: nn.Module, batch: int, seq_len: int) -> dict[str, int]:
    """Activation bytes of one micro-batch [batch, seq_len] of the trainer's forward (see the module docstring),
    measured on a meta-device `model` (in the dtype the activations take), by part: 'N blocks <mixer><ffn>' (the
    pattern letters) for each block kind, summed over its N blocks, and 'embedding, head, loss, MTP' for the rest."""
    assert next(model.parameters()).is_meta, "saved_bytes measures a meta-device model; use measure_saved otherwise"
    model.train()
    ids = torch.zeros(batch, seq_len, dtype=torch.long, device="meta")
    by_kind: dict[str, int] = {}
    skipped = [0]

    def run(saved):
        with _once_per_kind(model, saved, by_kind, skipped):
            return model(ids, labels=ids)

    with meta_forward(model):
        n, _ = measure_saved(model, run)
    count = collections.Counter(b.mixer_letter + b.ffn_letter for b in model.layers)
    parts = {f"{count[k]} block{'s' if count[k] > 1 else ''} {k}": v for k, v in by_kind.items()}
    return {**parts, "embedding, head, loss, MTP": n + skipped[0] - sum(by_kind.values())}


def saved_bytes(model: nn.Module, batch: int, seq_len: int) -> int:
    """The total of saved_bytes_by_part."""
    return sum(saved_bytes_by_part(model, batch, seq_len).values())
