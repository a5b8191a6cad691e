"""`hybridlm train --plan` (training/plan.py, training/activations.py): every row held against a measurement of the
real thing: FSDP2's shards (fake process group, meta model), the optimizer state of a real step, the tensors a real
CPU forward saves for backward; the verdict at the capacity boundary; the layout errors; the CLI on a 400B preset."""

import json
import math
import time

import pytest
import torch

from hybridlm.analysis import hardware
from hybridlm.cli import main
from hybridlm.model import HybridLM
from hybridlm.presets import get_config
from hybridlm.training import TrainConfig
from hybridlm.training.activations import measure_saved, saved_bytes
from hybridlm.training.optim import build_optimizer
from hybridlm.training.plan import plan_memory

B, T = 2, 32


def _cfg(model="tiny-hybrid", **kw) -> TrainConfig:
    kw.setdefault("batch_size", B)
    kw.setdefault("seq_len", T)
    kw.setdefault("precision", "fp32")
    return TrainConfig(model=model, **kw)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_world_one_rows_equal_a_real_step(optimizer):
    """World 1: parameters, gradients and optimizer state equal the bytes of a real model after one step."""
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-hybrid"))
    opt = build_optimizer(model, optimizer, 1e-3, 0.1, (0.9, 0.95))
    ids = torch.randint(0, model.config.vocab_size, (B, T))
    model(ids, labels=ids).loss.backward()
    opt.step()
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.ndim > 0]  # not `step`
    p = plan_memory(_cfg(optimizer=optimizer), world=1)
    assert p.params == nbytes(model.parameters()) == 4 * model.num_params()
    assert p.grads == nbytes(q.grad for q in model.parameters())
    assert p.optimizer_state == nbytes(state)
    assert p.transient == 0  # nothing is gathered by one process


def test_param_shards_equal_fsdp2_storages():
    """World 8: the plan's per-rank parameter bytes equal the storages FSDP2 gives one rank (fake process group,
    meta model: no memory), padding of dims smaller than the world included."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from hybridlm.training.distributed import shard
    world = 8
    dist.init_process_group("fake", store=FakeStore(), rank=world - 1, world_size=world)
    try:
        model = HybridLM(get_config("tiny-hybrid"), device="meta")
        shard(model)
        storages = {p.to_local().untyped_storage()._cdata: p.to_local().untyped_storage().nbytes()
                    for p in model.parameters()}
    finally:
        dist.destroy_process_group()
    p = plan_memory(_cfg(batch_size=world * B), world=world)
    assert p.params == sum(storages.values())
    assert p.params > 4 * model.num_params() / world  # the padding is there, and counted


@pytest.mark.parametrize("world, ep", [(8, 2), (32, 8)])
def test_expert_parallel_param_shards_equal_fsdp2_storages(world, ep):
    """Under expert parallelism too (fake process group, meta model): the experts split over ep, then FSDP2 over dp
    on their width; at world 32, ep 8 a rank's single local expert still splits over dp 4 without padding."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from hybridlm.training.distributed import parallel_mesh, shard
    dist.init_process_group("fake", store=FakeStore(), rank=world - 1, world_size=world)
    try:
        model = HybridLM(get_config("tiny-hybrid"), device="meta")
        shard(model, parallel_mesh(world, ep, torch.device("cpu")))
        storages = {p.to_local().untyped_storage()._cdata: p.to_local().untyped_storage().nbytes()
                    for p in model.parameters()}
    finally:
        dist.destroy_process_group()
    p = plan_memory(_cfg(batch_size=world * B, ep=ep), world=world)
    assert p.params == sum(storages.values())


