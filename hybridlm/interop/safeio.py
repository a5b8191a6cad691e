"""Reading and writing the files hybridlm is pointed at: safetensors, JSON objects, and free-space checks.

Errors. Every problem with a checkpoint, weights file or config JSON, and every fault while writing one, raises
`CheckpointError`, a subclass of ValueError, whose message is one line naming the file (and the tensor or field):

    .../step_000200/model.safetensors: not a readable safetensors file (truncated, or not safetensors): ...
    .../model.safetensors: tensor layers.0.ffn_norm.weight has 3 NaN/inf values (of 48)
    .../run: not enough free space to save (2.2 MB (2163011 bytes) needed with margin, 0.4 MB (400000 bytes) free); ...
    .../step_000200.tmp/optimizer.safetensors: could not write (No space left on device); removed the partial ...

Mistakes in a config's values (ModelConfig validation) stay plain ValueError naming the field. So `except ValueError`
catches the whole family, and the CLI prints it as `hybridlm <cmd>: error: <message>`. Nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file


class CheckpointError(ValueError):
    """A checkpoint / weights / config file that cannot be used as it is, or a failed write; the one-line message
    names the file and, where one is at fault, the tensor or field."""


# -- reading ---------------------------------------------------------------------------------------------------
Spec = tuple[tuple[int, ...], str]  # (shape, safetensors dtype name such as "F32", "BF16", "I64")

_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}


def spec(t: torch.Tensor) -> Spec:
    """A tensor's (shape, dtype name), comparable with what a safetensors header says (works on meta tensors)."""
    return tuple(t.shape), _DTYPE_NAMES.get(t.dtype, str(t.dtype).removeprefix("torch."))


def is_float(dtype_name: str) -> bool:
    return dtype_name.startswith(("F", "BF"))


def _unreadable(path: Path, e: Exception) -> CheckpointError:
    reason = " ".join(str(e).split())  # safetensors' messages may carry newlines
    return CheckpointError(f"{path}: not a readable safetensors file (truncated, or not safetensors): {reason}")


def open_safetensors(path: str | Path):
    """safe_open(path), with a CheckpointError naming the file when it is missing, truncated or not safetensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as e:
        raise _unreadable(path, e) from None


def header_specs(path: str | Path, handle=None) -> dict[str, Spec]:
    """Every tensor's (shape, dtype) from the header alone: nothing is read or copied."""
    h = handle if handle is not None else open_safetensors(path)
    try:
        names = h.keys()  # a safe_open handle is not iterable itself
        return {k: (tuple(h.get_slice(k).get_shape()), h.get_slice(k).get_dtype()) for k in names}
    except (SafetensorError, OSError) as e:
        raise _unreadable(Path(path), e) from None


def read_tensor(path: str | Path, handle, name: str) -> torch.Tensor:
    """One tensor, checked finite when it is floating point (a NaN weight would otherwise pass silently)."""
    try:
        t = handle.get_tensor(name)
    except (SafetensorError, OSError) as e:
        raise _unreadable(Path(path), e) from None
    check_finite(path, name, t)
    return t


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The whole file (safetensors only, never pickle), every floating tensor checked finite."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise _unreadable(path, e) from None
    for name, t in tensors.items():
        check_finite(path, name, t)
    return tensors


def check_finite(path: str | Path, name: str, t: torch.Tensor) -> None:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise CheckpointError(f"{path}: tensor {name} has {bad} NaN/inf values (of {t.numel()})")


def read_json(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """A JSON object from a file, with the `required` keys; CheckpointError naming the file otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    absent = [k for k in required if k not in obj]
    if absent:
        raise CheckpointError(f"{path}: missing field(s) {absent}")
    return obj


def tensor_mismatch(need: dict[str, Spec], have: dict[str, Spec], exact_dtype: bool) -> str:
    """'' when `have` (a file) holds exactly the tensors `need` (a model) describes, else one line listing every
    missing, unexpected, mis-shaped and wrong-dtype tensor (the first 20 of each). A float tensor must be float
    (any precision unless exact_dtype), an integer one integer."""
    missing, unexpected = sorted(set(need) - set(have)), sorted(set(have) - set(need))
    common = sorted(set(need) & set(have))
    misshaped = [f"{k}: checkpoint {have[k][0]} vs model {need[k][0]}" for k in common if have[k][0] != need[k][0]]
    wrong_dtype = [f"{k}: checkpoint {have[k][1]} vs model {need[k][1]}" for k in common
                   if have[k][1] != need[k][1] and (exact_dtype or is_float(have[k][1]) != is_float(need[k][1]))]
    parts = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped),
                         ("wrong dtype", wrong_dtype)):
        if items:
            parts.append(f"{title} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
    return "; ".join(parts)


# -- writing ---------------------------------------------------------------------------------------------------
WRITE_ERRORS = (OSError, SafetensorError)  # safetensors reports its own I/O failures (ENOSPC) as SafetensorError


def reason(e: BaseException) -> str:
    return " ".join((e.strerror if isinstance(e, OSError) and e.strerror else str(e)).split())


@contextlib.contextmanager
def writing(path: str | Path):
    """Turn an I/O failure while writing `path` into a CheckpointError naming it (the caller cleans up)."""
    try:
        yield
    except WRITE_ERRORS as e:
        raise CheckpointError(f"{path}: could not write ({reason(e)})") from None


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes a safetensors file of `tensors` takes, headers included (a generous estimate for the header)."""
    return sum(t.numel() * t.element_size() + 64 + 2 * len(k) for k, t in tensors.items()) + 1024


def check_free_space(directory: str | Path, nbytes: int) -> None:
    """Refuse to start a write that cannot fit: `nbytes` plus a margin (filesystem blocks, metadata)."""
    directory = Path(directory)
    free = shutil.disk_usage(directory).free
    need = int(nbytes * 1.02) + (1 << 20)
    if free < need:
        raise CheckpointError(f"{directory}: not enough free space to save ({_mb(need)} needed with margin, "
                              f"{_mb(free)} free); nothing was written")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB ({n} bytes)"
