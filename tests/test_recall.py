"""The recall suite (analysis/recall.py): each task's data layout checked position by position, the twin's plan and
widths, and the ordering from the literature (attention > hybrid > all-linear at many key-value pairs, Zoology)
reproduced by the suite itself at reduced size, by more than the seed spread."""

import numpy as np
import pytest
import torch

from hybridlm import HybridLM, get_config
from hybridlm.analysis.recall import (RecallSettings, copy_batch, mqar_batch, needle_batch, period, run_recall,
                                      twin_config, twin_plan)


def test_mqar_batch_layout():
    x, y = mqar_batch(16, 64, 8, vocab=64, rng=np.random.default_rng(1))
    assert x.shape == y.shape == (16, 64)
    for b in range(16):
        keys, vals = x[b, 0:16:2], x[b, 1:16:2]
        assert ((keys >= 1) & (keys < 32)).all() and ((vals >= 32) & (vals < 64)).all()
        assert len(set(keys.tolist())) == 8
        pos = (y[b] != -100).nonzero().flatten()
        assert len(pos) == 8 and (pos >= 16).all()
        pairs = dict(zip(keys.tolist(), vals.tolist()))
        for t in pos.tolist():  # the answer follows its key: the model sees the key at t and predicts the value
            assert pairs[int(x[b, t])] == int(y[b, t])
    with pytest.raises(ValueError, match="do not fit"):
        mqar_batch(2, 16, 8)


def test_needle_batch_puts_the_needles_past_the_window():
    x, y = needle_batch(32, 128, 4, vocab=64, rng=np.random.default_rng(2))
    assert x.shape == y.shape == (32, 128)
    for b in range(32):
        row = x[b].tolist()
        keys = [(t, k) for t, k in enumerate(row) if k < 32]
        needles = [(t, k) for t, k in keys if t < 32]  # the first quarter
        queries = [(t, k) for t, k in keys if t >= 32]
        assert len(needles) == 4 and len(queries) == 4 and {k for _, k in needles} == {k for _, k in queries}
        value = {k: row[t + 1] for t, k in needles}
        pos = (y[b] != -100).nonzero().flatten().tolist()
        assert [t for t, _ in queries] == pos == list(range(121, 128, 2))  # each query key predicts its value
        for t in pos:
            assert int(y[b, t]) == value[row[t]] and t - min(p for p, k in needles if k == row[t]) > 64
        assert all(k >= 32 for t, k in enumerate(row) if (t, k) not in keys)  # filler: value tokens only
    with pytest.raises(ValueError, match="do not fit"):
        needle_batch(2, 16, 4)


def test_copy_batch_repeats_the_source():
    x, y = copy_batch(8, 40, 12, vocab=64, rng=np.random.default_rng(3))
    for b in range(8):
        src = x[b, :12]
        assert int(x[b, 12]) == 63 and torch.equal(x[b, 13:25], src) and (x[b, 25:] == 0).all()
        assert ((src >= 1) & (src <= 62)).all()
        pos = (y[b] != -100).nonzero().flatten().tolist()
        assert pos == list(range(12, 24)) and torch.equal(y[b, 12:24], src)  # position t predicts x[t + 1]
    with pytest.raises(ValueError, match="do not fit"):
        copy_batch(2, 20, 10)


