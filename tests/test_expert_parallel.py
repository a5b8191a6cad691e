"""Expert parallelism under torchrun on gloo: every MoE's routed experts split over `--ep` ranks, assignments sent
to them by all-to-all. World = dp x ep; the reference is one process running the same global batch as world
micro-batches (grad_accum = world), so the MoE balance loss, a per-micro-batch statistic, means the same in both.

What differs from the reference is only summation order (experts see their rows grouped by sender; gradients are
summed over ranks instead of micro-batches). Asserted for every step's loss and gradient norm, the validation loss,
and the trained weights (which carry every step's gradients), against the one-process run."""

import re

import pytest
import torch
from test_distributed import RTOL, torchrun
from test_train import metrics, setup_run

from hybridlm.interop.checkpoint import Checkpoint
from hybridlm.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread

KW = {"steps": 4, "seq_len": 33, "warmup_steps": 1, "save_every": 0, "eval_every": 0, "val_sequences": 8}


@pytest.mark.parametrize("world, ep, optimizer, accum", [(2, 2, "adamw", 1), (4, 2, "adamw", 1), (4, 4, "adamw", 1),
                                                         (2, 2, "muon", 1), (2, 2, "adamw", 2)])
def test_expert_parallel_matches_one_process(tmp_path, world, ep, optimizer, accum):
    # Muon orthogonalises each expert's gathered matrices whole and keeps this rank's experts; with accum 2 the
    # first micro-batch's gradients stay unreduced on each rank (FSDP2's gradient sync off) until the second's
    kw = {**KW, "batch_size": world * accum, "optimizer": optimizer}
    ref = train(setup_run(tmp_path / "one", grad_accum=world * accum, **kw))
    cfg = setup_run(tmp_path / "ep", **kw)
    run = torchrun(cfg, "--ep", str(ep), "--optimizer", optimizer, "--grad-accum", str(accum), nproc=world)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f'"parallel":{{"dp":{world // ep},"ep":{ep}}}' in re.sub(r"\s", "", run.stdout)  # the announced layout
    recs = [r for r in metrics(tmp_path / "ep" / "run") if "loss" in r]
    ref_recs = [r for r in metrics(tmp_path / "one" / "run") if "loss" in r]
    for key in ("loss", "gnorm"):
        torch.testing.assert_close(torch.tensor([r[key] for r in recs]), torch.tensor([r[key] for r in ref_recs]),
                                   rtol=RTOL, atol=0)
    assert [r["imbalance"] for r in recs] == [r["imbalance"] for r in ref_recs]  # loads summed over all ranks
    vals = [r["val_loss"] for r in metrics(tmp_path / "ep" / "run") if "val_loss" in r]
    torch.testing.assert_close(torch.tensor(vals), torch.tensor([v["val_loss"] for v in ref.val]), rtol=RTOL, atol=0)
    a, b = Checkpoint.open(tmp_path / "one" / "run").model_state(), Checkpoint.open(cfg.out).model_state()
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    # the expert bias moved by the same all-reduced load on every rank
    assert torch.equal(a["layers.1.ffn.expert_bias"], b["layers.1.ffn.expert_bias"])


@pytest.mark.parametrize("changes, world, message", [
    ({}, 3, "the world size is 3, not a multiple of 2"),
    ({"ffn_pattern": "D*2", "ffns": {"D": {"kind": "dense", "intermediate_size": 64}}, "mtp_depth": 0}, 2,
     "the model has no MoE layer"),
    ({"ffns": {"M": {"kind": "moe", "num_experts": 3, "top_k": 1, "expert_size": 32}}}, 2,
     "ffns['M'].num_experts=3 is not a multiple of 2"),
])
def test_expert_parallel_layouts_that_cannot_split_are_refused(tmp_path, changes, world, message):
    from hybridlm.training.config import model_config
    from hybridlm.training.loop import _check_expert_parallel
    cfg = setup_run(tmp_path, changes, ep=2)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _check_expert_parallel(cfg.ep, world, model_config(cfg))


def test_expert_parallel_shards_resume_on_other_layouts(tmp_path):
    # dp 2 x ep 2 on 4 ranks to step 2 (sharded DCP checkpoint: each rank writes its experts' and its FSDP pieces),
    # then ep 2 on 2 ranks for step 3, then one process for step 4: the losses of one uninterrupted process. The
    # micro-batch stays one sequence (grad_accum = 4 / world), so the per-micro-batch balance loss means the same.
    kw = {**KW, "batch_size": 4, "save_every": 1}
    ref = train(setup_run(tmp_path / "one", grad_accum=4, **kw))
    cfg = setup_run(tmp_path / "ep", **kw)
    four = torchrun(cfg, "--ep", "2", "--stop-at", "2", nproc=4)
    assert four.returncode == 0, four.stderr[-3000:]
    assert Checkpoint.open(cfg.out).layout == "dcp"
    two = torchrun(cfg, "--ep", "2", "--grad-accum", "2", "--resume", "--stop-at", "3", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    train(setup_run(tmp_path / "ep", grad_accum=4, resume=True, **kw))
    recs = [r for r in metrics(tmp_path / "ep" / "run") if "loss" in r]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    torch.testing.assert_close(torch.tensor([r["loss"] for r in recs]), torch.tensor(ref.losses), rtol=RTOL, atol=0)
