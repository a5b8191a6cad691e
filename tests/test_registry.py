"""Every registered mixer and FFN kind implements its protocol (layers/protocol.py), so the model, the cache
container, `info` and `cost` can treat them alike; kinds are resolved by name in one place (the registry)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from hybridlm import HybridLM, ModelConfig, get_config, preset_names
from hybridlm.layers.protocol import FFN, FFNConfig, LayerCache, Mixer, MixerConfig
from hybridlm.registry import FFN_CONFIGS, FFNS, MIXER_CONFIGS, MIXERS, register_converter


def _by_kind(table: str) -> dict[str, list]:
    """kind -> every distinct config of that kind in the presets (so each kind is checked on real layouts)."""
    out: dict[str, list] = {}
    for name in preset_names():
        for c in getattr(get_config(name), table).values():
            if c not in out.setdefault(c.kind, []):
                out[c.kind].append(c)
    return out


MIXER_CASES = _by_kind("mixers")
FFN_CASES = _by_kind("ffns")


EMPTY = {"none"}  # the empty sublayer ("-"): no module behaviour to check here; tests/test_model.py checks it


def test_every_registered_kind_is_in_a_preset():
    assert set(MIXER_CASES) == set(MIXERS) == set(MIXER_CONFIGS)
    assert set(FFN_CASES) == set(FFNS) == set(FFN_CONFIGS)


@pytest.mark.parametrize("kind", sorted(set(MIXERS) - EMPTY))
def test_every_mixer_implements_the_protocol(kind):
    for cfg in MIXER_CASES[kind]:
        assert isinstance(cfg, MixerConfig) and MIXER_CONFIGS[kind] is type(cfg)
        zc = kind in ("attention", "gated_deltanet")  # compressed_attention refuses zero-centred norms
        with torch.device("meta"):
            mod = MIXERS[kind](cfg, 64, 1e-6, zc)
        assert isinstance(mod, Mixer), f"{kind}: missing {[n for n in dir(Mixer) if not hasattr(mod, n)]}"
        cache = mod.new_cache()
        if mod.cache_kind is None:  # keeps nothing between steps (GMU, YOCO cross-attention): no cache, no bytes
            assert cache is None and all(mod.cache_bytes(n, 2, 2, 4) == 0 for n in (1, 7, 4096))
        else:
            assert isinstance(cache, LayerCache) and cache.kind == mod.cache_kind and cache.memory_bytes() == 0
        assert mod.num_params() == sum(p.numel() for p in mod.parameters())
        assert mod.describe() == cfg.describe() and cfg.describe(brief=True)
        for context in (1, 7, 4096):
            assert mod.flops_per_token(context, causal_skip=True) <= mod.flops_per_token(context, causal_skip=False)
            assert mod.decode_flops(context) > 0
            assert mod.cache_bytes(context, 2, 2, 4) >= 0


def test_describe_is_distinct_per_kind():
    for brief in (False, True):
        texts = {kind: {c.describe(brief=brief) for c in cases} for kind, cases in MIXER_CASES.items()}
        assert all(t and all(t) for t in texts.values())
        for a, ta in texts.items():
            for b, tb in texts.items():
                assert a == b or not ta & tb, (a, b, ta & tb)
    ffn_texts = {kind: {c.describe() for c in cases} for kind, cases in FFN_CASES.items()}
    assert ffn_texts["dense"].isdisjoint(ffn_texts["moe"]) and all(all(t) for t in ffn_texts.values())


@pytest.mark.parametrize("kind", sorted(set(FFNS) - EMPTY))
def test_every_ffn_implements_the_protocol(kind):
    for cfg in FFN_CASES[kind]:
        assert isinstance(cfg, FFNConfig) and FFN_CONFIGS[kind] is type(cfg)
        with torch.device("meta"):
            mod = FFNS[kind](cfg, 64, 101)
        assert isinstance(mod, FFN) and mod.describe() == cfg.describe()
        assert mod.num_params() == sum(p.numel() for p in mod.parameters())
        assert 0 < mod.active_params() <= mod.num_params() and mod.flops_per_token() == 2 * mod.active_params()


def test_unknown_kind_in_json_is_a_clear_value_error():
    data = json.loads(get_config("tiny-hybrid").to_json())
    data["mixers"]["A"]["kind"] = "mamba9"
    with pytest.raises(ValueError, match=r"mixers\['A'\]\.kind='mamba9': unknown; known kinds: \['attention', "):
        ModelConfig.from_dict(data)
    data = json.loads(get_config("tiny-hybrid").to_json())
    data["ffns"]["M"]["kind"] = "kan"
    with pytest.raises(ValueError, match=r"ffns\['M'\]\.kind='kan': unknown"):
        ModelConfig.from_json(json.dumps(data))


def test_an_unregistered_config_class_is_refused():
    @dataclasses.dataclass
    class Mystery:
        kind: str = "mystery"

        def validate(self, where, d_model):
            pass

    cfg = get_config("tiny-hybrid")
    with pytest.raises(ValueError, match=r"mixers\['A'\]\.kind='mystery': is not registered"):
        ModelConfig(**{**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.init},
                       "mixers": {**cfg.mixers, "A": Mystery()}})


def test_an_unknown_mixer_is_labelled_by_its_own_describe():
    from hybridlm.analysis.accounting import describe_layout

    layout = describe_layout(get_config("tiny-hybrid"))
    assert layout == "6 Gated DeltaNet + 2 gated attention 4q/2kv"
    cfg = get_config("tiny-attention")
    assert "Gated DeltaNet" not in describe_layout(cfg) and "Gated DeltaNet" not in HybridLM(cfg, "meta").layers[0].mixer.describe()


def test_register_converter_maps_every_model_type():
    from hybridlm.registry import CONVERTERS

    class Fake:
        model_types = ("fake_a", "fake_b")

    try:
        assert register_converter(Fake) is Fake and CONVERTERS["fake_a"] is CONVERTERS["fake_b"] is Fake

        class Other:
            model_types = ("fake_a",)

        with pytest.raises(ValueError, match="already registered"):
            register_converter(Other)
        with pytest.raises(ValueError, match="model_types"):
            register_converter(type("NoTypes", (), {}))
    finally:
        CONVERTERS.pop("fake_a", None)
        CONVERTERS.pop("fake_b", None)
