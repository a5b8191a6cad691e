"""Hugging Face interop for the Qwen hybrid family: qwen3_next, qwen3_5_moe and the dense qwen3_5.

Reads a local checkpoint directory (config.json + model.safetensors or a sharded index) into HybridLM and
writes one back that transformers loads. Weights come from safetensors only (never pickle).

Layouts handled (HF name -> ours, per layer `model.layers.{i}.` or, for the VL checkpoints,
`model.language_model.layers.{i}.`):
  input_layernorm / post_attention_layernorm      -> mixer_norm / ffn_norm
  self_attn.{q,k,v,o}_proj, q_norm, k_norm         -> mixer.* (same layout; q_proj carries [query|gate] per head)
  linear_attn.in_proj_qkvz + in_proj_ba (qwen3_next, grouped per key head)
  linear_attn.in_proj_qkv/z/b/a (qwen3_5*)          -> mixer.in_proj (rows q|k|v|z|b|a)
  linear_attn.conv1d.weight [C,1,K]                 -> mixer.conv_weight [C,K]
  mlp.gate / experts.{e}.{gate,up,down}_proj (or fused experts.gate_up_proj/down_proj)
       / shared_expert.* / shared_expert_gate       -> ffn.router / gate_up_proj / down_proj / shared.* / shared_gate
  mtp.fc / pre_fc_norm_embedding / pre_fc_norm_hidden / layers.0 / norm   -> mtp.proj / emb_norm / hidden_norm / block / norm
The vision tower of the VL checkpoints is skipped (hybridlm models the language model only).

Errors are the shared pipeline's (base.py).
"""

from __future__ import annotations

import re

import torch

from ...layers.ffn.dense import DenseFFNConfig
from ...layers.ffn.moe import MoEConfig
from ...layers.mixers.attention import AttentionConfig
from ...layers.mixers.gated_deltanet import GatedDeltaNetConfig
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import SWIGLU, Converter, runs

SUPPORTED = ("qwen3_next", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_5", "qwen3_5_text")
CONFIG_ONLY = ("qwen3_moe",)  # config.json read for `info` / `cost`; no weights interop yet
_SKIP = re.compile(r"^(model\.visual\.|visual\.)")


# -- config ---------------------------------------------------------------------------------------
def _config_from_qwen3_moe(hf: dict) -> ModelConfig:
    """qwen3_moe (Qwen3-30B-A3B, Qwen3-235B-A22B): config only, for `info` / `cost` (no weights interop yet).
    Softmax attention on every layer with QK-norm and no output gate, plain RMSNorm, MoE without shared expert."""
    required = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"]
    absent = [k for k in required if k not in hf]
    if absent:
        raise ValueError(f"config.json (qwen3_moe) is missing field(s) {absent}")
    n, rope = hf["num_hidden_layers"], hf.get("rope_parameters") or {}
    attn = AttentionConfig(num_heads=hf["num_attention_heads"], num_kv_heads=hf["num_key_value_heads"],
                           head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
                           rope_fraction=1.0, rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))),
                           qk_norm=True, output_gate=False, bias=bool(hf.get("attention_bias", False)),
                           sliding_window=hf.get("sliding_window") if hf.get("use_sliding_window") else None)
    ffns: dict = {"M": MoEConfig(num_experts=hf.get("num_experts", 128), top_k=hf.get("num_experts_per_tok", 8),
                                 expert_size=hf.get("moe_intermediate_size", 768),
                                 norm_topk=bool(hf.get("norm_topk_prob", False)),
                                 aux_loss_coef=float(hf.get("router_aux_loss_coef", 0.0)))}
    step, mlp_only = hf.get("decoder_sparse_step", 1), set(hf.get("mlp_only_layers") or [])
    letters = ["M" if i not in mlp_only and (i + 1) % step == 0 else "D" for i in range(n)]
    if "D" in letters:
        ffns["D"] = DenseFFNConfig(intermediate_size=hf["intermediate_size"])
    return ModelConfig(
        name=hf.get("_name_or_path") or "qwen3_moe", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
        num_layers=n, mixer_pattern=f"A*{n}", ffn_pattern=runs(letters), mixers={"A": attn},
        ffns={k: v for k, v in ffns.items() if k in letters}, norm_eps=hf.get("rms_norm_eps", 1e-6),
        zero_centered_norm=False, tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_seq_len=hf.get("max_position_embeddings", 4096), hf_model_type=None)


