"""ModelConfig: JSON round trip, pattern expansion, and the user errors that must name their field."""

import json

import pytest

from hybridlm import AttentionConfig, GatedDeltaNetConfig, ModelConfig, MoEConfig, get_config, preset_names
from hybridlm.core.config import expand_pattern


def _cfg(**over):
    base = dict(vocab_size=64, d_model=32, num_layers=4, mixer_pattern="GGGA", ffn_pattern="M*4",
                mixers={"G": GatedDeltaNetConfig(num_qk_heads=2, num_v_heads=4, head_k_dim=8, head_v_dim=8),
                        "A": AttentionConfig(num_heads=4, num_kv_heads=2)},
                ffns={"M": MoEConfig(num_experts=4, top_k=2, expert_size=16)})
    base.update(over)
    return ModelConfig(**base)


def test_expand_pattern():
    assert expand_pattern("GGGA*2 A", "p") == list("GGGAGGGAA")
    assert expand_pattern("D*3 M*2", "p") == list("DDDMM")


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_round_trips_through_json(name):
    cfg = get_config(name)
    again = ModelConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert again.layer_mixers == cfg.layer_mixers and len(cfg.layer_mixers) == cfg.num_layers


def test_head_dim_defaults_to_width_over_heads():
    assert _cfg().mixers["A"].head_dim == 8


@pytest.mark.parametrize("over, match", [
    (dict(mixer_pattern="GGA"), r"mixer_pattern='GGA': expands to 3 layers, num_layers=4"),
    (dict(ffn_pattern="M*5"), r"ffn_pattern='M\*5': expands to 5 layers"),
    (dict(mixer_pattern="GGGX"), r"letter 'X' at layer 3 has no entry in mixers"),
    (dict(mixer_pattern="GG+A"), r"term 'GG\+A' is not LETTERS"),
    (dict(mixers={"A": AttentionConfig(num_heads=5, num_kv_heads=1)}, mixer_pattern="A*4"),
     r"mixers\['A'\]\.num_heads=5: does not divide d_model=32"),
    (dict(mixers={"A": AttentionConfig(num_heads=4, num_kv_heads=3)}, mixer_pattern="A*4"),
     r"mixers\['A'\]\.num_kv_heads=3: must divide num_heads=4"),
    (dict(mixers={"G": GatedDeltaNetConfig(num_qk_heads=3, num_v_heads=4)}, mixer_pattern="G*4"),
     r"mixers\['G'\]\.num_v_heads=4: must be a multiple of num_qk_heads=3"),
    (dict(ffns={"M": MoEConfig(num_experts=4, top_k=5, expert_size=8)}), r"ffns\['M'\]\.top_k=5: exceeds num_experts=4"),
    (dict(ffns={"M": MoEConfig(num_experts=4, top_k=2, expert_size=8, score_func="relu")}), r"score_func='relu'"),
    (dict(ffns={"M": {"kind": "moe", "num_experts": 4, "top_k": 2, "expert_size": 8, "topk": 3}}),
     r"ffns\['M'\]=\['topk'\]: unknown field\(s\)"),
    (dict(ffns={"M": {"kind": "mlp", "intermediate_size": 8}}), r"ffns\['M'\]\.kind='mlp': unknown"),
    (dict(d_model=0), r"d_model=0: must be a positive integer"),
    (dict(mtp_depth=2), r"mtp_depth=2"),
    (dict(mtp_depth=1, mtp_mixer="Z"), r"mtp_mixer='Z': has no entry in mixers"),
])
def test_user_mistakes_name_the_field(over, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**over)


def test_from_dict_rejects_unknown_and_missing_fields(tmp_path):
    d = _cfg().to_dict()
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['layers'\]"):
        ModelConfig.from_dict({**d, "layers": 3})
    d.pop("vocab_size")
    with pytest.raises(ValueError, match=r"missing required field\(s\) \['vocab_size'\]"):
        ModelConfig.from_dict(d)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        ModelConfig.from_json(bad)


def test_from_json_accepts_long_text_and_names_missing_files(tmp_path):
    text = get_config("tiny-hybrid").to_json()
    assert len(text) > 300 and ModelConfig.from_json(text) == get_config("tiny-hybrid")
    with pytest.raises(ValueError, match="nope.json: no such config file"):
        ModelConfig.from_json(tmp_path / "nope.json")
