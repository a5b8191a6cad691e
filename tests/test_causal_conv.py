"""The short convs' causal depthwise conv (ops/causal_conv.py) against torch's grouped F.conv1d, and the chunked
gated delta rule's flushed exp (ops/gated_delta_rule._exp_) against torch.exp."""


import pytest
import torch
import torch.nn.functional as F

from hybridlm.ops.causal_conv import causal_depthwise_conv, grouped_conv_form
from hybridlm.ops.gated_delta_rule import _exp_


def _reference(x_BCT, w_CK, past_BCK, bias_C):
    K = w_CK.shape[1]
    full = torch.cat((past_BCK if past_BCK is not None else x_BCT.new_zeros(*x_BCT.shape[:2], K - 1), x_BCT), -1)
    return F.conv1d(full, w_CK[:, None, :], bias_C, groups=x_BCT.shape[1])


@pytest.mark.parametrize("T", [1, 2, 3, 7, 50])
@pytest.mark.parametrize("with_past,with_bias", [(False, False), (True, False), (True, True), (False, True)])
def test_matches_grouped_conv1d(T, with_past, with_bias):
    torch.manual_seed(T)
    B, C, K = 2, 6, 4
    x = torch.randn(B, T, C, dtype=torch.float64).transpose(1, 2)  # the mixers' layout: a view of channels-last
    w = torch.randn(C, K, dtype=torch.float64, requires_grad=True)
    past = torch.randn(B, C, K - 1, dtype=torch.float64) if with_past else None
    bias = torch.randn(C, dtype=torch.float64) if with_bias else None
    x.requires_grad_(True)
    y = causal_depthwise_conv(x, w, past, bias)
    ref = _reference(x, w, past, bias)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    assert y.stride() == x.stride()  # kept the channels-last layout: no transposing copy
    g = torch.randn_like(ref)
    gx, gw = torch.autograd.grad((y * g).sum(), (x, w))
    rx, rw = torch.autograd.grad((ref * g).sum(), (x, w))
    torch.testing.assert_close((gx, gw), (rx, rw), rtol=1e-12, atol=1e-12)
    with grouped_conv_form():  # the FLOP-counting form is the same function
        torch.testing.assert_close(causal_depthwise_conv(x, w, past, bias), ref, rtol=1e-12, atol=1e-12)


def test_bad_shapes_are_named():
    x = torch.randn(1, 4, 5)
    with pytest.raises(ValueError, match="conv weight"):
        causal_depthwise_conv(x, torch.randn(3, 4))
    with pytest.raises(ValueError, match="conv cache"):
        causal_depthwise_conv(x, torch.randn(4, 4), torch.randn(1, 4, 2))


@pytest.mark.parametrize("dtype,floor", [(torch.float32, -30.0), (torch.float64, -300.0)])
def test_flushed_exp(dtype, floor):
    x = torch.cat((torch.linspace(-5000.0, 0.0, 20001, dtype=dtype), torch.tensor([floor, floor + 1e-3], dtype=dtype)))
    y = _exp_(x.clone())
    keep = x > floor + 1e-6
    torch.testing.assert_close(y[keep], x[keep].exp(), rtol=0, atol=0)  # exact where kept
    assert (y[~keep] == 0).all()  # exactly 0 at or below the floor: never subnormal
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_exp_(xg * 1.0).sum(), xg)
    torch.testing.assert_close(g, y)  # d/dx of the flushed exp: exp where kept, 0 where flushed