def config_from_hf(hf: dict) -> ModelConfig:
    model_type = hf.get("model_type")
    if model_type == "qwen3_moe":
        return _config_from_qwen3_moe(hf)
    if model_type not in SUPPORTED:
        raise ValueError(f"config.json model_type={model_type!r} is not supported; supported: {SUPPORTED}")
    text = dict(hf.get("text_config", hf))
    text.setdefault("linear_conv_kernel_dim", 4)
    required = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim"]
    absent = [k for k in required if k not in text]
    if absent:
        raise ValueError(f"config.json ({model_type}) is missing field(s) {absent}")
    text_type = text.get("model_type", model_type)
    rope = text.get("rope_parameters") or {}
    theta = rope.get("rope_theta", text.get("rope_theta", 10_000.0))
    frac = rope.get("partial_rotary_factor", text.get("partial_rotary_factor", 1.0))
    n = text["num_hidden_layers"]
    layer_types = text.get("layer_types") or [
        "full_attention" if (i + 1) % text.get("full_attention_interval", 4) == 0 else "linear_attention"
        for i in range(n)]
    bad = sorted(set(layer_types) - {"full_attention", "linear_attention"})
    if bad:
        raise ValueError(f"config.json layer_types has unsupported entries {bad}")
    mixers = {
        "A": AttentionConfig(num_heads=text["num_attention_heads"], num_kv_heads=text["num_key_value_heads"],
                             head_dim=text.get("head_dim"), rope_fraction=frac, rope_theta=float(theta),
                             qk_norm=True, output_gate=True, bias=bool(text.get("attention_bias", False))),
        "G": GatedDeltaNetConfig(num_qk_heads=text["linear_num_key_heads"], num_v_heads=text["linear_num_value_heads"],
                                 head_k_dim=text["linear_key_head_dim"], head_v_dim=text["linear_value_head_dim"],
                                 conv_kernel=text["linear_conv_kernel_dim"]),
    }
    ffns: dict = {}
    dense_family = model_type in ("qwen3_5", "qwen3_5_text")  # its config.json still lists unused MoE defaults
    if text.get("num_experts") and not dense_family:
        ffns["M"] = MoEConfig(num_experts=text["num_experts"], top_k=text["num_experts_per_tok"],
                              expert_size=text["moe_intermediate_size"],
                              shared_size=text.get("shared_expert_intermediate_size", 0) or 0,
                              shared_gate=bool(text.get("shared_expert_intermediate_size")),
                              norm_topk=bool(text.get("norm_topk_prob", True)),
                              aux_loss_coef=float(text.get("router_aux_loss_coef", 0.0)))
    sparse_step = text.get("decoder_sparse_step", 1)
    mlp_only = set(text.get("mlp_only_layers") or [])
    ffn_letters = ["M" if "M" in ffns and i not in mlp_only and (i + 1) % sparse_step == 0 else "D" for i in range(n)]
    if "D" in ffn_letters:
        ffns["D"] = DenseFFNConfig(intermediate_size=text["intermediate_size"])
    mixer_letters = ["A" if t == "full_attention" else "G" for t in layer_types]
    mtp = int(text.get("mtp_num_hidden_layers", hf.get("num_nextn_predict_layers", 0)) or 0)
    return ModelConfig(
        name=hf.get("_name_or_path") or model_type, vocab_size=text["vocab_size"], d_model=text["hidden_size"],
        num_layers=n, mixer_pattern=runs(mixer_letters), ffn_pattern=runs(ffn_letters),
        mixers={k: v for k, v in mixers.items() if k in mixer_letters}, ffns=ffns,
        norm_eps=text.get("rms_norm_eps", 1e-6), zero_centered_norm=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        mtp_depth=min(mtp, 1), mtp_mixer="A" if mtp else None, mtp_ffn=ffn_letters[-1] if mtp else None,
        max_seq_len=text.get("max_position_embeddings", 4096),
        hf_model_type=text_type if text_type in SUPPORTED else model_type,
    )


