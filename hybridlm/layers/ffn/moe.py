"""A dropless token-choice mixture of SwiGLU experts: the kind's config (`MoEConfig`) and module (`MoE`).

Shape legend (suffixes on variable names):
    B batch, T tokens (per sequence in x_BTD; the MoE flattens to all B*T tokens, still called T), D model dim,
    E experts, K top-k, I routed expert width, N = T*K (token, expert) assignments.

MoE dispatch (dropless, no capacity factor): flatten the T*K assignments, sort them by expert id, gather
the token rows once, run every expert on its contiguous segment (one grouped matmul, or a loop of plain
matmuls), scale by the gates and scatter-add back. `run_experts(x_ND, counts_E, gates_N)` is the only step that
touches expert weights. Under expert parallelism (`shard_experts`, expert_parallel.py) the sorted rows go to their
experts' ranks by all-to-all, `run_experts` runs this rank's experts on what it received, and the outputs come back.

ExpertsInt8 (Jamba 1.5's serving format, docs/quantize.md): `quantize_experts_int8(model)` turns every MoE's routed
expert weights into int8 with one fp32 scale per output channel (ops/int8.py): gate_up_proj [E, 2I, D] int8 +
gate_up_scale [E, 2I], down_proj [E, D, I] int8 + down_scale [E, D]. The router, the shared expert and its gate
stay in their float dtype. The int8 tensors stay parameters (without gradient), so num_params() is unchanged; the
forward dequantises one expert at a time, only the experts that have tokens. Inference only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core.config import at_least_one, fail
from ...ops.int8 import dequantize_rows, quantize_rows
from ...registry import register_ffn
from . import expert_parallel
from .dense import SwiGLU, swiglu


@dataclass
class MoEConfig:
    """Token-choice, dropless mixture of SwiGLU experts with optional shared expert(s)."""

    num_experts: int
    top_k: int
    expert_size: int  # intermediate width of one routed expert
    shared_size: int = 0  # intermediate width of the shared expert(s) together; 0 = none
    shared_gate: bool = False  # shared output scaled by sigmoid(w_s . x) (Qwen)
    score_func: Literal["softmax", "sigmoid", "sqrtsoftplus"] = "softmax"  # sqrtsoftplus: sqrt(softplus(u)), V4
    norm_topk: bool = True  # renormalise the top-k gates to sum to 1
    routed_scale: float = 1.0
    aux_loss_coef: float = 0.0  # switch-style load-balancing loss weight
    bias_update_rate: float = 0.0  # DeepSeek-V3 aux-loss-free bias step (gamma); 0 = off
    scale_input: bool = False  # Llama 4: a routed expert computes E(gate * x) and its output is not gated
    # Group-limited routing (DeepSeek-V3 noaux_tc): experts split into n_groups equal groups; a group's score is
    # the sum of its top-2 biased scores; only the best topk_groups groups' experts compete for the top-k.
    n_groups: int = 1
    topk_groups: int = 1
    # DeepSeek-V4. swiglu_limit > 0 clamps every expert's (routed and shared) gate pre-activation to <= limit and
    # up to [-limit, limit]. hash_routing: the experts come from a frozen token-id table (tid2eid [vocab, top_k]),
    # the router only weighs them (V4's first layers).
    swiglu_limit: float = 0.0
    hash_routing: bool = False
    kind: Literal["moe"] = "moe"

    def validate(self, where: str, d_model: int) -> None:
        at_least_one(self, where, "num_experts", "top_k", "expert_size")
        if self.top_k > self.num_experts:
            fail(f"{where}.top_k", self.top_k, f"exceeds num_experts={self.num_experts}")
        if self.shared_size < 0:
            fail(f"{where}.shared_size", self.shared_size, "must be >= 0")
        if self.shared_gate and not self.shared_size:
            fail(f"{where}.shared_gate", True, "needs a shared expert (shared_size > 0)")
        if self.score_func not in ("softmax", "sigmoid", "sqrtsoftplus"):
            fail(f"{where}.score_func", self.score_func, "must be 'softmax', 'sigmoid' or 'sqrtsoftplus'")
        if self.swiglu_limit < 0:
            fail(f"{where}.swiglu_limit", self.swiglu_limit, "must be >= 0 (0 = no clamp)")
        if self.hash_routing and self.n_groups > 1:
            fail(f"{where}.hash_routing", True, "cannot be combined with group-limited routing (n_groups > 1)")
        if self.n_groups < 1 or self.num_experts % self.n_groups:
            fail(f"{where}.n_groups", self.n_groups, f"must be >= 1 and divide num_experts={self.num_experts}")
        if not 1 <= self.topk_groups <= self.n_groups:
            fail(f"{where}.topk_groups", self.topk_groups, f"must be in [1, n_groups={self.n_groups}]")
        if self.top_k > self.topk_groups * (self.num_experts // self.n_groups):
            fail(f"{where}.top_k", self.top_k, f"exceeds the experts of topk_groups={self.topk_groups} groups "
                  f"({self.topk_groups * (self.num_experts // self.n_groups)})")

    def describe(self) -> str:
        """What `hybridlm info` shows for this FFN."""
        shared = f" + shared {self.shared_size}" if self.shared_size else ""
        groups = f", {self.topk_groups} of {self.n_groups} groups" if self.topk_groups < self.n_groups else ""
        extra = (", hash-routed" if self.hash_routing else "") + (f", swiglu clamp {self.swiglu_limit:g}"
                                                                  if self.swiglu_limit else "")
        return f"moe {self.num_experts}e top-{self.top_k} x {self.expert_size}{shared} ({self.score_func}{groups}{extra})"


# -- torch._grouped_mm probe ---------------------------------------------------------------------
# Availability of the private op depends on the build, device and dtype (this CPU build: fp32/bf16/fp16
# only, and its backward rejects stride-0 grads). Probe once per (device type, dtype) by comparing a tiny
# forward+backward against plain matmuls; any exception or mismatch means "use the loop".
_GROUPED_MM_OK: dict[tuple[str, torch.dtype], bool] = {}
# Measured with benchmarks/moe.py (2-core CPU, fp32, D=1024 K=8, fwd+bwd, best of several runs): the grouped
# matmul is 5-20% faster than the per-expert loop at <= 128 rows/expert (E=64 I=256 T=1024; E=256 I=128),
# and 3-7% slower at 256-512 rows/expert with 2 threads (a tie with 1). Few rows per expert is the common
# case for fine-grained MoE, and the grouped path has no host sync, so "auto" picks it wherever it works.
PREFER_GROUPED_MM_ON_CPU = True


def _grouped_mm_works(device: torch.device, dtype: torch.dtype) -> bool:
    key = (device.type, dtype)
    if key not in _GROUPED_MM_OK:
        ok = False
        if hasattr(torch, "_grouped_mm") and device.type != "meta":
            try:
                with torch.enable_grad():  # the probe checks the backward too, even under no_grad
                    g = torch.Generator(device="cpu").manual_seed(0)
                    x = torch.randn(7, 16, generator=g).to(device, dtype).requires_grad_()
                    w = torch.randn(3, 8, 16, generator=g).to(device, dtype).requires_grad_()  # [E, out, in]
                    counts = torch.tensor([3, 0, 4], device=device)  # includes an empty expert
                    dy = torch.randn(7, 8, generator=g).to(device, dtype)
                    offs = counts.cumsum(0).to(torch.int32)
                    y = torch._grouped_mm(x, w.transpose(1, 2), offs=offs)
                    ref = torch.cat([x[:3] @ w[0].T, x[3:] @ w[2].T])
                    gx, gw = torch.autograd.grad(y, (x, w), dy)
                    rx, rw = torch.autograd.grad(ref, (x, w), dy)
                    tol = 1e-4 if dtype == torch.float32 else 5e-2
                    pairs = ((y, ref), (gx, rx), (gw, rw))
                    ok = all(torch.allclose(a.float(), b.float(), atol=tol, rtol=tol) for a, b in pairs)
            except Exception:  # not built for this device/dtype: fall back
                ok = False
        _GROUPED_MM_OK[key] = ok
    return _GROUPED_MM_OK[key]


@register_ffn("moe", MoEConfig)
class MoE(nn.Module):
    """Token-choice top-k routed SwiGLU experts + optional (gated) shared expert; see the module docstring."""

    def __init__(self, cfg: MoEConfig, d_model: int, vocab_size: int | None = None):
        super().__init__()
        self.cfg, self.d_model = cfg, d_model
        E, I = cfg.num_experts, cfg.expert_size
        self.router = nn.Linear(d_model, E, bias=False)
        # Same layout as transformers' fused experts: rows [0, I) = gate, rows [I, 2I) = up.
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * I, d_model))
        self.down_proj = nn.Parameter(torch.empty(E, d_model, I))
        # Selection-only bias (DeepSeek-V3 aux-loss-free balancing); a buffer, so no grad ever reaches it.
        self.register_buffer("expert_bias", torch.zeros(E, dtype=torch.float32))
        self.register_buffer("load_accum", torch.zeros(E, dtype=torch.float32), persistent=False)
        if cfg.hash_routing:  # frozen token id -> top_k expert ids (DeepSeek-V4 hash layers); saved, never trained
            if vocab_size is None:
                raise ValueError("a hash-routed MoE (hash_routing=True) needs the model's vocab_size")
            self.register_buffer("tid2eid", torch.zeros(vocab_size, cfg.top_k, dtype=torch.long))
        self.shared = SwiGLU(d_model, cfg.shared_size, cfg.swiglu_limit) if cfg.shared_size else None
        self.shared_gate = nn.Linear(d_model, 1, bias=False) if cfg.shared_gate else None
        self.impl = "auto"  # "auto" | "grouped_mm" | "loop": how run_experts computes
        self.expert_linear = F.linear  # the loop's per-expert matmul (training/float8.py: float8_linear, impl "loop")
        self.aux_loss: Tensor | None = None
        self.last_load: Tensor | None = None
        self.ep_group = None  # expert parallelism (shard_experts): the ranks the routed experts are split over

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        nn.init.normal_(self.router.weight, 0.0, std)
        # one draw from the global RNG seeds every expert's own generator (init_experts), so a rank that holds some
        # experts initialises exactly those, with the values a whole model would give them
        self.expert_init = (int(torch.randint(0, 2**62, ())), std)
        self.init_experts(self.gate_up_proj, self.down_proj, first=0)
        if self.shared is not None:
            self.shared.init_weights(std)
        if self.shared_gate is not None:
            nn.init.normal_(self.shared_gate.weight, 0.0, std)
        self.expert_bias.zero_()  # buffers are garbage after to_empty()
        self.load_accum.zero_()
        if self.cfg.hash_routing:  # a random table of top_k distinct experts per token id, seeded for repeatability
            g = torch.Generator().manual_seed(0)
            table = torch.rand(self.tid2eid.shape[0], self.cfg.num_experts, generator=g).argsort(-1)
            self.tid2eid.copy_(table[:, :self.cfg.top_k])

    @torch.no_grad()
    def init_experts(self, gate_up_E2ID: Tensor, down_EDI: Tensor, first: int,
                     rows: tuple[slice, slice] | None = None) -> None:
        """Normal(0, std) weights for experts first, first+1, ... in gate_up_E2ID / down_EDI (all experts or a
        shard of them; `rows`: the slices of each expert's rows (dim 1) the shards hold), each expert from a CPU
        generator seeded (expert_init seed + its global index): the same values whatever the sharding and the
        device. No-op on the meta device."""
        if gate_up_E2ID.device.type == "meta":
            return
        seed, std = self.expert_init
        I, D = self.cfg.expert_size, self.d_model
        rows = rows or (slice(0, 2 * I), slice(0, D))
        for e in range(gate_up_E2ID.shape[0]):
            g = torch.Generator().manual_seed(seed + first + e)
            for w, shape, r in ((gate_up_E2ID[e], (2 * I, D), rows[0]), (down_EDI[e], (D, I), rows[1])):
                w.copy_(torch.randn(shape, generator=g)[r].mul_(std))

    # -- routing ---------------------------------------------------------------------------------
    def route(self, x_TD: Tensor, token_ids_T: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """-> (scores_TE, expert ids_TK, gates_TK); scores and gates in fp32 (or fp64 for fp64 inputs)."""
        cfg = self.cfg
        logits_TE = self.router(x_TD)
        logits_TE = logits_TE.to(torch.promote_types(logits_TE.dtype, torch.float32))  # bf16 softmax is too coarse
        if cfg.score_func == "softmax":
            scores_TE = logits_TE.softmax(-1)
        elif cfg.score_func == "sigmoid":
            scores_TE = logits_TE.sigmoid()
        else:  # sqrtsoftplus (DeepSeek-V4)
            scores_TE = F.softplus(logits_TE).sqrt()
        if cfg.hash_routing:
            if token_ids_T is None:
                raise ValueError("this MoE is hash-routed (hash_routing=True): its forward needs the token ids")
            idx_TK = self.tid2eid[token_ids_T]
        else:
            # The bias only picks the experts; the gates use the unbiased scores of those experts.
            choice_TE = scores_TE + self.expert_bias
            if cfg.topk_groups < cfg.n_groups:
                choice_TE = self.limit_groups(choice_TE)
            idx_TK = torch.topk(choice_TE, cfg.top_k, dim=-1, sorted=False).indices
        gates_TK = scores_TE.gather(1, idx_TK)
        if cfg.norm_topk:
            eps = 1e-20 if cfg.score_func != "softmax" else 0.0  # sigmoid-like scores can all underflow to 0
            gates_TK = gates_TK / (gates_TK.sum(-1, keepdim=True) + eps)
        return scores_TE, idx_TK, gates_TK * cfg.routed_scale

    def limit_groups(self, choice_TE: Tensor) -> Tensor:
        """DeepSeek-V3 group-limited routing: experts form n_groups equal groups; a group scores the sum of its
        top-2 (biased) scores; experts outside the best topk_groups groups are set to -inf before the top-k."""
        cfg = self.cfg
        choice_TGe = choice_TE.view(choice_TE.shape[0], cfg.n_groups, -1)
        group_TG = choice_TGe.topk(min(2, choice_TGe.shape[-1]), dim=-1).values.sum(-1)
        best_TG = group_TG.topk(cfg.topk_groups, dim=-1, sorted=False).indices
        keep_TG = torch.zeros_like(group_TG, dtype=torch.bool).scatter_(1, best_TG, True)
        return choice_TGe.masked_fill(~keep_TG[..., None], float("-inf")).view_as(choice_TE)

    # -- experts on sorted segments --------------------------------------------------------------
    def run_experts(self, x_ND: Tensor, counts_E: Tensor, gates_N: Tensor | None) -> Tensor:
        """Rows of x_ND are sorted by expert; counts_E[e] consecutive rows go to expert e. -> gates_N * y_ND
        (y_ND ungated when gates_N is None: the input was scaled instead, scale_input).

        The gate is applied to the [N, I] activation before down_proj (linear, so the same result): a 4x
        cheaper multiply than scaling the [N, D] output when D = 4I."""
        gates_N1 = None if gates_N is None else gates_N.to(x_ND.dtype).unsqueeze(-1)
        gate_up_E2ID, down_EDI = self.local_experts()
        if gate_up_E2ID.dtype != x_ND.dtype and not self.is_int8:  # autocast: bf16 rows, fp32 weights (what
            # autocast does for F.linear; torch._grouped_mm is not on its lists and refuses mixed dtypes)
            gate_up_E2ID, down_EDI = gate_up_E2ID.to(x_ND.dtype), down_EDI.to(x_ND.dtype)
        if self._use_grouped_mm(x_ND, counts_E.numel()):
            offs_E = counts_E.cumsum(0).to(torch.int32)  # end offset of each segment, stays on device
            # _grouped_mm wants [E, in, out] weights: transposed views, no copies.
            h_N2I = torch._grouped_mm(x_ND, gate_up_E2ID.transpose(1, 2), offs=offs_E)
            act_NI = swiglu(*h_N2I.chunk(2, dim=-1), self.cfg.swiglu_limit)
            if gates_N1 is not None:
                act_NI = act_NI * gates_N1
            return torch._grouped_mm(act_NI, down_EDI.transpose(1, 2), offs=offs_E)
        counts = counts_E.tolist()  # one host sync
        if self.is_int8:  # dequantised as each expert runs: one expert's float weights exist at a time
            def expert(e: int) -> tuple[Tensor, Tensor]:
                return (dequantize_rows(self.gate_up_proj[e], self.gate_up_scale[e], x_ND.dtype),
                        dequantize_rows(self.down_proj[e], self.down_scale[e], x_ND.dtype))
        else:
            # split/unbind once: slicing x[a:b] or indexing w[e] per expert would make autograd build one
            # full-size zero gradient per expert (E x [N, D] memsets); split/unbind backward is a single cat/stack.
            if torch.is_grad_enabled():
                gate_up, down = gate_up_E2ID.unbind(0), down_EDI.unbind(0)
            else:  # no backward to protect: index only the experts that have tokens (decode touches top_k of E)
                gate_up, down = gate_up_E2ID, down_EDI

            def expert(e: int) -> tuple[Tensor, Tensor]:
                return gate_up[e], down[e]
        outs = []
        gate_splits = gates_N1.split(counts) if gates_N1 is not None else [None] * len(counts)
        for e, (seg_nD, g_n1) in enumerate(zip(x_ND.split(counts), gate_splits)):
            if counts[e] == 0:  # skip experts without tokens
                continue
            gate_up_2ID, down_DI = expert(e)
            act_nI = swiglu(*self.expert_linear(seg_nD, gate_up_2ID).chunk(2, dim=-1), self.cfg.swiglu_limit)
            outs.append(self.expert_linear(act_nI if g_n1 is None else act_nI * g_n1, down_DI))
        return torch.cat(outs) if outs else x_ND.new_zeros(0, self.d_model)

    def _decode_experts(self, x_TD: Tensor, idx_TK: Tensor, gates_TK: Tensor) -> Tensor:
        """The routed experts of a compiled decode step (no grad): each assignment's expert weights gathered and
        applied as one batched matmul each: no sort, no split, no per-expert loop and no host sync, so the step has
        static shapes (what torch.compile needs: generate(compile=True)). -> the routed output [T, D] (gates applied,
        summed over the K)."""
        T, K = idx_TK.shape
        x_ND = x_TD.repeat_interleave(K, dim=0)  # [N, D], assignment n = t*K + k
        g_N1 = gates_TK.reshape(-1, 1).to(x_TD.dtype)
        if self.cfg.scale_input:
            x_ND = x_ND * g_N1
        e_N = idx_TK.reshape(-1)
        h_N2I = torch.bmm(self.gate_up_proj.index_select(0, e_N), x_ND.unsqueeze(-1)).squeeze(-1)  # [N, 2I]
        act_NI = swiglu(*h_N2I.chunk(2, dim=-1), self.cfg.swiglu_limit)
        if not self.cfg.scale_input:
            act_NI = act_NI * g_N1
        y_ND = torch.bmm(self.down_proj.index_select(0, e_N), act_NI.unsqueeze(-1)).squeeze(-1)  # [N, D]
        return y_ND.view(T, K, -1).sum(1)

    # -- expert parallelism ------------------------------------------------------------------------
    def shard_experts(self, ep_mesh) -> None:
        """Split the routed experts over the ranks of ep_mesh (a 1-D DeviceMesh of R ranks): rank j keeps experts
        [j*E/R, (j+1)*E/R) as its shard of a DTensor (Shard(0)); forward then exchanges assignments by all-to-all.
        The router, shared expert and expert bias stay whole on every rank."""
        from torch.distributed.tensor import Shard, distribute_tensor
        R = ep_mesh.size()
        if self.cfg.num_experts % R:
            raise ValueError(f"expert parallelism over {R} ranks: num_experts={self.cfg.num_experts} is not a "
                             f"multiple of {R}")
        if self.is_int8:
            raise ValueError("int8 experts (quantize_experts_int8) are inference-only and cannot be expert-parallel")
        for name in ("gate_up_proj", "down_proj"):
            full = getattr(self, name)
            setattr(self, name, nn.Parameter(distribute_tensor(full.data, ep_mesh, [Shard(0)], src_data_rank=None)))
        self.ep_group = ep_mesh.get_group()

    def local_experts(self) -> tuple[Tensor, Tensor]:
        """(gate_up_proj, down_proj) of the experts this rank runs: all of them, or its shard under expert
        parallelism, with the gradient scaled by 1/R (expert_parallel.py: the data-parallel average spans dp only)."""
        w = (self.gate_up_proj, self.down_proj)
        if self.ep_group is None:
            return w
        scale = 1.0 / torch.distributed.get_world_size(self.ep_group)
        return tuple(expert_parallel.scale_grad(t.to_local() if hasattr(t, "to_local") else t, scale) for t in w)

    def _use_grouped_mm(self, x: Tensor, num_experts: int | None = None) -> bool:
        if self.impl == "loop" or self.is_int8:  # int8 experts: the loop dequantises one expert at a time
            return False
        works = _grouped_mm_works(x.device, x.dtype)
        if self.impl == "grouped_mm":
            if not works:
                raise RuntimeError(f"torch._grouped_mm is unusable for {x.device.type}/{x.dtype}")
            return True
        row_bytes = [n * x.element_size() for n in (self.d_model, self.cfg.expert_size)]
        if any(b % 16 for b in row_bytes):  # _grouped_mm needs 16-byte aligned strides (e.g. bf16 widths of 8k)
            return False
        if x.device.type == "cpu" and x.shape[0] < (num_experts or self.cfg.num_experts):
            # CPU _grouped_mm walks every expert, empty or not; with fewer rows than experts (decode, short
            # prompts) most are empty, and the loop that skips them is faster (benchmarks/model_vs_transformers.py).
            return False
        return works and (x.device.type != "cpu" or PREFER_GROUPED_MM_ON_CPU)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x_BTD: Tensor, token_ids: Tensor | None = None) -> Tensor:
        """token_ids [B, T]: needed by hash routing only."""
        cfg, E, K = self.cfg, self.cfg.num_experts, self.cfg.top_k
        if self.is_int8 and self.training and torch.is_grad_enabled():
            raise ValueError("this model's routed experts are int8 (quantize_experts_int8, ExpertsInt8) and have no "
                             "gradient: it cannot be trained; train the float model and quantise it afterwards, or "
                             "run inference under model.eval() / torch.no_grad()")
        x_TD = x_BTD.reshape(-1, self.d_model)
        T = x_TD.shape[0]
        scores_TE, idx_TK, gates_TK = self.route(x_TD, None if token_ids is None else token_ids.reshape(-1))

        expert_N = idx_TK.reshape(-1)
        counts_E = torch.zeros(E, dtype=torch.long, device=x_TD.device).scatter_add_(
            0, expert_N, torch.ones_like(expert_N))  # scatter_add, not bincount: no device->host sync
        # a compiled decode step needs static shapes and no host sync, whatever the batch: the gathered-weight path
        # (eager keeps the sorted dispatch, which slices views instead of copying weights: 0.46 against 0.57 ms a
        # decode step on the DeepSeek-V4-shaped benchmark MoE, measured)
        if torch.compiler.is_compiling() and not self.is_int8 and not torch.is_grad_enabled() and self.ep_group is None:
            y_TD = self._decode_experts(x_TD, idx_TK, gates_TK)
        else:
            # Sort the N = T*K assignments by expert; stable, so each segment keeps token order.
            order_N = torch.argsort(expert_N, stable=True)
            token_N = order_N // K  # assignment n = t*K + k came from token t
            # index_select rather than x[idx]: its backward is an index_add_, faster than index_put on CPU.
            x_ND = x_TD.index_select(0, token_N)  # gather each token row once per assignment
            gates_N = gates_TK.reshape(-1)[order_N]
            if cfg.scale_input:  # Llama 4: E(g * x), not g * E(x) (SwiGLU is not linear, so they differ)
                x_ND, gates_N = x_ND * gates_N.to(x_ND.dtype).unsqueeze(-1), None
            if self.ep_group is None:
                y_ND = self.run_experts(x_ND, counts_E, gates_N)
            else:  # the gate travels with its row, as a last column
                xg_ND = x_ND if gates_N is None else torch.cat([x_ND, gates_N.to(x_ND.dtype)[:, None]], dim=1)
                xg_MD, counts_El, route = expert_parallel.dispatch(xg_ND, counts_E, self.ep_group)
                x_MD, g_M = (xg_MD, None) if gates_N is None else (xg_MD[:, :-1].contiguous(), xg_MD[:, -1])
                y_ND = expert_parallel.combine(self.run_experts(x_MD, counts_El, g_M), route)
            y_TD = torch.zeros_like(x_TD).index_add_(0, token_N, y_ND.to(x_TD.dtype))

        if self.shared is not None:
            s_TD = self.shared(x_TD)
            if self.shared_gate is not None:
                s_TD = s_TD * torch.sigmoid(self.shared_gate(x_TD))
            y_TD = y_TD + s_TD

        load_E = counts_E.detach().float()
        self.last_load = load_E
        if self.training:  # eval passes between optimizer steps must not skew the balancing signal
            self.load_accum += load_E
        self.aux_loss = None
        if cfg.aux_loss_coef > 0 and T > 0:  # an empty batch has no balance to measure
            # Switch/Qwen balance loss, normalised like transformers' load_balancing_loss_func for one layer:
            # E * sum_e (count_e / T) * mean_t p_te  (count over T, not T*K: a uniform router gives K).
            probs_TE = scores_TE if cfg.score_func == "softmax" else scores_TE / scores_TE.sum(-1, keepdim=True)
            self.aux_loss = cfg.aux_loss_coef * E * torch.sum(load_E / T * probs_TE.mean(0))
        y_BTD = y_TD.reshape(x_BTD.shape)
        # under expert parallelism this module is an FSDP2 unit, whose output must not be a view (an in-place op on
        # it would skip the unit's backward hook; FSDP2 warns): one copy of the output
        return y_BTD if self.ep_group is None else y_BTD.clone()

    @torch.no_grad()
    def update_bias(self) -> None:
        """After each optimizer step: raise under-loaded experts' bias, lower over-loaded ones'; reset counts.
        Under several processes the caller first sums load_accum over ranks (the training loop does, for every MoE
        in one all-reduce), so every rank takes the same step."""
        if self.cfg.bias_update_rate > 0:
            self.expert_bias += self.cfg.bias_update_rate * torch.sign(self.load_accum.mean() - self.load_accum)
        self.load_accum.zero_()

    # -- ExpertsInt8 ------------------------------------------------------------------------------
    @property
    def is_int8(self) -> bool:
        return self.gate_up_proj.dtype == torch.int8

    @torch.no_grad()
    def quantize_int8(self) -> None:
        """Routed expert weights -> int8 + one fp32 scale per output channel (ops/int8.py), in place; the float
        tensors are released. Already int8: nothing to do."""
        if self.is_int8:
            return
        for name in ("gate_up_proj", "down_proj"):
            w_ERC = getattr(self, name)
            q_ERC = torch.empty(w_ERC.shape, dtype=torch.int8, device=w_ERC.device)
            s_ER = torch.empty(w_ERC.shape[:2], dtype=torch.float32, device=w_ERC.device)
            for e in range(w_ERC.shape[0]):  # one expert at a time: the temporaries stay one expert's size
                q_ERC[e], s_ER[e] = quantize_rows(w_ERC[e])
            # Still a parameter (never trained, an int8 tensor cannot require grad): num_params counts the weights.
            setattr(self, name, nn.Parameter(q_ERC, requires_grad=False))
            self.register_buffer(name.replace("_proj", "_scale"), s_ER)

    def expert_weights(self) -> int:
        """Routed expert weights: what ExpertsInt8 stores in int8."""
        return self.cfg.num_experts * 3 * self.cfg.expert_size * self.d_model

    def expert_scales(self) -> int:
        """ExpertsInt8's fp32 scales: one per output channel of each expert matrix, E x (2I + D)."""
        return self.cfg.num_experts * (2 * self.cfg.expert_size + self.d_model)

    # -- accounting ------------------------------------------------------------------------------
    def _params(self, num_routed: int) -> int:
        cfg, D = self.cfg, self.d_model
        return (cfg.num_experts * D + num_routed * 3 * cfg.expert_size * D
                + 3 * cfg.shared_size * D + (D if cfg.shared_gate else 0))

    def num_params(self) -> int:
        return self._params(self.cfg.num_experts)

    def active_params(self) -> int:
        return self._params(self.cfg.top_k)  # router + K experts + shared + shared gate, per token

    def flops_per_token(self) -> int:
        return 2 * self.active_params()  # forward matmuls only; elementwise ops and dispatch not counted

    def describe(self) -> str:
        return self.cfg.describe()


# -- ExpertsInt8 on a whole model ----------------------------------------------------------------------------------
def tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each tensor once (a tied matrix counts once)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


@dataclass
class Int8Summary:
    moe_layers: int  # MoE modules quantised (the MTP block's included)
    expert_weights: int  # routed expert weights now int8
    scales: int  # fp32 scales added
    bytes_before: int  # tensor_bytes(model) before and after
    bytes_after: int


def quantize_experts_int8(model: nn.Module) -> Int8Summary:
    """ExpertsInt8, applied at load: every MoE's routed experts in `model` become int8 with per-output-channel fp32
    scales (MoE.quantize_int8); nothing else changes. Inference only. -> what changed, and the bytes of the model's
    tensors before and after (measured)."""
    before = tensor_bytes(model)
    moes = [m for m in model.modules() if isinstance(m, MoE) and not m.is_int8]
    for m in moes:
        m.quantize_int8()
    return Int8Summary(len(moes), sum(m.expert_weights() for m in moes), sum(m.expert_scales() for m in moes),
                       before, tensor_bytes(model))


# --quantize NAME -> the function that applies it to a loaded model (cli: generate, compare; analysis: cost)
QUANTIZATIONS = {"experts-int8": quantize_experts_int8}
