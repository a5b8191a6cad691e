"""Optimizers and the learning-rate schedule.

- `build_optimizer`: AdamW (decoupled weight decay on matrices only; norms, biases and other vectors are not
  decayed), or Muon for the hidden matrices with AdamW for everything else, in one optimizer
  so its state saves and loads as one object.
- `Muon`: momentum, then the update orthogonalised by a quintic Newton-Schulz iteration (Keller Jordan's
  coefficients), scaled by sqrt(max(1, rows / cols)). 3-D expert weights [E, out, in] are a batch of matrices.
  Under FSDP2 a sharded matrix is gathered, orthogonalised whole on every rank, and each rank keeps its shard.
- `WarmupCosine`: linear warmup to the peak, cosine decay to min_lr_ratio * peak at the last step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class WarmupCosine:
    """lr(step) = peak * f(step); f rises linearly over `warmup` steps, then follows a half cosine down to
    `min_ratio` at `total`. Sets every param group's lr from its `initial_lr`; its only state is the step."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.1):
        self.opt, self.warmup, self.total, self.min_ratio = optimizer, warmup, total, min_ratio
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.step_count = 0
        self._apply()

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.total <= self.warmup:
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for g in self.opt.param_groups:
            g["lr"] = g["initial_lr"] * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self._apply()


def newton_schulz(G: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximately U V^T of G = U S V^T (the nearest semi-orthogonal matrix), over the last two dims."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.float()
    transposed = X.shape[-2] > X.shape[-1]
    if transposed:  # iterate on the wide side: smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if transposed else X


def _full(t: Tensor) -> Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _like(full: Tensor, ref: Tensor) -> Tensor:
    """`full` laid out like `ref`: the local shard when ref is a DTensor (every rank holds the same full value,
    so slicing locally is exact and needs no communication)."""
    if hasattr(ref, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(full, ref.device_mesh, ref.placements, src_data_rank=None)
    return full


class Muon(torch.optim.Optimizer):
    """Param groups with use_muon=True get Muon (lr, momentum, nesterov, weight_decay); the others AdamW
    (lr, betas, eps, weight_decay), as in Keller Jordan's MuonWithAuxAdam."""

    def __init__(self, param_groups: list[dict]):
        for g in param_groups:
            if g.get("use_muon"):
                g.setdefault("momentum", 0.95)
                g.setdefault("nesterov", True)
            else:
                g.setdefault("betas", (0.9, 0.95))
                g.setdefault("eps", 1e-8)
            g.setdefault("weight_decay", 0.0)
        super().__init__(param_groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if g["use_muon"]:
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.lerp_(p.grad, 1 - g["momentum"])
                    upd = p.grad.lerp(buf, g["momentum"]) if g["nesterov"] else buf
                    full = _full(upd)
                    O = newton_schulz(full).to(p.dtype) * max(1.0, full.shape[-2] / full.shape[-1]) ** 0.5
                    p.mul_(1 - g["lr"] * g["weight_decay"])
                    p.add_(_like(O, p), alpha=-g["lr"])
                else:
                    if not state:
                        state["step"] = torch.zeros((), dtype=torch.float32)
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    state["step"] += 1
                    b1, b2 = g["betas"]
                    state["exp_avg"].lerp_(p.grad, 1 - b1)
                    state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    t = float(state["step"])
                    denom = (state["exp_avg_sq"] / (1 - b2 ** t)).sqrt_().add_(g["eps"])
                    p.mul_(1 - g["lr"] * g["weight_decay"])
                    p.addcdiv_(state["exp_avg"], denom, value=-g["lr"] / (1 - b1 ** t))


def _is_hidden_matrix(name: str, p: Tensor) -> bool:
    """Matrices inside the blocks (projections, experts, router); not the embedding/head, conv kernels or
    single-row gates, whose geometry Muon's orthogonalisation does not suit."""
    if p.ndim < 2 or min(p.shape[-2:]) < 2:
        return False
    return not (name.startswith(("embed.", "lm_head.")) or "conv" in name)


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, betas: tuple[float, float],
                    muon_lr: float = 0.02, muon_momentum: float = 0.95) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if name == "adamw":
        decay = [p for n, p in named if p.ndim >= 2]
        no_decay = [p for n, p in named if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)
    if name == "muon":
        hidden = [p for n, p in named if _is_hidden_matrix(n, p)]
        other_2d = [p for n, p in named if not _is_hidden_matrix(n, p) and p.ndim >= 2]
        other_1d = [p for n, p in named if p.ndim < 2]
        return Muon([
            {"params": hidden, "use_muon": True, "lr": muon_lr, "momentum": muon_momentum,
             "weight_decay": weight_decay},
            {"params": other_2d, "use_muon": False, "lr": lr, "betas": betas, "weight_decay": weight_decay},
            {"params": other_1d, "use_muon": False, "lr": lr, "betas": betas, "weight_decay": 0.0},
        ])
    raise ValueError(f"optimizer={name!r}: must be 'adamw' or 'muon'")
