"""The training loop: beats the unigram baseline, golden loss curve, bitwise resume, loss composition, expert
bias, NaN stop, errors before training, tokenizers, and the CLI whose flags mirror TrainConfig."""

import dataclasses
import json
import math
import random
import re

import pytest
import torch

from hybridlm import HybridLM, ModelConfig
from hybridlm.interop.checkpoint import Checkpoint
from hybridlm.cli import main
from hybridlm.training.data import Batches, pack, read_documents
from hybridlm.interop.tokenizer import ByteTokenizer
from hybridlm.training.config import NonFiniteLossError, TrainConfig
from hybridlm.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread

# -- shared helpers (imported by test_checkpoint.py and test_distributed.py) --------------------------------------
def small_config(**changes) -> ModelConfig:
    """Smaller than the tiny presets, same parts: GDN + attention, MoE (aux loss + expert bias) and MTP."""
    base = {
        "name": "test-small", "vocab_size": 256, "d_model": 48, "num_layers": 2, "mixer_pattern": "GA", "ffn_pattern": "M*2",
        "mixers": {"G": {"kind": "gated_deltanet", "num_qk_heads": 1, "num_v_heads": 2, "head_k_dim": 16,
                      "head_v_dim": 16, "chunk_size": 16},
                "A": {"kind": "attention", "num_heads": 2, "num_kv_heads": 1, "head_dim": 24, "rope_fraction": 0.5,
                      "output_gate": True}},
        "ffns": {"M": {"kind": "moe", "num_experts": 4, "top_k": 2, "expert_size": 32, "shared_size": 32,
                    "shared_gate": True, "aux_loss_coef": 0.01, "bias_update_rate": 0.01}},
        "tie_embeddings": True, "mtp_depth": 1, "max_seq_len": 256, "hf_model_type": "qwen3_next"}
    return ModelConfig.from_dict({**base, **changes})


