"""Hugging Face interop for NVIDIA Nemotron-H: model_type `nemotron_h` (NemotronHForCausalLM).

A Nemotron-H layer holds ONE sublayer behind one RMSNorm: x = x + f(norm(x)), with f a Mamba-2 mixer, an
attention mixer or an MLP (reference: transformers 5.23.0 `models/nemotron_h/modeling_nemotron_h.py`). The
types come from `layers_block_type` or the legacy `hybrid_override_pattern` (M = Mamba-2, * = attention,
- = MLP, E = MoE). They map onto hybridlm's block with the empty sublayer "-":
  M (linear_attention) -> mixer "M" (mamba2) + ffn "-"    the layer's norm is the block's mixer_norm
  * (full_attention)   -> mixer "A" (attention) + ffn "-" GQA, no positional encoding, no QK-norm, no bias
  - (mlp)              -> mixer "-" + ffn "D"             up -> relu^2 -> down (DenseFFNConfig activation relu2);
                                                          the layer's norm is the block's ffn_norm
  E (moe)              -> not supported (non-gated relu2 experts; hybridlm's MoE has SwiGLU experts): ValueError
Norms are plain RMSNorms (weight at 1) with eps layer_norm_epsilon, which the Mamba-2 gated norm (per group of
E / n_groups, gate before the norm) shares. The Mamba width is mamba_num_heads * mamba_head_dim (not expand).

dt limits: transformers' NemotronHMamba2Mixer ignores config.time_step_limit and clamps dt to (time_step_min, inf)
in its chunked forward (its one-token decode does not clamp); hybridlm reads time_step_limit = (time_step_min, inf)
so that the full forward matches, and writes time_step_min = the lower limit (the upper must be inf).

Writing: a hybridlm block with both a mixer and an FFN becomes two Nemotron-H layers (mixer, then MLP), so any
model whose mixers are Mamba-2 / NoPE attention and whose FFNs are relu2 MLPs can be written; a config read from
nemotron_h has one sublayer per block and round-trips layer for layer.

Tensor names: `model.` (transformers) or `backbone.` (NVIDIA's published checkpoints, renamed by transformers'
conversion mapping) + embeddings / norm_f, lm_head (untied); layers.{j}.norm -> mixer_norm / ffn_norm;
layers.{j}.mixer.{in_proj, conv1d, dt_bias, A_log, D, norm, out_proj} (mamba2.py's map),
mixer.{q,k,v,o}_proj (attention), mixer.{up,down}_proj -> ffn.{up,down}_proj. MTP tensors (`mtp.*`) are skipped,
as transformers does. NemotronHForCausalLM never ties its head (tie_word_embeddings has no effect there), so a
checkpoint is read untied and a tied hybridlm model is written with the embedding copied into lm_head.
"""

from __future__ import annotations

import math
import re

import torch

from ...layers.ffn.dense import DenseFFNConfig
from ...layers.mixers.attention import AttentionConfig
from ...layers.mixers.mamba2 import Mamba2Config
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import Converter, runs
from .mamba2 import from_hf, limit_from_hf, mamba2_problems, mixer_tensors, to_hf, uniform

NEMOTRON_H_TYPES = ("nemotron_h",)
_LEGACY = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}
_LETTERS = {"linear_attention": ("M", "-"), "full_attention": ("A", "-"), "mlp": ("-", "D")}
# transformers' NemotronHConfig accepts these older spellings (NVIDIA's remote-code configs)
_ALIASES = {"mamba_n_groups": "n_groups", "mamba_d_conv": "conv_kernel", "mamba_expand": "expand",
            "mamba_dt_min": "time_step_min", "mamba_dt_max": "time_step_max", "mamba_dt_limit": "time_step_limit",
            "mamba_dt_init_floor": "time_step_floor", "mamba_conv_bias": "use_conv_bias",
            "mamba_chunk_size": "chunk_size"}


# -- config ---------------------------------------------------------------------------------------
def layer_types(hf: dict) -> list[str]:
    """The per-layer block types of a nemotron_h config.json (layers_block_type, else hybrid_override_pattern)."""
    types = hf.get("layers_block_type") or hf.get("layer_types")
    if types is None:
        pattern = hf.get("hybrid_override_pattern")
        if not isinstance(pattern, str) or any(ch not in _LEGACY for ch in pattern):
            raise ValueError(f"config.json (nemotron_h) needs layers_block_type or a hybrid_override_pattern of "
                             f"{''.join(_LEGACY)} letters, found {pattern!r}")
        types = [_LEGACY[ch] for ch in pattern]
    if not isinstance(types, list) or not types:
        raise ValueError(f"config.json (nemotron_h) layers_block_type={types!r} must be a non-empty list")
    types = [{"mamba": "linear_attention", "attention": "full_attention"}.get(t, t) for t in types]  # as transformers
    bad = sorted({t for t in types if t not in (*_LETTERS, "moe")}, key=str)
    if bad:
        raise ValueError(f"config.json (nemotron_h) layers_block_type has unknown types {bad} (known: "
                         f"{sorted(_LEGACY.values())})")
    return types


