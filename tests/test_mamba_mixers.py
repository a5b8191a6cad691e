"""The Mamba mixers (layers/mixers/mamba.py: Mamba-1, plain and Jamba's; mamba2.py: Mamba-2) on their own.

Independent references: transformers 5.23's own MambaMixer, JambaMambaMixer and Mamba2Mixer (pure-torch paths) with
random weights copied over by name, and mambapy's MambaBlock (a parallel scan) for the Mamba-1 block; an irregular
T = 37 with chunk sizes that do not divide it. Then cached decode (chunked prefill, then token by token) against the
full forward with a constant cache size; accounting against torch's FlopCounterMode and the measured cache; the
bad-input ValueErrors; gradients reaching every parameter."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from hybridlm.ops.causal_conv import grouped_conv_form

from hybridlm.layers.cache import RecurrentState
from hybridlm.layers.mixers.mamba import Mamba, MambaConfig
from hybridlm.layers.mixers.mamba2 import GroupGatedRMSNorm, Mamba2, Mamba2Config
from hybridlm.model.config import ModelConfig

try:
    import transformers
except ImportError:
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not installed")

# Odd sizes on purpose: d_model 36, state 7, dt rank 5, conv 3, 3 groups of 2 heads; T = 37 against chunk 16.
D, T = 36, 37
CONFIGS = {
    "mamba": MambaConfig(d_state=7, d_conv=3, expand=2, dt_rank=5, chunk_size=16, proj_bias=True),
    "jamba": MambaConfig(d_state=7, d_conv=3, expand=2, dt_rank=5, chunk_size=16, inner_norms=True),
    "mamba2": Mamba2Config(num_heads=6, head_dim=12, d_state=7, n_groups=3, conv_kernel=3, chunk_size=16,
                           proj_bias=True, time_step_limit=(0.2, 1.5)),
    # Falcon-H1's mamba_rms_norm=False: y * silu(z), no norm; an odd chunk and a 4-tap conv
    "ungated": Mamba2Config(num_heads=4, head_dim=6, d_state=5, n_groups=2, chunk_size=7, gated_norm=False),
}
EPS = 1e-5


def _ours(kind: str) -> torch.nn.Module:
    cfg = CONFIGS[kind]
    mixer = (Mamba2 if isinstance(cfg, Mamba2Config) else Mamba)(cfg, D, EPS)
    cfg.validate(kind, D)
    mixer.init_weights(0.1, 0.1)
    return mixer


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random at a scale that keeps activations O(1): projections ~ fan-in^-1/2, norms around 1,
    A_log in [-1, 1] (decays exp(-dt e^A_log) well inside (0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if name == "A_log":
                p.copy_(torch.rand(p.shape, generator=gen) * 2 - 1)
            elif "norm" in name or "layernorm" in name:
                p.copy_(1 + 0.2 * r)
            elif p.dim() >= 2:  # weights [out, in] and the conv [C, (1,) K]: fan-in scaled
                p.copy_(r * p[0].numel() ** -0.5)
            else:
                p.copy_(0.3 * r)
    return module


# -- parity against transformers' own mixers -------------------------------------------------------------------
HF_NAMES = {"conv1d.weight": "conv_weight", "conv1d.bias": "conv_bias", "dt_layernorm.weight": "dt_norm.weight",
            "b_layernorm.weight": "b_norm.weight", "c_layernorm.weight": "c_norm.weight"}


def _hf_mixer(kind: str) -> torch.nn.Module:
    if kind == "jamba":
        from transformers.models.jamba.configuration_jamba import JambaConfig
        from transformers.models.jamba.modeling_jamba import JambaMambaMixer
        cfg = JambaConfig(hidden_size=D, mamba_d_state=7, mamba_d_conv=3, mamba_expand=2, mamba_dt_rank=5,
                          rms_norm_eps=EPS)
        return _randomise(JambaMambaMixer(cfg, layer_idx=0))
    if kind == "mamba":
        from transformers.models.mamba.configuration_mamba import MambaConfig as HFMambaConfig
        from transformers.models.mamba.modeling_mamba import MambaMixer
        cfg = HFMambaConfig(hidden_size=D, state_size=7, conv_kernel=3, expand=2, time_step_rank=5, use_bias=True)
        return _randomise(MambaMixer(cfg, layer_idx=0))
    from transformers.models.mamba2.configuration_mamba2 import Mamba2Config as HFMamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer
    cfg = HFMamba2Config(hidden_size=D, num_heads=6, head_dim=12, expand=2, state_size=7, n_groups=3, conv_kernel=3,
                         chunk_size=16, use_bias=True, time_step_limit=(0.2, 1.5), layer_norm_epsilon=EPS)
    return _randomise(Mamba2Mixer(cfg, layer_idx=0))


def _copy_from_hf(hf: torch.nn.Module, ours: torch.nn.Module) -> torch.nn.Module:
    """HF's names map one to one, except the depthwise conv: HF's conv1d.weight [C, 1, K] is our conv_weight [C, K].
    strict=True: every parameter on both sides is covered."""
    sd = {HF_NAMES.get(k, k): v for k, v in hf.state_dict().items()}
    sd["conv_weight"] = sd["conv_weight"].squeeze(1)
    ours.load_state_dict(sd, strict=True)
    return ours


@needs_transformers
@pytest.mark.parametrize("kind", ["mamba", "jamba", "mamba2"])
def test_matches_transformers_mixer(kind):
    hf = _hf_mixer(kind)
    ours = _copy_from_hf(hf, _ours(kind))
    x = torch.randn(2, T, D)
    with torch.no_grad():
        ref = hf(x)
        out = ours(x)
    assert ref.abs().max() > 0.1  # not a vacuous comparison
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@needs_transformers
@pytest.mark.parametrize("before", [False, True])
def test_group_gated_norm_matches_transformers(before):
    """GroupGatedRMSNorm against Falcon-H1's (which has both gate orders), 3 groups of 8."""
    from transformers.models.falcon_h1.modeling_falcon_h1 import FalconH1RMSNormGated
    ref = _randomise(FalconH1RMSNormGated(24, eps=EPS, n_groups=3, norm_before_gate=before))
    ours = GroupGatedRMSNorm(24, 3, EPS, norm_before_gate=before)
    ours.load_state_dict(ref.state_dict())
    y, z = torch.randn(2, 5, 24), torch.randn(2, 5, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(y, z), ref(y, z), atol=1e-6, rtol=1e-6)