def _uniform(cfg: ModelConfig) -> tuple[AttentionConfig | None, GatedDeltaNetConfig | None, MoEConfig | None, DenseFFNConfig | None]:
    """The HF Qwen formats have one config per mixer kind: check the model fits and return them."""
    problems = []
    by_kind: dict[type, list] = {}
    for c in list(cfg.mixers.values()) + list(cfg.ffns.values()):
        by_kind.setdefault(type(c), []).append(c)
    for kind, cs in by_kind.items():
        if any(c != cs[0] for c in cs):
            problems.append(f"several different {kind.__name__} entries")
    attn = (by_kind.get(AttentionConfig) or [None])[0]
    if attn is not None and not (attn.qk_norm and attn.output_gate and attn.sliding_window is None):
        problems.append("attention must have qk_norm=True, output_gate=True and no sliding_window")
    moe = (by_kind.get(MoEConfig) or [None])[0]
    if moe is not None and (moe.score_func != "softmax" or moe.routed_scale != 1.0 or moe.scale_input or
                            moe.n_groups != 1 or (moe.shared_size and not moe.shared_gate)):
        problems.append("MoE must use softmax scores, routed_scale=1, no input scaling, no group limit and a "
                        "gated shared expert")
    if not cfg.zero_centered_norm:
        problems.append("zero_centered_norm must be True")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a Qwen HF checkpoint: " + "; ".join(problems))
    return attn, (by_kind.get(GatedDeltaNetConfig) or [None])[0], moe, (by_kind.get(DenseFFNConfig) or [None])[0]


def config_to_hf(cfg: ModelConfig, model_type: str) -> dict:
    attn, gdn, moe, dense = _uniform(cfg)
    text_type = {"qwen3_5_moe": "qwen3_5_moe_text", "qwen3_5": "qwen3_5_text"}.get(model_type, model_type)
    arch = {"qwen3_next": "Qwen3NextForCausalLM", "qwen3_5_moe_text": "Qwen3_5MoeForCausalLM",
            "qwen3_5_text": "Qwen3_5ForCausalLM"}[text_type]
    if text_type == "qwen3_5_text" and moe is not None:
        raise ValueError("qwen3_5 (dense) cannot hold MoE layers: use qwen3_5_moe or qwen3_next")
    if text_type != "qwen3_5_text" and dense is not None and text_type != "qwen3_next":
        raise ValueError(f"{text_type} has MoE on every layer, but ffn_pattern {cfg.ffn_pattern!r} has dense layers")
    attn = attn or AttentionConfig(num_heads=1, num_kv_heads=1, head_dim=cfg.d_model)
    gdn = gdn or GatedDeltaNetConfig(num_qk_heads=1, num_v_heads=1)
    out = {
        "architectures": [arch], "model_type": text_type, "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers,
        "layer_types": ["full_attention" if cfg.mixers[m].kind == "attention" else "linear_attention"
                        for m in cfg.layer_mixers],
        "num_attention_heads": attn.num_heads, "num_key_value_heads": attn.num_kv_heads, "head_dim": attn.head_dim,
        "attention_bias": attn.bias, "hidden_act": "silu",
        "rope_parameters": {"rope_type": "default", "rope_theta": attn.rope_theta,
                            "partial_rotary_factor": attn.rope_fraction},
        "linear_num_key_heads": gdn.num_qk_heads, "linear_num_value_heads": gdn.num_v_heads,
        "linear_key_head_dim": gdn.head_k_dim, "linear_value_head_dim": gdn.head_v_dim,
        "linear_conv_kernel_dim": gdn.conv_kernel, "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings, "max_position_embeddings": cfg.max_seq_len,
        "intermediate_size": dense.intermediate_size if dense else 4 * cfg.d_model,
        "mtp_num_hidden_layers": cfg.mtp_depth, "torch_dtype": "float32",
    }
    if moe is not None:
        out.update(num_experts=moe.num_experts, num_experts_per_tok=moe.top_k, moe_intermediate_size=moe.expert_size,
                   shared_expert_intermediate_size=moe.shared_size, norm_topk_prob=moe.norm_topk,
                   router_aux_loss_coef=moe.aux_loss_coef)
        if text_type == "qwen3_next":
            out.update(decoder_sparse_step=1,
                       mlp_only_layers=[i for i, f in enumerate(cfg.layer_ffns) if cfg.ffns[f].kind == "dense"])
    return out