def config_from_nemotron_h(hf: dict) -> ModelConfig:
    hf = {**hf, **{_ALIASES[k]: v for k, v in hf.items() if k in _ALIASES}}  # the old spelling wins, as in HF
    absent = [k for k in ("vocab_size", "hidden_size") if k not in hf]
    if absent:
        raise ValueError(f"config.json (nemotron_h) is missing field(s) {absent}")
    types = layer_types(hf)
    if "moe" in types:
        raise ValueError("config.json (nemotron_h) layers_block_type has 'moe' (E) layers: Nemotron-H's experts are "
                         "non-gated relu2 MLPs, which hybridlm's MoE (SwiGLU experts) does not have yet")
    for field, want in (("mlp_hidden_act", "relu2"), ("mamba_hidden_act", "silu")):
        if hf.get(field, want) != want:
            raise ValueError(f"config.json (nemotron_h) {field}={hf[field]!r} is not supported (only {want!r})")
    for field in ("mlp_bias", "attention_bias"):
        if hf.get(field):
            raise ValueError(f"config.json (nemotron_h) {field}=True is not supported (the published models have none)")
    if hf.get("sliding_window") is not None:
        raise ValueError(f"config.json (nemotron_h) sliding_window={hf['sliding_window']!r} is not supported")
    d, heads = hf["hidden_size"], hf.get("num_attention_heads", 32)
    t_min = float(hf.get("time_step_min", 0.001))
    limit_from_hf(hf.get("time_step_limit"), "nemotron_h")  # checked, but not what transformers applies (above)
    mixers = {
        "M": Mamba2Config(
            num_heads=hf.get("mamba_num_heads", 128), head_dim=hf.get("mamba_head_dim", 64),
            d_state=hf.get("ssm_state_size", 128), n_groups=hf.get("n_groups", 8),
            conv_kernel=hf.get("conv_kernel", 4), chunk_size=hf.get("chunk_size", 128),
            conv_bias=bool(hf.get("use_conv_bias", True)), proj_bias=bool(hf.get("use_bias", False)),
            # transformers' mixer clamps to (time_step_min, inf) whatever time_step_limit says
            time_step_limit=(t_min, math.inf), time_step_min=t_min, time_step_max=hf.get("time_step_max", 0.1),
            time_step_floor=hf.get("time_step_floor", 1e-4)),
        "A": AttentionConfig(
            num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf.get("attention_head_dim") or 128, rope_fraction=0.0, qk_norm=False,
            output_gate=False, bias=False),
    }
    letters = [_LETTERS[t] for t in types]
    mixer_letters, ffn_letters = [m for m, _ in letters], [f for _, f in letters]
    return ModelConfig(
        name=hf.get("_name_or_path") or "nemotron_h", vocab_size=hf["vocab_size"], d_model=d,
        num_layers=len(types), mixer_pattern=runs(mixer_letters), ffn_pattern=runs(ffn_letters),
        mixers={k: v for k, v in mixers.items() if k in mixer_letters},
        ffns={"D": DenseFFNConfig(intermediate_size=hf.get("intermediate_size", 21504), activation="relu2")}
        if "D" in ffn_letters else {},
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), zero_centered_norm=False,
        tie_embeddings=False,  # NemotronHForCausalLM never ties (its _tied_weights_keys is empty)
        max_seq_len=hf.get("max_position_embeddings", 4096), hf_model_type="nemotron_h")


def hf_layers(cfg: ModelConfig) -> list[tuple[int, str, str]]:
    """(our layer, 'mixer' | 'ffn', Nemotron-H block type) for each Nemotron-H layer, in order: a block with both
    sublayers becomes two layers, a block with one becomes one."""
    out = []
    for i in range(cfg.num_layers):
        m, f = cfg.mixer(i), cfg.ffn(i)
        if m.kind != "none":
            out.append((i, "mixer", {"mamba2": "linear_attention", "attention": "full_attention"}.get(m.kind, m.kind)))
        if f.kind != "none":
            out.append((i, "ffn", "mlp" if f.kind == "dense" else f.kind))
    return out


