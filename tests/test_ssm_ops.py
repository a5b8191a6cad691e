"""Selective scan (Mamba-1) and SSD (Mamba-2) ops: the chunked forms and the one-token steps against the
token-by-token recurrences (fp32 within 1e-5 and float64 to 1e-10, gradients included), and the recurrences
against transformers 5.23's own torch paths and mambapy's parallel scan on the same raw tensors."""

import logging

import pytest
import torch
import torch.nn.functional as F
from harness.chunked import assert_forms_match, assert_gradients_match, assert_state_carry, assert_steps_match

import hybridlm.ops.ssd as ssd_mod
from hybridlm.ops.selective_scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_recurrent,
    selective_scan_step,
)
from hybridlm.ops.ssd import ssd, ssd_chunked, ssd_recurrent, ssd_step

F64 = torch.float64
# T = 1, 63, 75, 500 with chunk sizes that do not divide T
CASES = [(1, 64), (63, 16), (75, 32), (500, 64)]
M1_NAMES = ["u", "delta", "B", "C", "A", "D", "state"]  # gradients checked, in the harness's order
M2_NAMES = ["x", "dt", "B", "C", "A", "D", "state"]


def mamba1_inputs(Bt, T, E, N, dtype=torch.float32, seed=0, decay=1.0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    u, B, C = r(Bt, T, E), 0.5 * r(Bt, T, N), 0.5 * r(Bt, T, N)
    delta = F.softplus(r(Bt, T, E) - 1.0)
    A = -torch.exp(0.5 * r(E, N)) * decay
    D, h0 = r(E), 0.5 * r(Bt, E, N)
    return [t.to(dtype) for t in (u, delta, B, C, A, D, h0)]


def mamba2_inputs(Bt, T, H, P, G, N, dtype=torch.float32, seed=0, decay=1.0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    x, B, C = r(Bt, T, H, P), 0.5 * r(Bt, T, G, N), 0.5 * r(Bt, T, G, N)
    dt = F.softplus(r(Bt, T, H) - 1.0)
    A = -torch.exp(0.5 * r(H)) * decay
    D, h0 = r(H), 0.5 * r(Bt, H, P, N)
    return [t.to(dtype) for t in (x, dt, B, C, A, D, h0)]


def m1(fn, **kw):
    """An op as the harness calls it: sequences (u, delta, B, C, A, D) first, then the state."""
    return lambda u, delta, B, C, A, D, state, **k: fn(u, delta, A, B, C, D, state, **kw, **k)


def m2(fn, **kw):
    return lambda x, dt, B, C, A, D, state, **k: fn(x, dt, A, B, C, D, state, **kw, **k)


@pytest.mark.parametrize("T,chunk", CASES)
def test_selective_scan_chunked_matches_recurrent(T, chunk):
    *seqs, h0 = mamba1_inputs(2, T, 6, 4, seed=T)
    o, s = assert_forms_match(m1(selective_scan_recurrent), m1(selective_scan_chunked, chunk_size=chunk), seqs, h0,
                              atol=1e-5, rtol=1e-5)
    assert o.shape == (2, T, 6) and o.dtype == torch.float32 and s.shape == (2, 6, 4)
    assert_gradients_match(m1(selective_scan_recurrent), m1(selective_scan_chunked), seqs, h0,
                           M1_NAMES, atol=1e-5, rtol=1e-5, chunk_size=chunk)


@pytest.mark.parametrize("T,chunk", CASES)
def test_ssd_chunked_matches_recurrent(T, chunk):
    *seqs, h0 = mamba2_inputs(2, T, 4, 3, 2, 5, seed=T)
    o, s = assert_forms_match(m2(ssd_recurrent), m2(ssd_chunked, chunk_size=chunk), seqs, h0, atol=1e-5, rtol=1e-5)
    assert o.shape == (2, T, 4, 3) and o.dtype == torch.float32 and s.shape == (2, 4, 3, 5)
    assert_gradients_match(m2(ssd_recurrent), m2(ssd_chunked), seqs, h0, M2_NAMES,
                           atol=1e-5, rtol=1e-5, chunk_size=chunk, block_chunks=3)


def test_chunked_float64_algorithms():
    # in float64 the forms agree to rounding, which checks the algebra much tighter than fp32 can
    *seqs, h0 = mamba1_inputs(2, 75, 5, 3, dtype=F64, seed=1)
    assert_forms_match(m1(selective_scan_recurrent), m1(selective_scan_chunked, chunk_size=16), seqs, h0, atol=1e-10)
    assert_gradients_match(m1(selective_scan_recurrent), m1(selective_scan_chunked), seqs, h0,
                           M1_NAMES, atol=1e-10, chunk_size=16)
    *seqs, h0 = mamba2_inputs(2, 75, 6, 3, 3, 4, dtype=F64, seed=2)
    assert_forms_match(m2(ssd_recurrent), m2(ssd_chunked, chunk_size=16, block_chunks=2), seqs, h0, atol=1e-10)
    assert_gradients_match(m2(ssd_recurrent), m2(ssd_chunked), seqs, h0, M2_NAMES,
                           atol=1e-10, chunk_size=16, block_chunks=2)


def test_strong_decay_stays_exact():
    # chunk decays far below e^-88: Mamba-1's scan never forms exp(+cumsum); SSD's factorised intra-chunk part
    # hands such (chunk, head) pairs to the direct mask.  Gentle heads stay on the fast path beside them.
    *seqs, h0 = mamba1_inputs(1, 70, 4, 3, seed=3, decay=40.0)
    o, _ = assert_forms_match(m1(selective_scan_recurrent), m1(selective_scan_chunked, chunk_size=32), seqs, h0,
                              atol=1e-5, rtol=1e-5)
    assert torch.isfinite(o).all()
    x, dt, B, C, A, D, h0 = mamba2_inputs(1, 70, 4, 3, 2, 5, seed=4)
    A = A * torch.tensor([1.0, 60.0, 1.0, 200.0])
    assert (dt[0, :32] * A).sum(0).min() < -2 * ssd_mod._EXP_LIMIT[torch.float32]  # the direct path is used
    o, _ = assert_forms_match(m2(ssd_recurrent), m2(ssd_chunked, chunk_size=32), (x, dt, B, C, A, D), h0,
                              atol=1e-5, rtol=1e-5)
    assert torch.isfinite(o).all()
    assert_gradients_match(m2(ssd_recurrent), m2(ssd_chunked), (x, dt, B, C, A, D), h0,
                           M2_NAMES, atol=1e-5, rtol=1e-5, chunk_size=32)


def test_ssd_float32_across_the_fast_paths_range():
    # chunk decays between e^-40 and e^-120 use the fast path's largest factors (up to e^60) in float32, and
    # two such chunks in a row pass the state on in two steps (one factor e^-(40+40) would underflow)
    x, dt, B, C, A, D, h0 = mamba2_inputs(2, 256, 8, 3, 2, 5, seed=2)
    c_last = (dt * A).view(2, 2, 128, 8).sum(2)  # [Bt, chunk, H]
    assert ((c_last < -80) & (c_last > -120)).all(1).any() and (c_last > -40).any()
    y, s = ssd_chunked(x, dt, A, B, C, D, h0, chunk_size=128)
    y64, s64 = ssd_recurrent(*(t.double() for t in (x, dt, A, B, C, D, h0)))
    torch.testing.assert_close(y.double(), y64, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s.double(), s64, atol=1e-5, rtol=1e-5)


def test_ssd_direct_mask_path_float64(monkeypatch):
    # a tiny exp limit sends most (chunk, head) pairs down the direct-mask path: it is exact on its own
    monkeypatch.setitem(ssd_mod._EXP_LIMIT, F64, 3.0)
    *seqs, h0 = mamba2_inputs(2, 75, 6, 3, 3, 4, dtype=F64, seed=5)
    assert_forms_match(m2(ssd_recurrent), m2(ssd_chunked, chunk_size=16, block_chunks=2), seqs, h0, atol=1e-10)
    assert_gradients_match(m2(ssd_recurrent), m2(ssd_chunked), seqs, h0, M2_NAMES,
                           atol=1e-10, chunk_size=16, block_chunks=2)


def test_steps_match_recurrence():
    u, delta, B, C, A, D, h0 = mamba1_inputs(2, 7, 5, 3, seed=6)
    step1 = lambda u, d, B, C, s: selective_scan_step(u, d, A, B, C, D, s)
    ref1 = lambda u, d, B, C, s: selective_scan_recurrent(u, d, A, B, C, D, s)
    s = assert_steps_match(ref1, step1, (u, delta, B, C), h0, atol=1e-6, rtol=1e-6)
    assert not torch.equal(s, h0)  # the caller's state is not updated in place
    x, dt, B, C, A, D, h0 = mamba2_inputs(2, 7, 6, 3, 3, 4, seed=7)
    step2 = lambda x, dt, B, C, s: ssd_step(x, dt, A, B, C, D, s)
    ref2 = lambda x, dt, B, C, s: ssd_recurrent(x, dt, A, B, C, D, s)
    s = assert_steps_match(ref2, step2, (x, dt, B, C), h0, atol=1e-6, rtol=1e-6)
    assert not torch.equal(s, h0)


def test_state_carry_equals_one_run():
    u, delta, B, C, A, D, h0 = mamba1_inputs(1, 150, 4, 3, seed=8)
    f1 = lambda u, d, B, C, s: selective_scan_chunked(u, d, A, B, C, D, s, chunk_size=32)
    assert_state_carry(f1, (u, delta, B, C), h0, split=47, atol=1e-5, rtol=1e-5)
    x, dt, B, C, A, D, h0 = mamba2_inputs(1, 150, 4, 3, 2, 5, seed=9)
    f2 = lambda x, dt, B, C, s: ssd_chunked(x, dt, A, B, C, D, s, chunk_size=32)
    assert_state_carry(f2, (x, dt, B, C), h0, split=47, atol=1e-5, rtol=1e-5)


def test_dispatchers_defaults_and_dtypes():
    u, delta, B, C, A, D, h0 = mamba1_inputs(2, 20, 4, 3, seed=10)
    y_ref, s_ref = selective_scan_recurrent(u, delta, A, B, C, D)  # zero initial state by default
    y, s = selective_scan(u, delta, A, B, C, D, chunk_size=8)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)
    y1, s1 = selective_scan(u[:, :1], delta[:, :1], A, B[:, :1], C[:, :1], None, h0)  # T == 1: the step
    y1_ref, s1_ref = selective_scan_recurrent(u[:, :1], delta[:, :1], A, B[:, :1], C[:, :1], None, h0)
    torch.testing.assert_close((y1, s1), (y1_ref, s1_ref), atol=1e-6, rtol=1e-6)
    yb, sb = selective_scan(u.bfloat16(), delta, A, B, C, D, chunk_size=8)
    assert yb.dtype == torch.bfloat16 and sb.dtype == torch.float32

    x, dt, B, C, A, D, h0 = mamba2_inputs(2, 20, 4, 3, 2, 5, seed=11)
    y_ref, s_ref = ssd_recurrent(x, dt, A, B, C, D)
    y, s = ssd(x, dt, A, B, C, D, chunk_size=8)
    torch.testing.assert_close((y, s), (y_ref, s_ref), atol=1e-5, rtol=1e-5)
    y1, s1 = ssd(x[:, :1], dt[:, :1], A, B[:, :1], C[:, :1], None, h0)
    y1_ref, s1_ref = ssd_recurrent(x[:, :1], dt[:, :1], A, B[:, :1], C[:, :1], None, h0)
    torch.testing.assert_close((y1, s1), (y1_ref, s1_ref), atol=1e-6, rtol=1e-6)
    yb, sb = ssd(x.bfloat16(), dt, A, B, C, D, chunk_size=8)
    assert yb.dtype == torch.bfloat16 and sb.dtype == torch.float32
    y0, s0 = ssd_chunked(x[:, :0], dt[:, :0], A, B[:, :0], C[:, :0], D, h0)  # T == 0: the state passes through
    assert y0.shape == (2, 0, 4, 3) and torch.equal(s0, h0) and s0 is not h0


def test_bad_shapes_raise():
    x, dt, B, C, A, D, h0 = mamba2_inputs(1, 5, 6, 3, 2, 4, seed=12)
    with pytest.raises(ValueError, match="multiple of groups G=4"):
        ssd_chunked(x, dt, A, B.repeat(1, 1, 2, 1), C.repeat(1, 1, 2, 1))  # H=6, G=4
    with pytest.raises(ValueError, match=r"dt must be \(1, 5, 6\)"):
        ssd_recurrent(x, dt[..., :5], A, B, C)
    with pytest.raises(ValueError, match=r"state must be \[Bt, H, P, N\]"):
        ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, h0[..., :3])
    u, delta, B1, C1, A1, _, _ = mamba1_inputs(1, 5, 4, 3, seed=13)
    with pytest.raises(ValueError, match=r"B \(1, 5, 2\)"):
        selective_scan_chunked(u, delta, A1, B1[..., :2], C1[..., :2])
    with pytest.raises(ValueError, match="A must be \\[E, N\\]"):
        selective_scan_recurrent(u, delta, A1[0], B1, C1)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        selective_scan_chunked(u, delta, A1, B1, C1, chunk_size=0)