# -- weights --------------------------------------------------------------------------------------
def _gdn_from_hf(get, p: str, c: GatedDeltaNetConfig) -> dict[str, torch.Tensor]:
    Hk, Hv, dk, dv = c.num_qk_heads, c.num_v_heads, c.head_k_dim, c.head_v_dim
    r = Hv // Hk
    if get.has(p + "in_proj_qkvz.weight"):  # qwen3_next: rows grouped per key head [q k v z] and [b a]
        qkvz, ba = get(p + "in_proj_qkvz.weight"), get(p + "in_proj_ba.weight")
        D = qkvz.shape[-1]
        q, k, v, z = qkvz.reshape(Hk, 2 * dk + 2 * r * dv, D).split([dk, dk, r * dv, r * dv], dim=1)
        b, a = ba.reshape(Hk, 2 * r, D).split([r, r], dim=1)
        parts = [q.reshape(-1, D), k.reshape(-1, D), v.reshape(-1, D), z.reshape(-1, D), b.reshape(-1, D), a.reshape(-1, D)]
    else:  # qwen3_5: already q|k|v then z, b, a
        parts = [get(p + f"in_proj_{n}.weight") for n in ("qkv", "z", "b", "a")]
    return {"in_proj.weight": torch.cat(parts), "conv_weight": get(p + "conv1d.weight").squeeze(1),
            "A_log": get(p + "A_log"), "dt_bias": get(p + "dt_bias"), "norm.weight": get(p + "norm.weight"),
            "out_proj.weight": get(p + "out_proj.weight")}


def _gdn_to_hf(w: dict, p: str, c: GatedDeltaNetConfig, qwen3_next: bool) -> dict[str, torch.Tensor]:
    Hk, Hv, dk, dv = c.num_qk_heads, c.num_v_heads, c.head_k_dim, c.head_v_dim
    r = Hv // Hk
    q, k, v, z, b, a = w["in_proj.weight"].split([Hk * dk, Hk * dk, Hv * dv, Hv * dv, Hv, Hv])
    D = q.shape[-1]
    out = {p + "conv1d.weight": w["conv_weight"][:, None, :], p + "A_log": w["A_log"], p + "dt_bias": w["dt_bias"],
           p + "norm.weight": w["norm.weight"], p + "out_proj.weight": w["out_proj.weight"]}
    if qwen3_next:
        grouped = [t.reshape(Hk, -1, D) for t in (q, k, v, z)]
        out[p + "in_proj_qkvz.weight"] = torch.cat(grouped, dim=1).reshape(-1, D)
        out[p + "in_proj_ba.weight"] = torch.cat([b.reshape(Hk, r, D), a.reshape(Hk, r, D)], dim=1).reshape(-1, D)
    else:
        out.update({p + "in_proj_qkv.weight": torch.cat((q, k, v)), p + "in_proj_z.weight": z,
                    p + "in_proj_b.weight": b, p + "in_proj_a.weight": a})
    return out


_SAME_ATTN = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "q_norm.weight", "k_norm.weight")
_ATTN_BIAS = ("q_proj.bias", "k_proj.bias", "v_proj.bias")


