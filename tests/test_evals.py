"""The measurements of `hybridlm compare` on a model's own weights (the recall suite: test_recall.py): cache bytes
measured = analytic, the needle layout, and the lm-evaluation-harness adapter against direct computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridlm import HybridLM, get_config
from hybridlm.analysis.evals import _needle_case, speed
from hybridlm.interop.tokenizer import ByteTokenizer

TINY_FAMILIES = [n for n in ("tiny-hybrid", "tiny-attention", "tiny-gdn", "tiny-llama4", "tiny-deepseek",
                                  "tiny-deepseek-v4")]


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_cache_bytes_measured_equal_analytic(name):
    # odd contexts on purpose: 77 and 130 split Llama 4's 64-token chunks unevenly
    model = HybridLM(get_config(name))
    res = speed(model, [77, 130], decode_steps=1)
    for r in res.values():
        assert r["cache_bytes"] == r["cache_bytes_analytic"] > 0
    assert res["77"]["prefill_tok_s"] > 0 and res["130"]["decode_ms_per_token"] > 0


def test_needle_layout():
    tok = ByteTokenizer()
    filler = list(b"x" * 500)
    ids, a0, n = _needle_case(tok, filler, 200, 0.5, "4821", with_needle=True)
    text = bytes(ids).decode()
    assert len(ids) == 200 and n == 4 and text.endswith("The magic number is 4821")
    assert "The magic number is 4821.\n" in text[:150] and bytes(ids[a0:a0 + n]) == b"4821"
    ids2, _, _ = _needle_case(tok, filler, 200, 0.5, "4821", with_needle=False)
    assert len(ids2) == 200 and bytes(ids2).decode().count("4821") == 1


# -- the lm-evaluation-harness adapter -----------------------------------------------------------------------------
class _Req:  # the harness's Instance carries its arguments in .args; this stand-in does the same
    def __init__(self, *args):
        self.args = args


def _requests(kind, args_list):
    try:
        from lm_eval.api.instance import Instance
        return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args_list)]
    except ImportError:
        return [_Req(*a) for a in args_list]


def test_lm_eval_adapter_matches_the_model():
    from hybridlm.analysis.lm_eval_adapter import HybridLMEval
    model = HybridLM(get_config("tiny-hybrid")).eval()
    lm = HybridLMEval(model=model)
    reqs = _requests("loglikelihood", [("The cat sat on the", " mat"), ("def f(x):", " return x")])
    got = lm.loglikelihood(reqs)
    for (ctx, cont), (ll, greedy) in zip([r.args for r in reqs], got):
        ids = list(ctx.encode()) + list(cont.encode())
        logits = model(torch.tensor([ids[:-1]])).logits[0].float()
        logp = F.log_softmax(logits, -1)[len(ctx.encode()) - 1:]
        want = logp.gather(1, torch.tensor(list(cont.encode()))[:, None]).sum()
        assert ll == pytest.approx(float(want), abs=1e-4) and ll < 0
        assert greedy == bool((logp.argmax(-1) == torch.tensor(list(cont.encode()))).all())
    gens = lm.generate_until(_requests("generate_until", [("Hello", {"until": ["\x00zz"], "max_gen_toks": 6})]))
    want = model.generate(torch.tensor([list(b"Hello")]), max_new_tokens=6)[0, 5:].tolist()
    assert gens == [ByteTokenizer().decode(want)]
    # a stop string cuts the text where it first appears
    stop = gens[0][2:4]
    if stop:
        cut = lm.generate_until(_requests("generate_until", [("Hello", {"until": [stop], "max_gen_toks": 6})]))
        assert cut == [gens[0][:gens[0].index(stop)]]


def test_lm_eval_registry_and_simple_evaluate(tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.api.registry import get_model

    import hybridlm.analysis.lm_eval_adapter as adapter
    assert get_model("hybridlm") is adapter.HybridLMEval
    # a small local task: two loglikelihood questions from a local JSONL file
    data = tmp_path / "qa.jsonl"
    data.write_text('{"q": "1 + 1 =", "a": " 2"}\n{"q": "def f", "a": "(x):"}\n')
    (tmp_path / "tiny_local.yaml").write_text(
        "task: tiny_local\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: " + str(data) + "\n"
        "test_split: test\noutput_type: loglikelihood\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
        "metric_list:\n  - metric: perplexity\n  - metric: acc\n")
    from lm_eval.tasks import TaskManager
    model = HybridLM(get_config("tiny-hybrid")).eval()
    lm = adapter.HybridLMEval(model=model)
    res = lm_eval.simple_evaluate(model=lm, tasks=["tiny_local"], task_manager=TaskManager(include_path=str(tmp_path)))
    r = res["results"]["tiny_local"]
    direct = [lm.loglikelihood([_Req("1 + 1 =", " 2")])[0][0], lm.loglikelihood([_Req("def f", "(x):")])[0][0]]
    assert r["perplexity,none"] == pytest.approx(float(np.exp(-np.mean(direct))), rel=1e-4)
