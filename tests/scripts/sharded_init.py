"""Run under torchrun by tests/test_sharded_init.py: build MODEL on the meta device, shard it (FSDP2, expert
parallelism with --ep), allocate and initialise this rank's shards (training/sharded_init.py), then write the full
state dict (rank 0) and every rank's local element count.

    python -m torch.distributed.run --nproc_per_node W tests/scripts/sharded_init.py MODEL SEED EP OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from hybridlm import HybridLM
from hybridlm.interop.specs import resolve
from hybridlm.training.distributed import parallel_mesh, shard
from hybridlm.training.sharded_init import init_sharded

model_name, seed, ep, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
model = HybridLM(resolve(model_name).model_config(), device="meta")
shard(model, parallel_mesh(world, ep, torch.device("cpu")) if ep > 1 else None)
model.to_empty(device="cpu")
init_sharded(model, seed)
local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())
counts = [None] * world
dist.all_gather_object(counts, local)
sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
if rank == 0:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"))
    (out / "local_numel.json").write_text(json.dumps(counts))
dist.barrier()
dist.destroy_process_group()