def _block_from_hf(get, p: str, cfg: ModelConfig, m: str, f: str) -> dict[str, torch.Tensor]:
    out = {"mixer_norm.weight": get(p + "input_layernorm.weight"), "ffn_norm.weight": get(p + "post_attention_layernorm.weight")}
    mc, fc = cfg.mixers[m], cfg.ffns[f]
    if mc.kind == "attention":
        names = _SAME_ATTN + (_ATTN_BIAS if mc.bias else ())
        out.update({f"mixer.{n}": get(p + "self_attn." + n) for n in names})
    else:
        out.update({f"mixer.{n}": t for n, t in _gdn_from_hf(get, p + "linear_attn.", mc).items()})
    if fc.kind == "dense":
        out.update({f"ffn.{n}": get(p + "mlp." + n) for n in SWIGLU})
        return out
    e = p + "mlp.experts."
    if get.has(e + "gate_up_proj"):  # fused layout (transformers >= 5 in memory)
        out["ffn.gate_up_proj"], out["ffn.down_proj"] = get(e + "gate_up_proj"), get(e + "down_proj")
    else:  # one tensor per expert (the published checkpoints)
        E = fc.num_experts
        out["ffn.gate_up_proj"] = torch.stack([torch.cat((get(f"{e}{i}.gate_proj.weight"), get(f"{e}{i}.up_proj.weight")))
                                               for i in range(E)])
        out["ffn.down_proj"] = torch.stack([get(f"{e}{i}.down_proj.weight") for i in range(E)])
    out["ffn.router.weight"] = get(p + "mlp.gate.weight")
    if fc.shared_size:
        out.update({f"ffn.shared.{n}": get(p + "mlp.shared_expert." + n) for n in SWIGLU})
    if fc.shared_gate:
        out["ffn.shared_gate.weight"] = get(p + "mlp.shared_expert_gate.weight")
    return out


def _block_to_hf(w: dict, p: str, cfg: ModelConfig, m: str, f: str, qwen3_next: bool,
                 fused_experts: bool = False) -> dict[str, torch.Tensor]:
    out = {p + "input_layernorm.weight": w["mixer_norm.weight"], p + "post_attention_layernorm.weight": w["ffn_norm.weight"]}
    mc, fc = cfg.mixers[m], cfg.ffns[f]
    mix = {n[len("mixer."):]: t for n, t in w.items() if n.startswith("mixer.")}
    if mc.kind == "attention":
        out.update({p + "self_attn." + n: t for n, t in mix.items()})
    else:
        out.update(_gdn_to_hf(mix, p + "linear_attn.", mc, qwen3_next))
    if fc.kind == "dense":
        out.update({p + "mlp." + n: w["ffn." + n] for n in SWIGLU})
        return out
    I = fc.expert_size
    if fused_experts:
        out[p + "mlp.experts.gate_up_proj"], out[p + "mlp.experts.down_proj"] = w["ffn.gate_up_proj"], w["ffn.down_proj"]
    for i in range(0 if fused_experts else fc.num_experts):
        gu = w["ffn.gate_up_proj"][i]
        out[f"{p}mlp.experts.{i}.gate_proj.weight"] = gu[:I]
        out[f"{p}mlp.experts.{i}.up_proj.weight"] = gu[I:]
        out[f"{p}mlp.experts.{i}.down_proj.weight"] = w["ffn.down_proj"][i]
    out[p + "mlp.gate.weight"] = w["ffn.router.weight"]
    if fc.shared_size:
        out.update({p + "mlp.shared_expert." + n: w["ffn.shared." + n] for n in SWIGLU})
    if fc.shared_gate:
        out[p + "mlp.shared_expert_gate.weight"] = w["ffn.shared_gate.weight"]
    return out



