"""Hugging Face interop for AI21's Jamba (model_type `jamba`, JambaForCausalLM): Jamba-v0.1 and Jamba 1.5.

The mapping (reference: transformers 5.23.0 `models/jamba/modeling_jamba.py` and `configuration_jamba.py`):
  layer l is attention iff l % attn_layer_period == attn_layer_offset   -> letter A: GQA, no positional encoding
                                                                          (NoPE), no QK-norm, no bias, scale d^-1/2
  every other layer                                                      -> letter M: Mamba-1 with RMSNorm on dt,
                                                                          B and C (MambaConfig(inner_norms=True))
  FFN of layer l is MoE iff num_experts > 1 and
      l % expert_layer_period == expert_layer_offset                     -> letter M: softmax router (logits in the
                                                                          model dtype, softmax in fp32), top-k, the
                                                                          gates NOT renormalised, no shared expert
  every other FFN                                                        -> letter D: SwiGLU of intermediate_size
  RMSNorm x_hat * w (w init 1, not zero-centred), eps rms_norm_eps everywhere (the inner norms too).

Tensor names, per layer `model.layers.{i}.` -> ours `layers.{i}.`:
  input_layernorm / pre_ff_layernorm                      -> mixer_norm / ffn_norm
  self_attn.{q,k,v,o}_proj.weight                         -> mixer.{q,k,v,o}_proj.weight
  mamba.in_proj (+bias), x_proj, dt_proj.{weight,bias}, A_log, D, out_proj (+bias)  -> mixer.* (same names)
  mamba.conv1d.weight [E, 1, K] / conv1d.bias [E]         -> mixer.conv_weight [E, K] / mixer.conv_bias
  mamba.dt_layernorm / b_layernorm / c_layernorm          -> mixer.dt_norm / b_norm / c_norm
  feed_forward.{gate,up,down}_proj.weight (dense)         -> ffn.*
  feed_forward.router.weight                              -> ffn.router.weight
  feed_forward.experts.{e}.{gate,up,down}_proj.weight (the published layout, and what save_pretrained writes; the
  fused experts.gate_up_proj [E, 2I, D] / down_proj [E, D, I] of transformers' memory layout is read too)
                                                          -> ffn.gate_up_proj [E, 2I, D] (rows gate | up) / down_proj
  model.embed_tokens / model.final_layernorm / lm_head    -> embed / norm / lm_head (absent when tied)
"""

from __future__ import annotations

import math

import torch

from ...layers.ffn.dense import DenseFFNConfig
from ...layers.ffn.moe import MoEConfig
from ...layers.mixers.attention import AttentionConfig
from ...layers.mixers.mamba import MambaConfig
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import SWIGLU, Converter, runs

_WHERE = "config.json (jamba)"
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
# (HF name under mamba., ours under mixer., HF's layout adds a middle dim of 1): only those our module has
_MAMBA = (("in_proj.weight", "in_proj.weight", False), ("in_proj.bias", "in_proj.bias", False),
          ("conv1d.weight", "conv_weight", True), ("conv1d.bias", "conv_bias", False),
          ("x_proj.weight", "x_proj.weight", False), ("dt_proj.weight", "dt_proj.weight", False),
          ("dt_proj.bias", "dt_proj.bias", False), ("A_log", "A_log", False), ("D", "D", False),
          ("out_proj.weight", "out_proj.weight", False), ("out_proj.bias", "out_proj.bias", False),
          ("dt_layernorm.weight", "dt_norm.weight", False), ("b_layernorm.weight", "b_norm.weight", False),
          ("c_layernorm.weight", "c_norm.weight", False))


# -- config ---------------------------------------------------------------------------------------
def _get(hf: dict, name: str, default):
    """A field with transformers' JambaConfig default when absent (or null, as a saved config may write it)."""
    value = hf.get(name)
    return default if value is None else value


