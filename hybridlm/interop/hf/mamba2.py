"""Hugging Face interop for the pure Mamba-2 language model: model_type `mamba2` (Mamba2ForCausalLM), plus the
Mamba-2 mixer's tensor map that the hybrid formats (nemotron_h.py, granite.py) share.

The mapping (reference: transformers 5.23.0 `models/mamba2/modeling_mamba2.py`):
  every layer: x = x + mixer(RMSNorm(x)), no FFN  -> mixer "M" (kind mamba2) + ffn "-" (the empty sublayer)
  num_heads, head_dim, state_size, n_groups, conv_kernel, chunk_size, use_conv_bias, use_bias, time_step_limit,
  time_step_min / max / floor                      -> Mamba2Config (E = num_heads * head_dim = expand * hidden_size)
  the gated RMSNorm: per group of E / n_groups channels, gate before the norm, eps layer_norm_epsilon
                                                   -> gated_norm=True, norm_before_gate=False, model norm_eps
  plain RMSNorms (weight at 1)                      -> zero_centered_norm=False
Tensor names: backbone.embeddings / backbone.norm_f / lm_head (absent when tied) -> embed / norm / lm_head;
backbone.layers.{i}.norm -> layers.{i}.mixer_norm; backbone.layers.{i}.mixer.{in_proj, conv1d, dt_bias, A_log, D,
norm, out_proj} -> layers.{i}.mixer.* with conv1d.weight [C, 1, K] <-> conv_weight [C, K].

Mamba2ForCausalLM keeps its own cache (`cache_params`), so unlike the hybrids it decodes with no attention layer.
transformers' one-token decode (`mamba2_selective_state_update`) does not apply time_step_limit, its chunked
forward does; hybridlm clamps in both, so the two agree whenever no dt falls outside the limits (always for the
default (0, inf)).
"""

from __future__ import annotations

import math

import torch

from ...layers.mixers.mamba2 import Mamba2Config
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import Converter, RenamedReader

MAMBA2_TYPES = ("mamba2",)
NO_LIMIT = (0.0, math.inf)
SSM_MAX_SEQ_LEN = 1 << 20  # a recurrent model has no position limit; generation stops here unless max_len raises it


# -- the Mamba-2 mixer, shared by the hybrid formats ------------------------------------------------
_SPECIAL = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def _number(v) -> float:
    """A float from config.json: a number, or transformers 5's tag for the non-JSON ones ({"__float__": "Infinity"})."""
    if isinstance(v, dict) and set(v) == {"__float__"} and v["__float__"] in _SPECIAL:
        return _SPECIAL[v["__float__"]]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{v!r} is not a number")
    return float(v)


def limit_from_hf(value, where: str) -> tuple[float, float]:
    """time_step_limit from config.json ([low, high]; None = no limit)."""
    if value is None:
        return NO_LIMIT
    try:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise TypeError("not a pair")
        return _number(value[0]), _number(value[1])
    except TypeError:
        raise ValueError(f"config.json ({where}) time_step_limit={value!r} must be two numbers [low, high]") from None


def mixer_tensors(hf: str, ours: str, cfg: Mamba2Config) -> list[tuple[str, str, bool]]:
    """(HF name, our name, is_conv) for one Mamba-2 mixer: `hf` / `ours` are the mixer prefixes (ending in '.').
    is_conv marks conv1d.weight [C, 1, K], stored by us as conv_weight [C, K]."""
    out = [(hf + "in_proj.weight", ours + "in_proj.weight", False),
           (hf + "conv1d.weight", ours + "conv_weight", True),
           (hf + "dt_bias", ours + "dt_bias", False), (hf + "A_log", ours + "A_log", False),
           (hf + "D", ours + "D", False), (hf + "out_proj.weight", ours + "out_proj.weight", False)]
    if cfg.conv_bias:
        out.append((hf + "conv1d.bias", ours + "conv_bias", False))
    if cfg.proj_bias:
        out += [(hf + f"{n}.bias", ours + f"{n}.bias", False) for n in ("in_proj", "out_proj")]
    if cfg.gated_norm:
        out.append((hf + "norm.weight", ours + "norm.weight", False))
    return out


def to_hf(pairs, model) -> dict[str, torch.Tensor]:
    """Our state dict under the HF names of `pairs` ((hf, ours, is_conv) triples)."""
    w = model.state_dict()
    return {h: (w[o].unsqueeze(1) if conv else w[o]) for h, o, conv in pairs}