def _to_hf_state(model, cfg: ModelConfig, qwen3_next: bool, prefix: str = "model.",
                 fused_experts: bool = False) -> dict[str, torch.Tensor]:
    """Our state dict -> HF names and layouts (also used on a meta model to list what a checkpoint must hold)."""
    w = dict(model.state_dict())
    out = {prefix + "embed_tokens.weight": w["embed.weight"], prefix + "norm.weight": w["norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = w["lm_head.weight"]
    for i, (m, f) in enumerate(zip(cfg.layer_mixers, cfg.layer_ffns)):
        blk = {n[len(f"layers.{i}."):]: t for n, t in w.items() if n.startswith(f"layers.{i}.")}
        out.update(_block_to_hf(blk, f"{prefix}layers.{i}.", cfg, m, f, qwen3_next, fused_experts))
    if model.mtp is not None:
        blk = {n[len("mtp.block."):]: t for n, t in w.items() if n.startswith("mtp.block.")}
        out.update(_block_to_hf(blk, "mtp.layers.0.", cfg, cfg.mtp_mixer, cfg.mtp_ffn, qwen3_next, fused_experts))
        out.update({"mtp.fc.weight": w["mtp.proj.weight"], "mtp.pre_fc_norm_embedding.weight": w["mtp.emb_norm.weight"],
                    "mtp.pre_fc_norm_hidden.weight": w["mtp.hidden_norm.weight"], "mtp.norm.weight": w["mtp.norm.weight"]})
    return out


def _from_hf_state(get, model) -> dict[str, torch.Tensor]:
    cfg, pre = model.config, get.prefix
    state = {"embed.weight": get(pre + "embed_tokens.weight"), "norm.weight": get(pre + "norm.weight")}
    if not cfg.tie_embeddings:
        state["lm_head.weight"] = get("lm_head.weight")
    for i, (m, f) in enumerate(zip(cfg.layer_mixers, cfg.layer_ffns)):
        blk = _block_from_hf(get, f"{pre}layers.{i}.", cfg, m, f)
        state.update({f"layers.{i}.{n}": t for n, t in blk.items()})
    if cfg.mtp_depth:
        state.update({"mtp.proj.weight": get("mtp.fc.weight"),
                      "mtp.emb_norm.weight": get("mtp.pre_fc_norm_embedding.weight"),
                      "mtp.hidden_norm.weight": get("mtp.pre_fc_norm_hidden.weight"),
                      "mtp.norm.weight": get("mtp.norm.weight")})
        blk = _block_from_hf(get, "mtp.layers.0.", cfg, cfg.mtp_mixer, cfg.mtp_ffn)
        state.update({f"mtp.block.{n}": t for n, t in blk.items()})
    return state


class QwenConverter(Converter):
    """qwen3_next, qwen3_5_moe, qwen3_5 (weights and config) and qwen3_moe (config only). The formats hold no
    routing bias: expert_bias comes from init_weights (zero), so export refuses a moved one."""

    model_types = SUPPORTED + CONFIG_ONLY
    weight_types = SUPPORTED
    skip = _SKIP
    strict = False

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_hf(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_hf(cfg, model_type)

    def default_model_type(self, cfg: ModelConfig) -> str | None:
        if {m.kind for m in cfg.mixers.values()} <= {"attention", "gated_deltanet"}:
            return "qwen3_next" if any(f.kind == "moe" for f in cfg.ffns.values()) else "qwen3_5_text"
        return None

    def prepare(self, path, cfg: ModelConfig, get) -> ModelConfig:
        if cfg.mtp_depth and not any(k.startswith("mtp.") for k in get.specs):
            cfg = cfg.replace(mtp_depth=0, mtp_mixer=None, mtp_ffn=None)  # checkpoint shipped without MTP weights
        return cfg

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        if get is None:
            return _to_hf_state(model, model.config, model_type == "qwen3_next")
        fused = any(k.endswith("experts.gate_up_proj") for k in get.specs)
        return _to_hf_state(model, model.config, model_type == "qwen3_next", get.prefix, fused)

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        return _from_hf_state(get, model)


register_converter(QwenConverter())
