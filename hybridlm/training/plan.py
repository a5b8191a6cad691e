"""`hybridlm train --plan`: per-rank training memory of a preset at a world size and parallel layout, without
training or allocating (the model is built on the meta device).

Layout (docs/training.md, "Several processes"): world = dp x ep. Every MoE's routed experts (gate_up_proj
[E, 2I, D], down_proj [E, D, I]) are split over ep ranks, E/ep each, then FSDP2-sharded over the dp ranks holding
the same experts, on dim 1 (their width); every other parameter is FSDP2-sharded over all world ranks on dim 0.
FSDP2 pads the sharded dim to a multiple of the mesh size: a [R, ...] parameter takes ceil(R / n) rows on every
rank of an n-rank mesh.

Rows of the plan, bytes per rank:
    params        the shards at rest, fp32 (the trainer keeps fp32 parameters)
    grads         the sharded fp32 gradients (same layout)
    optimizer     AdamW: exp_avg + exp_avg_sq, fp32 (8 B/param); Muon: one fp32 momentum for hidden matrices
                  (build_optimizer's Muon group), AdamW's two for the rest
    activations   one micro-batch's saved-for-backward tensors, the logits and the loss (activations.py: measured
                  on the meta device, at the precision's dtype). Under EP a rank's experts receive on average
                  micro x seq_len x top_k assignments (balanced routing): the rows one rank's own MoE keeps, so the
                  single-device figure is the EP figure. bf16: plus the bf16 copies autocast makes of every weight
                  a rank's forward multiplies (linear, matmul, conv), saved for backward: 2 B x those params
                  (gathered: the full non-expert weights and the rank's E/ep experts)
    transient     what FSDP2 holds unsharded at the peak of backward: the root group (embedding, head, final
                  norm: gathered at the start of forward and kept through backward) with its unsharded gradient,
                  two blocks' gathered params (the one running and the prefetched next) and the running block's
                  unsharded gradient before its reduce-scatter; the largest block is taken
Not counted: the CUDA context and allocator slack, NCCL buffers, EP's all-to-all send/receive buffers, the optimizer
step's temporaries (Muon gathers and orthogonalises one matrix at a time), checkpoint staging.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch

from .config import TrainConfig, model_config

FP32 = 4


@dataclass
class Verdict:
    hardware: str
    name: str
    capacity: float  # bytes (decimal, hardware.py)
    fits: bool
    headroom: float  # capacity - total, bytes (negative: short by that much)


@dataclass
class MemoryPlan:
    model: str
    num_params: int
    world: int
    ep: int
    dp: int
    micro_batch: int
    seq_len: int
    optimizer: str
    precision: str  # the activations' dtype: fp32 or bf16
    params: int  # bytes per rank (see the module docstring for every row)
    grads: int
    optimizer_state: int
    activations: int
    weight_casts: int  # bf16: autocast's saved bf16 weight copies (0 for fp32)
    transient: int
    activations_by_part: dict[str, int] = field(default_factory=dict)  # see activations.saved_bytes_by_part
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return (self.params + self.grads + self.optimizer_state + self.activations + self.weight_casts
                + self.transient)

    def rows(self) -> list[tuple[str, int]]:
        rows = [("parameters (fp32 shards)", self.params), ("gradients (fp32 shards)", self.grads),
                (f"optimizer state ({self.optimizer})", self.optimizer_state),
                (f"activations ({self.precision}, micro-batch {self.micro_batch} x {self.seq_len})", self.activations)]
        rows += [(f"  {part}", b) for part, b in self.activations_by_part.items()]
        if self.weight_casts:
            rows.append(("autocast bf16 weight copies", self.weight_casts))
        return rows + [("FSDP2 all-gather peak (transient)", self.transient), ("total", self.total)]

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}

    def format(self) -> str:
        size = f"{self.num_params / 1e9:.2f}B" if self.num_params >= 1e9 else f"{self.num_params / 1e6:.2f}M"
        head = (f"plan: {self.model} ({size} params), world {self.world} = dp {self.dp} x "
                f"ep {self.ep}, micro-batch {self.micro_batch} x seq_len {self.seq_len}, {self.optimizer}, "
                f"{self.precision} activations")
        lines = [head, "per rank                                                     GB"]
        lines += [f"  {name:<56s}{b / 1e9:>9.2f}" for name, b in self.rows()]
        for v in self.verdicts:
            word = "fits" if v.fits else "does NOT fit"
            lines.append(f"{v.name} ({v.capacity / 1e9:.0f} GB): {word}, headroom {v.headroom / 1e9:+.2f} GB")
        return "\n".join(lines)


def _shard(numel: int, rows: int, n: int) -> int:
    """Elements one rank stores of a tensor with `rows` along its sharded dim, FSDP2-sharded over n ranks (that dim
    padded to ceil)."""
    return math.ceil(rows / n) * (numel // rows) if rows else 0


def _groups(model) -> list[tuple[str, list[tuple[str, torch.nn.Parameter, bool]]]]:
    """FSDP2's groups as distributed.shard makes them: every block, the MTP module, the root (the rest). Each
    param comes with whether it is a routed expert weight."""
    from ..layers.ffn.moe import MoE
    experts = {id(p) for m in model.modules() if isinstance(m, MoE) for p in (m.gate_up_proj, m.down_proj)}
    named = list(model.named_parameters())
    prefixes = [f"layers.{i}." for i in range(len(model.layers))] + (["mtp."] if model.mtp is not None else [])
    groups = [(p[:-1], [(n, t, id(t) in experts) for n, t in named if n.startswith(p)]) for p in prefixes]
    root = [(n, t, id(t) in experts) for n, t in named if not any(n.startswith(p) for p in prefixes)]
    return groups + [("root", root)]


def check_experts(model, ep: int) -> None:
    """ValueError (one line) naming the first MoE whose experts do not split over ep ranks."""
    from ..layers.ffn.moe import MoE
    for name, m in model.named_modules():
        if isinstance(m, MoE) and m.cfg.num_experts % ep:
            raise ValueError(f"--ep {ep}: MoE {name} has num_experts={m.cfg.num_experts}, not a multiple of ep={ep}")


def plan_memory(cfg: TrainConfig, world: int | None = None) -> MemoryPlan:
    """The per-rank memory plan of cfg's run at `world` ranks (default: cfg.world_size, else WORLD_SIZE, else 1),
    with a verdict for cfg.hardware (or every accelerator in hardware.py when none is named)."""
    from ..analysis.hardware import HARDWARE, get_hardware
    from ..model import HybridLM
    from .activations import saved_bytes_by_part
    from .optim import build_optimizer

    world = world or cfg.world_size or int(os.environ.get("WORLD_SIZE", "1"))
    hardware = [get_hardware(cfg.hardware)] if cfg.hardware else list(HARDWARE.values())
    if world % cfg.ep:
        raise ValueError(f"--world-size {world} is not a multiple of --ep {cfg.ep} (data parallel = world / ep)")
    micro, rem = divmod(cfg.batch_size, world * cfg.grad_accum)
    if rem or micro == 0:
        raise ValueError(f"batch_size={cfg.batch_size} must be a multiple of world size {world} x "
                         f"grad_accum={cfg.grad_accum}")
    mc = model_config(cfg)
    model = HybridLM(mc, device="meta")
    ep, dp = cfg.ep, world // cfg.ep
    check_experts(model, ep)
    # auto: bf16 autocast on an accelerator; fp8 runs under bf16 autocast too and is planned as bf16, an upper bound
    # (its float8 linears save their inputs in 1 byte rather than 2)
    precision = "fp32" if cfg.precision == "fp32" else "bf16"

    # the parameters the optimizer keeps one moment for (Muon's group), as build_optimizer splits them
    groups = build_optimizer(model, cfg.optimizer, cfg.lr, 0.0, (cfg.beta1, cfg.beta2)).param_groups
    one_buffer = {id(q) for g in groups if g.get("use_muon") for q in g["params"]}
    at_rest = one_moment = 0  # elements per rank: all shards; those of one_buffer
    largest_block = root_full = casts = 0  # elements gathered (full), of a group / over the whole forward
    for group, params in _groups(model):
        full = 0
        for n, p, expert in params:
            # an expert weight: this rank's E/ep experts, sharded over dp on dim 1 (distributed.shard); the rest:
            # over every rank on dim 0
            if expert:
                numel = p.numel() // ep
                local = _shard(numel, p.shape[1], dp)
            else:
                numel = p.numel()
                local = _shard(numel, p.shape[0], world)
            at_rest += local
            if id(p) in one_buffer:
                one_moment += local
            full += numel
            if p.ndim >= 2 and not (n == "embed.weight" and model.lm_head is not None):  # an untied lookup: no cast
                casts += numel
        if group == "root":
            root_full = full
        else:
            largest_block = max(largest_block, full)

    if precision == "bf16":
        model = model.to(torch.bfloat16)
    parts = saved_bytes_by_part(model, micro, cfg.seq_len)
    p = MemoryPlan(
        model=mc.name, num_params=model.num_params(), world=world, ep=ep, dp=dp, micro_batch=micro,
        seq_len=cfg.seq_len, optimizer=cfg.optimizer, precision=precision,
        params=FP32 * at_rest, grads=FP32 * at_rest, optimizer_state=FP32 * (2 * at_rest - one_moment),
        activations=sum(parts.values()), activations_by_part=parts,
        weight_casts=2 * casts if precision == "bf16" else 0,
        # one process holds everything unsharded already: nothing is gathered
        transient=0 if world == 1 else FP32 * (2 * root_full + 3 * largest_block))
    p.verdicts = [Verdict(h.key, h.name, h.hbm_capacity, p.total <= h.hbm_capacity, h.hbm_capacity - p.total)
                  for h in hardware]
    return p


def print_plan(cfg: TrainConfig) -> MemoryPlan:
    """`hybridlm train --plan`: the table (or JSON with --plan-json) on stdout."""
    p = plan_memory(cfg)
    print(json.dumps(p.to_dict(), indent=2) if cfg.plan_json else p.format(), flush=True)
    return p
