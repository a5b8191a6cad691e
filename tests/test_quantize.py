"""ExpertsInt8 (docs/quantize.md): the per-row int8 round trip and its error bound, a quantised tiny MoE model (memory,
accounting, untouched non-expert tensors, logits against a fp32 reference with the dequantised weights and against
the fp32 model), training refused, and --quantize on cost, generate and compare."""

import copy
import json
from types import SimpleNamespace

import pytest
import torch

from hybridlm import HybridLM, get_config
from hybridlm.analysis.accounting import Assumptions
from hybridlm.analysis.compare import CompareConfig, logit_error, quantize_models, run_model
from hybridlm.analysis.cost_report import JSON_SCHEMA, experts_int8_weights
from hybridlm.cli import build_parser, main
from hybridlm.cli.commands.compare import config_from_args
from hybridlm.layers.ffn.dense import DenseFFNConfig
from hybridlm.layers.ffn.moe import MoE, quantize_experts_int8, tensor_bytes
from hybridlm.ops.int8 import dequantize_rows, quantize_rows

EXPERTS = ("gate_up_proj", "down_proj")


def _moes(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MoE)]


# -- the format -------------------------------------------------------------------------------------------------
def test_rows_round_trip_within_half_a_step():
    """|w - Q s| <= s/2 per row, s = max|w|/127 (an independent max); the fp32 division and product add at most
    127 s 2^-24 each, hence the bound s (1/2 + 2^-16). Rows of very different scale, an outlier, a zero row."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 37, 61, generator=g) * torch.logspace(-4, 1, 37).unsqueeze(-1)
    w[1, 5] = 0.0
    w[2, 7, 3] = 40.0
    q, s = quantize_rows(w)
    assert q.dtype == torch.int8 and q.shape == w.shape and s.dtype == torch.float32 and s.shape == (3, 37)
    assert torch.equal(s, w.abs().max(-1).values / 127)
    assert int(q.abs().max()) == 127 and bool((q.abs().amax(-1)[s > 0] == 127).all())  # every row uses the range
    deq = dequantize_rows(q, s)
    assert bool(((w - deq).abs() <= s.unsqueeze(-1) * (0.5 + 2.0 ** -16)).all())
    assert torch.equal(deq[1, 5], torch.zeros(61)) and torch.equal(q[1, 5], torch.zeros(61, dtype=torch.int8))
    assert dequantize_rows(q, s, torch.bfloat16).dtype == torch.bfloat16


# -- a quantised model ----------------------------------------------------------------------------------------
def _frozen_routing(fp, qm, ids):
    """qm's logits with every MoE's routing (scores, experts, gates) replayed from fp's forward on the same ids: the
    error of the quantised expert matmuls alone, without the routing flips they cause."""
    saved, pairs = {}, list(zip([m for _, m in _moes(fp)], [m for _, m in _moes(qm)]))
    for i, (a, _) in enumerate(pairs):
        a.route = lambda x, t=None, a=a, i=i: saved.setdefault(i, type(a).route(a, x, t))
    with torch.no_grad():
        fp(ids)
    for i, (_, b) in enumerate(pairs):
        b.route = lambda x, t=None, i=i: saved[i]
    try:
        with torch.no_grad():
            return qm(ids).logits
    finally:
        for a, b in pairs:
            del a.route, b.route


@pytest.mark.parametrize("name, moe_layers", [("tiny-hybrid", 8 + 1), ("tiny-deepseek", 7 + 1)])  # + the MTP's
def test_quantised_model(name, moe_layers):
    torch.manual_seed(0)
    fp = HybridLM(get_config(name)).eval()
    qm = copy.deepcopy(fp)
    counts = (fp.num_params(), fp.num_params(mtp=False), fp.active_params())
    before = tensor_bytes(qm)
    q = quantize_experts_int8(qm)
    # accounting unchanged; the bytes drop by 3 per expert weight (fp32 -> int8) less 4 per fp32 scale
    assert (qm.num_params(), qm.num_params(mtp=False), qm.active_params()) == counts
    assert q.moe_layers == len(_moes(fp)) == moe_layers and q.bytes_before == before
    assert q.expert_weights == sum(getattr(m, n).numel() for _, m in _moes(fp) for n in EXPERTS)
    assert q.scales == sum(m.cfg.num_experts * (2 * m.cfg.expert_size + m.d_model) for _, m in _moes(fp))
    assert before - tensor_bytes(qm) == q.bytes_before - q.bytes_after == 3 * q.expert_weights - 4 * q.scales
    # only the routed experts changed: every other tensor is bit-identical (router, shared expert, dense FFNs, ...)
    ref_sd, got_sd = fp.state_dict(), qm.state_dict()
    experts = {f"{n}.{t}" for n, _ in _moes(fp) for t in EXPERTS}
    scales = {f"{n}.{t.replace('_proj', '_scale')}" for n, _ in _moes(fp) for t in EXPERTS}
    assert set(got_sd) == set(ref_sd) | scales
    assert all(torch.equal(got_sd[k], v) and got_sd[k].dtype == v.dtype for k, v in ref_sd.items() if k not in experts)
    for n, m in _moes(qm):
        assert m.gate_up_proj.dtype == m.down_proj.dtype == torch.int8 and not m.gate_up_proj.requires_grad
        assert m.gate_up_scale.shape == m.gate_up_proj.shape[:2] and m.down_scale.shape == m.down_proj.shape[:2]
        assert m.shared is None or m.shared.down_proj.weight.dtype == torch.float32
    if name == "tiny-deepseek":  # its first FFN is dense: untouched (and not an MoE)
        assert not isinstance(qm.layers[0].ffn, MoE)
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = fp(ids).logits, qm(ids).logits
    # independent check: the dequantised weights put into a fp32 copy give the very same logits
    deq = copy.deepcopy(fp)
    for (_, a), (_, b) in zip(_moes(deq), _moes(qm)):
        for t in EXPERTS:
            getattr(a, t).data = dequantize_rows(getattr(b, t), getattr(b, t.replace("_proj", "_scale")))
    with torch.no_grad():
        deq_auto = deq(ids).logits  # the fp path's own choice (grouped matmul on this CPU): equal within rounding
        for _, a in _moes(deq):
            a.impl = "loop"
        assert torch.equal(deq(ids).logits, got)
    torch.testing.assert_close(deq_auto, got, rtol=1e-5, atol=1e-5)
    # against fp32, the routing held fixed: weight error eps = ||W - W~|| / ||W|| (measured, ~0.7% for these
    # Gaussian rows: (max|w| / 127) / sqrt(12) over the row's rms); an expert output carries about sqrt(3) eps
    # (gate, up, down); the residual stream and the head dilute it. So rms(logit error) <= sqrt(3) eps std(logits),
    # and the largest of the 2*64*256 errors <= 4.5 x that bound (a Gaussian's maximum over ~3e4 draws).
    eps = max(((getattr(a, t) - getattr(b, t)).norm() / getattr(a, t).norm()).item()
              for (_, a), (_, b) in zip(_moes(fp), _moes(deq)) for t in EXPERTS)
    assert 0.003 < eps < 0.01
    e = logit_error(ref, _frozen_routing(fp, qm, ids), ids)
    assert e["rms_over_std"] < 3 ** 0.5 * eps and e["max_abs_over_std"] < 4.5 * 3 ** 0.5 * eps, (e, eps)
    # free routing: a near-tied router at random init flips some top-k choices, so a few logits move more
    e = logit_error(ref, got, ids)
    assert e["rms_over_std"] < 0.1 and e["top1_agreement"] > 0.9, e


def test_memory_drop_equals_costs_figure_in_bf16():
    """tiny-llama4 (no MTP): the bytes measured on a bf16 model drop by what cost computes from the config."""
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-llama4")).to(torch.bfloat16).eval()
    q = quantize_experts_int8(model)
    analytic = experts_int8_weights(HybridLM(get_config("tiny-llama4"), device="meta"), Assumptions())
    assert q.bytes_before - q.bytes_after == analytic["saved_bytes"] == q.expert_weights - 4 * q.scales > 0
    assert analytic["weights_bytes"] - analytic["weights_bytes_quantized"] == analytic["saved_bytes"]
    assert quantize_experts_int8(model).moe_layers == 0  # already int8: nothing more to do


def test_training_a_quantised_model_is_refused():
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-deepseek"))
    quantize_experts_int8(model)
    ids = torch.randint(0, 256, (1, 16))
    model.train()
    with pytest.raises(ValueError, match="int8 .* cannot be trained"):
        model(ids, labels=ids).loss.backward()
    with torch.no_grad():  # inference is fine, in either mode
        model(ids)
    model.eval()(ids)


# -- the commands -----------------------------------------------------------------------------------------------
def test_cost_reports_the_weight_memory(tmp_path, capsys):
    from test_cost import _validate
    path = tmp_path / "c.json"
    assert main(["cost", "tiny-hybrid", "qwen3-next-80b-a3b", "--context", "2K", "--quantize", "experts-int8",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "weights experts-int8" in out and "77,309,411,328" in out and "(48.3%)" in out
    report = json.loads(path.read_text())
    _validate(report, JSON_SCHEMA)
    for m in report["models"]:  # 2 B -> 1 B per routed expert weight, + 4 B per output channel scale
        meta = HybridLM(get_config(m["spec"]), device="meta")
        moes = [b.ffn for b in meta.layers if isinstance(b.ffn, MoE)]
        E, I, D = moes[0].cfg.num_experts, moes[0].cfg.expert_size, meta.config.d_model
        q = m["quantize"]
        assert q["expert_weights"] == len(moes) * E * 3 * I * D and q["scales"] == len(moes) * E * (2 * I + D)
        assert q["weights_bytes"] == 2 * m["params"]["total_without_mtp"] == m["points"][0]["weights_bytes"]
        assert q["saved_bytes"] == q["expert_weights"] - 4 * q["scales"] == q["weights_bytes"] - \
            q["weights_bytes_quantized"]
    assert main(["cost", "tiny-hybrid", "--context", "2K", "--json", str(path)]) == 0
    assert "quantize" not in json.loads(path.read_text())["models"][0]  # only when asked
    assert "experts-int8" not in capsys.readouterr().out


def test_generate_with_int8_experts(tmp_path, capsys):
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-deepseek")).eval()
    model.save_hf(tmp_path)
    assert main(["generate", str(tmp_path), "--prompt", "abc", "--max-new-tokens", "5", "--quantize",
                 "experts-int8"]) == 0
    captured = capsys.readouterr()
    quantize_experts_int8(model)
    want = model.generate(torch.tensor([list(b"abc")]), max_new_tokens=5)[0, 3:].tolist()
    assert captured.out == "abc" + bytes(want).decode("utf-8", errors="replace") + "\n"
    assert "experts-int8: 3,145,728 routed expert weights in 8 MoE layers to int8" in captured.err


@pytest.mark.parametrize("argv, match", [
    (["cost", "tiny-hybrid", "--quantize", "experts-int8", "--weights-dtype", "fp8"], "--weights-dtype fp8"),
    (["cost", "--article", "--quantize", "experts-int8"], "--quantize applies to the models given"),
])
def test_user_errors_exit_2(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_generate_refuses_a_model_without_experts(tmp_path, capsys):
    path = tmp_path / "dense.json"
    get_config("tiny-gdn").replace(name="dense", ffns={"M": DenseFFNConfig(intermediate_size=128)}).to_json(path)
    assert main(["generate", str(path), "--prompt", "a", "--quantize", "experts-int8"]) == 2
    assert "--quantize experts-int8: dense has no routed experts" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["cost", "tiny-hybrid"], ["generate", "tiny-hybrid", "--prompt", "a"],
                                     ["compare", "tiny-hybrid"]])
def test_an_unknown_quantisation_names_the_option(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(command + ["--quantize", "int4"])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert e.value.code == 2 and len(errors) == 1
    assert "argument --quantize: 'int4' is not a quantisation hybridlm builds; the one there is: experts-int8" \
        in errors[0]


def test_compare_quantises_what_it_evaluates(tmp_path, monkeypatch):
    args = build_parser().parse_args(["compare", "tiny-hybrid", "--quick", "--quantize", "experts-int8"])
    assert config_from_args(args).quantize == "experts-int8"
    assert config_from_args(build_parser().parse_args(["compare", "--quick"])).quantize is None
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-hybrid").replace(name="tiny-q")).eval()
    model.save_hf(tmp_path / "hf")
    seen = []

    def evaluate(seeds, cfg, progress=None):  # the evaluations must see the quantised model
        seen.append([m.layers[0].ffn.is_int8 for m, _, _ in seeds])
        return {}

    monkeypatch.setattr("hybridlm.analysis.compare.evaluate_model", evaluate)
    cfg = CompareConfig.quick(out=str(tmp_path / "o"), quantize="experts-int8", corpus_max_bytes=100_000)
    res = run_model(str(tmp_path / "hf"), cfg, tmp_path / "o", "tiny-q")
    assert seen == [[True]] and res["settings"]["quantize"] == "experts-int8"
    q = json.loads((tmp_path / "o" / "runs" / "tiny-q" / "result.json").read_text())["quantize"]
    assert q["method"] == "experts-int8" and q["moe_layers"] == 9 and len(q["seeds"]) == 1
    assert q["sequences"] == 8 and q["tokens_per_sequence"] == cfg.seq_len
    assert 0 < q["rms_over_std"] < 0.1 and q["seeds"][0]["bytes_after"] < q["seeds"][0]["bytes_before"]
    # a model without routed experts is evaluated as it is
    dense = HybridLM(get_config("tiny-gdn").replace(ffns={"M": DenseFFNConfig(intermediate_size=128)}))
    skipped = quantize_models([(dense, None, SimpleNamespace(val=torch.zeros(2, 8, dtype=torch.long)))],
                              "experts-int8")
    assert skipped == {"method": "experts-int8", "skipped": "no routed experts (no MoE layer): evaluated unquantised"}


def test_report_shows_the_logit_error_and_a_quantised_model_is_not_saved(tmp_path):
    model = HybridLM(get_config("tiny-hybrid"))
    quantize_experts_int8(model)
    with pytest.raises(ValueError, match="routed experts are int8"):
        model.save_hf(tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    q = {"moe_layers": 8, "max_abs_over_std": 0.0496, "rms_over_std": 0.0071, "top1_agreement": 0.998,
         "ce_increase": 1e-5, "seeds": [{"bytes_before": 18_650_880, "bytes_after": 8_144_640}]}
    summary = {"models": [{"label": "tiny-hybrid", "status": "ok", "quantize": q},
                          {"label": "tiny-gdn", "status": "ok", "quantize": {"skipped": "no routed experts"}}]}
    from hybridlm.analysis.report import _quantize
    lines = _quantize(summary)
    assert lines[0] == "### ExpertsInt8: logits against fp32"
    row = next(ln for ln in lines if ln.startswith("| tiny-hybrid |"))
    assert "0.0496" in row and "18,650,880 -> 8,144,640" in row
    assert any(ln.startswith("| tiny-gdn | no routed experts") for ln in lines)
