"""Hugging Face interop for Llama 4 text models: model_type `llama4_text` (Llama4ForCausalLM) and the language
model of `llama4` (Llama4ForConditionalGeneration; the vision tower and projector are skipped).

The mapping (reference: transformers 5.23.0 `models/llama4/modeling_llama4.py`):
  no_rope_layers[i] = 1 (RoPE)      -> letter R: interleaved RoPE (llama3 scaling), chunked if layer_types says so,
                                       weightless QK-norm after RoPE when use_qk_norm
  no_rope_layers[i] = 0 (NoPE)      -> letter N: global attention, no RoPE, no QK-norm, temperature tuning
  (F = RoPE but global, C = NoPE but chunked: legal in the HF config, unused by the published models)
  moe_layers (or interleave_moe_layer_step) -> M: top-k sigmoid router that scales the expert input, shared
                                       expert of the routed width, no gate; the other layers -> D: SwiGLU of
                                       intermediate_size_mlp
Tensor names, per layer `{prefix}layers.{i}.` with prefix `model.` (or `language_model.model.` in the multimodal
checkpoints): input_layernorm / post_attention_layernorm -> mixer_norm / ffn_norm; self_attn.{q,k,v,o}_proj ->
mixer.*; feed_forward.{gate,up,down}_proj -> ffn.* (dense); feed_forward.router -> ffn.router;
feed_forward.experts.gate_up_proj [E, D, 2I] / down_proj [E, I, D] -> ffn.gate_up_proj [E, 2I, D] / down_proj
[E, D, I] (transposed: HF multiplies x @ W, we store nn.Linear's [out, in]); feed_forward.shared_expert.* ->
ffn.shared.*.
"""

from __future__ import annotations

import re

import torch

from ...layers.ffn.dense import DenseFFNConfig
from ...layers.ffn.moe import MoEConfig
from ...layers.mixers.attention import AttentionConfig
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import SWIGLU, Converter, runs

LLAMA4_TYPES = ("llama4_text", "llama4")
_SKIP = re.compile(r"^(model\.)?(vision_model|multi_modal_projector)\.")
_LETTER = {(True, True): "R", (False, False): "N", (True, False): "F", (False, True): "C"}  # (rope, chunked)
_LLAMA3 = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


# -- config ---------------------------------------------------------------------------------------
def _rope(text: dict) -> tuple[float, dict | None]:
    """(theta, llama3 scaling or None) from transformers 5 `rope_parameters` or 4.x `rope_theta` + `rope_scaling`."""
    rope = dict(text.get("rope_parameters") or {})
    if not rope:
        rope = {**(text.get("rope_scaling") or {}), "rope_theta": text.get("rope_theta", 500_000.0)}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    theta = float(rope.get("rope_theta", 500_000.0))
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ValueError(f"config.json (llama4) rope_type={rope_type!r} is not supported (only 'default', 'llama3')")
    return theta, {"rope_type": "llama3", **{k: rope[k] for k in _LLAMA3}}


