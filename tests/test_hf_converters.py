"""The converter registry: every model_type resolves to one converter, and each converter's checkpoint total
(parameters + stored buffers + the copies its format keeps) matches the published checkpoints, on the meta device."""

import pytest

from hybridlm import HybridLM
from hybridlm.interop.hf import checkpoint_total, converter_for, converters
from hybridlm.presets import get_config, preset_names
from hybridlm.registry import CONVERTERS


@pytest.mark.parametrize(("preset", "total"), [("deepseek-v3", 684_489_845_504), ("kimi-k2", 1_026_408_232_448)])
def test_checkpoint_total_of_published_models(preset, total):
    cfg = get_config(preset)
    assert checkpoint_total(cfg) == total
    assert HybridLM(cfg, device="meta").num_params() < total  # the routing biases and the MTP copies add to it


def test_every_preset_has_a_total_or_none():
    for name in preset_names():
        cfg = get_config(name)
        total = checkpoint_total(cfg)
        if cfg.hf_model_type is None:
            assert total is None, name
        else:
            assert total >= HybridLM(cfg, device="meta").num_params(), name


def test_registry():
    assert set(CONVERTERS) >= {"qwen3_next", "qwen3_5_moe", "qwen3_5", "qwen3_moe", "deepseek_v3", "kimi_k2",
                               "deepseek_v32", "deepseek_v4", "llama4", "llama4_text"}
    assert len(converters()) == 4
    for conv in converters():
        assert all(converter_for(t) is conv for t in conv.model_types)
    assert not converter_for("qwen3_moe").reads_weights("qwen3_moe")  # config only
