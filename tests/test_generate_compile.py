"""The compiled decode path (generate(compile=True), model/generate.py decode_step): every tiny family's decode step
traces as one graph with no breaks (torch._dynamo.explain; run on each family's 2-layer recall twin, which keeps
every mixer kind of the family, so the check stays cheap), the MoE's decode path equals its sorted dispatch, and a
compiled greedy generate gives exactly the eager tokens."""

import pytest
import torch
import torch._dynamo
from harness.tiny import tiny_config

from hybridlm import HybridLM, get_config
from hybridlm.analysis.compare import default_presets
from hybridlm.analysis.recall import twin_config
from hybridlm.model.generate import decode_step


@pytest.mark.parametrize("name", default_presets())
def test_every_tiny_familys_decode_step_is_one_graph(name):
    cfg = get_config(name)
    torch.manual_seed(0)
    model = HybridLM(twin_config(cfg, width=64, max_layers=2, ffn="own")).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model.prefill(torch.randint(0, 64, (2, 21)), cache)
        model(torch.randint(0, 64, (2, 1)), cache=cache)  # the eager first step, as stream() runs it
        explained = torch._dynamo.explain(lambda ids: model(ids, cache=cache).logits)(torch.randint(0, 64, (2, 1)))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), \
        [str(b.reason).splitlines()[0] for b in explained.break_reasons]


def test_moe_decode_path_equals_the_sorted_dispatch(monkeypatch):
    """The compiled step's gathered-weight experts (what forward takes while compiling) against the sorted
    dispatch eager forward takes: softmax gates; scaled input (Llama 4); hash routing and sqrt-softplus (V4)."""
    for name in ("tiny-hybrid", "tiny-llama4", "tiny-deepseek-v4"):
        torch.manual_seed(0)
        model = HybridLM(get_config(name)).eval()
        moe = next(b.ffn for b in model.layers if type(b.ffn).__name__ == "MoE")
        x, ids = torch.randn(3, 1, model.config.d_model), torch.randint(0, 256, (3, 1))
        with torch.no_grad():
            sorted_ = moe(x, ids)
            monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
            gathered = moe(x, ids)
            monkeypatch.undo()
        torch.testing.assert_close(gathered, sorted_, atol=1e-6, rtol=1e-6)


def test_compiled_generate_gives_the_eager_tokens():
    torch.manual_seed(0)
    model = HybridLM(tiny_config().replace(num_layers=3, mixer_pattern="G A S", ffn_pattern="M D M", mtp_depth=0,
                                           mtp_mixer=None, mtp_ffn=None)).eval()  # delta rule, attention, SWA; MoE
    ids = torch.randint(0, 97, (2, 9))
    timings: dict = {}
    eager = model.generate(ids, max_new_tokens=12)
    compiled = model.generate(ids, max_new_tokens=12, compile=True, timings=timings)
    assert torch.equal(compiled, eager)
    assert timings["first_step_s"] > 0 and timings["step_s"] > 0
    assert decode_step(model, compile=True) is decode_step(model, compile=True)  # built once, reused


def test_mhc_sinkhorn_compiles_into_one_fused_kernel():
    # Eager, one mHC connection (DeepSeek-V4's 20 Sinkhorn iterations) is ~90 small ATen ops per token; compiled, the
    # whole connection after its projection is two inductor kernels (the RMS factor, then softmax + every Sinkhorn
    # normalisation + the sigmoids + the weighted sum of the copies), with the eager values.
    import re

    from torch._inductor.utils import run_and_get_code
    from torch.utils._python_dispatch import TorchDispatchMode

    from hybridlm.model.hyper import HyperConnection

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    hc = HyperConnection(4, 64, 20, 1e-6, 1e-6)
    hc.init_weights(0.02)
    x = torch.randn(1, 1, 4, 64)
    with torch.no_grad(), Count():
        eager = hc(x)
    assert Count.n > 2 * 20  # every normalisation of every iteration is its own op
    with torch.no_grad():
        compiled, codes = run_and_get_code(torch.compile(hc.forward, dynamic=False), x)
    kernels = sorted(set(re.findall(r"cpp_fused_\w+", "\n".join(codes))))
    assert len(kernels) == 2, kernels
    assert any("_softmax" in k and "div" in k for k in kernels), kernels  # softmax and the Sinkhorn together
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
