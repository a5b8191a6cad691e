"""Titans' neural memory op (hybridlm/ops/titans_memory.py): the chunked form and the one-step decode against the
token-by-token reference, a one-layer linear memory against a closed form derived here by hand, the surprise
against autograd of the stated loss, and the FLOP accounting against torch's FlopCounterMode."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from hybridlm.ops.titans_memory import (chunked_flops, memory_params, step_flops, titans_memory_chunked,
                                        titans_memory_recurrent, titans_memory_step, token_loss)

B, T, H, DK, DV = 2, 19, 3, 5, 4  # odd sizes: 19 tokens are no multiple of the chunks below
DIMS = [(DK, DV), (DK, 7, DV), (DK, 6, 3, DV)]  # L_M = 1, 2, 3


def _inputs(dims, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    q, k = F.normalize(r(B, T, H, DK), dim=-1), F.normalize(r(B, T, H, DK), dim=-1)
    v = r(B, T, H, DV)
    u = lambda: torch.rand(B, T, H, generator=g, dtype=dtype)  # noqa: E731
    eta, theta, alpha = u(), 0.3 * u(), 0.2 * u()  # modest rates: a deep memory stays bounded over 19 steps
    P = memory_params(dims)
    state = torch.stack((0.3 * r(B, H, P), 0.3 * r(B, H, P), 0.1 * r(B, H, P)), 2)  # W0 != W: mid-chunk state
    return (q, k, v, eta, theta, alpha), state


@pytest.mark.parametrize("dims", DIMS)
def test_chunk_size_one_is_the_per_token_rule(dims):
    seqs, state = _inputs(dims)
    state[:, :, 0] = state[:, :, 1]  # at chunk size 1 the chunk-start weights are the current weights
    y_ref, s_ref = titans_memory_recurrent(*seqs, state, dims, chunk_size=1)
    y, s = titans_memory_chunked(*seqs, state, dims, chunk_size=1)
    torch.testing.assert_close(y, y_ref, atol=1e-13, rtol=0)  # float64: equal up to the order of the sums
    torch.testing.assert_close(s, s_ref, atol=1e-13, rtol=0)


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("chunk,offset", [(4, 0), (8, 3), (64, 0)])
def test_chunked_and_step_match_the_reference_on_the_chunk_grid(dims, chunk, offset):
    seqs, state = _inputs(dims)
    y_ref, s_ref = titans_memory_recurrent(*seqs, state, dims, chunk_size=chunk, offset=offset)
    y, s = titans_memory_chunked(*seqs, state, dims, chunk_size=chunk, offset=offset)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(s, s_ref, atol=1e-12, rtol=0)
    # split anywhere: the state and the offset carry the grid
    y1, s1 = titans_memory_chunked(*(x[:, :7] for x in seqs), state, dims, chunk_size=chunk, offset=offset)
    y2, s2 = titans_memory_chunked(*(x[:, 7:] for x in seqs), s1, dims, chunk_size=chunk, offset=offset + 7)
    torch.testing.assert_close(torch.cat((y1, y2), 1), y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(s2, s_ref, atol=1e-12, rtol=0)
    s_t, outs = state, []
    for t in range(T):
        o, s_t = titans_memory_step(*(x[:, t] for x in seqs), s_t, dims, chunk_size=chunk, offset=offset + t)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(s_t, s_ref, atol=1e-12, rtol=0)
    if chunk > 1:  # the grid matters: gradients at the current weights give something else
        y_tok, _ = titans_memory_recurrent(*seqs, state, dims, chunk_size=1)
        assert (y_tok - y_ref).abs().max() > 1e-4


def test_linear_memory_closed_form():
    """L_M = 1, M(k) = W k. Inside one chunk every gradient is at W0: u_t = 2 (W0 k_t - v_t) k_t^T. With constant
    gates eta, theta, alpha, S_t = eta^t S0 - theta sum_{i<=t} eta^{t-i} u_i and
    W_t = (1-alpha)^t W0' + sum_{i<=t} (1-alpha)^{t-i} S_i, so with r = 1 - alpha
    W_t = r^t W + S0 sum_{j=1..t} r^{t-j} eta^j - theta sum_{i<=t} u_i sum_{j=i..t} r^{t-j} eta^{j-i}."""
    dims = (DK, DV)
    seqs, state = _inputs(dims)
    q, k, v = seqs[:3]
    c_eta, c_theta, c_alpha = 0.7, 0.2, 0.1
    gates = [torch.full((B, T, H), x, dtype=torch.float64) for x in (c_eta, c_theta, c_alpha)]
    y, s = titans_memory_chunked(q, k, v, *gates, state, dims, chunk_size=T)  # one chunk: W0 throughout
    r = 1 - c_alpha
    W0 = state[:, :, 0].reshape(B, H, DV, DK)
    W, S0 = state[:, :, 1].reshape(B, H, DV, DK), state[:, :, 2].reshape(B, H, DV, DK)
    u = 2 * torch.einsum("bthv,bthk->bthvk", torch.einsum("bhvk,bthk->bthv", W0, k) - v, k)  # [B, T, H, dv, dk]
    for t in range(1, T + 1):
        Wt = r ** t * W + S0 * sum(r ** (t - j) * c_eta ** j for j in range(1, t + 1))
        for i in range(1, t + 1):
            Wt = Wt - c_theta * u[:, i - 1] * sum(r ** (t - j) * c_eta ** (j - i) for j in range(i, t + 1))
        torch.testing.assert_close(y[:, t - 1], torch.einsum("bhvk,bhk->bhv", Wt, q[:, t - 1]), atol=1e-12, rtol=0)
    torch.testing.assert_close(s[:, :, 1].reshape(B, H, DV, DK), Wt, atol=1e-12, rtol=0)
    S_T = c_eta ** T * S0 - c_theta * sum(c_eta ** (T - i) * u[:, i - 1] for i in range(1, T + 1))
    torch.testing.assert_close(s[:, :, 2].reshape(B, H, DV, DK), S_T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dims", DIMS)
def test_surprise_is_autograd_of_the_stated_loss(dims):
    """One step from W0 = W, S = 0, eta = 0, alpha = 0, theta = 1: the new momentum is -grad ||M(W; k) - v||^2,
    the loss written out here (not token_loss) and differentiated by torch.autograd."""
    seqs, state = _inputs(dims)
    q, k, v = (x[:, 0] for x in seqs[:3])
    state[:, :, 0] = state[:, :, 1]
    state[:, :, 2] = 0
    zeros, ones = torch.zeros(B, H, dtype=torch.float64), torch.ones(B, H, dtype=torch.float64)
    _, s = titans_memory_step(q, k, v, zeros, ones, zeros, state, dims, chunk_size=1)
    w = state[:, :, 1].clone().requires_grad_()
    loss, at = 0.0, 0
    x = k
    mats = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        mats.append(w[..., at:at + d_in * d_out].reshape(B, H, d_out, d_in))
        at += d_in * d_out
    for i, Wl in enumerate(mats):
        x = torch.einsum("bhoi,bhi->bho", Wl, x)
        x = F.silu(x) if i < len(mats) - 1 else x
    loss = ((x - v) ** 2).sum()
    (g,) = torch.autograd.grad(loss, w)
    torch.testing.assert_close(s[:, :, 2], -g, atol=1e-12, rtol=0)
    assert token_loss(state[0, 0, 1], k[0, 0], v[0, 0], dims) > 0


@pytest.mark.parametrize("dims", DIMS)
def test_flops_match_the_counter(dims):
    seqs, state = _inputs(dims, dtype=torch.float32)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        titans_memory_chunked(*seqs, state, dims, chunk_size=8, offset=3)
    assert fc.get_total_flops() == B * H * chunked_flops(T, dims, 8, offset=3)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        titans_memory_step(*(x[:, 0] for x in seqs), state, dims, chunk_size=8)
    assert fc.get_total_flops() == B * H * step_flops(dims)


def test_gradients_reach_the_inputs_through_the_inner_updates():
    """The outer loss trains the initial weights, keys and gates through torch.func's inner gradients: the chunked
    form's gradients equal the reference's (autograd through its per-token autograd.grad)."""
    dims = (DK, 6, DV)
    seqs, state = _inputs(dims)
    leaves = [x.clone().requires_grad_() for x in (*seqs, state)]
    grads = []
    for fn in (titans_memory_recurrent, titans_memory_chunked):
        y, s = fn(*leaves[:6], leaves[6], dims, chunk_size=4)
        grads.append(torch.autograd.grad(y.square().sum() + s.sum(), leaves))
    for name, a, b in zip(["q", "k", "v", "eta", "theta", "alpha", "state"], *grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0, msg=name)
