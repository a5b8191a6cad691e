"""Hugging Face interop against transformers==5.23.0 as the independent oracle: a tiny model built by
transformers with random weights, saved, loaded by HybridLM.from_hf, must give the same logits; and what
save_hf writes must load back in transformers with the same logits."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hybridlm import HybridLM  # noqa: E402

# Odd sizes on purpose: 5 layers (the pattern is not a whole number of GGGA groups), GVA ratio 3.
TEXT = dict(hidden_size=48, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            linear_num_key_heads=2, linear_num_value_heads=6, linear_key_head_dim=8, linear_value_head_dim=12,
            num_experts=6, num_experts_per_tok=2, moe_intermediate_size=24, shared_expert_intermediate_size=40,
            intermediate_size=72, vocab_size=101, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                   "partial_rotary_factor": 0.25})
VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=48)


def _hf_model(kind: str):
    if kind == "qwen3_next":
        cfg = transformers.AutoConfig.for_model("qwen3_next", **TEXT)
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    else:
        cfg = transformers.AutoConfig.for_model(kind, text_config=TEXT, vision_config=VISION)
        model = transformers.AutoModelForImageTextToText.from_config(cfg)
    with torch.no_grad():  # HF initialises norms to identity and A_log/dt_bias to fixed values: randomise all
        for name, p in model.named_parameters():
            if "norm" in name or "A_log" in name or "dt_bias" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _hf_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("kind", ["qwen3_next", "qwen3_5_moe", "qwen3_5"])
def test_from_hf_and_back_matches_transformers(kind, tmp_path):
    hf = _hf_model(kind)
    hf.save_pretrained(tmp_path / "hf")
    ids = torch.randint(0, 101, (2, 77))  # > one GDN chunk, not a multiple of it
    ref = _hf_logits(hf, ids)

    ours = HybridLM.from_hf(tmp_path / "hf").eval()
    assert ours.config.layer_mixers == ["G", "G", "G", "A", "G"]
    with torch.no_grad():
        got = ours(ids).logits
    assert (got - ref).abs().max().item() <= 1e-4

    ours.save_hf(tmp_path / "ours")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert (_hf_logits(back, ids) - ref).abs().max().item() <= 1e-4


def test_sharded_checkpoint_and_cached_decode(tmp_path):
    hf = _hf_model("qwen3_next")
    hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    ours = HybridLM.from_hf(tmp_path / "hf").eval()
    ids = torch.randint(0, 101, (1, 20))
    ref = _hf_logits(hf, ids)
    with torch.no_grad():
        cache = ours.new_cache()
        first = ours(ids[:, :9], cache=cache).logits
        rest = [ours(ids[:, t:t + 1], cache=cache).logits for t in range(9, 20)]
    assert (torch.cat([first, *rest], 1) - ref).abs().max().item() <= 1e-4


def _break(tmp_path, edit):
    from safetensors.torch import load_file, save_file
    hf = _hf_model("qwen3_next")
    hf.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})


def test_bad_checkpoints_list_the_tensors(tmp_path):
    _break(tmp_path / "a", lambda t: t.pop("model.layers.3.self_attn.k_proj.weight"))
    with pytest.raises(ValueError, match=r"missing \(1\).*layers\.3\.self_attn\.k_proj\.weight"):
        HybridLM.from_hf(tmp_path / "a")

    _break(tmp_path / "b", lambda t: t.update({"model.layers.0.extra.weight": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"unexpected \(1\).*model\.layers\.0\.extra\.weight"):
        HybridLM.from_hf(tmp_path / "b")

    _break(tmp_path / "c", lambda t: t.update({"model.norm.weight": torch.zeros(47)}))
    with pytest.raises(ValueError, match=r"mis-shaped \(1\).*norm\.weight: checkpoint \(47,\) vs model \(48,\)"):
        HybridLM.from_hf(tmp_path / "c")


def test_bad_directories(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        HybridLM.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type='llama' is not supported"):
        HybridLM.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_next", **TEXT}))
    with pytest.raises(ValueError, match="no model.safetensors"):
        HybridLM.from_hf(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="only safetensors are read"):
        HybridLM.from_hf(tmp_path)


def test_save_refuses_what_the_qwen_format_cannot_hold(tmp_path):
    from hybridlm import MoEConfig, get_config
    cfg = get_config("tiny-hybrid")
    moe = MoEConfig(num_experts=8, top_k=2, expert_size=128, shared_size=128, shared_gate=True,
                    n_groups=4, topk_groups=2)
    model = HybridLM(cfg.replace(ffns={"M": moe}), device="meta")
    with pytest.raises(ValueError, match="cannot be written as a Qwen HF checkpoint: MoE must use softmax"):
        model.save_hf(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written