def config_from_llama4(hf: dict) -> ModelConfig:
    text = dict(hf.get("text_config") or hf) if hf.get("model_type") == "llama4" else dict(hf)
    required = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size"]
    absent = [k for k in required if k not in text]
    if absent:
        raise ValueError(f"config.json (llama4) is missing field(s) {absent}")
    if text.get("attention_bias"):
        raise ValueError("config.json (llama4) attention_bias=True is not supported (the published models have none)")
    if text.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json (llama4) hidden_act={text['hidden_act']!r} is not supported (only 'silu')")
    n, heads = text["num_hidden_layers"], text["num_attention_heads"]
    interval = text.get("no_rope_layer_interval", 4)
    use_rope = text.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(n)]
    layer_types = text.get("layer_types") or ["chunked_attention" if r else "full_attention" for r in use_rope]
    chunk = text.get("attention_chunk_size", 8192)
    bad = sorted(set(layer_types) - {"chunked_attention", "full_attention"})
    if bad or len(layer_types) < n or len(use_rope) < n:
        raise ValueError(f"config.json (llama4) layer_types / no_rope_layers do not describe {n} layers: {bad}")
    if "chunked_attention" in layer_types[:n] and not chunk:
        raise ValueError("config.json (llama4) has chunked_attention layers but no attention_chunk_size")
    theta, scaling = _rope(text)
    use_qk_norm, tuning = bool(text.get("use_qk_norm", True)), bool(text.get("attn_temperature_tuning", True))
    mixers, mixer_letters = {}, []
    for i in range(n):
        rope, chunked = bool(use_rope[i]), layer_types[i] == "chunked_attention"
        letter = _LETTER[(rope, chunked)]
        mixer_letters.append(letter)
        mixers[letter] = AttentionConfig(
            num_heads=heads, num_kv_heads=text["num_key_value_heads"],
            head_dim=text.get("head_dim") or text["hidden_size"] // heads, rope_fraction=1.0 if rope else 0.0,
            rope_theta=theta, qk_norm=use_qk_norm and rope, qk_norm_weight=not (use_qk_norm and rope),
            output_gate=False, bias=False, chunk_size=chunk if chunked else None,
            temperature_tuning=tuning and not rope, attn_scale=float(text.get("attn_scale", 0.1)),
            floor_scale=int(text.get("floor_scale", 8192)), rope_interleaved=rope,
            rope_scaling=scaling if rope else None)
    step = text.get("interleave_moe_layer_step", 1)
    moe_layers = text.get("moe_layers")
    moe_layers = set(range(step - 1, n, step) if moe_layers is None else moe_layers)
    ffn_letters = ["M" if i in moe_layers else "D" for i in range(n)]
    width = text["intermediate_size"]
    ffns = {"M": MoEConfig(num_experts=text.get("num_local_experts", 16), top_k=text.get("num_experts_per_tok", 1),
                           expert_size=width, shared_size=width, shared_gate=False, score_func="sigmoid",
                           norm_topk=False, scale_input=True),
            "D": DenseFFNConfig(intermediate_size=text.get("intermediate_size_mlp", 16384))}
    return ModelConfig(
        name=hf.get("_name_or_path") or "llama4", vocab_size=text["vocab_size"], d_model=text["hidden_size"],
        num_layers=n, mixer_pattern=runs(mixer_letters), ffn_pattern=runs(ffn_letters), mixers=mixers,
        ffns={k: v for k, v in ffns.items() if k in ffn_letters}, norm_eps=text.get("rms_norm_eps", 1e-5),
        zero_centered_norm=False,
        tie_embeddings=bool(text.get("tie_word_embeddings", hf.get("tie_word_embeddings", False))),
        max_seq_len=text.get("max_position_embeddings", 131_072), hf_model_type="llama4_text")


def config_to_llama4(cfg: ModelConfig) -> dict:
    """The llama4_text config.json for a model that fits the format; ValueError listing what does not."""
    problems: list[str] = []
    attn = [cfg.mixer(i) for i in range(cfg.num_layers)]
    if any(not isinstance(c, AttentionConfig) for c in attn):
        raise ValueError(f"config {cfg.name!r} cannot be written as a Llama 4 checkpoint: every mixer must be "
                         "attention")
    a0 = attn[0]
    rope_l = [c for c in attn if c.rope_dim]
    nope_l = [c for c in attn if not c.rope_dim]
    chunks = {c.chunk_size for c in attn if c.chunk_size is not None}

    def uniform(cs, fields, what):
        for f in fields:
            if len({repr(getattr(c, f)) for c in cs}) > 1:
                problems.append(f"{what} differ in {f}")

    uniform(attn, ("num_heads", "num_kv_heads", "head_dim", "rope_theta", "attn_scale", "floor_scale"), "mixers")
    uniform(rope_l, ("qk_norm", "rope_scaling"), "RoPE mixers")
    uniform(nope_l, ("temperature_tuning",), "NoPE mixers")
    if len(chunks) > 1:
        problems.append(f"several chunk sizes {sorted(chunks)}")
    if any(c.bias or c.output_gate or c.sliding_window for c in attn):
        problems.append("attention must have no bias, no output gate and no sliding window")
    if any(c.rope_fraction != 1.0 or not c.rope_interleaved for c in rope_l):
        problems.append("RoPE layers must rotate the whole head in the interleaved layout (rope_interleaved=True)")
    if any(c.qk_norm and c.qk_norm_weight for c in rope_l) or any(c.qk_norm for c in nope_l):
        problems.append("QK-norm must be weightless and on RoPE layers only")
    if any(c.temperature_tuning for c in rope_l):
        problems.append("temperature tuning is applied on NoPE layers only")
    denses = {cfg.ffns[x].intermediate_size for x in cfg.layer_ffns if cfg.ffns[x].kind == "dense"}
    used_moe = {x for x in cfg.layer_ffns if cfg.ffns[x].kind == "moe"}
    moe = cfg.ffns[min(used_moe)] if used_moe else None
    if len({repr(cfg.ffns[x]) for x in used_moe}) > 1:
        problems.append("several different MoE entries")
    if len(denses) > 1:
        problems.append(f"several dense widths {sorted(denses)}")
    if moe is not None and not (moe.score_func == "sigmoid" and not moe.norm_topk and moe.scale_input
                                and moe.routed_scale == 1.0 and moe.shared_size == moe.expert_size
                                and not moe.shared_gate and moe.bias_update_rate == 0
                                and getattr(moe, "n_groups", 1) == 1):
        problems.append("MoE must be sigmoid top-k without renormalisation, scale_input=True, routed_scale=1, one "
                        "ungated shared expert of the routed width, no bias updates, no groups")
    if cfg.zero_centered_norm or cfg.mtp_depth:
        problems.append("norms must be plain (zero_centered_norm=False) and there is no MTP")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a Llama 4 checkpoint: " + "; ".join(problems))
    n = cfg.num_layers
    moe_layers = [i for i, x in enumerate(cfg.layer_ffns) if cfg.ffns[x].kind == "moe"]
    step = next((s for s in range(1, n + 1) if moe_layers == list(range(s - 1, n, s))), 1)
    scaling = rope_l[0].rope_scaling if rope_l else None
    theta = a0.rope_theta
    width_mlp = denses.pop() if denses else 4 * cfg.d_model
    return {
        "architectures": ["Llama4ForCausalLM"], "model_type": "llama4_text", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": n, "num_attention_heads": a0.num_heads,
        "num_key_value_heads": a0.num_kv_heads, "head_dim": a0.head_dim, "hidden_act": "silu",
        "attention_bias": False, "intermediate_size": moe.expert_size if moe else width_mlp,
        "intermediate_size_mlp": width_mlp, "num_local_experts": moe.num_experts if moe else 1,
        "num_experts_per_tok": moe.top_k if moe else 1, "moe_layers": moe_layers,
        "interleave_moe_layer_step": step, "router_aux_loss_coef": moe.aux_loss_coef if moe else 0.0,
        "no_rope_layers": [int(bool(c.rope_dim)) for c in attn],
        "layer_types": ["chunked_attention" if c.chunk_size else "full_attention" for c in attn],
        "attention_chunk_size": chunks.pop() if chunks else cfg.max_seq_len,
        "use_qk_norm": bool(rope_l and rope_l[0].qk_norm),
        "attn_temperature_tuning": bool(nope_l and nope_l[0].temperature_tuning),
        "attn_scale": a0.attn_scale, "floor_scale": a0.floor_scale,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta} if scaling is None
        else {**scaling, "rope_theta": theta},
        "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_seq_len, "torch_dtype": "float32",
    }


