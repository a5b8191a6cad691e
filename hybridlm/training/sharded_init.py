"""Sharded initialisation: a model built on the meta device and sharded (FSDP2, expert parallelism) gets, on every
rank, exactly the local shards of what `HybridLM.init_weights(seed)` gives a whole model, without any rank holding
the whole model.

    init_sharded(model, seed)    model: sharded, its local shards allocated (to_empty); fills them

How. `HybridLM.init_steps()` lists the initialisation unit by unit (embedding, each block, norm, head, MTP), in the
order they draw from the global RNG. Every rank replays those steps on a meta template of the model: it allocates one
unit at a time on the CPU, runs the unit's init, copies each tensor's local shard (DTensor placements -> global
offset) into the model, and frees the unit again. Routed experts are never allocated in the template: a MoE's init
draws one seed from the global RNG, and `MoE.init_experts` generates each expert from its own generator, so a rank
fills only the experts it holds. Peak memory beyond the shards: the largest unit without its routed experts (for
Llama-4-Maverick-shaped models, the 202K x 5120 embedding, 4.1 GB in fp32). Compute: every rank generates every
non-expert value (the RNG stream is sequential) and its own experts.
"""

from __future__ import annotations

import torch
from torch import nn


def _local(t: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """(this rank's local tensor, the slices of the global tensor it holds)."""
    if not hasattr(t, "to_local"):
        return t, tuple(slice(0, n) for n in t.shape)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    return t.to_local(), tuple(slice(o, o + n) for o, n in zip(offset, shape))


def _experts(unit: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in unit.named_modules() if hasattr(m, "init_experts")]


@torch.no_grad()
def init_sharded(model: nn.Module, seed: int) -> None:
    from ..model import HybridLM
    template = HybridLM(model.config, device="meta")
    torch.manual_seed(seed)
    for name, init in template.init_steps():
        unit, target = template.get_submodule(name), model.get_submodule(name)
        skip = {id(t) for _, moe in _experts(unit) for t in (moe.gate_up_proj, moe.down_proj)}
        for mod in unit.modules():  # allocate the unit, routed experts left on meta
            for key, t in list(mod._parameters.items()) + list(mod._buffers.items()):
                if t is not None and id(t) not in skip:
                    real = torch.empty_like(t, device="cpu")
                    if key in mod._parameters:
                        mod._parameters[key] = nn.Parameter(real, requires_grad=t.requires_grad)
                    else:
                        mod._buffers[key] = real
        init(unit)
        targets = dict(target.named_parameters()) | dict(target.named_buffers())
        for key, full in list(unit.named_parameters()) + list(unit.named_buffers()):
            if full.device.type == "meta":  # a routed expert tensor: below
                continue
            local, where = _local(targets[key])
            local.copy_(full[where])
        for mod_name, moe in _experts(unit):
            real = target.get_submodule(mod_name)
            real.expert_init = moe.expert_init
            (gate_up, where), (down, where_down) = _local(real.gate_up_proj), _local(real.down_proj)
            real.init_experts(gate_up, down, first=where[0].start, rows=(where[1], where_down[1]))
        unit.to_empty(device="meta")  # free the unit
