"""Dense SwiGLU and MoE: equivalence with transformers' Qwen3-Next block, dispatch paths, routing, accounting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybridlm.layers.ffn.dense import DenseFFNConfig
from hybridlm.layers.ffn.moe import MoEConfig
from hybridlm.layers.ffn.moe import MoE, _grouped_mm_works
from hybridlm.layers.ffn.dense import DenseFFN

GROUPED_OK = _grouped_mm_works(torch.device("cpu"), torch.float32)
IMPLS = ["loop"] + (["grouped_mm"] if GROUPED_OK else [])


def make_moe(d_model=16, dtype=torch.float32, seed=0, **kw) -> MoE:
    torch.manual_seed(seed)
    m = MoE(MoEConfig(**{"num_experts": 6, "top_k": 2, "expert_size": 8, **kw}), d_model)
    m.init_weights(0.3)  # large enough that routing is far from uniform
    return m.to(dtype)


def dense_reference(m: MoE, x_TD: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, then keep the selected ones: no sorting, no gathering."""
    cfg, I = m.cfg, m.cfg.expert_size
    logits = x_TD @ m.router.weight.T
    scores = logits.softmax(-1) if cfg.score_func == "softmax" else logits.sigmoid()
    idx = torch.topk(scores + m.expert_bias.to(scores.dtype), cfg.top_k, dim=-1).indices
    gates = scores.gather(1, idx)
    if cfg.norm_topk:
        gates = gates / gates.sum(-1, keepdim=True)
    weight_TE = torch.zeros_like(scores).scatter(1, idx, gates * cfg.routed_scale)
    h = torch.einsum("td,ejd->tej", x_TD, m.gate_up_proj)
    out_TED = torch.einsum("tei,edi->ted", F.silu(h[..., :I]) * h[..., I:], m.down_proj)
    y = (weight_TE.unsqueeze(-1) * out_TED).sum(1)
    if m.shared is not None:
        s = m.shared.down_proj(F.silu(m.shared.gate_proj(x_TD)) * m.shared.up_proj(x_TD))
        y = y + (s * torch.sigmoid(m.shared_gate(x_TD)) if m.shared_gate is not None else s)
    return y


