"""Distributed setup for training: the process group torchrun describes, the device, FSDP2 sharding, seeding, the
RNG states a checkpoint keeps (one row per rank) and the sum over ranks. Single-process runs go through the same
calls (world size 1, no process group)."""

from __future__ import annotations

import logging
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


def parallel_mesh(world: int, ep: int, device: torch.device) -> dict:
    """The meshes of world = dp x ep ranks: {"dp", "ep"} (1-D slices of the 2-D (dp, ep) mesh; rank = dp_index * ep
    + ep_index, so an ep group is ep consecutive ranks) and "world" (the flattened 1-D mesh over all of them)."""
    from torch.distributed.device_mesh import init_device_mesh
    if ep < 1 or world % ep:
        raise ValueError(f"--ep {ep}: the world size {world} must be a multiple of the expert-parallel degree")
    mesh = init_device_mesh(device.type, (world // ep, ep), mesh_dim_names=("dp", "ep"))
    return {"dp": mesh["dp"], "ep": mesh["ep"], "world": mesh._flatten("world")}


def shard(model, meshes: dict | None = None) -> None:
    """FSDP2 over the process group: every block, the MTP module, then the rest of the model.

    With parallel_mesh's meshes and ep > 1, every MoE's routed experts are first split over the ep ranks
    (MoE.shard_experts) and made their own FSDP2 unit over the dp ranks that hold the same experts (sharded on
    their width); the MoE's
    router and shared expert become units over all ranks first, so that unit holds the experts alone. Everything
    else is sharded over all ranks, as without expert parallelism."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard
    world = None if meshes is None else meshes["world"]
    if meshes is not None and meshes["ep"].size() > 1:
        # Gathering a (dp-sharded, ep-sharded) expert tensor whole (checkpoints, Muon) takes two all-gathers, and
        # DTensor warns about it on every call; an all-gather reduces nothing, so its "inconsistent results" caveat
        # does not apply.
        logging.getLogger("torch.distributed.tensor._redistribute").setLevel(logging.ERROR)
        for moe in (m for m in model.modules() if hasattr(m, "shard_experts")):
            moe.shard_experts(meshes["ep"])
            for child in moe.children():  # router, shared expert, shared gate: replicated data, sharded over all
                fully_shard(child, mesh=world)
            # what is left: gate_up_proj [E/ep, 2I, D] and down_proj [E/ep, D, I], sharded over dp on dim 1 (the
            # width), so that few local experts over many dp ranks still split evenly (dim 0 would pad each rank to
            # a whole expert once E/ep < dp)
            fully_shard(moe, mesh=meshes["dp"], shard_placement_fn=lambda param: Shard(1))
    for block in model.layers:
        fully_shard(block, mesh=world)
    if model.mtp is not None:
        fully_shard(model.mtp, mesh=world)
    fully_shard(model, mesh=world)


def grad_norm_and_clip(params, max_norm: float, device: torch.device) -> float:
    """The global gradient norm of sharded parameters whose local shards partition every tensor over the ranks
    (FSDP2 over all ranks, and expert-parallel experts: each element lives on exactly one rank), clipped to max_norm
    like torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6), at most 1). Computed from the local
    shards, so parameters on different meshes (the experts' dp mesh, the rest's world mesh) mix freely."""
    grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in params if p.grad is not None]
    sq = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum().reshape(1).to(torch.float64)
    norm = float(all_reduce_sum(sq.cpu(), device)[0].sqrt())
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return norm


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