def config_from_jamba(hf: dict) -> ModelConfig:
    absent = [k for k in _REQUIRED if k not in hf]
    if absent:
        raise ValueError(f"{_WHERE} is missing field(s) {absent}")
    if _get(hf, "hidden_act", "silu") != "silu":  # the conv activation and the SwiGLU both use it
        raise ValueError(f"{_WHERE} hidden_act={hf['hidden_act']!r} is not supported (only 'silu')")
    if _get(hf, "attention_dropout", 0.0):
        raise ValueError(f"{_WHERE} attention_dropout={hf['attention_dropout']!r} is not supported (hybridlm has "
                         "no dropout; the published models use 0.0)")
    n, d, heads = hf["num_hidden_layers"], hf["hidden_size"], hf["num_attention_heads"]
    periods = {}
    for what, period, offset in (("attn", 8, 4), ("expert", 2, 1)):
        p, o = _get(hf, f"{what}_layer_period", period), _get(hf, f"{what}_layer_offset", offset)
        if not (isinstance(p, int) and isinstance(o, int) and p >= 1 and 0 <= o < p):
            raise ValueError(f"{_WHERE} {what}_layer_offset={o!r} must be in [0, {what}_layer_period={p!r})")
        periods[what] = (p, o)
    expand = _get(hf, "mamba_expand", 2)
    if not isinstance(expand, int):  # transformers builds int(expand * hidden) only for an integer here
        raise ValueError(f"{_WHERE} mamba_expand={expand!r} must be an integer")
    dt_rank = _get(hf, "mamba_dt_rank", "auto")
    dt_rank = math.ceil(d / 16) if dt_rank == "auto" else dt_rank
    mixers = {
        "A": AttentionConfig(num_heads=heads, num_kv_heads=_get(hf, "num_key_value_heads", heads),
                             head_dim=_get(hf, "head_dim", d // heads), rope_fraction=0.0, qk_norm=False,
                             output_gate=False, bias=False),
        "M": MambaConfig(d_state=_get(hf, "mamba_d_state", 16), d_conv=_get(hf, "mamba_d_conv", 4), expand=expand,
                         dt_rank=dt_rank, conv_bias=bool(_get(hf, "mamba_conv_bias", True)),
                         proj_bias=bool(_get(hf, "mamba_proj_bias", False)), inner_norms=True),
    }
    (ap, ao), (ep, eo) = periods["attn"], periods["expert"]
    mixer_letters = ["A" if i % ap == ao else "M" for i in range(n)]
    experts = _get(hf, "num_experts", _get(hf, "num_local_experts", 16))
    # transformers: a layer gets the sparse block iff its expert count (num_experts on the period) exceeds 1
    ffn_letters = ["M" if experts > 1 and i % ep == eo else "D" for i in range(n)]
    width = hf["intermediate_size"]
    ffns = {"D": DenseFFNConfig(intermediate_size=width),
            "M": MoEConfig(num_experts=experts, top_k=_get(hf, "num_experts_per_tok", 2), expert_size=width,
                           score_func="softmax", norm_topk=False,
                           aux_loss_coef=float(_get(hf, "router_aux_loss_coef", 0.001)))}
    return ModelConfig(
        name=hf.get("_name_or_path") or "jamba", vocab_size=hf["vocab_size"], d_model=d, num_layers=n,
        mixer_pattern=runs(mixer_letters), ffn_pattern=runs(ffn_letters),
        mixers={k: v for k, v in mixers.items() if k in mixer_letters},
        ffns={k: v for k, v in ffns.items() if k in ffn_letters}, norm_eps=float(_get(hf, "rms_norm_eps", 1e-6)),
        zero_centered_norm=False, tie_embeddings=bool(_get(hf, "tie_word_embeddings", False)),
        max_seq_len=_get(hf, "max_position_embeddings", 262_144), init_std=float(_get(hf, "initializer_range", 0.02)),
        hf_model_type="jamba")


def period_of(flags: list[bool]) -> tuple[int, int] | None:
    """The smallest (period, offset), offset < period, with flags[l] == (l % period == offset) for every layer, or
    None. A pattern with no layer set is (n + 1, n): the offset is never reached."""
    n = len(flags)
    for p in range(1, n + 2):
        for o in range(p):
            if all(f == (i % p == o) for i, f in enumerate(flags)):
                return p, o
    return None


def config_to_jamba(cfg: ModelConfig) -> dict:
    """The jamba config.json for a model that fits the format; ValueError listing what does not."""
    problems: list[str] = []
    mixers = [cfg.mixer(i) for i in range(cfg.num_layers)]
    ffns = [cfg.ffn(i) for i in range(cfg.num_layers)]
    attn = [c for c in mixers if isinstance(c, AttentionConfig)]
    mamba = [c for c in mixers if isinstance(c, MambaConfig)]
    moe = [c for c in ffns if isinstance(c, MoEConfig)]
    dense = [c for c in ffns if isinstance(c, DenseFFNConfig)]
    if len(attn) + len(mamba) < len(mixers) or len(moe) + len(dense) < len(ffns):
        raise ValueError(f"config {cfg.name!r} cannot be written as a Jamba checkpoint: every mixer must be "
                         "attention or mamba, every FFN moe or dense")
    for what, cs in (("attention", attn), ("mamba", mamba), ("MoE", moe), ("dense", dense)):
        if any(c != cs[0] for c in cs):
            problems.append(f"several different {what} entries")
    a = attn[0] if attn else AttentionConfig(num_heads=1, num_kv_heads=1, head_dim=cfg.d_model)
    if any(c.rope_dim or c.qk_norm or c.output_gate or c.bias or c.sliding_window or c.chunk_size
           or c.temperature_tuning for c in attn):
        problems.append("attention must be NoPE (rope_fraction=0) without QK-norm, output gate, bias, sliding "
                        "window, chunking or temperature tuning")
    m = mamba[0] if mamba else MambaConfig(inner_norms=True)
    if not m.inner_norms:
        problems.append("mamba must have inner_norms=True (Jamba's RMSNorm on dt, B and C)")
    e = moe[0] if moe else None
    if e is not None and not (e.num_experts > 1 and e.score_func == "softmax" and not e.norm_topk
                              and e.routed_scale == 1.0 and not e.shared_size and not e.scale_input
                              and e.n_groups == 1 and not e.swiglu_limit and not e.hash_routing
                              and e.bias_update_rate == 0):
        problems.append("MoE must be >= 2 experts, softmax top-k without renormalisation, routed_scale=1, no "
                        "shared expert, no input scaling, groups, clamp, hash routing or bias updates")
    widths = {c.intermediate_size for c in dense} | ({e.expert_size} if e else set())
    if len(widths) > 1:
        problems.append(f"the dense and expert widths must be one intermediate_size (found {sorted(widths)})")
    attn_at = period_of([isinstance(c, AttentionConfig) for c in mixers])
    moe_at = period_of([isinstance(c, MoEConfig) for c in ffns])
    if attn_at is None:
        problems.append(f"attention layers must be every attn_layer_period-th from an offset (mixer_pattern "
                        f"{cfg.mixer_pattern!r})")
    if moe_at is None:
        problems.append(f"MoE layers must be every expert_layer_period-th from an offset (ffn_pattern "
                        f"{cfg.ffn_pattern!r})")
    if cfg.zero_centered_norm or cfg.mtp_depth or cfg.hc_mult > 1:
        problems.append("norms must be plain (zero_centered_norm=False), with no MTP and no hyper-connections")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a Jamba checkpoint: " + "; ".join(problems))
    d = cfg.d_model
    return {
        "architectures": ["JambaForCausalLM"], "model_type": "jamba", "vocab_size": cfg.vocab_size,
        "hidden_size": d, "num_hidden_layers": cfg.num_layers, "num_attention_heads": a.num_heads,
        "num_key_value_heads": a.num_kv_heads, "head_dim": a.head_dim, "hidden_act": "silu",
        "intermediate_size": widths.pop() if widths else 4 * d,
        "attn_layer_period": attn_at[0], "attn_layer_offset": attn_at[1],
        "expert_layer_period": moe_at[0], "expert_layer_offset": moe_at[1],
        "num_experts": e.num_experts if e else 1, "num_experts_per_tok": e.top_k if e else 1,
        "router_aux_loss_coef": e.aux_loss_coef if e else 0.0,
        "mamba_d_state": m.d_state, "mamba_d_conv": m.d_conv, "mamba_expand": m.expand,
        "mamba_dt_rank": m.dt_rank if m.dt_rank is not None else math.ceil(d / 16),
        "mamba_conv_bias": m.conv_bias, "mamba_proj_bias": m.proj_bias, "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings, "max_position_embeddings": cfg.max_seq_len,
        "initializer_range": cfg.init_std, "attention_dropout": 0.0, "torch_dtype": "float32",
    }


# -- weights --------------------------------------------------------------------------------------
def _pairs(model, fused: bool) -> list[tuple[str, str, str]]:
    """(HF name, our name, how) for every tensor a Jamba checkpoint holds; how: "" (same tensor), "conv" (HF has a
    [E, 1, K] conv weight), or for per-expert tensors "gate:e" / "up:e" / "down:e" (a slice of our fused ones)."""
    cfg, ours = model.config, set(model.state_dict())
    out = [("model.embed_tokens.weight", "embed.weight", ""), ("model.final_layernorm.weight", "norm.weight", "")]
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", "lm_head.weight", ""))
    for i in range(cfg.num_layers):
        p, o = f"model.layers.{i}.", f"layers.{i}."
        out += [(p + "input_layernorm.weight", o + "mixer_norm.weight", ""),
                (p + "pre_ff_layernorm.weight", o + "ffn_norm.weight", "")]
        if cfg.mixer(i).kind == "attention":
            out += [(f"{p}self_attn.{n}_proj.weight", f"{o}mixer.{n}_proj.weight", "") for n in "qkvo"]
        else:
            out += [(p + "mamba." + h, o + "mixer." + w, "conv" if c else "") for h, w, c in _MAMBA
                    if o + "mixer." + w in ours]
        f = p + "feed_forward."
        if cfg.ffn(i).kind == "dense":
            out += [(f + n, o + "ffn." + n, "") for n in SWIGLU]
            continue
        out.append((f + "router.weight", o + "ffn.router.weight", ""))
        if fused:
            out += [(f + "experts.gate_up_proj", o + "ffn.gate_up_proj", ""),
                    (f + "experts.down_proj", o + "ffn.down_proj", "")]
            continue
        for e in range(cfg.ffn(i).num_experts):
            out += [(f"{f}experts.{e}.gate_proj.weight", o + "ffn.gate_up_proj", f"gate:{e}"),
                    (f"{f}experts.{e}.up_proj.weight", o + "ffn.gate_up_proj", f"up:{e}"),
                    (f"{f}experts.{e}.down_proj.weight", o + "ffn.down_proj", f"down:{e}")]
    return out


def _fused(get) -> bool:
    return get is not None and any(k.endswith("feed_forward.experts.gate_up_proj") for k in get.specs)


class JambaConverter(Converter):
    """jamba, both ways. The format holds no routing bias: expert_bias comes from init_weights (zero)."""

    model_types = ("jamba",)
    strict = False

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_jamba(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_jamba(cfg)

    def default_model_type(self, cfg: ModelConfig) -> str | None:
        kinds = {m.kind for m in cfg.mixers.values()}
        return "jamba" if "mamba" in kinds and kinds <= {"mamba", "attention"} else None

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        w = model.state_dict()
        out = {}
        for h, o, how in _pairs(model, _fused(get)):
            t = w[o]
            if how == "conv":
                t = t[:, None, :]
            elif how:
                part, e = how.split(":")
                half = t.shape[1] // 2
                t = {"gate": t[int(e), :half], "up": t[int(e), half:], "down": t[int(e)]}[part]
            out[h] = t
        return out

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        state, experts = {}, {}
        for h, o, how in _pairs(model, _fused(get)):
            if how == "conv":
                state[o] = get(h).squeeze(1)
            elif how:
                part, e = how.split(":")
                experts.setdefault(o, {}).setdefault(int(e), {})[part] = get(h)
            else:
                state[o] = get(h)
        for o, per in experts.items():  # [E, 2I, D] rows gate | up, or [E, D, I]
            state[o] = torch.stack([torch.cat((per[e]["gate"], per[e]["up"])) if "gate" in per[e]
                                    else per[e]["down"] for e in sorted(per)])
        return state


register_converter(JambaConverter())
