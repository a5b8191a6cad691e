"""Hugging Face interop for IBM Granite 4.0-H: model_type `granitemoehybrid` (GraniteMoeHybridForCausalLM).

Every layer is a token mixer (Mamba-2 or attention, by `layer_types`) and an FFN, each behind a plain RMSNorm
(reference: transformers 5.23.0 `models/granitemoehybrid/modeling_granitemoehybrid.py`):
  layer_types "mamba" / "linear_attention"    -> mixer "M" (mamba2: mamba_n_heads x mamba_d_head, state mamba_d_state,
                                                 mamba_n_groups, conv mamba_d_conv, time_step_limit honoured; gated
                                                 norm per group, gate before the norm, eps rms_norm_eps)
  layer_types "attention" / "full_attention"  -> mixer "A" (GQA; RoPE only when position_embedding_type == "rope",
                                                 Granite 4.0-H is NoPE; scale = attention_multiplier)
  num_local_experts > 0                        -> ffn "M": MoE of SwiGLU experts, router top-k of the logits then a
                                                 softmax over the k (= softmax, top-k, renormalised), plus the shared
                                                 SwiGLU MLP of shared_intermediate_size (always on, ungated)
  num_local_experts == 0                       -> ffn "D": the shared MLP alone (dense SwiGLU)
  embedding_multiplier, residual_multiplier, logits_scaling -> the ModelConfig fields of the same names
Tensor names, per layer `model.layers.{i}.`: input_layernorm / post_attention_layernorm -> mixer_norm / ffn_norm;
mamba.* -> mixer.* (mamba2.py's map); self_attn.{q,k,v,o}_proj -> mixer.*; block_sparse_moe.router.layer /
input_linear [E, 2I, D] / output_linear [E, D, I] (the published names; transformers' in-memory names router /
experts.gate_up_proj / experts.down_proj are read too) -> ffn.router / gate_up_proj / down_proj (same layout,
gate rows first); shared_mlp.input_linear [2S, D] (gate | up) / output_linear -> ffn.shared.{gate,up,down}_proj
(dense: ffn.{gate,up,down}_proj). embed_tokens / norm / lm_head (absent when tied) -> embed / norm / lm_head.
No routing bias in the format: expert_bias comes from init_weights (zero).
"""

from __future__ import annotations

import torch

from ...layers.ffn.dense import DenseFFNConfig
from ...layers.ffn.moe import MoEConfig
from ...layers.mixers.attention import AttentionConfig
from ...layers.mixers.mamba2 import Mamba2Config
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import Converter, RenamedReader, runs
from .mamba2 import from_hf, limit_from_hf, mamba2_problems, mixer_tensors, to_hf, uniform

GRANITE_TYPES = ("granitemoehybrid",)
_KIND = {"mamba": "M", "linear_attention": "M", "attention": "A", "full_attention": "A"}
_SCALARS = ("embedding_multiplier", "residual_multiplier", "logits_scaling")


# -- config ---------------------------------------------------------------------------------------
def _rope(hf: dict) -> float | None:
    """RoPE theta when position_embedding_type is "rope", else None (NoPE)."""
    if hf.get("position_embedding_type") != "rope":
        return None
    rope = dict(hf.get("rope_parameters") or {}) or {**(hf.get("rope_scaling") or {}),
                                                      "rope_theta": hf.get("rope_theta", 10_000.0)}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(f"config.json (granitemoehybrid) rope_type={kind!r} is not supported (only 'default')")
    return float(rope.get("rope_theta", 10_000.0))