def corpus(n_words: int = 6000, seed: int = 0) -> str:
    """Deterministic text with structure to learn (fixed phrases), independent of the machine."""
    rng = random.Random(seed)
    phrases = ["the hybrid model", "reads the text", "and predicts", "the next byte", "déjà vu", "x = 42\n",
               "def f(a, b):\n    return a + b\n"]
    return " ".join(rng.choice(phrases) for _ in range(n_words // 3))


def setup_run(tmp_path, model_changes=None, **train_kw) -> TrainConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model.json").write_text(small_config(**(model_changes or {})).to_json())
    if not (tmp_path / "data.txt").exists():
        (tmp_path / "data.txt").write_text(corpus())
    kw = {"model": str(tmp_path / "model.json"), "data": str(tmp_path / "data.txt"), "seq_len": 33, "batch_size": 4,
              "steps": 20, "warmup_steps": 5, "lr": 3e-3, "log_every": 1, "eval_every": 10, "save_every": 10, "val_sequences": 8,
              "progress": False, "out": str(tmp_path / "run"), "device": "cpu"}
    kw.update(train_kw)
    return TrainConfig(**kw)


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# -- learning ----------------------------------------------------------------------------------------------------
def test_tiny_preset_beats_the_unigram_baseline_on_the_builtin_corpus(tmp_path):
    # tiny-attention (~4.6M parameters), 250 steps x 4 x 64 bytes of this interpreter's stdlib sources.
    # The unigram baseline on these validation targets is 3.15 nats/byte (Python 3.11 stdlib); measured after
    # training: 2.38. Asserted: at least 0.5 nats/byte (0.72 bits/byte) below the baseline.
    res = train(TrainConfig(model="tiny-attention", steps=250, seq_len=64, batch_size=4, warmup_steps=20, lr=3e-3,
                            corpus_max_bytes=1_000_000, val_sequences=64, log_every=50, eval_every=0,
                            save_every=0, progress=False, out=str(tmp_path / "run"), device="cpu"))
    final = res.val[-1]
    print(f"val {final} unigram {res.unigram_loss:.4f} tok/s {res.tokens_per_s:.0f}")
    assert 3.0 < res.unigram_loss < 3.4
    assert final["val_loss"] < res.unigram_loss - 0.5, (final, res.unigram_loss)
    assert final["val_bpb"] == pytest.approx(final["val_loss"] / math.log(2))  # bytes: one byte per token


# Golden curve: tiny-hybrid, seed 0, corpus() above, seq_len 32, batch 2, AdamW lr 3e-3, warmup 5 of 20 steps.
GOLDEN_TINY_HYBRID = [  # regenerated when the routed experts took per-expert generators (sharded init, issue 18)
    7.245946, 6.475088, 6.341406, 5.627973, 5.717160, 4.770339, 4.139060, 4.264216, 3.648373, 3.254907,
    3.398405, 3.347656, 2.716400, 2.809620, 2.747820, 2.519295, 2.536390, 2.464252, 2.182779, 2.285720]


def test_golden_loss_curve_tiny_hybrid(tmp_path):
    (tmp_path / "data.txt").write_text(corpus())
    res = train(TrainConfig(model="tiny-hybrid", data=str(tmp_path / "data.txt"), seq_len=32, batch_size=2,
                            steps=20, warmup_steps=5, lr=3e-3, log_every=20, eval_every=0, save_every=0,
                            val_fraction=0.0, progress=False, out=str(tmp_path / "run"), device="cpu"))
    assert len(res.losses) == 20
    # fp32 on CPU. BLAS kernels differ between CPUs by ~1e-7 per step, and training amplifies that: on a second
    # Xeon the curve agreed to 2e-6 over the first 8 steps, 1.2e-4 by step 12 and 3.7e-3 by step 20 (measured). So
    # the first 10 steps are held tight (a changed init, schedule or loss moves them by >1e-3 from step 2) and the
    # rest within the amplified machine-to-machine spread.
    got, want = torch.tensor(res.losses), torch.tensor(GOLDEN_TINY_HYBRID)
    torch.testing.assert_close(got[:10], want[:10], rtol=0, atol=1e-4)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-2)
    assert res.losses[-1] < res.losses[0] - 1.0


# -- resume ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_bitwise_identical(tmp_path, optimizer):
    # grad_accum, eval, the expert bias and the MoE aux loss all on; 20 steps straight vs 10 + resume + 10.
    straight = train(setup_run(tmp_path / "a", optimizer=optimizer, grad_accum=2))
    first = train(setup_run(tmp_path / "b", optimizer=optimizer, grad_accum=2, stop_at=10))
    second = train(setup_run(tmp_path / "b", optimizer=optimizer, grad_accum=2, resume=True))
    assert len(first.losses) == 10 and second.first_step == 11
    assert first.losses + second.losses == straight.losses  # exact float equality, loss for loss
    assert [r["loss"] for r in metrics(tmp_path / "b" / "run") if "loss" in r] == straight.losses
    a = Checkpoint.open(tmp_path / "a" / "run").model_state()
    b = Checkpoint.open(tmp_path / "b" / "run").model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["layers.0.ffn.expert_bias"].abs().sum() > 0  # the bias really moved, and resumed with the run


def test_loss_is_ce_plus_aux_plus_weighted_mtp(tmp_path):
    cfg = setup_run(tmp_path, steps=1, save_every=0, eval_every=0, aux_loss_weight=1.0)
    res = train(cfg)
    # Independent reference: the model's own loss on the first batch the seeded order serves.
    data = pack(read_documents(cfg.data), ByteTokenizer(), cfg.seq_len, cfg.val_fraction)
    x = data.train[Batches(len(data.train), cfg.seed).next(cfg.batch_size)]
    model = HybridLM(small_config(), device="meta")
    model.to_empty(device="cpu")
    model.init_weights(seed=cfg.seed)
    with torch.no_grad():
        out = model(x, labels=x)
    aux_mtp = model.mtp.block.ffn.aux_loss
    assert res.losses[0] == pytest.approx(float(out.loss), rel=1e-6)
    assert float(out.loss) == pytest.approx(float(out.ce_loss + out.aux_loss + aux_mtp + 0.3 * out.mtp_loss), rel=1e-6)
    rec = metrics(tmp_path / "run")[0]
    assert rec["ce"] == pytest.approx(float(out.ce_loss), rel=1e-6)
    assert rec["mtp"] == pytest.approx(float(out.mtp_loss), rel=1e-6)
    # Weights are honoured: aux off and MTP weight 1.
    res2 = train(setup_run(tmp_path / "w", steps=1, save_every=0, eval_every=0, aux_loss_weight=0.0,
                           mtp_loss_weight=1.0))
    assert res2.losses[0] == pytest.approx(float(out.ce_loss + out.mtp_loss), rel=1e-6)


def test_expert_bias_moves_every_step_only_when_enabled(tmp_path):
    on = train(setup_run(tmp_path / "on", steps=3, save_every=1, eval_every=0))
    off = train(setup_run(tmp_path / "off", steps=3, save_every=1, eval_every=0, bias_update_rate=0.0))
    del on, off
    biases = [Checkpoint.open(tmp_path / "on" / "run" / f"step_00000{s}").model_state()["layers.1.ffn.expert_bias"]
              for s in (1, 2, 3)]
    # sign updates of +-0.01 per step (0 for an exactly average expert): each step moves every bias by <= 0.01
    assert biases[0].abs().max() == pytest.approx(0.01)
    assert not torch.equal(biases[0], biases[1]) and not torch.equal(biases[1], biases[2])
    assert (biases[2] - biases[1]).abs().max() <= 0.01 + 1e-7
    off_bias = Checkpoint.open(tmp_path / "off" / "run").model_state()["layers.1.ffn.expert_bias"]
    assert torch.count_nonzero(off_bias) == 0


# -- what the user sees ------------------------------------------------------------------------------------------
def test_step_lines_metrics_and_validation(tmp_path, capsys):
    train(setup_run(tmp_path, steps=4, log_every=2, eval_every=2, save_every=0))
    out = capsys.readouterr().out
    config = json.loads(out[:out.index("\n}\n") + 2])  # the config as JSON at start
    assert config["train"]["steps"] == 4 and config["model"]["d_model"] == 48
    lines = re.findall(r"^step \d{5} \| loss \d+\.\d{4} \| lr \d\.\d\de[-+]\d\d \| gnorm \d+\.\d\d \| "
                       r"tok/s \d+ \| imb \d+\.\d\d$", out, flags=re.MULTILINE)
    assert [ln[:10] for ln in lines] == ["step 00002", "step 00004"]
    assert len(re.findall(r"^val  \d{5} \| loss \d+\.\d{4} \| bpb \d+\.\d{4}$", out, flags=re.MULTILINE)) == 2
    recs = metrics(tmp_path / "run")
    steps = [r for r in recs if "loss" in r]
    vals = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in steps] == [2, 4] and [r["step"] for r in vals] == [2, 4]
    assert set(steps[0]) == {"step", "loss", "ce", "aux", "mtp", "lr", "gnorm", "tok_s", "imbalance"}
    assert steps[0]["imbalance"] >= 1.0 and steps[0]["tok_s"] > 0
    assert vals[0]["val_bpb"] == pytest.approx(vals[0]["val_loss"] / math.log(2))