@pytest.mark.parametrize("impl", IMPLS)
def test_matches_transformers_qwen3_next(impl):
    from transformers import Qwen3NextConfig
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextSparseMoeBlock

    torch.manual_seed(0)
    hf_cfg = Qwen3NextConfig(hidden_size=48, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24,
                             shared_expert_intermediate_size=40, norm_topk_prob=True)
    hf_cfg._experts_implementation = "eager"
    hf = Qwen3NextSparseMoeBlock(hf_cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    m = MoE(MoEConfig(num_experts=6, top_k=2, expert_size=24, shared_size=40, shared_gate=True), 48)
    m.impl = impl
    with torch.no_grad():
        m.router.weight.copy_(hf.gate.weight)
        m.gate_up_proj.copy_(hf.experts.gate_up_proj)
        m.down_proj.copy_(hf.experts.down_proj)
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(m.shared, name).weight.copy_(getattr(hf.shared_expert, name).weight)
        m.shared_gate.weight.copy_(hf.shared_expert_gate.weight)
    x = torch.randn(2, 7, 48)
    torch.testing.assert_close(m(x), hf(x), atol=1e-5, rtol=0)


@pytest.mark.skipif(not GROUPED_OK, reason="torch._grouped_mm unusable on this build")
def test_grouped_mm_equals_loop_forward_and_grads():
    m = make_moe(shared_size=12, shared_gate=True, aux_loss_coef=0.1)
    x = torch.randn(3, 11, 16)
    results = []
    for impl in ("grouped_mm", "loop"):
        m.impl = impl
        m.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        y = m(xi)
        (y.square().sum() + m.aux_loss).backward()
        results.append((y, xi.grad, *[p.grad for p in m.parameters()]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert m.router.weight.grad.abs().sum() > 0  # gates carry gradient back to the router


def test_aux_loss_matches_transformers():
    from transformers.models.qwen3_next.modeling_qwen3_next import load_balancing_loss_func

    m = make_moe(num_experts=8, top_k=3, aux_loss_coef=0.01)
    x = torch.randn(4, 9, 16)
    m(x)
    expected = load_balancing_loss_func((m.router(x.reshape(-1, 16)),), num_experts=8, top_k=3)
    torch.testing.assert_close(m.aux_loss, 0.01 * expected)
    m.aux_loss.backward()
    assert m.router.weight.grad.abs().sum() > 0
    off = make_moe(aux_loss_coef=0.0)
    off(x)
    assert off.aux_loss is None


def test_bias_selects_but_gates_use_unbiased_scores():
    m = make_moe(d_model=4, num_experts=4, top_k=2)
    with torch.no_grad():
        m.router.weight.copy_(torch.eye(4))
        m.expert_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))  # pull expert 3 in
    x = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    scores = x.softmax(-1)[0]
    _, idx, gates = m.route(x)
    assert sorted(idx[0].tolist()) == [0, 3]  # unbiased top-2 would be {0, 1}
    gate_of = dict(zip(idx[0].tolist(), gates[0].tolist()))
    assert gate_of[3] == pytest.approx((scores[3] / (scores[0] + scores[3])).item())
    assert gate_of[0] == pytest.approx((scores[0] / (scores[0] + scores[3])).item())
    torch.testing.assert_close(m(x), dense_reference(m, x), atol=1e-6, rtol=1e-5)


def test_update_bias_moves_toward_balance_without_grad():
    m = make_moe(num_experts=4, top_k=1, bias_update_rate=0.1)
    with torch.no_grad():
        m.expert_bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0]))  # every token goes to expert 0
    x = torch.randn(5, 16, requires_grad=True)
    y = m(x)
    m.eval()
    m(x)  # eval passes are not accumulated
    m.train()
    torch.testing.assert_close(m.last_load, torch.tensor([5.0, 0, 0, 0]))
    torch.testing.assert_close(m.load_accum, torch.tensor([5.0, 0, 0, 0]))
    y.sum().backward()
    assert not m.expert_bias.requires_grad and m.expert_bias.grad is None
    assert "expert_bias" in m.state_dict() and "load_accum" not in m.state_dict()
    m.update_bias()
    torch.testing.assert_close(m.expert_bias, torch.tensor([9.9, 0.1, 0.1, 0.1]))
    assert m.load_accum.abs().sum() == 0