def test_jamba_block_matches_mambapy():
    """mambapy 1.2.0's MambaBlock(inner_layernorms=True): its own parallel scan (pscan), padded to a power of 2."""
    mambapy = pytest.importorskip("mambapy.mamba")
    ref_cfg = mambapy.MambaConfig(d_model=D, n_layers=1, dt_rank=5, d_state=7, expand_factor=2, d_conv=3,
                                  rms_norm_eps=EPS, inner_layernorms=True, pscan=True)
    ref = _randomise(mambapy.MambaBlock(ref_cfg))
    names = {"dt_layernorm.weight": "dt_norm.weight", "B_layernorm.weight": "b_norm.weight",
             "C_layernorm.weight": "c_norm.weight", "conv1d.weight": "conv_weight", "conv1d.bias": "conv_bias"}
    sd = {names.get(k, k): v for k, v in ref.state_dict().items()}
    sd["conv_weight"] = sd["conv_weight"].squeeze(1)
    ours = _ours("jamba")
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, T, D)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


# -- cached decode, cache size --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mamba", "jamba", "mamba2", "ungated"])
def test_cached_decode_equals_full_forward_with_constant_cache(kind):
    """Prefill 11 tokens, then 9 more through the chunked path with the carried state and conv window, then token
    by token: the outputs equal one full forward; the cache holds the same bytes at every length, as cache_bytes
    says (fp32 model: conv and state 4 bytes)."""
    ours = _randomise(_ours(kind))
    x = torch.randn(2, 29, D)
    cache = ours.new_cache()
    assert isinstance(cache, RecurrentState) and cache.kind == ours.cache_kind == "recurrent"
    pieces, sizes = [], set()
    with torch.no_grad():
        full = ours(x)
        for a, b in [(0, 11), (11, 20)] + [(t, t + 1) for t in range(20, 29)]:
            pieces.append(ours(x[:, a:b], pos0=a, cache=cache))
            sizes.add(cache.memory_bytes())
            assert cache.memory_bytes() == ours.cache_bytes(b, batch=2, dtype_bytes=4, state_bytes=4)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert len(sizes) == 1 and cache.state.dtype == torch.float32


@pytest.mark.parametrize("kind", ["jamba", "mamba2"])
def test_bf16_cache_holds_conv_in_bf16_and_state_in_fp32(kind):
    ours = _ours(kind).to(torch.bfloat16)
    cache = ours.new_cache()
    with torch.no_grad():
        ours(torch.randn(3, 5, D, dtype=torch.bfloat16), cache=cache)
    assert cache.conv.dtype == torch.bfloat16 and cache.state.dtype == torch.float32
    assert cache.memory_bytes() == ours.cache_bytes(5, batch=3, dtype_bytes=2, state_bytes=4)


# -- accounting ----------------------------------------------------------------------------------------------
def _counted(fn) -> int:
    with grouped_conv_form(), FlopCounterMode(display=False) as fc, torch.no_grad():
        fn()
    return fc.get_total_flops()


@pytest.mark.parametrize("kind", ["mamba", "jamba", "mamba2", "ungated"])
def test_params_and_flops_match_the_counter(kind):
    """num_params equals the parameters' element count; a T-token forward (T = 37: Mamba-2's last chunk padded)
    and one decode step count exactly what flops_per_token and decode_flops say."""
    ours = _ours(kind)
    assert ours.num_params() == sum(p.numel() for p in ours.parameters())
    x = torch.randn(1, T, D)
    assert _counted(lambda: ours(x)) == round(T * ours.flops_per_token(T))
    cache = ours.new_cache()
    with torch.no_grad():
        ours(x, cache=cache)
    assert _counted(lambda: ours(x[:, :1], pos0=T, cache=cache)) == ours.decode_flops(T + 1)


