"""Sharded initialisation (training/sharded_init.py): a model built on the meta device, sharded over 2 or 4 gloo
ranks (FSDP2, and expert parallelism), with only each rank's shards allocated and initialised, holds exactly the
weights `HybridLM.init_weights(seed)` gives a whole model in one process: bitwise, every tensor."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hybridlm import HybridLM
from hybridlm.interop.specs import resolve

SCRIPT = Path(__file__).parent / "scripts" / "sharded_init.py"


@pytest.mark.parametrize("model, world, ep", [("tiny-hybrid", 2, 1), ("tiny-deepseek-v4", 4, 2),
                                              ("tiny-deepseek-v4", 2, 1)])
def test_sharded_init_equals_whole_model_init(tmp_path, model, world, ep):
    seed = 7
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
           str(SCRIPT), model, str(seed), str(ep), str(tmp_path)]
    run = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    got = load_file(str(tmp_path / "model.safetensors"))
    whole = HybridLM(resolve(model).model_config(), device="meta")
    whole.to_empty(device="cpu")
    whole.init_weights(seed=seed)
    want = whole.state_dict()
    assert got.keys() == want.keys()
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    # each rank allocated a shard: about 1/world of the parameters (FSDP2 pads the last shard of uneven dims)
    counts = json.loads((tmp_path / "local_numel.json").read_text())
    total = whole.num_params()
    assert sum(counts) >= total and max(counts) < 1.1 * total / world


def test_the_experts_of_a_whole_model_do_not_depend_on_how_many_there_are_around_them():
    # MoE.init_experts: expert e's weights come from its own generator, so initialising experts [2, 4) alone gives
    # the whole model's experts 2 and 3; a different expert seed gives different weights.
    torch.manual_seed(0)
    model = HybridLM(resolve("tiny-hybrid").model_config())
    moe = next(m for m in model.modules() if hasattr(m, "init_experts"))
    gate_up, down = torch.empty_like(moe.gate_up_proj[2:4]), torch.empty_like(moe.down_proj[2:4])
    moe.init_experts(gate_up, down, first=2)
    assert torch.equal(gate_up, moe.gate_up_proj[2:4]) and torch.equal(down, moe.down_proj[2:4])
    std = moe.expert_init[1]
    assert abs(float(moe.gate_up_proj.std()) - std) < 0.05 * std  # Normal(0, init_std)
    moe.expert_init = (moe.expert_init[0] + 1, std)
    moe.init_experts(gate_up, down, first=2)
    assert not torch.equal(gate_up, moe.gate_up_proj[2:4])
