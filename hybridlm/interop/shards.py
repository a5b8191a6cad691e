"""Sharded checkpoint directories, read in one process without torch.distributed: the safetensors files that
torch.distributed.checkpoint's HuggingFaceStorageWriter(save_distributed=True) writes (one per rank), each holding
that rank's pieces of the tensors and, in its safetensors header, where each piece sits in the whole tensor:

    model/shard-00001-model-00001-of-00001.safetensors    rank 0's pieces
    model/shard-00002-model-00001-of-00001.safetensors    rank 1's pieces
        __metadata__["DCP_SHARDING_INFO"] = '{"layers.0.attn.q_proj.weight": {"saved_offsets": [24, 0]}, ...}'

`layout(dir)` reads the headers only (nothing is copied) and checks that the pieces of every tensor tile it whole
(so a missing shard file, or one from another save, is named before anything loads); `specs(...)` gives the whole
tensors' (shape, dtype) to compare with a model; `assemble(...)` copies the pieces into whole tensors (export, generate,
conversion to the single-directory format). Resuming under torch.distributed reads the same files through DCP's
HuggingFaceStorageReader, which also parses these headers (see training/dcp.py). Safetensors and JSON only: nothing
here unpickles. Errors are safeio.CheckpointError, one line naming the file and tensor."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError

from .safeio import CheckpointError, Spec, check_finite, header_specs, open_safetensors

SHARDING_KEY = "DCP_SHARDING_INFO"  # torch.distributed.checkpoint._hf_utils.CUSTOM_METADATA_KEY
OFFSETS_KEY = "saved_offsets"


@dataclass
class Piece:
    file: Path
    offsets: tuple[int, ...]  # where the piece starts in the whole tensor, per dimension
    shape: tuple[int, ...]


@dataclass
class Entry:
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...] = ()  # the whole tensor's: the furthest extent of its pieces
    pieces: list[Piece] = field(default_factory=list)


def shard_files(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: missing (a sharded checkpoint keeps its shard files there)")
    files = sorted(f for f in d.iterdir() if f.suffix == ".safetensors")
    if not files:
        raise CheckpointError(f"{d}: no .safetensors shard files")
    return files


def _offsets(f: Path, handle) -> dict[str, list[int]]:
    meta = handle.metadata() or {}
    if SHARDING_KEY not in meta:
        raise CheckpointError(f"{f}: no {SHARDING_KEY} in the safetensors header: not a shard file of a sharded "
                              f"checkpoint")
    try:
        info = json.loads(meta[SHARDING_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: {SHARDING_KEY} in the header is not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{f}: {SHARDING_KEY} in the header is not a JSON object")
    out = {}
    for k, v in info.items():
        offs = v.get(OFFSETS_KEY) if isinstance(v, dict) else None
        if not (isinstance(offs, list) and all(type(o) is int and o >= 0 for o in offs)):
            raise CheckpointError(f"{f}: {SHARDING_KEY}[{k!r}] has no list of non-negative '{OFFSETS_KEY}'")
        out[k] = offs
    return out


def layout(directory: str | Path) -> dict[str, Entry]:
    """Every tensor of a shard directory: dtype, whole shape and pieces, from the headers alone. Checks that each
    tensor's pieces agree in dtype and rank and that their volumes add up to the whole (its extent over all pieces),
    so a missing or foreign shard file is reported here, naming a tensor it held. (Without the pieces at the far end
    the extent itself shrinks: the check against the model's shapes then names the tensor.)"""
    entries: dict[str, Entry] = {}
    for f in shard_files(directory):
        handle = open_safetensors(f)
        offsets = _offsets(f, handle)
        for key, (shape, dtype) in header_specs(f, handle).items():
            if key not in offsets or len(offsets[key]) != len(shape):
                raise CheckpointError(f"{f}: tensor {key} has no offsets of its rank {len(shape)} in {SHARDING_KEY}")
            e = entries.setdefault(key, Entry(dtype))
            if e.dtype != dtype:
                raise CheckpointError(f"{f}: tensor {key} is {dtype} here but {e.dtype} in {e.pieces[0].file.name}")
            if e.pieces and len(e.pieces[0].shape) != len(shape):
                raise CheckpointError(f"{f}: tensor {key} has rank {len(shape)} here but {len(e.pieces[0].shape)} "
                                      f"in {e.pieces[0].file.name}")
            e.pieces.append(Piece(f, tuple(offsets[key]), shape))
    for key, e in entries.items():
        e.shape = tuple(max(p.offsets[i] + p.shape[i] for p in e.pieces) for i in range(len(e.pieces[0].shape)))
        have = sum(math.prod(p.shape) for p in e.pieces)
        if have != math.prod(e.shape):
            raise CheckpointError(f"{Path(directory)}: tensor {key} {e.shape}: its pieces hold {have} of "
                                  f"{math.prod(e.shape)} elements (in {', '.join(p.file.name for p in e.pieces)}): "
                                  f"a shard file is missing or from another save")
    return entries


def specs(entries: dict[str, Entry]) -> dict[str, Spec]:
    """The whole tensors' (shape, dtype name), comparable with safeio.spec of a model's tensors."""
    return {k: (e.shape, e.dtype) for k, e in entries.items()}


def assemble(entries: dict[str, Entry], keys=None) -> dict[str, torch.Tensor]:
    """Whole tensors copied together from their pieces (every floating one checked finite)."""
    handles: dict[Path, object] = {}
    out = {}
    for key in entries if keys is None else keys:
        e = entries[key]
        whole = None
        for p in e.pieces:
            if p.file not in handles:
                handles[p.file] = open_safetensors(p.file)
            try:
                t = handles[p.file].get_tensor(key)
            except (SafetensorError, OSError) as err:  # e.g. a file cut short after its header
                raise CheckpointError(f"{p.file}: tensor {key} unreadable ({' '.join(str(err).split())})") from None
            if whole is None:
                whole = torch.empty(e.shape, dtype=t.dtype)
            whole[tuple(slice(o, o + n) for o, n in zip(p.offsets, p.shape))] = t
        check_finite(e.pieces[0].file.parent, key, whole)
        out[key] = whole
    return out


def read_whole(directory: str | Path) -> dict[str, torch.Tensor]:
    return assemble(layout(directory))