def test_expert_parallel_arithmetic():
    """ep = 8 of world 64 (Llama 4 Maverick): every routed expert weight on 64 ranks once (E/ep experts, / dp), the
    rest / 64: the rows sum to the exact per-rank shares of num_params (no padding: every dim divides)."""
    cfg = _cfg("llama4-maverick-17b-128e", batch_size=64, ep=8, hardware="h100")
    p = plan_memory(cfg, world=64)
    model = HybridLM(get_config("llama4-maverick-17b-128e"), device="meta")
    experts = sum(m.expert_weights() for m in model.moe_layers())
    assert p.params == 4 * (experts // 64 + math.ceil((model.num_params() - experts) / 64)) == 4 * model.num_params() // 64
    assert (p.dp, p.micro_batch) == (8, 1)
    # the transient holds the largest block: its non-expert weights and its 128/8 experts, gathered
    block = model.layers[1]
    moe = block.ffn
    gathered = block.num_params() - moe.expert_weights() + moe.expert_weights() // 8
    root = model.num_params() - sum(b.num_params() for b in model.layers)
    assert p.transient == 4 * (2 * root + 3 * gathered)


FUSED_ON_CPU = ["tiny-hybrid", "tiny-gdn", "tiny-llama4", "tiny-deepseek-v4", "tiny-deepseek", "tiny-kimi-linear",
                "tiny-jamba", "tiny-mamba2-hybrid", "tiny-minimax", "tiny-titans-mac"]


@pytest.mark.parametrize("name", FUSED_ON_CPU)
def test_activations_match_a_real_cpu_forward(name):
    """The plan's activation bytes (meta device, stand-ins for fused attention and grouped experts, one block per
    kind) against the bytes a real fp32 CPU forward + loss saves for backward (and its logits). Measured: equal to
    within 10 kB (tiny-deepseek: 9,920 B of 10.5 MB; tiny-hybrid: 288 B of 21.6 MB)."""
    torch.manual_seed(0)
    model = HybridLM(get_config(name))
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (B, T))
    real, _ = measure_saved(model, lambda saved: model(ids, labels=ids))
    planned = plan_memory(_cfg(name), world=1).activations
    assert planned == pytest.approx(real, rel=2e-3)
    assert planned > 4 * B * (T - 1) * model.config.vocab_size  # the fp32 log-probabilities alone are in it


@pytest.mark.parametrize("name", ["tiny-deepseek-v4", "tiny-sambay", "tiny-jamba"])
def test_one_block_per_kind_equals_every_block(name):
    """Measuring one block per kind (the others pass their input through) gives the bytes of running every block:
    mHC streams (V4), blocks that leave values for later layers (SambaY's memory and KV), interleaved kinds (Jamba)."""
    from hybridlm.training.activations import meta_forward, saved_bytes_by_part
    model = HybridLM(get_config(name), device="meta")
    ids = torch.zeros(B, T, dtype=torch.long, device="meta")
    with meta_forward(model):
        every, _ = measure_saved(model, lambda saved: model(ids, labels=ids))
    parts = saved_bytes_by_part(model, B, T)
    assert sum(parts.values()) == every
    assert len(parts) == len({model.config.layer_mixers[i] + model.config.layer_ffns[i]
                                 for i in range(model.config.num_layers)}) + 1 and min(parts.values()) > 0


def test_attention_the_cpu_runs_unfused_is_planned_fused():
    """SambaY's attention runs CPU's math kernel, which saves the [B, H, T, S] probabilities; the plan counts a fused
    kernel's (GPU) log-sum-exp instead, so it is below the CPU measurement there (measured 0.969)."""
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-sambay"))
    ids = torch.randint(0, model.config.vocab_size, (B, T))
    real, _ = measure_saved(model, lambda saved: model(ids, labels=ids))
    assert 0.9 * real < plan_memory(_cfg("tiny-sambay"), world=1).activations < real


def test_bf16_activations_match_a_bf16_forward():
    """bf16: the meta measurement of the bf16 model against a real CPU forward of the same model cast to bf16."""
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-llama4")).to(torch.bfloat16)
    ids = torch.randint(0, model.config.vocab_size, (B, T))
    real, _ = measure_saved(model, lambda saved: model(ids, labels=ids))
    assert plan_memory(_cfg("tiny-llama4", precision="bf16"), world=1).activations == pytest.approx(real, rel=1e-3)


