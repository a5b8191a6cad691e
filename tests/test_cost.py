"""`hybridlm cost`: the accounting declared on the modules is held against direct counts (parameters on the
meta-device model, FLOPs from torch.utils.flop_counter on a real forward, cache bytes after a real prefill);
the serving model, the CLI table, --json against its schema, --plot and --article."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hybridlm.ops.causal_conv import grouped_conv_form

from hybridlm import AttentionConfig, HybridLM, get_config, preset_names
from hybridlm.cli import main
from hybridlm.analysis.cost_report import JSON_SCHEMA, REFERENCE, plot_cost
from hybridlm.analysis.accounting import Assumptions, expected_experts, parse_contexts, serving_point, weight_params_read
from hybridlm.analysis.hardware import HARDWARE, get_hardware
from hybridlm.interop.hf.base import config_from_hf

FULL_SCALE = [n for n in preset_names() if not n.startswith("tiny")]
TINY = ["tiny-attention", "tiny-gdn", "tiny-hybrid"]


# -- parameters -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FULL_SCALE)
def test_analytic_params_equal_meta_count(name):
    m = HybridLM(get_config(name), device="meta")
    assert m.num_params_analytic(mtp=True) == sum(p.numel() for p in m.parameters())
    assert m.num_params_analytic(mtp=False) == sum(p.numel() for n, p in m.named_parameters()
                                                   if not n.startswith("mtp."))


# published-configs.json: HF safetensors totals (qwen3_moe) and the caveats' active figures (emb + head).
@pytest.mark.parametrize("name, total, active", [
    ("qwen3-30b-a3b", 30_532_122_624, 3.353),
    ("qwen3-235b-a22b", 235_093_634_560, 22.191),
])
def test_qwen3_moe_presets_reproduce_checkpoints(name, total, active):
    m = HybridLM(get_config(name), device="meta")
    assert m.num_params() == m.num_params(mtp=False) == total
    assert round(m.active_params() / 1e9, 3) == active
    assert not m.config.zero_centered_norm and not m.config.mixers["A"].output_gate


def test_qwen3_moe_config_json(tmp_path):
    fields = next(m for m in json.loads(REFERENCE.read_text())["models"] if m["name"] == "Qwen3-30B-A3B")["fields"]
    cfg = config_from_hf(fields)
    assert HybridLM(cfg, device="meta").num_params() == 30_532_122_624
    (tmp_path / "config.json").write_text(json.dumps(fields))
    assert main(["cost", str(tmp_path), "--context", "4K"]) == 0


# -- FLOPs ----------------------------------------------------------------------------------------------------
def _baddbmm_inplace(inp, b1, b2, *args, out_shape=None, **kwargs) -> int:
    b, m, k = b1
    return 2 * b * m * k * b2[-1]


def _count(model, ids, cache=None, see_inplace=False) -> int:
    """FLOPs the counter sees in one forward. Math SDPA: the CPU flash kernel has no formula in the counter."""
    mapping = {torch.ops.aten.baddbmm_: _baddbmm_inplace} if see_inplace else {}
    with sdpa_kernel(SDPBackend.MATH), grouped_conv_form(), FlopCounterMode(display=False, custom_mapping=mapping) as fc, torch.no_grad():
        model(ids, cache=cache)
    return fc.get_total_flops()


def _tiny(name):
    torch.manual_seed(0)
    m = HybridLM(get_config(name)).eval()
    for b in m.layers:
        b.ffn.impl = "loop"  # the counter has no formula for torch._grouped_mm
    return m


@pytest.mark.parametrize("name", TINY)
def test_forward_flops_match_flop_counter(name):
    """The counter counts SDPA densely (it cannot see the causal mask), hence causal_skip=False. The chunked delta
    rule runs its state products (W S, K^T u, (Q K^T * D) U) as baddbmm with out=, which the counter sees (it has
    no formula for the in-place baddbmm_, so registering one changes nothing); Gated DeltaNet's count is within 1%
    (the rest: the triangular inverse, approximated as 2 C^2 / 3 per token and head, and conv padding)."""
    m, T = _tiny(name), 128
    ids = torch.randint(0, 256, (1, T))
    want = m.forward_flops(T, causal_skip=False)
    seen, seen_all = _count(m, ids), _count(m, ids, see_inplace=True)
    assert seen == seen_all and abs(want / seen - 1) < 0.01
    if name == "tiny-attention":
        assert want == seen  # projections, experts, router, head and SDPA: all visible, counted exactly


def test_decode_flops_match_flop_counter():
    """One decode step at context 40: attention-only exactly; Gated DeltaNet's step leaves the depthwise conv
    (an elementwise product-sum at T = 1) and the rank-1 state write (addcmul_) outside the counter."""
    for name in ("tiny-attention", "tiny-gdn"):
        m = _tiny(name)
        cache = m.new_cache()
        m.prefill(torch.randint(0, 256, (1, 39)), cache)
        seen = _count(m, torch.randint(0, 256, (1, 1)), cache)
        unseen = 0
        for b in m.layers:
            if not hasattr(b.mixer, "keys_seen"):
                c = b.mixer.cfg
                unseen += 2 * b.mixer.conv_dim * c.conv_kernel + c.num_v_heads * 2 * c.head_k_dim * c.head_v_dim
        assert m.decode_flops(40) == seen + unseen


def test_attention_flops_follow_the_window():
    c = AttentionConfig(num_heads=2, num_kv_heads=1, head_dim=8, sliding_window=5)
    c.validate("A", 16)
    from hybridlm.layers.mixers.attention import Attention
    attn = Attention(c, 16).to("meta")
    for L in range(1, 20):
        assert attn.mean_keys(L) == pytest.approx(sum(min(t, 5) for t in range(1, L + 1)) / L)
        assert attn.decode_flops(L) - attn.decode_flops(1) == 4 * 2 * 8 * (min(L, 5) - 1)
        assert attn.cache_tokens(L) == min(L, 4)


# -- cache bytes ----------------------------------------------------------------------------------------------
def _windowed():
    cfg = get_config("tiny-hybrid")
    return cfg.replace(mixers={**cfg.to_dict()["mixers"], "A": {**cfg.to_dict()["mixers"]["A"], "sliding_window": 16}})


@pytest.mark.parametrize("name", TINY + ["windowed"])
@pytest.mark.parametrize("dtype, nbytes", [(torch.float32, 4), (torch.bfloat16, 2)])
def test_cache_bytes_equal_memory_after_prefill(name, dtype, nbytes):
    torch.manual_seed(0)
    m = HybridLM(_windowed() if name == "windowed" else get_config(name)).to(dtype).eval()
    cache = m.new_cache()
    m.prefill(torch.randint(0, 256, (2, 77)), cache, chunk=32)
    # conv windows and KV in the model dtype; the delta-rule state is float32 whatever the model dtype
    assert cache.memory_by_kind() == m.cache_bytes_by_kind(77, batch=2, dtype_bytes=nbytes, state_bytes=4)
    with torch.no_grad():
        m(torch.randint(0, 256, (2, 1)), cache=cache)
    assert cache.memory_bytes() == m.cache_bytes(78, batch=2, dtype_bytes=nbytes, state_bytes=4)


# -- the serving model ----------------------------------------------------------------------------------------
def test_expected_experts():
    assert expected_experts(512, 10, 1) == pytest.approx(10)
    assert expected_experts(512, 10, 10_000) == pytest.approx(512)
    vals = [expected_experts(128, 8, b) for b in (1, 2, 8, 64)]
    assert vals == sorted(vals)


def test_serving_point_is_consistent():
    m = HybridLM(get_config("qwen3-next-80b-a3b"), device="meta")
    hw, a = get_hardware("h100"), Assumptions(usd_per_hour=2.0)
    p = serving_point(m, 131072, hw, a)
    weights, cache = m.num_params(mtp=False) * 2, p["cache_bytes"]["total"]
    assert cache == m.cache_bytes(131072, 1, 2, 4)
    usable = 0.9 * hw.hbm_capacity
    assert p["devices"] == math.ceil((weights + cache) / usable)
    assert weights + p["max_batch"] * cache <= p["devices"] * usable < weights + (p["max_batch"] + 1) * cache
    # one sequence: active weights (head included, embedding gathered) and its cache over the bandwidth
    bytes_1 = weight_params_read(m, 1) * 2 + p["cache_bytes"]["kv"] + 2 * p["cache_bytes"]["recurrent"]
    assert weight_params_read(m, 1) == m.active_params(embedding=False) + m.config.d_model
    assert p["decode"]["batch1_tokens_per_s"] == pytest.approx(p["devices"] * hw.hbm_bandwidth / bytes_1)
    per_dev = p["decode"]["tokens_per_s_per_device"]
    assert p["usd_per_million_output_tokens"] == pytest.approx(2.0 / (per_dev * 3600) * 1e6)
    # fp8 weights halve the weight bytes; a chip without fp8 matmuls falls back to its bf16 peak
    p8 = serving_point(m, 131072, hw, Assumptions(weights_dtype="fp8"))
    assert p8["weights_bytes"] * 2 == p["weights_bytes"]
    assert get_hardware("910b").peak_flops("fp8") == get_hardware("910b").bf16_flops


def test_hardware_table_cites_sources():
    for key in ("h100", "h200", "b200", "910b", "910c", "mi300x"):
        hw = HARDWARE[key]
        assert hw.source and hw.bf16_flops > 0 and hw.hbm_bandwidth > 0 and hw.hbm_capacity > 0
        assert hw.fp8_flops is None or hw.fp8_flops >= hw.bf16_flops


# -- CLI ------------------------------------------------------------------------------------------------------
def _validate(x, schema, where="$"):
    """The subset of JSON Schema that JSON_SCHEMA uses: type (or list of types), enum, properties, required, items."""
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    check = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
             "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
             "null": lambda v: v is None, "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
             "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert any(check[t](x) for t in types), f"{where}: {x!r} is not {types}"
    assert "enum" not in schema or x in schema["enum"], f"{where}: {x!r} not in {schema['enum']}"
    if isinstance(x, dict):
        for k in schema.get("required", []):
            assert k in x, f"{where}: missing {k!r}"
        for k, sub in schema.get("properties", {}).items():
            if k in x:
                _validate(x[k], sub, f"{where}.{k}")
    if isinstance(x, list) and "items" in schema:
        for i, v in enumerate(x):
            _validate(v, schema["items"], f"{where}[{i}]")


def test_cli_table_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "cost.json", tmp_path / "cost.png"
    assert main(["cost", "qwen3-next-80b-a3b", "tiny-hybrid", "--context", "8K,128K,1M", "--hardware", "h200",
                 "--usd-per-hour", "3", "--json", str(out_json), "--plot", str(out_png)]) == 0
    out = capsys.readouterr().out
    assert "79.674B" in out and "81.325B" in out and "3.875B" in out and "1M*" in out and "NVIDIA H200" in out
    assert "active: emb+head" in out and "active: head only" in out and "assumptions" in out
    report = json.loads(out_json.read_text())
    _validate(report, JSON_SCHEMA)
    try:  # the full validator too, where installed (it is not a dependency)
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        jsonschema.validate(report, JSON_SCHEMA)
    with pytest.raises(AssertionError):
        _validate({k: v for k, v in report.items() if k != "models"}, JSON_SCHEMA)
    nxt = report["models"][0]
    assert nxt["params"]["checkpoint_total"] == 81_324_862_720  # the HF checkpoint stores exactly the parameters
    assert nxt["params"]["total_with_mtp"] == 81_324_862_720 and [p["context"] for p in nxt["points"]] == \
        [8192, 131072, 1048576]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = plot_cost(["tiny-hybrid"], tmp_path / "again.png", [8192], Assumptions())
    labels = [(ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale(), ax.get_yscale()) for ax in fig.axes]
    assert labels == [("context (tokens)", "cache per sequence (bytes)", "log", "log"),
                      ("context (tokens)", "decode FLOPs per token", "log", "log")]


def test_cli_on_a_checkpoint_directory(tmp_path, capsys):
    torch.manual_seed(0)
    model = HybridLM(get_config("tiny-hybrid"))
    model.save_hf(tmp_path)
    assert main(["cost", str(tmp_path), "--context", "2K"]) == 0
    assert f"{model.num_params(mtp=False) / 1e9:.3f}B" in capsys.readouterr().out


def test_published_configs_ship_with_the_package():
    """cost --article and the preset tests read the packaged copy, so a fresh install needs nothing outside it;
    every entry names its sources."""
    import importlib.resources
    data = json.loads(importlib.resources.files("hybridlm").joinpath("resources/published-configs.json").read_text())
    assert len(data["models"]) >= 18
    assert all(m["sources"] and m["fields"] for m in data["models"])
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference" / "published-configs.json"
    if shared.is_file():  # beside the team's shared reference, the shipped copy must be the same facts
        assert json.loads(shared.read_text()) == data


def test_article(capsys):
    assert main(["cost", "--article"]) == 0
    out = capsys.readouterr().out
    for text in ("DeepSeek-V4-Flash", "284B / 13B", "1.6T / 49B", "Qwen3.6-35B-A3B", "35B / 3B", "Llama-4-Scout",
                 "109B / 17B", "400B / 17B", "34.661B / 35.505B", "3.455B"):
        assert text in out, text
    assert "not implemented yet" not in out  # every row is computed (tests/test_deepseek_v4.py checks V4's numbers)
    assert "284.332B / 290.942B" in out and "1572.997B / 1598.837B" in out and "13.800B" in out
    assert "400.712B" in out and "107.770B" in out  # Llama 4 rows computed (tests/test_llama4.py checks them)


@pytest.mark.parametrize("argv, match", [
    (["cost"], "give at least one"),
    (["cost", "tiny-hybrid", "--hardware", "tpu9"], "--hardware 'tpu9': unknown"),
    (["cost", "tiny-hybrid", "--context", "8Q"], "'8Q' is not a positive context"),
    (["cost", "tiny-hybrid", "--hbm-fraction", "1.5"], "hbm_fraction=1.5"),
])
def test_cost_user_errors(argv, match, capsys):
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_parse_contexts():
    assert parse_contexts("8K,128K,1M") == [8192, 131072, 1048576]
    assert parse_contexts("100") == [100]
