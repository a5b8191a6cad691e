"""The matmuls of a computation, replayed alone: how close to the big-matmul rate the computation's own matmul
shapes can run on this machine, with every other op (elementwise work, copies, reductions) free.

    calls = record_matmuls(fn)      run fn once, keep every matmul-family ATen call (op, shapes, strides, dtypes)
    replay_time(calls, reps)        best-of-reps wall time of all those calls alone, on fresh tensors of the same
                                    shapes and strides (each call's inputs allocated once, outside the timing)
    matmul_flops(calls)             their FLOPs (2 per multiply-add), as FlopCounterMode counts them

Used by kda_chunked.py and prefill_floor.py: a "floor share" of X% (FLOPs at the 2048^3 mm rate, divided by the
measured time) is bounded above by the replay's share, since the replay does the same matmuls and nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
MATMUL_OPS = {aten.mm.default, aten.bmm.default, aten.addmm.default, aten.baddbmm.default, aten.mm.out,
              aten.bmm.out, aten.baddbmm.out, aten.addmm.out, aten._grouped_mm.default}


@dataclass
class Call:
    op: object
    args: tuple  # tensors as (shape, stride, dtype), other arguments as they were
    kwargs: dict


def _spec(x):
    return ("T", tuple(x.shape), tuple(x.stride()), x.dtype) if isinstance(x, torch.Tensor) else x


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMUL_OPS:
            self.calls.append(Call(func, tuple(_spec(a) for a in args), {k: _spec(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


@torch.no_grad()
def record_matmuls(fn) -> list[Call]:
    with _Recorder() as rec:
        fn()
    return rec.calls


def _make(spec, gen):
    if isinstance(spec, tuple) and spec and spec[0] == "T":
        _, shape, stride, dtype = spec
        size = 1 + sum((n - 1) * st for n, st in zip(shape, stride)) if all(shape) else 0  # storage it spans
        base = torch.empty(size, dtype=dtype)
        base = base.normal_(generator=gen) if dtype.is_floating_point else base.zero_()
        return base.as_strided(shape, stride)  # broadcast (stride-0) views stay views
    return spec


def _materialise(calls: list[Call], reuse: bool):
    """Inputs for every call; reuse=True: calls with the same op and shapes share one set (warm caches, as a
    chunk loop's operands often are), reuse=False: every call its own (cold)."""
    gen = torch.Generator().manual_seed(0)
    out, made = [], {}
    for c in calls:
        key = (c.op, c.args, tuple(sorted(c.kwargs.items(), key=lambda kv: kv[0])))
        if reuse and key in made:
            out.append(made[key])
            continue
        args = tuple(_make(a, gen) for a in c.args)
        kwargs = {k: _make(v, gen) for k, v in c.kwargs.items()}
        if c.op is aten._grouped_mm.default:  # offsets of equal segments over the rows
            rows, n = args[0].shape[0], args[1].shape[0]
            offs = torch.linspace(rows / n, rows, n).round().to(torch.int32)
            if "offs" in kwargs:
                kwargs["offs"] = offs
            else:
                args = args[:2] + (offs,) + args[3:]
        made[key] = (c.op, args, kwargs)
        out.append(made[key])
    return out


@torch.no_grad()
def replay_time(calls: list[Call], reps: int = 3, reuse: bool = True) -> float:
    ready = _materialise(calls, reuse)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for op, args, kwargs in ready:
            op(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_flops(calls: list[Call]) -> int:
    total = 0
    for c in calls:
        shapes = [a[1] for a in c.args if isinstance(a, tuple) and a and a[0] == "T"]
        if c.op in (aten.mm.default, aten.mm.out):
            (m, k), (_, n) = shapes[0], shapes[1]
            total += 2 * m * k * n
        elif c.op in (aten.addmm.default, aten.addmm.out):
            (m, k), (_, n) = shapes[1], shapes[2]
            total += 2 * m * k * n
        elif c.op in (aten.bmm.default, aten.bmm.out):
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
            total += 2 * b * m * k * n
        elif c.op in (aten.baddbmm.default, aten.baddbmm.out):
            (b, m, k), (_, _, n) = shapes[1], shapes[2]
            total += 2 * b * m * k * n
        else:  # _grouped_mm: x [rows, k] against w [E, k, n]: every row meets one expert
            (rows, k), n = shapes[0], shapes[1][-1]
            total += 2 * rows * k * n
    return total
