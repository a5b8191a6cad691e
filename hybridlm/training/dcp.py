"""Sharded checkpoints with torch.distributed.checkpoint (DCP): every rank writes only its own pieces of the model
and optimizer state, and a checkpoint loads on any world size (each rank reads the slices it now holds).

    OUT/step_000200/
        model/shard-0000R-model-00001-of-00001.safetensors   rank R-1's pieces of the weights and buffers
        optim/shard-0000R-model-00001-of-00001.safetensors   its pieces of the optimizer state, "<param>::<key>"
        optimizer.json rng.safetensors trainer.json model_config.json train_config.json [tokenizer.json]
        hybridlm_checkpoint.json                             the marker (layout "dcp", every file's size), last

    save_sharded(...)   collective: shards written by every rank into step_000200.tmp/, then rank 0 writes the
                        JSON / RNG files and the marker, renames the directory and moves `latest` (interop.checkpoint's
                        begin / commit, the same atomic scheme as the single-directory layout)
    load_sharded(...)   collective: checks the shard headers against this model and optimizer, then DCP reads the
                        pieces each rank holds now (any world size: 2 -> 4 -> 1)

The state comes from get_model_state_dict / get_optimizer_state_dict without full_state_dict: DTensors (FSDP2's 1-D
mesh, or expert weights on a 2-D (dp, ep) mesh: nothing here depends on the mesh) or plain tensors (one process, or
replicated buffers such as the expert bias, which DCP writes once). Only tensors go through DCP; the optimizer's
param groups and any non-tensor state go to optimizer.json, as in the single-directory layout.

No pickle: the default FileSystemWriter / Reader pickle a `.metadata` file, so they are not used. The Hugging Face
storage writer (save_distributed=True, no consolidation) writes plain safetensors files with each piece's offsets in
the header and no metadata file; its reader (torch 2.13 hf_storage.py, read here) overrides both read_metadata
(safe_open + json.loads of those headers) and read_data (safe_open get_slice), so FileSystemReader's pickle.load and
torch.load are never reached on this path. tests/test_dcp.py resumes with pickle.load and torch.load made to fail.

Testing aid: HYBRIDLM_DEBUG_SAVE_PAUSE=SECONDS makes rank 0 sleep once every rank's shards and the JSON files are in
the temporary directory, before the marker and the rename (the window a SIGKILL test aims at).
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from ..interop import checkpoint as ckpt
from ..interop import shards
from ..interop.safeio import CheckpointError, check_finite, reason, spec, tensor_bytes, tensor_mismatch
from .distributed import all_reduce_sum, dist_info

PAUSE_ENV = "HYBRIDLM_DEBUG_SAVE_PAUSE"


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def _why(e: BaseException) -> str:
    """One line for an exception from dcp.save / dcp.load: its CheckpointException (a BaseException) carries each
    failed rank's exception; the first one's reason is enough to name the problem."""
    if isinstance(e, CheckpointException) and e.failures:
        rank, (inner, _) = sorted(e.failures.items(), key=lambda kv: kv[0])[0]
        return f"rank {rank}: {type(inner).__name__}: {reason(inner)}"[:400]
    return f"{type(e).__name__}: {reason(e)}"[:400]


def _any_failed(failed: bool, device: torch.device) -> bool:
    """Collective: did any rank fail? (every rank takes the same branch afterwards, so none waits forever)."""
    return float(all_reduce_sum(torch.tensor([float(failed)], dtype=torch.float64), device)[0]) > 0


def save_sharded(out: str | Path, step: int, *, model, optimizer, device: torch.device, trainer: dict,
                 model_config_json: str, train_config: dict, rng: dict[str, torch.Tensor],
                 tokenizer_file: str | Path | None, keep: int) -> Path:
    """Write the `dcp` checkpoint of `step` (see the module docstring); every rank calls it. Raises CheckpointError on
    every rank when any rank fails, after rank 0 removed the partial temporary directory."""
    rank, world = dist_info()
    out = Path(out)
    final, tmp = out / ckpt.step_name(step), out / (ckpt.step_name(step) + ".tmp")
    msd = get_model_state_dict(model)  # this rank's pieces (DTensors) and the replicated tensors
    opt_tensors, opt_meta = ckpt.optimizer_to_files(get_optimizer_state_dict(model, optimizer))
    mine = sum(_local(t).numel() * _local(t).element_size() + 1024 for d in (msd, opt_tensors) for t in d.values())
    nbytes = int(all_reduce_sum(torch.tensor([float(mine)], dtype=torch.float64), device)[0])
    err = None
    if rank == 0:
        try:
            ckpt.begin(out, step, nbytes + tensor_bytes(rng) + 65536 * (world + 1))
        except CheckpointError as e:
            err = e
    if _any_failed(err is not None, device):
        raise err or CheckpointError(f"{tmp}: could not start the save on rank 0 (see its message)")

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to.*")
            for sub, tensors in (("model", msd), ("optim", opt_tensors)):
                # returns on every rank only once all ranks' files are written and fsynced
                dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(tmp / sub), save_distributed=True))
    except (Exception, CheckpointException) as e:  # DCP wraps every rank's failure (ENOSPC, ...)
        err = CheckpointError(f"{tmp}: could not write the shard files ({_why(e)})")
    if _any_failed(err is not None, device):
        if rank == 0:
            err = ckpt.abandon(tmp, err or CheckpointError(f"{tmp}: another rank could not write its shard files"))
        raise err or CheckpointError(f"{tmp}: the save failed (rank 0 removed the partial directory)")

    if rank == 0:
        try:
            try:
                ckpt.write_run_files(tmp, step, optim_meta=opt_meta, trainer=trainer,
                                     model_config_json=model_config_json, train_config=train_config, rng=rng,
                                     tokenizer_file=tokenizer_file)
            except CheckpointError as e:
                raise ckpt.abandon(tmp, e) from None
            if os.environ.get(PAUSE_ENV):
                time.sleep(float(os.environ[PAUSE_ENV]))
            ckpt.commit(tmp, final, step, keep, "dcp")
        except CheckpointError as e:
            err = e
    if _any_failed(err is not None, device):  # also the barrier: no rank goes on before `latest` moved
        raise err or CheckpointError(f"{tmp}: rank 0 could not finish the save (see its message)")
    return final


def load_sharded(c: ckpt.Checkpoint, model, optimizer, device: torch.device) -> None:
    """Load a `dcp` checkpoint's model and optimizer state into this run's (sharded or whole) model and optimizer;
    every rank calls it. The shard headers are checked against the model's and optimizer's whole shapes and dtypes
    first (CheckpointError naming the folder and tensor), then each rank reads the slices it holds."""
    msd = get_model_state_dict(model)
    ckpt.check_model_specs(c.path / "model", shards.specs(c.shard_layout("model")), model)
    # A fresh optimizer has no state yet: get_optimizer_state_dict first creates it (one zero-gradient step at lr 0).
    opt_tensors, _ = ckpt.optimizer_to_files(get_optimizer_state_dict(model, optimizer))
    meta = c.optimizer_meta()
    have = shards.specs(c.shard_layout("optim"))
    ckpt.check_optimizer_specs(c.path, c.path / "optim", have, meta, model, optimizer)
    problems = tensor_mismatch({k: spec(t) for k, t in opt_tensors.items()}, have, exact_dtype=True)
    if problems:
        raise CheckpointError(f"{c.path / 'optim'} does not match this run's optimizer state: {problems}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to.*")
            dcp.load(msd, storage_reader=HuggingFaceStorageReader(str(c.path / "model")))
            dcp.load(opt_tensors, storage_reader=HuggingFaceStorageReader(str(c.path / "optim")))
    except (Exception, CheckpointException) as e:  # a file that changed after the checks above
        raise CheckpointError(f"{c.path}: reading the shard files failed ({_why(e)})") from None
    err = None
    try:  # each rank sees only its pieces: agree before anyone goes on
        for sub, tensors in (("model", msd), ("optim", opt_tensors)):
            for k, t in tensors.items():
                check_finite(c.path / sub, k, _local(t))
    except CheckpointError as e:
        err = e
    if _any_failed(err is not None, device):
        raise err or CheckpointError(f"{c.path}: another rank found NaN/inf values in its pieces (see its message)")
    set_model_state_dict(model, msd)
    set_optimizer_state_dict(model, optimizer, ckpt.optimizer_from_files(opt_tensors, meta))