# -- weights --------------------------------------------------------------------------------------
def _pairs(cfg: ModelConfig, pre: str, head: str) -> list[tuple[str, str, bool]]:
    """(HF name, our name, transposed) for every tensor a Llama 4 text checkpoint holds."""
    out = [(pre + "embed_tokens.weight", "embed.weight", False), (pre + "norm.weight", "norm.weight", False)]
    if not cfg.tie_embeddings:
        out.append((head, "lm_head.weight", False))
    for i, f in enumerate(cfg.layer_ffns):
        p, o = f"{pre}layers.{i}.", f"layers.{i}."
        out += [(p + "input_layernorm.weight", o + "mixer_norm.weight", False),
                (p + "post_attention_layernorm.weight", o + "ffn_norm.weight", False)]
        out += [(f"{p}self_attn.{n}_proj.weight", f"{o}mixer.{n}_proj.weight", False) for n in "qkvo"]
        if cfg.ffns[f].kind == "dense":
            out += [(f"{p}feed_forward.{n}", f"{o}ffn.{n}", False) for n in SWIGLU]
            continue
        out += [(p + "feed_forward.router.weight", o + "ffn.router.weight", False),
                (p + "feed_forward.experts.gate_up_proj", o + "ffn.gate_up_proj", True),
                (p + "feed_forward.experts.down_proj", o + "ffn.down_proj", True)]
        out += [(f"{p}feed_forward.shared_expert.{n}", f"{o}ffn.shared.{n}", False) for n in SWIGLU]
    return out


def _layout(get) -> tuple[str, str]:
    """(prefix, head name) of a checkpoint: Llama4ForCausalLM's, or the multimodal checkpoint's language model."""
    if get is not None and get.has("language_model.model.embed_tokens.weight"):
        return "language_model.model.", "language_model.lm_head.weight"
    return "model.", "lm_head.weight"


class Llama4Converter(Converter):
    """llama4_text and the language model of llama4 (written back as llama4_text). No routing bias in the
    format: expert_bias comes from init_weights (zero)."""

    model_types = LLAMA4_TYPES
    skip = _SKIP
    strict = False

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_llama4(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_llama4(cfg)

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        w = model.state_dict()
        return {h: (w[o].transpose(1, 2) if t else w[o]) for h, o, t in _pairs(model.config, *_layout(get))}

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        return {o: (get(h).transpose(1, 2) if t else get(h)) for h, o, t in _pairs(model.config, *_layout(get))}


register_converter(Llama4Converter())