def test_tensorboard_flag(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs the tensorboard package"):
            train(setup_run(tmp_path, steps=1, tensorboard=True))
        assert not (tmp_path / "run").exists()  # refused before anything was written
        return
    train(setup_run(tmp_path, steps=2, tensorboard=True))
    assert any((tmp_path / "run" / "tb").iterdir())


# -- failures ----------------------------------------------------------------------------------------------------
def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"step 7: loss is nan .*Last good checkpoint: .*step_000005"):
        train(setup_run(tmp_path, steps=10, save_every=5, debug_nan_step=7))
    ck = Checkpoint.open(tmp_path / "run")
    assert ck.step == 5 and ck.load_model() is not None
    assert max(r["step"] for r in metrics(tmp_path / "run")) == 6  # nothing recorded for the bad step


def test_nan_via_cli_exits_2_with_the_message(tmp_path, capsys):
    cfg = setup_run(tmp_path)
    rc = main(["train", cfg.model, "--data", cfg.data, "--seq-len", "33", "--batch-size", "2", "--steps", "3",
               "--out", cfg.out, "--debug-nan-step", "2", "--no-progress", "--device", "cpu"])
    assert rc == 2
    assert "hybridlm train: error: step 2: loss is nan" in capsys.readouterr().err


@pytest.mark.parametrize("change, error", [
    ({"data": "/no/such/dir"}, r"--data /no/such/dir: no such file or directory"),
    ({"data": "EMPTY"}, r"empty\.txt: empty"),
    ({"seq_len": 200, "data": "SHORT"}, r"has 300 tokens: shorter than 2 sequence\(s\) of seq_len=200"),
    ({"tokenizer": "BIGTOK"}, r"has vocab_size 3\d\d > the model's vocab_size 256; pass --vocab-size"),
    ({"batch_size": 3, "grad_accum": 2}, r"batch_size=3 must be a multiple of world size 1 x grad_accum=2"),
    ({"seq_len": 300}, r"seq_len=300 exceeds the model's max_seq_len=256"),
    ({"model": "no-such-preset"}, r"unknown preset 'no-such-preset'"),
    ({"batch_size": 0}, r"TrainConfig.batch_size=0: must be a positive integer"),
])
def test_bad_input_fails_before_training(tmp_path, change, error):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("y" * 300)
    from hybridlm.training.data import train_bpe
    train_bpe([corpus()], 320, tmp_path / "tok" / "tokenizer.json")
    subst = {"EMPTY": str(tmp_path / "empty.txt"), "SHORT": str(tmp_path / "short.txt"),
             "BIGTOK": str(tmp_path / "tok")}
    change = {k: subst.get(v, v) if isinstance(v, str) else v for k, v in change.items()}
    with pytest.raises(ValueError, match=error):
        train(setup_run(tmp_path, **change))
    assert not (tmp_path / "run" / "latest").exists()