def config_from_granite(hf: dict) -> ModelConfig:
    absent = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads") if k not in hf]
    if absent:
        raise ValueError(f"config.json (granitemoehybrid) is missing field(s) {absent}")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json (granitemoehybrid) hidden_act={hf['hidden_act']!r} is not supported (only "
                         "'silu')")
    if hf.get("attention_bias"):
        raise ValueError("config.json (granitemoehybrid) attention_bias=True is not supported (hybridlm's attention "
                         "has no o_proj bias; the published models have none)")
    n, d, heads = hf["num_hidden_layers"], hf["hidden_size"], hf["num_attention_heads"]
    types = hf.get("layer_types") or hf.get("layers_block_type") or ["mamba"] * n
    bad = sorted({t for t in types if t not in _KIND}, key=str)
    if bad or len(types) != n:
        raise ValueError(f"config.json (granitemoehybrid) layer_types must be {n} of {sorted(_KIND)}, found "
                         f"{len(types)} with {bad}")
    expand, m_heads = hf.get("mamba_expand", 2), hf.get("mamba_n_heads", 128)
    m_head = hf.get("mamba_d_head", "auto")
    m_head = expand * d // m_heads if m_head == "auto" else m_head
    if m_head * m_heads != expand * d:
        raise ValueError(f"config.json (granitemoehybrid) mamba_n_heads * mamba_d_head = {m_heads * m_head} must "
                         f"equal mamba_expand * hidden_size = {expand * d}")
    theta = _rope(hf)
    mixers = {
        "M": Mamba2Config(
            num_heads=m_heads, head_dim=m_head, d_state=hf.get("mamba_d_state", 256),
            n_groups=hf.get("mamba_n_groups", 1), conv_kernel=hf.get("mamba_d_conv", 4),
            chunk_size=hf.get("mamba_chunk_size", 256), conv_bias=bool(hf.get("mamba_conv_bias", True)),
            proj_bias=bool(hf.get("mamba_proj_bias", False)),
            time_step_limit=limit_from_hf(hf.get("time_step_limit"), "granitemoehybrid")),
        "A": AttentionConfig(
            num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads, head_dim=d // heads,
            rope_fraction=0.0 if theta is None else 1.0, rope_theta=theta or 10_000.0, qk_norm=False,
            output_gate=False, bias=False, softmax_scale=float(hf.get("attention_multiplier", 1.0))),
    }
    mixer_letters = [_KIND[t] for t in types]
    experts, shared = hf.get("num_local_experts", 8), hf.get("shared_intermediate_size", 1024)
    if shared < 1:
        raise ValueError(f"config.json (granitemoehybrid) shared_intermediate_size={shared} must be >= 1 (the shared "
                         "MLP is always there)")
    if experts:
        ffn = MoEConfig(num_experts=experts, top_k=hf.get("num_experts_per_tok", 2),
                        expert_size=hf.get("intermediate_size", 11008), shared_size=shared, shared_gate=False,
                        score_func="softmax", norm_topk=True, aux_loss_coef=hf.get("router_aux_loss_coef", 0.001))
        letter = "M"
    else:
        ffn, letter = DenseFFNConfig(intermediate_size=shared), "D"
    return ModelConfig(
        name=hf.get("_name_or_path") or "granitemoehybrid", vocab_size=hf["vocab_size"], d_model=d, num_layers=n,
        mixer_pattern=runs(mixer_letters), ffn_pattern=f"{letter}*{n}",
        mixers={k: v for k, v in mixers.items() if k in mixer_letters}, ffns={letter: ffn},
        norm_eps=hf.get("rms_norm_eps", 1e-6), zero_centered_norm=False,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), max_seq_len=hf.get("max_position_embeddings", 2048),
        hf_model_type="granitemoehybrid", **{k: float(hf.get(k, 1.0)) for k in _SCALARS})