def test_sigmoid_scale_no_norm_vs_dense_reference_float64():
    m = make_moe(dtype=torch.float64, score_func="sigmoid", norm_topk=False, routed_scale=2.5, shared_size=10)
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x), dense_reference(m, x.reshape(-1, 16)).reshape(x.shape), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_top_k_equals_num_experts_and_empty_experts(impl):
    m = make_moe(num_experts=4, top_k=4, shared_size=8, shared_gate=True)
    m.impl = impl
    x = torch.randn(10, 16)
    torch.testing.assert_close(m(x), dense_reference(m, x), atol=1e-5, rtol=1e-5)

    m = make_moe(num_experts=6, top_k=2, score_func="sigmoid")
    m.impl = impl
    with torch.no_grad():
        m.expert_bias[1] = m.expert_bias[4] = 10.0  # only experts 1 and 4 ever get tokens
    x = torch.randn(10, 16, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, dense_reference(m, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.last_load, torch.tensor([0.0, 10, 0, 0, 10, 0]))
    y.sum().backward()
    unused = [0, 2, 3, 5]
    assert m.gate_up_proj.grad[unused].abs().sum() == 0 and m.gate_up_proj.grad[[1, 4]].abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kw", [{}, {"shared_size": 12}, {"shared_size": 12, "shared_gate": True}])
def test_param_accounting_and_meta_device(kw):
    cfg = MoEConfig(num_experts=6, top_k=2, expert_size=8, **kw)
    with torch.device("meta"):
        m = MoE(cfg, 16)
    assert all(p.is_meta for p in m.parameters())
    assert m.num_params() == sum(p.numel() for p in m.parameters())
    H, gate = kw.get("shared_size", 0), 16 if kw.get("shared_gate") else 0
    assert m.active_params() == 6 * 16 + 2 * 3 * 8 * 16 + 3 * H * 16 + gate
    assert m.flops_per_token() == 2 * m.active_params()
    m.to_empty(device="cpu")
    m.init_weights(0.02)
    assert m.expert_bias.abs().sum() == 0 and m.load_accum.abs().sum() == 0
    assert torch.isfinite(m(torch.randn(2, 3, 16))).all()

    with torch.device("meta"):
        d = DenseFFN(DenseFFNConfig(intermediate_size=24), 16)
    d.to_empty(device="cpu")
    d.init_weights(0.02)
    assert d.num_params() == sum(p.numel() for p in d.parameters()) == d.active_params() == 3 * 16 * 24
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(d(x), d.down_proj(F.silu(d.gate_proj(x)) * d.up_proj(x)))
    assert d.aux_loss is None and d.flops_per_token() == 2 * 3 * 16 * 24


def test_grouped_mm_probe_is_not_fooled_by_no_grad():
    # The probe checks the backward; run first under no_grad (inference), it must still find the grouped path.
    from hybridlm.layers.ffn import moe as moe_mod
    saved = dict(moe_mod._GROUPED_MM_OK)
    moe_mod._GROUPED_MM_OK.clear()
    try:
        with torch.no_grad():
            under_no_grad = moe_mod._grouped_mm_works(torch.device("cpu"), torch.float32)
        moe_mod._GROUPED_MM_OK.clear()
        with torch.enable_grad():
            with_grad = moe_mod._grouped_mm_works(torch.device("cpu"), torch.float32)
        assert under_no_grad == with_grad
    finally:
        moe_mod._GROUPED_MM_OK.clear()
        moe_mod._GROUPED_MM_OK.update(saved)


def test_unaligned_bf16_widths_fall_back_instead_of_failing():
    # _grouped_mm wants 16-byte aligned rows; a bf16 expert width of 12 (24 bytes) must take the loop path.
    from hybridlm.layers.ffn.moe import MoEConfig
    from hybridlm.layers.ffn.moe import MoE
    moe = MoE(MoEConfig(num_experts=4, top_k=2, expert_size=12), 40)
    moe.init_weights(0.1)
    moe = moe.to(torch.bfloat16)
    x = torch.randn(2, 30, 40, dtype=torch.bfloat16)  # 60 rows >= 4 experts: auto would pick grouped if aligned
    y = moe(x)
    moe.impl = "loop"
    torch.testing.assert_close(y, moe(x))


@pytest.mark.parametrize("impl", ["grouped_mm", "loop"])
def test_bf16_autocast_on_cpu_runs_with_fp32_weights(impl):
    # `--precision bf16` keeps fp32 parameters under autocast; torch._grouped_mm is not on autocast's lists and
    # refused bf16 rows against fp32 weights. The experts run in bf16 (as autocast runs F.linear), near the fp32
    # output, with fp32 gradients on the fp32 weights.
    assert _grouped_mm_works(torch.device("cpu"), torch.bfloat16)  # torch 2.13's CPU build has it
    m = make_moe(shared_size=16)
    m.impl = impl
    x = torch.randn(2, 40, 16)  # >= num_experts rows: the grouped path is eligible
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=5e-2, rtol=5e-2)
    y.float().square().sum().backward()
    assert m.gate_up_proj.grad.dtype == torch.float32 and m.gate_up_proj.grad.abs().sum() > 0