def config_to_nemotron_h(cfg: ModelConfig) -> dict:
    """The nemotron_h config.json for a model that fits the format; ValueError listing what does not."""
    problems: list[str] = []
    layers = hf_layers(cfg)
    kinds = sorted({t for _, _, t in layers} - set(_LETTERS))
    if kinds:
        problems.append(f"sublayers of kind {kinds} (only mamba2 and attention mixers and dense FFNs)")
    mambas = [cfg.mixer(i) for i, part, t in layers if t == "linear_attention"]
    attns = [cfg.mixer(i) for i, part, t in layers if t == "full_attention"]
    mlps = [cfg.ffn(i) for i, part, t in layers if t == "mlp"]
    uniform(mambas, "Mamba-2", problems)
    uniform(attns, "attention", problems)
    uniform(mlps, "MLP", problems)
    if mambas:
        problems += mamba2_problems(mambas[0])
        low, high = mambas[0].time_step_limit
        if not (low > 0 and high == math.inf):
            problems.append(f"the dt limit must be (low > 0, inf): transformers clamps dt to (time_step_min, inf) "
                            f"(time_step_limit={[low, high]})")
    if attns:
        a = attns[0]
        if a.rope_dim or a.qk_norm or a.output_gate or a.bias or a.sliding_window or a.chunk_size \
                or a.temperature_tuning or a.softmax_scale is not None:
            problems.append("attention must be plain NoPE GQA (rope_fraction=0, no QK-norm, output gate, bias, "
                            "window, chunk, temperature tuning or softmax_scale)")
    if mlps and mlps[0].activation != "relu2":
        problems.append(f"dense FFNs must be relu2 MLPs (activation={mlps[0].activation!r})")
    if cfg.zero_centered_norm or cfg.mtp_depth or cfg.hc_mult != 1:
        problems.append("norms must be plain (zero_centered_norm=False), with no MTP and no hyper-connections")
    scalars = {k: getattr(cfg, k, 1.0) for k in ("embedding_multiplier", "residual_multiplier", "logits_scaling")}
    if any(v != 1.0 for v in scalars.values()):
        problems.append(f"the format has no model multipliers ({scalars})")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a Nemotron-H checkpoint: " + "; ".join(problems))
    types = [t for _, _, t in layers]
    m = mambas[0] if mambas else Mamba2Config(num_heads=8, head_dim=cfg.d_model * 2 // 8, n_groups=1)
    a = attns[0] if attns else AttentionConfig(num_heads=8, num_kv_heads=8, head_dim=cfg.d_model // 8)
    inverse = {v: k for k, v in _LEGACY.items()}
    return {
        "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "layers_block_type": types, "num_hidden_layers": len(types),
        "hybrid_override_pattern": "".join(inverse[t] for t in types),  # for NVIDIA's remote code
        "num_attention_heads": a.num_heads, "num_key_value_heads": a.num_kv_heads, "head_dim": a.head_dim,
        "attention_bias": False, "intermediate_size": mlps[0].intermediate_size if mlps else 4 * cfg.d_model,
        "mlp_hidden_act": "relu2", "mlp_bias": False, "mamba_num_heads": m.num_heads, "mamba_head_dim": m.head_dim,
        "ssm_state_size": m.d_state, "n_groups": m.n_groups, "conv_kernel": m.conv_kernel,
        "chunk_size": m.chunk_size, "use_conv_bias": m.conv_bias, "use_bias": m.proj_bias,
        "mamba_hidden_act": "silu", "time_step_min": m.time_step_limit[0],
        "time_step_max": max(m.time_step_max, m.time_step_limit[0]),
        "time_step_floor": m.time_step_floor,
        "time_step_limit": [m.time_step_limit[0], math.inf], "layer_norm_epsilon": cfg.norm_eps,
        "tie_word_embeddings": False, "max_position_embeddings": cfg.max_seq_len,
        "num_nextn_predict_layers": 0, "torch_dtype": "float32",
    }


# -- weights --------------------------------------------------------------------------------------
def _pairs(cfg: ModelConfig, pre: str) -> list[tuple[str, str, bool]]:
    """(HF name, our name, is_conv) for every tensor a Nemotron-H checkpoint of `cfg` holds."""
    out = [(pre + "embeddings.weight", "embed.weight", False), (pre + "norm_f.weight", "norm.weight", False)]
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", "lm_head.weight", False))
    for j, (i, part, t) in enumerate(hf_layers(cfg)):
        p, o = f"{pre}layers.{j}.", f"layers.{i}."
        out.append((p + "norm.weight", o + f"{part}_norm.weight", False))
        if t == "linear_attention":
            out += mixer_tensors(p + "mixer.", o + "mixer.", cfg.mixer(i))
        elif t == "full_attention":
            out += [(f"{p}mixer.{n}_proj.weight", f"{o}mixer.{n}_proj.weight", False) for n in "qkvo"]
        else:
            out += [(f"{p}mixer.{n}_proj.weight", f"{o}ffn.{n}_proj.weight", False) for n in ("up", "down")]
    return out


def _prefix(get) -> str:
    return "backbone." if get is not None and get.has("backbone.embeddings.weight") else "model."


class NemotronHConverter(Converter):
    model_types = NEMOTRON_H_TYPES
    skip = re.compile(r"^mtp\.")  # the MTP layers, which transformers drops too

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_nemotron_h(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_nemotron_h(cfg)

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        out = to_hf(_pairs(model.config, _prefix(get)), model)
        if model.config.tie_embeddings:  # the format has no tied head: write the embedding as the head too
            out["lm_head.weight"] = out[_prefix(get) + "embeddings.weight"]
        return out

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        return from_hf(_pairs(model.config, _prefix(get)), get)


register_converter(NemotronHConverter())