@pytest.mark.parametrize("kind", ["jamba", "mamba2"])
def test_init_weights_sets_every_parameter(kind):
    """Built on the meta device, then init_weights: Mamba's dt init (softplus(dt bias) log-uniform within the
    range), A = 1..N per channel (Mamba-1) or U(1, 16) per head (Mamba-2), D = 1, norms at 1."""
    with torch.device("meta"):
        mixer = (Mamba2 if kind == "mamba2" else Mamba)(CONFIGS[kind], D, EPS)
    mixer.to_empty(device="cpu")
    with torch.no_grad():
        for p in mixer.parameters():
            p.fill_(math.nan)
    mixer.init_weights(0.02, 0.01)
    assert all(torch.isfinite(p).all() for p in mixer.parameters())
    c = mixer.cfg
    if kind == "mamba2":
        dt, lo, hi = F.softplus(mixer.dt_bias), c.time_step_min, c.time_step_max
        assert ((mixer.A_log.exp() >= 1) & (mixer.A_log.exp() <= 16)).all()
    else:
        dt, lo, hi = F.softplus(mixer.dt_proj.bias), c.dt_min, c.dt_max
        assert torch.equal(mixer.A_log.exp().round(), torch.arange(1.0, 8.0).expand(2 * D, 7))
    assert ((dt >= lo * (1 - 1e-5)) & (dt <= hi * (1 + 1e-5))).all()
    assert (mixer.D == 1).all() and all((p == 1).all() for n, p in mixer.named_parameters() if "norm" in n)


# -- config: bad input, JSON ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("cfg", "match"), [
    (MambaConfig(d_state=0), r"mixers\['M'\]\.d_state=0: must be >= 1"),
    (MambaConfig(d_conv=0), r"mixers\['M'\]\.d_conv=0: must be >= 1"),
    (MambaConfig(expand=0), r"mixers\['M'\]\.expand=0"),
    (MambaConfig(dt_rank=0), r"mixers\['M'\]\.dt_rank=0"),
    (MambaConfig(dt_min=0.1, dt_max=0.01), r"mixers\['M'\]\.dt_max=0\.01: must be >= dt_min=0\.1 .*inverted"),
    (Mamba2Config(num_heads=4, d_state=0), r"mixers\['M'\]\.d_state=0: must be >= 1"),
    (Mamba2Config(num_heads=6, n_groups=4), r"mixers\['M'\]\.num_heads=6: must be a multiple of n_groups=4"),
    (Mamba2Config(num_heads=4, time_step_limit=(1.0, 0.1)), r"mixers\['M'\]\.time_step_limit=\[1\.0, 0\.1\].*inverted"),
    (Mamba2Config(num_heads=4, time_step_min=0.2), r"mixers\['M'\]\.time_step_max=0\.1: must be >= time_step_min"),
    (Mamba2Config(num_heads=4, conv_kernel=0), r"mixers\['M'\]\.conv_kernel=0: must be >= 1"),
])
def test_bad_configs_name_the_field(cfg, match):
    with pytest.raises(ValueError, match=match):
        cfg.validate("mixers['M']", 64)


def _model_config(mixer) -> ModelConfig:
    from hybridlm.layers.ffn.dense import DenseFFNConfig
    return ModelConfig(name="m", vocab_size=32, d_model=D, num_layers=2, mixer_pattern="M*2", ffn_pattern="F*2",
                       mixers={"M": mixer}, ffns={"F": DenseFFNConfig(intermediate_size=24)})


def test_configs_round_trip_through_json():
    for mixer in (CONFIGS["jamba"], CONFIGS["mamba2"], Mamba2Config(num_heads=4)):
        cfg = _model_config(mixer)
        back = ModelConfig.from_json(cfg.to_json())
        assert back == cfg and back.mixers["M"] == mixer
    assert back.mixers["M"].time_step_limit == (0.0, math.inf)  # a JSON list comes back as the tuple
    bad = {"kind": "mamba2", "num_heads": 4, "n_groups": 3}
    with pytest.raises(ValueError, match=r"mixers\['M'\]\.num_heads=4: must be a multiple of n_groups=3"):
        ModelConfig.from_dict({**cfg.to_dict(), "mixers": {"M": bad}})
    with pytest.raises(ValueError, match=r"mixers\['M'\]\.time_step_limit=\[0\.1\]: must be two numbers"):
        ModelConfig.from_dict({**cfg.to_dict(), "mixers": {"M": {"kind": "mamba2", "num_heads": 4,
                                                                 "time_step_limit": [0.1]}}})


# -- gradients -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mamba", "jamba", "mamba2"])
def test_gradients_reach_every_parameter(kind):
    ours = _randomise(_ours(kind))
    ours(torch.randn(2, T, D)).square().mean().backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