def test_resume_with_a_changed_flag_says_so_and_uses_it(tmp_path, capsys):
    train(setup_run(tmp_path, steps=4, stop_at=2))
    capsys.readouterr()
    train(setup_run(tmp_path, steps=4, lr=1e-3, resume=True))
    assert "resuming with changed settings: lr 0.003 -> 0.001" in capsys.readouterr().out
    step3 = next(r for r in metrics(tmp_path / "run") if r["step"] == 3 and "lr" in r)
    assert step3["lr"] == pytest.approx(1e-3 * 3 / 5)  # the new peak, still in warmup (3 of 5)


def test_aux_loss_weight_goes_onto_the_model_config_and_may_change_on_resume(tmp_path, capsys):
    # The trainer's loss is the model's (HybridLM.total_loss): --aux-loss-weight is mapped onto the model config,
    # saved with it, and (a training setting) reported rather than refused when it changes on resume.
    train(setup_run(tmp_path, steps=4, stop_at=2, aux_loss_weight=0.5))
    assert Checkpoint.open(tmp_path / "run").model_config().aux_loss_weight == 0.5
    capsys.readouterr()
    train(setup_run(tmp_path, steps=4, aux_loss_weight=0.25, resume=True))
    assert "aux_loss_weight 0.5 -> 0.25" in capsys.readouterr().out
    assert Checkpoint.open(tmp_path / "run").model_config().aux_loss_weight == 0.25


def test_existing_run_needs_resume(tmp_path):
    train(setup_run(tmp_path, steps=1))
    with pytest.raises(ValueError, match="already holds a run .*pass --resume"):
        train(setup_run(tmp_path, steps=1))
    with pytest.raises(ValueError, match=r"--resume: the model config differs .* in \['d_model'"):
        train(setup_run(tmp_path, model_changes={"d_model": 64}, steps=2, resume=True))


# -- tokenizers --------------------------------------------------------------------------------------------------
def test_bpe_run_saves_its_tokenizer_and_generates(tmp_path, capsys):
    train(setup_run(tmp_path, tokenizer="bpe", vocab_size=320, steps=2, seq_len=16))
    ck = Checkpoint.open(tmp_path / "run")
    tok = ck.tokenizer()
    assert ck.tokenizer_file() is not None and tok.vocab_size <= 320 and ck.model_config().vocab_size == 320
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the hybrid", "--max-new-tokens", "4"]) == 0
    # A tokenizer.json beside a Hugging Face checkpoint: a directory spec.
    train(setup_run(tmp_path / "hf", tokenizer=str(ck.path), vocab_size=320, steps=1, seq_len=16))
    assert Checkpoint.open(tmp_path / "hf" / "run").tokenizer().encode("abc") == tok.encode("abc")


# -- CLI ---------------------------------------------------------------------------------------------------------
def test_cli_flags_mirror_train_config(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        if f.name != "model":
            assert "--" + f.name.replace("_", "-") in help_text, f.name
    cfg = setup_run(tmp_path)
    (tmp_path / "tc.json").write_text(json.dumps({"steps": 3, "lr": 1e-3, "seq_len": 16, "batch_size": 2}))
    assert main(["train", cfg.model, "--data", cfg.data, "--train-config", str(tmp_path / "tc.json"), "--steps", "2",
                 "--out", cfg.out, "--no-progress", "--device", "cpu", "--log-every", "1"]) == 0
    saved = Checkpoint.open(tmp_path / "run").json("train_config.json")
    assert saved["steps"] == 2 and saved["lr"] == 1e-3 and saved["seq_len"] == 16  # flag beats file beats default
    assert saved == TrainConfig.from_dict(saved).to_dict()
    rc = main(["train", cfg.model, "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "r2")])
    assert rc == 2 and "hybridlm train: error: --data" in capsys.readouterr().err


def test_trained_checkpoint_generates_like_the_api(tmp_path, capsys):
    train(setup_run(tmp_path, steps=2))
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "run"), "--prompt", "the ", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    model = Checkpoint.open(tmp_path / "run").load_model().eval()
    want = model.generate(torch.tensor([list(b"the ")]), max_new_tokens=6)[0, 4:].tolist()
    assert out == "the " + bytes(want).decode("utf-8", errors="replace") + "\n"
    assert main(["info", str(tmp_path / "run")]) == 0
    assert "test-small" in capsys.readouterr().out
