"""Every preset builds; full-scale ones on the meta device reproduce the published parameter counts."""

import json
from pathlib import Path

import pytest

from hybridlm import HybridLM, get_config, preset_names

# The package ships published-configs.json (hybridlm/resources/, with its sources); ../shared holds the same file.
# Reading the shipped copy means the test never skips on a machine without the shared folder.
_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "published-configs.json"
PUBLISHED = Path(__file__).resolve().parents[1] / "hybridlm" / "resources" / "published-configs.json"


@pytest.mark.parametrize("name", preset_names())
def test_preset_builds_and_counts_add_up(name):
    model = HybridLM(get_config(name), device="meta")
    direct = sum(p.numel() for p in model.parameters())
    hc = model.hc_head.num_params() if model.hc_head is not None else 0  # mHC: the head's and each block's
    norms = model.config.d_model * (2 if model.config.norm == "layernorm" else 1)  # LayerNorm: weight and bias
    by_module = (model.embed.weight.numel() + norms + hc
                 + (model.lm_head.weight.numel() if model.lm_head is not None else 0)
                 + sum(b.mixer.num_params() + b.ffn.num_params() + (b.has_mixer + b.has_ffn) * norms
                       + sum(h.num_params() for h in (b.attn_hc, b.ffn_hc) if h is not None) for b in model.layers)
                 + (sum(p.numel() for p in model.mtp.parameters()) if model.mtp is not None else 0))
    assert direct == by_module == model.num_params()


# Checkpoint totals from published-configs.json (sources: HF safetensors totals quoted there).
EXACT = {
    "qwen3-next-80b-a3b": dict(with_mtp=81_324_862_720, without_mtp=79_674_391_296),
    "qwen3.5-397b-a17b": dict(without_mtp=396_346_350_336, with_mtp=396_346_350_336 + 6_595_568_128),
}
# Rounded figures stated in the caveats (billions, 3 decimals): text stack, MTP, active with emb+head.
ROUNDED = {
    "qwen3-next-80b-a3b": dict(text=79.674, mtp=1.650, active=3.875),
    "qwen3.5-35b-a3b": dict(text=34.661, mtp=0.845, active=3.455),
    "qwen3.5-122b-a10b": dict(text=122.112, mtp=2.524, active=9.771),
    "qwen3.5-397b-a17b": dict(text=396.35, mtp=6.596, active=17.349),
    "qwen3.5-27b": dict(text=26.896, mtp=0.425),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_full_scale_exact_totals(name):
    m = HybridLM(get_config(name), device="meta")
    assert m.num_params() == EXACT[name]["with_mtp"]
    assert m.num_params(mtp=False) == EXACT[name]["without_mtp"]


@pytest.mark.parametrize("name", sorted(ROUNDED))
def test_full_scale_rounded_totals(name):
    m = HybridLM(get_config(name), device="meta")
    want = ROUNDED[name]
    digits = len(str(want["text"]).split(".")[1])
    assert round(m.num_params(mtp=False) / 1e9, digits) == want["text"]
    assert round((m.num_params() - m.num_params(mtp=False)) / 1e9, 3) == want["mtp"]
    if "active" in want:
        assert round(m.active_params() / 1e9, 3) == want["active"]


def test_qwen3_next_active_conventions():
    # published-configs.json caveat: 3.875B with embedding+head, 3.563B head only, 3.253B neither.
    m = HybridLM(get_config("qwen3-next-80b-a3b"), device="meta")
    got = [m.active_params(), m.active_params(embedding=False), m.active_params(embedding=False, head=False)]
    assert all(abs(g / 1e9 - want) <= 1e-3 for g, want in zip(got, [3.875, 3.563, 3.253]))


def test_the_shipped_published_configs_equal_the_shared_reference():
    if _SHARED.exists():  # where the shared folder is present, the shipped copy must not have drifted from it
        assert PUBLISHED.read_bytes() == _SHARED.read_bytes()
    assert json.loads(PUBLISHED.read_text())["models"]


def test_presets_match_published_hyperparameters():
    models = {m["hf_repo"].split(" ;")[0]: m["fields"] for m in json.loads(PUBLISHED.read_text())["models"]}
    for preset, repo in [("qwen3-next-80b-a3b", "Qwen/Qwen3-Next-80B-A3B-Instruct"), ("qwen3.5-397b-a17b", None),
                         ("qwen3.5-27b", None), ("qwen3.5-35b-a3b", "Qwen/Qwen3.5-35B-A3B")]:
        fields = models.get(repo) or next(f for r, f in models.items() if preset.split("-")[1] in r.lower()
                                          and r.lower().startswith("qwen/qwen3.5"))
        cfg = get_config(preset)
        attn, gdn = cfg.mixers["A"], cfg.mixers["G"]
        assert (cfg.vocab_size, cfg.d_model, cfg.num_layers) == (
            fields["vocab_size"], fields["hidden_size"], fields["num_hidden_layers"])
        assert (attn.num_heads, attn.num_kv_heads, attn.head_dim) == (
            fields["num_attention_heads"], fields["num_key_value_heads"], fields["head_dim"])
        assert (gdn.num_qk_heads, gdn.num_v_heads) == (fields["linear_num_key_heads"], fields["linear_num_value_heads"])
        assert attn.rope_fraction == fields["partial_rotary_factor"]