def from_hf(pairs, get) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under our names."""
    return {o: (get(h).squeeze(1) if conv else get(h)) for h, o, conv in pairs}


def mamba2_problems(c: Mamba2Config) -> list[str]:
    """What a Mamba-2 mixer must be for the transformers formats (their gated norm is fixed)."""
    problems = []
    if not c.gated_norm or c.norm_before_gate:
        problems.append("the Mamba-2 gated norm must be on, with the gate before the norm (gated_norm=True, "
                        "norm_before_gate=False)")
    return problems


def uniform(cfgs: list, what: str, problems: list[str]) -> None:
    """One config for every layer of a kind: the HF formats hold one set of fields per kind."""
    if len({repr(c) for c in cfgs}) > 1:
        problems.append(f"the {what} layers differ ({len({repr(c) for c in cfgs})} different configs)")


# -- config -----------------------------------------------------------------------------------------
def config_from_mamba2(hf: dict) -> ModelConfig:
    absent = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_heads") if k not in hf]
    if absent:
        raise ValueError(f"config.json (mamba2) is missing field(s) {absent}")
    d, heads, head_dim = hf["hidden_size"], hf["num_heads"], hf.get("head_dim", 64)
    expand = hf.get("expand", 2)
    if d * expand != heads * head_dim:
        raise ValueError(f"config.json (mamba2) hidden_size * expand = {d * expand} must equal num_heads * head_dim "
                         f"= {heads * head_dim}")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json (mamba2) hidden_act={hf['hidden_act']!r} is not supported (only 'silu')")
    mixer = Mamba2Config(
        num_heads=heads, head_dim=head_dim, d_state=hf.get("state_size", 128), n_groups=hf.get("n_groups", 8),
        conv_kernel=hf.get("conv_kernel", 4), chunk_size=hf.get("chunk_size", 256),
        conv_bias=bool(hf.get("use_conv_bias", True)), proj_bias=bool(hf.get("use_bias", False)),
        time_step_limit=limit_from_hf(hf.get("time_step_limit", NO_LIMIT), "mamba2"),
        time_step_min=hf.get("time_step_min", 0.001), time_step_max=hf.get("time_step_max", 0.1),
        time_step_floor=hf.get("time_step_floor", 1e-4))
    n = hf["num_hidden_layers"]
    return ModelConfig(
        name=hf.get("_name_or_path") or "mamba2", vocab_size=hf["vocab_size"], d_model=d, num_layers=n,
        mixer_pattern=f"M*{n}", ffn_pattern=f"-*{n}", mixers={"M": mixer}, ffns={},
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), zero_centered_norm=False,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), max_seq_len=SSM_MAX_SEQ_LEN,
        hf_model_type="mamba2")


def config_to_mamba2(cfg: ModelConfig) -> dict:
    """The mamba2 config.json for a model that fits the format; ValueError listing what does not."""
    problems: list[str] = []
    mixers = [cfg.mixer(i) for i in range(cfg.num_layers)]
    if any(not isinstance(c, Mamba2Config) for c in mixers) or any(cfg.ffn(i).kind != "none"
                                                                    for i in range(cfg.num_layers)):
        raise ValueError(f"config {cfg.name!r} cannot be written as a mamba2 checkpoint: every layer must be a "
                         "Mamba-2 mixer with no FFN (ffn '-')")
    c = mixers[0]
    uniform(mixers, "Mamba-2", problems)
    problems += mamba2_problems(c)
    E = c.num_heads * c.head_dim
    if E % cfg.d_model:
        problems.append(f"num_heads * head_dim = {E} must be a multiple of d_model = {cfg.d_model} (the format's "
                        "integer `expand`)")
    if cfg.zero_centered_norm or cfg.mtp_depth or cfg.hc_mult != 1:
        problems.append("norms must be plain (zero_centered_norm=False), with no MTP and no hyper-connections")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a mamba2 checkpoint: " + "; ".join(problems))
    return {
        "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers, "num_heads": c.num_heads,
        "head_dim": c.head_dim, "expand": E // cfg.d_model, "state_size": c.d_state, "n_groups": c.n_groups,
        "conv_kernel": c.conv_kernel, "chunk_size": c.chunk_size, "use_conv_bias": c.conv_bias,
        "use_bias": c.proj_bias, "hidden_act": "silu", "time_step_limit": list(c.time_step_limit),
        "time_step_min": c.time_step_min, "time_step_max": c.time_step_max, "time_step_floor": c.time_step_floor,
        "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings, "torch_dtype": "float32",
    }


# -- weights ----------------------------------------------------------------------------------------
def _pairs(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    out = [("backbone.embeddings.weight", "embed.weight", False), ("backbone.norm_f.weight", "norm.weight", False)]
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", "lm_head.weight", False))
    for i in range(cfg.num_layers):
        p, o = f"backbone.layers.{i}.", f"layers.{i}."
        out.append((p + "norm.weight", o + "mixer_norm.weight", False))
        out += mixer_tensors(p + "mixer.", o + "mixer.", cfg.mixer(i))
    return out


def _old_spelling(specs: dict):
    """Names that also answer to the old `backbone.embedding.` spelling (Mamba2Model's load hook)."""
    def rename(k: str) -> str:
        new = k.replace("embedding.", "embeddings.")
        return new if "embedding." in k and new not in specs else k
    return rename


class Mamba2Converter(Converter):
    model_types = MAMBA2_TYPES

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_mamba2(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_mamba2(cfg)

    def view(self, reader):
        return RenamedReader(reader, _old_spelling(reader.specs))

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        return to_hf(_pairs(model.config), model)

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        return from_hf(_pairs(model.config), get)


register_converter(Mamba2Converter())