def test_twin_plan_keeps_each_mixer_and_scales_heads():
    assert period(list("GGGAGGGA")) == list("GGGA") and period(list("AAAA")) == list("AA")
    jamba = get_config("tiny-jamba")  # period M M M M A M M M: 8 layers
    assert [jamba.layer_mixers[i] for i in twin_plan(jamba, 4)] == list("MMMA")
    hybrid, llama4 = get_config("tiny-hybrid"), get_config("tiny-llama4")
    assert [hybrid.layer_mixers[i] for i in twin_plan(hybrid, 2)] == list("GA")
    assert [llama4.layer_mixers[i] for i in twin_plan(llama4, 2)] == list("RN")  # the global layer is kept
    t = twin_config(hybrid, 64, max_layers=4)
    assert t.layer_mixers == list("GGGA") and t.d_model == 64 and t.vocab_size == 64 and t.mtp_depth == 0
    g, g0 = t.mixers["G"], hybrid.mixers["G"]
    assert (g.num_qk_heads, g.num_v_heads, g.head_k_dim) == (g0.num_qk_heads // 2, g0.num_v_heads // 2, g0.head_k_dim)
    assert t.mixers["A"].num_heads == hybrid.mixers["A"].num_heads // 2 and set(t.ffns) == {"D"}
    half = twin_config(hybrid, 64, max_layers=4, state=0.5)  # the state scale halves every per-head state dimension
    assert (half.mixers["G"].head_k_dim, half.mixers["G"].head_v_dim, half.mixers["A"].head_dim) == (16, 16, 16)
    assert half.mixers["G"].num_v_heads == g.num_v_heads
    own = twin_config(hybrid, 64, ffn="own")
    assert own.ffns["M"].num_experts == hybrid.ffns["M"].num_experts
    with pytest.raises(ValueError, match="ffn='moe'"):
        twin_config(hybrid, 64, ffn="moe")
    with pytest.raises(ValueError, match="recall tasks"):
        RecallSettings(tasks=("mqar", "poetry"))
    with pytest.raises(ValueError, match="state scale"):
        RecallSettings(states=(0.0,))


def test_run_recall_records_every_seed_and_the_state():
    s = RecallSettings(steps=3, seeds=2, batch_size=4, eval_examples=4, mqar_pairs=(2,), eval_mqar_pairs=(2,),
                       eval_seq_lens=(64,), eval_needle_lens=(128,), eval_copy_lengths=(8,), states=(0.5, 1.0))
    rec = run_recall(get_config("tiny-gdn"), s)
    for key, state in (("s0.5", 0.5), ("s1", 1.0)):
        meta = HybridLM(twin_config(get_config("tiny-gdn"), 64, state=state), device="meta")
        assert rec["twins"][key]["state_bytes"] == meta.cache_bytes(64, 1, dtype_bytes=4, state_bytes=4) == \
            meta.cache_bytes(4096, 1, dtype_bytes=4, state_bytes=4)  # a recurrent state: the same at any context
    assert rec["twins"]["s0.5"]["state_bytes"] < rec["twins"]["s1"]["state_bytes"]
    assert len(rec["seeds"]) == 2 and all(set(sd["s1"]) >= {"mqar", "needle", "copy"} for sd in rec["seeds"])
    assert rec["seeds"][0]["s1"]["final_loss"] != rec["seeds"][1]["s1"]["final_loss"]  # seeds differ
    assert rec["chance"] == {"mqar": 1 / 32, "needle": 1 / 32, "copy": 1 / 62}
    # a twin identical to one trained before (here: the same model again) is not trained twice
    again = run_recall(get_config("tiny-gdn"), s)
    assert again["seeds"][1]["s1"]["shared"] and again["seeds"][1]["s1"]["final_loss"] == rec["seeds"][1]["s1"]["final_loss"]
    capped = run_recall(get_config("tiny-gdn"), s, max_params=1000)
    assert "too large" in capped["skipped"]["s1"] and capped["seeds"] == [{}, {}]


ORDERING = RecallSettings(states=(0.5,), max_layers=2, seeds=2, steps=800, batch_size=16, tasks=("mqar",),
                          eval_mqar_pairs=(16,), eval_seq_lens=(64,), eval_examples=128)


@pytest.mark.slow
def test_recall_ordering_attention_hybrid_linear():
    """The default suite at reduced size (MQAR only, half batches, the small state): at 16 pairs attention and the
    hybrid beat all-linear by more than the seed spread, and attention is not below the hybrid beyond it."""
    torch.set_num_threads(2)
    acc = {}
    for name in ("tiny-attention", "tiny-hybrid", "tiny-gdn"):
        rec = run_recall(get_config(name), ORDERING)
        acc[name] = [sd["s0.5"]["mqar"]["P16@T64"] for sd in rec["seeds"]]
    print("MQAR accuracy at 16 pairs per seed:", acc)
    spread = {k: max(v) - min(v) for k, v in acc.items()}
    mean = {k: sum(v) / len(v) for k, v in acc.items()}
    for hi in ("tiny-attention", "tiny-hybrid"):  # each beats all-linear on every seed, by more than the spreads
        assert min(acc[hi]) - max(acc["tiny-gdn"]) > max(spread[hi], spread["tiny-gdn"]), acc
    # attention >= hybrid: at convergence the hybrid's one attention layer recalls as well (measured: both reach
    # 0.98-1.0 by 1000 steps of the default suite), so the two may tie, within the seed spread
    assert mean["tiny-attention"] >= mean["tiny-hybrid"] - max(spread.values()), acc
