"""The converter registry: every model_type resolves to one converter, and each converter's checkpoint total
(parameters + stored buffers + the copies its format keeps) matches the published checkpoints, on the meta device."""

import pytest
import torch
from safetensors.torch import load_file

from hybridlm import HybridLM
from hybridlm.interop.hf import checkpoint_total, converter_for, converters, save_target
from hybridlm.presets import get_config, preset_names
from hybridlm.registry import CONVERTERS


@pytest.mark.parametrize(("preset", "total"), [
    ("deepseek-v3", 684_489_845_504), ("kimi-k2", 1_026_408_232_448),  # the HF safetensors logical totals
    ("deepseek-v4-flash", 290_944_616_402), ("deepseek-v4-pro", 1_598_839_674_782),
    ("kimi-linear-48b-a3b", 49_122_681_728)])
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
    assert set(CONVERTERS) >= {"jamba", "mamba2", "nemotron_h", "granitemoehybrid", "falcon_h1", "minimax", "kimi_linear"}
    # one converter object per format file, each registered under all of its model_types
    assert len(converters()) == len({id(c) for c in CONVERTERS.values()}) == 11
    for conv in converters():
        assert all(converter_for(t) is conv for t in conv.model_types)
    assert not converter_for("qwen3_moe").reads_weights("qwen3_moe")  # config only


# (tiny-llama4 is left out: its R and N mixers differ in floor_scale, which the llama4_text format cannot hold;
# tests/families/test_llama4.py round-trips transformers' own tiny Llama 4.)
@pytest.mark.parametrize(("preset", "model_type"), [("tiny-hybrid", "qwen3_next"), ("tiny-deepseek", "deepseek_v3"),
                                                    ("tiny-deepseek-v4", "deepseek_v4"), ("tiny-jamba", "jamba"),
                                                    ("tiny-mamba2-hybrid", "nemotron_h"), ("tiny-minimax", "minimax"),
                                                    ("tiny-kimi-linear", "kimi_linear")])
def test_each_format_reads_back_what_it_writes(preset, model_type, tmp_path):
    """One pipeline, one converter per format: save_hf then from_hf gives the same logits (and the same routing
    biases where the format keeps them); the numbers written are the converter's checkpoint_total."""
    torch.manual_seed(0)
    cfg = get_config(preset)
    model = HybridLM(cfg).eval()
    conv, mt = save_target(cfg)
    assert mt == model_type and conv is converter_for(model_type)
    biases = [n for n, _ in model.named_buffers() if n.endswith("expert_bias") and conv.kept_buffers
              and not model.get_submodule(n.rsplit(".", 1)[0]).cfg.hash_routing]  # a hash-routed bias never routes
    for name in biases:
        b = model.get_buffer(name)
        b.copy_(0.01 * torch.randn_like(b))
    model.save_hf(tmp_path)
    back = HybridLM.from_hf(tmp_path).eval()
    stored = load_file(tmp_path / "model.safetensors")
    assert sum(t.numel() for t in stored.values()) == checkpoint_total(cfg)
    ids = torch.randint(0, cfg.vocab_size, (1, 19))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model(ids).logits)
    assert bool(biases) == bool(conv.kept_buffers)
    for name in biases:
        got = back.get_buffer(name)
        assert torch.equal(got, model.get_buffer(name)) and got.dtype == torch.float32


def test_a_config_without_hf_model_type_goes_to_the_format_of_its_mixers():
    for preset, want in (("tiny-hybrid", "qwen3_next"), ("tiny-deepseek", "deepseek_v3"),
                         ("tiny-deepseek-v4", "deepseek_v4"), ("tiny-jamba", "jamba"), ("tiny-minimax", "minimax"),
                         ("tiny-kimi-linear", "kimi_linear")):
        assert save_target(get_config(preset).replace(hf_model_type=None))[1] == want
    with pytest.raises(ValueError, match="model_type='qwen3_moe' is not supported"):
        save_target(get_config("tiny-hybrid"), "qwen3_moe")  # config only
