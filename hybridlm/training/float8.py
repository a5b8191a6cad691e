"""`--precision fp8`: which linear layers run their matmuls in float8, and on what (docs/training.md,
"Precision: fp8").

    fp8_backend(device)        "emulated" on CPU (ops/float8.py: fp8 casts, fp32 matmuls), "torchao" on CUDA with
                               compute capability >= 8.9 and torchao installed; a ValueError naming what is missing
                               otherwise
    convert_to_float8(model)   swap the nn.Linear layers that pass `float8_filter` for Float8Linear (emulated) or
                               torchao's Float8Linear (convert_to_float8_training with the same filter), in place
    prepare_fp8(model, device) what the training loop calls: both of the above, and an error when nothing converts

What stays in high precision (DeepSeek-V3 technical report, sec. 3.3.1, keeps the embedding, the output head, the MoE
gating, the norms and the attention operators out of FP8; torchao's float8 training swaps only nn.Linear):
    - the embedding and the output head (an embedding, or `lm_head` when untied), the norms, attention scores and
      every recurrence (they are not nn.Linear);
    - routers (`router`), the shared-expert gate (`shared_gate`), and any other nn.Linear whose in or out features
      are not a multiple of 16 (float8 tensor-core matmuls need it; in practice the small per-head gates and
      indexer weights: KDA's b_proj, the lightning indexer's weights_proj at tiny widths);
    - the MoE's routed experts (3-D parameters run by torch._grouped_mm or a per-expert loop, not nn.Linear).
      torchao's float8 grouped-matmul training is a prototype; keeping the experts in the higher precision on both
      backends keeps the CPU emulation a test of what the CUDA path computes. convert_to_float8(experts=True) puts
      them in emulated fp8 too (MoE.expert_linear), to measure what that does.
The weights stay in their dtype (fp32 master weights): float8 exists only inside the matmuls, so state dicts,
checkpoints and optimizers are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..ops.float8 import float8_linear

SKIP_NAMES = ("lm_head", "router", "shared_gate")  # the module's own name (last part of its qualified name)
MIN_CAPABILITY = (8, 9)  # Ada (sm_89) and Hopper (sm_90): the first GPUs with float8 tensor cores


class Float8Linear(nn.Linear):
    """nn.Linear whose forward is `float8_linear` (ops/float8.py): same parameters, names and state dict."""

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> Float8Linear:
        new = cls(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta")
        new.weight, new.bias = lin.weight, lin.bias  # the same Parameter objects: nothing copied
        return new

    def forward(self, x: Tensor) -> Tensor:
        return float8_linear(x, self.weight, self.bias)


def float8_filter(module: nn.Module, fqn: str) -> bool:
    """The rule of the module docstring: an nn.Linear, not named lm_head / router / shared_gate, with in and out
    features multiples of 16. (module, qualified name) -> convert it?"""
    if not isinstance(module, nn.Linear):
        return False
    if fqn.rsplit(".", 1)[-1] in SKIP_NAMES:
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def resolve_fp8_backend(device_type: str, capability: tuple[int, int] | None, has_torchao: bool) -> str:
    """The decision of `fp8_backend`, from the facts (so it can be tested without a GPU)."""
    if device_type == "cpu":
        return "emulated"
    if device_type != "cuda":
        raise ValueError(f"precision=fp8: not supported on device type {device_type!r} (CPU emulation or CUDA "
                         f"with compute capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]})")
    if capability is None or tuple(capability) < MIN_CAPABILITY:
        major, minor = capability or (None, None)
        have = "an unknown capability" if capability is None else f"{major}.{minor} (sm_{major}{minor})"
        raise ValueError(f"precision=fp8 on CUDA needs compute capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} "
                         f"(float8 tensor cores: Ada sm_89, Hopper sm_90 or newer); this GPU has {have}. Use "
                         f"--precision bf16, or --device cpu for the (slow) float8 emulation")
    if not has_torchao:
        raise ValueError("precision=fp8 on CUDA uses torchao's float8 training, and torchao is not installed: "
                         "pip install torchao (or pip install 'hybridlm[fp8]')")
    return "torchao"


def _has_torchao() -> bool:
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return False
    return True


def fp8_backend(device: torch.device | str) -> str:
    """-> "emulated" or "torchao" for training on `device`; ValueError naming the missing capability otherwise."""
    device = torch.device(device)
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return resolve_fp8_backend(device.type, cap, _has_torchao() if device.type == "cuda" else False)


def convert_to_float8(model: nn.Module, backend: str = "emulated",
                      module_filter_fn: Callable[[nn.Module, str], bool] = float8_filter,
                      experts: bool = False) -> list[str]:
    """Swap every nn.Linear of `model` that passes module_filter_fn(module, qualified name) for a float8 linear of
    `backend` ("emulated": Float8Linear here; "torchao": torchao.float8's, via convert_to_float8_training), in place,
    before any sharding or optimizer (a meta model will do). -> the qualified names converted, in module order.

    experts=True (emulated only; not what --precision fp8 does): also every MoE's routed experts, one tensorwise
    float8_linear per expert (its own weight scale, its own token segment's scale) on the per-expert loop (impl
    "loop"); their parameter names are listed too. For measuring what fp8 experts do to the numerics."""
    from ..layers.ffn.moe import MoE
    if backend not in ("emulated", "torchao"):
        raise ValueError(f"convert_to_float8: backend={backend!r}: must be 'emulated' or 'torchao'")
    if experts and backend != "emulated":
        raise ValueError("convert_to_float8: experts=True is emulated only (torchao's float8 grouped-matmul "
                         "training is a prototype)")
    names = [n for n, m in model.named_modules() if n and isinstance(m, nn.Linear)
             and not isinstance(m, Float8Linear) and module_filter_fn(m, n)]
    if backend == "torchao":
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training  # optional: fp8_backend checked it
        chosen = set(names)
        # the default recipe (tensorwise) with pad_inner_dim: torch._scaled_mm needs the inner dim of every matmul a
        # multiple of 16, and grad_weight's inner dim is the token count, which the filter cannot see
        convert_to_float8_training(model, module_filter_fn=lambda m, n: n in chosen,
                                   config=Float8LinearConfig(pad_inner_dim=True))
        return names
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, Float8Linear.from_linear(getattr(parent, child)))
    if experts:
        for n, m in model.named_modules():
            if isinstance(m, MoE) and m.expert_linear is not float8_linear:
                m.impl, m.expert_linear = "loop", float8_linear
                names += [f"{n}.gate_up_proj", f"{n}.down_proj"]
    return names


def prepare_fp8(model: nn.Module, device: torch.device | str) -> list[str]:
    """--precision fp8 in the training loop: convert `model` for `device`'s backend, before sharding and the
    optimizer. -> the converted names; ValueError when the device cannot, or when no layer qualifies (a run that
    asked for fp8 must not silently train in fp32)."""
    names = convert_to_float8(model, fp8_backend(device))
    if not names:
        raise ValueError("precision=fp8: no linear layer of this model qualifies (in and out features multiples of "
                         "16, not lm_head / router / shared_gate), so nothing would run in float8")
    return names