def test_weight_casts_equal_what_autocast_saves():
    """bf16 autocast over fp32 parameters saves a bf16 copy of every weight a matmul or conv uses: the copies a real
    CPU autocast forward saves (a saved tensor cast from a parameter) sum to the plan's row. A dense model: CPU
    autocast does not cast the MoE's grouped matmul's weights (it fails on mixed dtypes)."""
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-mamba2-hybrid"))
    params = {id(p) for p in model.parameters()}
    copies: dict[int, int] = {}

    def cast_of_param(fn) -> bool:  # a view (t(), view) of a ToCopy of a parameter's AccumulateGrad
        for _ in range(4):
            if fn is None or not fn.next_functions:
                return False
            if type(fn).__name__ == "ToCopyBackward0":
                return id(getattr(fn.next_functions[0][0], "variable", None)) in params
            fn = fn.next_functions[0][0]
        return False

    def pack(t):
        if cast_of_param(t.grad_fn):
            copies[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, model.config.vocab_size, (B, T))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, labels=ids)
    assert copies and plan_memory(_cfg("tiny-mamba2-hybrid", precision="bf16"), world=1).weight_casts == sum(
        copies.values())


def test_activations_are_affine_in_the_micro_batch():
    """Every sequence saves the same bytes; what does not grow with the batch (masks, causal tables) is shared."""
    model = HybridLM(get_config("tiny-hybrid"), device="meta")
    two, three, four = (saved_bytes(model, b, T) for b in (2, 3, 4))
    assert four - three == three - two and 0 < three - two < two / 2


def test_verdict_flips_at_the_capacity(monkeypatch):
    total = plan_memory(_cfg(), world=1).total
    for cap, fits in ((total, True), (total - 1, False)):
        monkeypatch.setitem(hardware.HARDWARE, "probe", hardware.Hardware("probe", "Probe", 1.0, None, 1.0, cap, "test"))
        v = plan_memory(_cfg(hardware="probe"), world=1).verdicts
        assert [(x.fits, x.headroom) for x in v] == [(fits, cap - total)]
    assert {x.hardware for x in plan_memory(_cfg(), world=1).verdicts} == set(hardware.HARDWARE)  # none named: all


@pytest.mark.parametrize("kw, world, words", [
    ({"hardware": "tpu9"}, 1, ["tpu9", "h100", "910c"]),
    ({"ep": 3, "batch_size": 8}, 8, ["--world-size 8", "--ep 3"]),
    ({"ep": 3, "batch_size": 6}, 6, ["layers.0.ffn", "num_experts=8", "ep=3"]),
    ({"batch_size": 3}, 2, ["batch_size=3", "world size 2"]),
])
def test_errors_name_the_field(kw, world, words):
    with pytest.raises(ValueError) as e:
        plan_memory(_cfg(**kw), world=world)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_world_size_must_be_positive():
    with pytest.raises(ValueError, match="world_size=0"):
        TrainConfig(world_size=0)


def test_cli_plans_a_400b_moe_in_seconds(capsys):
    args = ["train", "llama4-maverick-17b-128e", "--plan", "--world-size", "64", "--ep", "8", "--hardware", "h100",
            "--seq-len", "4096", "--batch-size", "64"]
    t0 = time.time()
    assert main(args) == 0
    assert time.time() - t0 < 15
    out = capsys.readouterr().out
    n = HybridLM(get_config("llama4-maverick-17b-128e"), device="meta").num_params()
    assert "parameters (fp32 shards)" in out and f"{4 * n / 64 / 1e9:.2f}" in out
    assert "NVIDIA H100 SXM5 80GB (80 GB): does NOT fit" in out
    assert main(args + ["--plan-json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total"] == sum(d[k] for k in ("params", "grads", "optimizer_state", "activations", "weight_casts",
                                            "transient"))
    assert (d["world"], d["ep"], d["dp"], d["micro_batch"]) == (64, 8, 8, 1)


def test_cli_error_exit_2(capsys):
    assert main(["train", "tiny-hybrid", "--plan", "--hardware", "nope"]) == 2
    assert "hybridlm train: error: --hardware 'nope'" in capsys.readouterr().err
