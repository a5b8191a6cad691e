"""Distributed setup for training: the process group torchrun describes, the device, FSDP2 sharding, seeding, the
RNG states a checkpoint keeps (one row per rank) and the sum over ranks. Single-process runs go through the same
calls (world size 1, no process group)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int]:
    """-> (rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes in the environment; True when this call created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return True
    return False


def close_distributed() -> None:
    dist.destroy_process_group()


def resolve_device(spec: str) -> torch.device:
    """--device auto | cpu | cuda -> this rank's device (cuda: the LOCAL_RANK-th GPU)."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if spec != "cpu":
        raise ValueError(f"--device {spec!r}: must be auto, cpu or cuda")
    return torch.device("cpu")


def shard(model) -> None:
    """FSDP2 over the process group: every block, the MTP module, then the rest of the model."""
    from torch.distributed.fsdp import fully_shard
    for block in model.layers:
        fully_shard(block)
    if model.mtp is not None:
        fully_shard(model.mtp)
    fully_shard(model)


def all_reduce_sum(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum of a CPU tensor over ranks (through `device`, as NCCL needs); t itself without a process group."""
    if not dist.is_initialized():
        return t
    t_d = t.to(device)
    dist.all_reduce(t_d)
    return t_d.cpu()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's RNG states, gathered as [world, S] rows (rank order)."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    if not dist.is_initialized():
        return {k: v[None] for k, v in states.items()}
    out = {}
    for k, v in states.items():
        v = v.to(device)
        rows = [torch.empty_like(v) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, v)
        out[k] = torch.stack(rows).cpu()
    return out


def set_rng_state(rng: dict[str, torch.Tensor], device: torch.device) -> None:
    rank, world = dist_info()
    row = rank if rng["cpu"].shape[0] == world else 0  # another world size: every rank takes rank 0's
    torch.set_rng_state(rng["cpu"][row].clone())
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"][row].clone(), device)