def config_to_granite(cfg: ModelConfig) -> dict:
    """The granitemoehybrid config.json for a model that fits the format; ValueError listing what does not."""
    problems: list[str] = []
    mixers = [cfg.mixer(i) for i in range(cfg.num_layers)]
    ffns = [cfg.ffn(i) for i in range(cfg.num_layers)]
    if any(m.kind not in ("mamba2", "attention") for m in mixers) or any(f.kind not in ("moe", "dense") for f in ffns):
        raise ValueError(f"config {cfg.name!r} cannot be written as a Granite 4.0-H checkpoint: every layer must be "
                         "a Mamba-2 or attention mixer followed by an MoE or dense FFN")
    mambas = [m for m in mixers if m.kind == "mamba2"]
    attns = [m for m in mixers if m.kind == "attention"]
    uniform(mambas, "Mamba-2", problems)
    uniform(attns, "attention", problems)
    uniform(ffns, "FFN", problems)
    m = mambas[0] if mambas else Mamba2Config(num_heads=8, head_dim=2 * cfg.d_model // 8)
    if mambas:
        problems += mamba2_problems(m)
        if m.num_heads * m.head_dim % cfg.d_model:
            problems.append(f"the Mamba width {m.num_heads * m.head_dim} must be a multiple of d_model (the format's "
                            "integer mamba_expand)")
    a = attns[0] if attns else AttentionConfig(num_heads=8, num_kv_heads=8, head_dim=cfg.d_model // 8)
    if a.head_dim * a.num_heads != cfg.d_model or a.qk_norm or a.output_gate or a.bias or a.sliding_window \
            or a.chunk_size or a.temperature_tuning or a.rope_scaling or a.rope_interleaved \
            or a.rope_fraction not in (0.0, 1.0):
        problems.append("attention must be GQA with head_dim = d_model / num_heads, no QK-norm, output gate, bias, "
                        "window, chunk or temperature tuning, and RoPE (half-split, default) on the whole head or none")
    f = ffns[0]
    if f.kind == "moe" and not (f.score_func == "softmax" and f.norm_topk and f.routed_scale == 1.0
                                and not f.shared_gate and f.n_groups == 1 and not f.scale_input
                                and not f.hash_routing and not f.swiglu_limit and f.bias_update_rate == 0):
        problems.append("MoE must be softmax top-k, renormalised, routed_scale 1, an ungated shared expert, no groups, "
                        "no bias updates")
    if f.kind == "dense" and f.activation != "swiglu":
        problems.append(f"dense FFNs must be SwiGLU (activation={f.activation!r})")
    if cfg.zero_centered_norm or cfg.mtp_depth or cfg.hc_mult != 1:
        problems.append("norms must be plain (zero_centered_norm=False), with no MTP and no hyper-connections")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a Granite 4.0-H checkpoint: " + "; ".join(problems))
    moe = f.kind == "moe"
    return {
        "architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers,
        "layer_types": ["mamba" if x.kind == "mamba2" else "attention" for x in mixers],
        "num_attention_heads": a.num_heads, "num_key_value_heads": a.num_kv_heads, "attention_bias": False,
        "attention_multiplier": a.softmax_scale if a.softmax_scale is not None else a.head_dim ** -0.5,
        "position_embedding_type": "rope" if a.rope_dim else "nope",
        "rope_parameters": {"rope_type": "default", "rope_theta": a.rope_theta},
        "num_local_experts": f.num_experts if moe else 0, "num_experts_per_tok": f.top_k if moe else 1,
        "intermediate_size": f.expert_size if moe else f.intermediate_size,
        "shared_intermediate_size": f.shared_size if moe else f.intermediate_size,
        "router_aux_loss_coef": f.aux_loss_coef if moe else 0.0, "hidden_act": "silu",
        "mamba_n_heads": m.num_heads, "mamba_d_head": m.head_dim,
        "mamba_expand": m.num_heads * m.head_dim // cfg.d_model,
        "mamba_d_state": m.d_state, "mamba_n_groups": m.n_groups, "mamba_d_conv": m.conv_kernel,
        "mamba_chunk_size": m.chunk_size, "mamba_conv_bias": m.conv_bias, "mamba_proj_bias": m.proj_bias,
        "time_step_limit": list(m.time_step_limit), "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings, "max_position_embeddings": cfg.max_seq_len,
        **{k: getattr(cfg, k) for k in _SCALARS}, "torch_dtype": "float32",
    }


# -- weights --------------------------------------------------------------------------------------
def _pairs(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    """(HF name, our name, is_conv) for the tensors that map one to one (the shared MLP's fused input_linear is
    handled apart)."""
    out = [("model.embed_tokens.weight", "embed.weight", False), ("model.norm.weight", "norm.weight", False)]
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", "lm_head.weight", False))
    for i in range(cfg.num_layers):
        p, o = f"model.layers.{i}.", f"layers.{i}."
        out += [(p + "input_layernorm.weight", o + "mixer_norm.weight", False),
                (p + "post_attention_layernorm.weight", o + "ffn_norm.weight", False)]
        if cfg.mixer(i).kind == "mamba2":
            out += mixer_tensors(p + "mamba.", o + "mixer.", cfg.mixer(i))
        else:
            out += [(f"{p}self_attn.{n}_proj.weight", f"{o}mixer.{n}_proj.weight", False) for n in "qkvo"]
        shared = "ffn.shared." if cfg.ffn(i).kind == "moe" else "ffn."
        out.append((p + "shared_mlp.output_linear.weight", o + shared + "down_proj.weight", False))
        if cfg.ffn(i).kind == "moe":
            e = p + "block_sparse_moe."
            out += [(e + "router.layer.weight", o + "ffn.router.weight", False),
                    (e + "input_linear.weight", o + "ffn.gate_up_proj", False),
                    (e + "output_linear.weight", o + "ffn.down_proj", False)]
    return out


def _shared_in(cfg: ModelConfig) -> list[tuple[str, str]]:
    """(HF shared_mlp.input_linear [2S, D], our prefix of its gate_proj / up_proj halves) per layer."""
    return [(f"model.layers.{i}.shared_mlp.input_linear.weight",
             f"layers.{i}.ffn.shared." if cfg.ffn(i).kind == "moe" else f"layers.{i}.ffn.")
            for i in range(cfg.num_layers)]


# transformers' in-memory spellings of the expert tensors -> the published ones
_RENAMES = (("block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.input_linear.weight"),
            ("block_sparse_moe.experts.down_proj", "block_sparse_moe.output_linear.weight"),
            ("block_sparse_moe.router.weight", "block_sparse_moe.router.layer.weight"))


def _published(name: str) -> str:
    """A tensor's published name, whichever spelling the file uses."""
    return next((name.replace(a, b) for a, b in _RENAMES if name.endswith(a)), name)


class GraniteConverter(Converter):
    model_types = GRANITE_TYPES
    strict = False  # expert_bias (a buffer the format does not carry) comes from init_weights

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_granite(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_granite(cfg)

    def view(self, reader):
        return RenamedReader(reader, _published)

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        cfg, w = model.config, model.state_dict()
        out = to_hf(_pairs(cfg), model)
        for h, o in _shared_in(cfg):
            out[h] = torch.cat((w[o + "gate_proj.weight"], w[o + "up_proj.weight"]))
        return out

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        cfg = model.config
        out = from_hf(_pairs(cfg), get)
        for h, o in _shared_in(cfg):
            gate, up = get(h).chunk(2)
            out[o + "gate_proj.weight"], out[o + "up_proj.weight"] = gate, up
        return out


register_converter(GraniteConverter())