def test_ssd_matches_transformers_mamba2_chunk_scan():
    hf = pytest.importorskip("transformers.models.mamba2.modeling_mamba2")
    logging.getLogger("transformers").setLevel(logging.ERROR)  # "falling back to the torch path" is expected
    x, dt, B, C, A, D, h0 = mamba2_inputs(2, 75, 4, 8, 2, 6, seed=14)
    y_hf, s_hf = hf.mamba2_chunk_scan(x, dt, A, B, C, 16, D=D, initial_states=h0, return_final_states=True)
    y, s = ssd_chunked(x, dt, A, B, C, D, h0, chunk_size=32)
    torch.testing.assert_close(y, y_hf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, s_hf, atol=1e-5, rtol=1e-5)
    y_r, s_r = ssd_recurrent(x, dt, A, B, C, D, h0)
    torch.testing.assert_close((y_r, s_r), (y_hf, s_hf), atol=1e-5, rtol=1e-5)


def test_selective_scan_matches_transformers_and_mambapy():
    hf = pytest.importorskip("transformers.models.mamba.modeling_mamba")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    u, delta, B, C, A, D, _ = mamba1_inputs(2, 75, 6, 4, seed=15)
    # transformers' slow path: channels-first layout, a token loop from a zero state
    y_hf, s_hf = hf.mamba_selective_scan(u.mT, delta.mT, A, B.mT, C.mT, D, return_last_state=True)
    y, s = selective_scan_chunked(u, delta, A, B, C, D, chunk_size=16)
    torch.testing.assert_close(y, y_hf.mT, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, s_hf, atol=1e-5, rtol=1e-5)

    pscan = pytest.importorskip("mambapy.pscan").pscan  # Blelloch scan with its own backward
    leaves = [t.clone().requires_grad_() for t in (u, delta, B, C, A, D)]
    w = torch.randn(2, 75, 6, dtype=torch.float32)

    def mambapy_scan(u, delta, B, C, A, D):
        a = torch.exp(delta.unsqueeze(-1) * A)  # [Bt,T,E,N]
        hs = pscan(a, (delta * u).unsqueeze(-1) * B.unsqueeze(-2))
        return (hs @ C.unsqueeze(-1)).squeeze(-1) + D * u

    y_mp = mambapy_scan(*leaves)
    g_mp = torch.autograd.grad((y_mp * w).sum(), leaves)
    y = selective_scan_chunked(leaves[0], leaves[1], leaves[4], leaves[2], leaves[3], leaves[5], chunk_size=16)[0]
    g = torch.autograd.grad((y * w).sum(), leaves)
    torch.testing.assert_close(y, y_mp, atol=1e-5, rtol=1e-5)
    for name, a, b in zip(M1_NAMES, g, g_mp):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5, msg=name)
