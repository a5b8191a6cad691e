"""Hugging Face interop for DeepSeek-V3 (model_type deepseek_v3; kimi_k2 is the same architecture) and DeepSeek-V3.2
(deepseek_v32: V3 plus the sparse-attention indexer, self_attn.indexer.{wq_b, wk, k_norm, weights_proj} ->
mixer.indexer.*, same names and layouts; MLA RoPE always interleaved there).

Reads a checkpoint directory (config.json + safetensors, sharded or not) into HybridLM and writes one back that
transformers' DeepseekV3ForCausalLM loads, through the shared pipeline (base.py).

Layouts (HF name -> ours, per layer `model.layers.{i}.`):
  input_layernorm / post_attention_layernorm             -> mixer_norm / ffn_norm
  self_attn.{q_proj | q_a_proj, q_a_layernorm, q_b_proj}, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj
                                                         -> mixer.* (same names and layouts: MLA)
  mlp.{gate,up,down}_proj (the first_k_dense_replace dense layers)          -> ffn.*
  mlp.gate.weight / mlp.gate.e_score_correction_bias     -> ffn.router.weight / ffn.expert_bias (selection only)
  mlp.experts.{e}.{gate,up,down}_proj (or fused experts.gate_up_proj / down_proj) -> ffn.gate_up_proj / down_proj
  mlp.shared_experts.*                                   -> ffn.shared.* (n_shared_experts x moe width, no gate)
MTP (DeepSeek's checkpoints; transformers ignores it): layer `model.layers.{num_hidden_layers}.` holds enorm,
hnorm, eh_proj, shared_head.norm and a full decoder layer -> mtp.emb_norm, hidden_norm, proj, norm, block; it
also stores its own copies of the embedding (embed_tokens) and output head (shared_head.head), which hybridlm
shares with the main model: they are read for the shape check only, and written back as copies.
FP8 checkpoints (weight_scale_inv tensors) are not read: convert them to bf16 first.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ...layers.ffn.dense import DenseFFNConfig
from ...layers.ffn.moe import MoEConfig
from ...layers.mixers.mla import MLAConfig
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import SWIGLU, Converter, runs

MODEL_TYPES = ("deepseek_v3", "kimi_k2", "deepseek_v32")
# transformers' DeepseekV3Config defaults, for fields a config.json may leave out.
_DEFAULTS = {
    "q_lora_rank": 1536, "first_k_dense_replace": 3, "moe_layer_freq": 1, "n_group": 8, "topk_group": 4,
    "norm_topk_prob": True, "routed_scaling_factor": 2.5, "n_shared_experts": 1, "rope_interleave": True,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 4096, "num_nextn_predict_layers": 0,
    "scoring_func": "sigmoid", "topk_method": "noaux_tc", "hidden_act": "silu", "attention_bias": False,
}


# -- config ---------------------------------------------------------------------------------------
def _mla_from_hf(hf: dict) -> MLAConfig:
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    mla = {"num_heads": hf["num_attention_heads"], "kv_lora_rank": hf["kv_lora_rank"],
           "q_lora_rank": hf.get("q_lora_rank"), "qk_nope_head_dim": hf["qk_nope_head_dim"],
           "qk_rope_head_dim": hf["qk_rope_head_dim"], "v_head_dim": hf["v_head_dim"], "rope_theta": theta,
           "rope_interleaved": bool(hf["rope_interleave"])}
    if rope_type == "yarn":
        orig = rope.get("original_max_position_embeddings", hf["max_position_embeddings"])
        if rope.get("attention_factor") is not None or rope.get("truncate", True) is not True:
            raise ValueError(f"config.json rope parameters {rope}: attention_factor / truncate=False are not supported")
        mla.update(rope_scaling="yarn", yarn_factor=float(rope.get("factor") or hf["max_position_embeddings"] / orig),
                   yarn_original_max_position=int(orig), yarn_beta_fast=float(rope.get("beta_fast") or 32),
                   yarn_beta_slow=float(rope.get("beta_slow") or 1), yarn_mscale=float(rope.get("mscale") or 0.0),
                   yarn_mscale_all_dim=float(rope.get("mscale_all_dim") or 0.0))
    elif rope_type != "default":
        raise ValueError(f"config.json rope type {rope_type!r} is not supported for MLA (default or yarn)")
    if hf.get("model_type") == "deepseek_v32":  # transformers' DeepseekV32Config defaults for absent index fields
        mla.update(rope_interleaved=True, index_n_heads=int(hf.get("index_n_heads") or 64),
                   index_head_dim=int(hf.get("index_head_dim") or 128), index_topk=int(hf.get("index_topk") or 2048))
    return MLAConfig(**mla)


def config_from_hf(hf: dict) -> ModelConfig:
    required = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
                "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "intermediate_size"]
    absent = [k for k in required if k not in hf]
    if absent:
        raise ValueError(f"config.json ({hf.get('model_type')}) is missing field(s) {absent}")
    hf = {**_DEFAULTS, **{k: v for k, v in hf.items() if v is not None or k == "q_lora_rank"}}
    unsupported = {k: hf[k] for k, ok in (("scoring_func", "sigmoid"), ("topk_method", "noaux_tc"),
                                          ("hidden_act", "silu"), ("attention_bias", False)) if hf[k] != ok}
    if unsupported:
        raise ValueError(f"config.json has unsupported DeepSeek settings {unsupported} (hybridlm reads V3's: "
                         "sigmoid scores, noaux_tc routing, silu, no attention bias)")
    n, k, freq = hf["num_hidden_layers"], hf["first_k_dense_replace"], hf["moe_layer_freq"]
    moe = bool(hf.get("n_routed_experts"))
    ffn_letters = ["M" if moe and i >= k and i % freq == 0 else "D" for i in range(n)]
    ffns: dict = {"D": DenseFFNConfig(intermediate_size=hf["intermediate_size"])}
    if moe:
        width = hf["moe_intermediate_size"]
        ffns["M"] = MoEConfig(num_experts=hf["n_routed_experts"], top_k=hf["num_experts_per_tok"], expert_size=width,
                              shared_size=(hf["n_shared_experts"] or 0) * width, shared_gate=False,
                              score_func="sigmoid", norm_topk=bool(hf["norm_topk_prob"]),
                              routed_scale=float(hf["routed_scaling_factor"]), n_groups=hf["n_group"] or 1,
                              topk_groups=hf["topk_group"] or 1)
    mtp = min(int(hf["num_nextn_predict_layers"] or 0), 1)
    return ModelConfig(
        name=hf.get("_name_or_path") or hf.get("model_type") or "deepseek_v3", vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"], num_layers=n, mixer_pattern=f"L*{n}", ffn_pattern=runs(ffn_letters),
        mixers={"L": _mla_from_hf(hf)}, ffns={f: c for f, c in ffns.items() if f in ffn_letters},
        norm_eps=hf["rms_norm_eps"], zero_centered_norm=False, tie_embeddings=bool(hf["tie_word_embeddings"]),
        mtp_depth=mtp, mtp_mixer="L" if mtp else None, mtp_ffn=ffn_letters[-1] if mtp else None,
        max_seq_len=hf["max_position_embeddings"],
        hf_model_type="deepseek_v32" if hf.get("model_type") == "deepseek_v32" else "deepseek_v3")


def config_to_hf(cfg: ModelConfig) -> dict:
    """The DeepSeek-V3 format has one MLA config, dense layers first then MoE on every layer, plain RMSNorm."""
    problems = []
    mlas = {repr(c) for c in cfg.mixers.values()}
    mla = next(iter(cfg.mixers.values()))
    if len(mlas) != 1 or not isinstance(mla, MLAConfig):
        problems.append("every layer must use the same MLA config")
    dense = [c for c in cfg.ffns.values() if isinstance(c, DenseFFNConfig)]
    moes = [c for c in cfg.ffns.values() if isinstance(c, MoEConfig)]
    letters = cfg.layer_ffns
    k = next((i for i, f in enumerate(letters) if cfg.ffns[f].kind == "moe"), len(letters))
    if len(dense) > 1 or len(moes) > 1 or any(cfg.ffns[f].kind != "moe" for f in letters[k:]):
        problems.append("ffn_pattern must be dense layers then MoE layers, one config of each")
    moe = moes[0] if moes else None
    if moe is not None and (moe.score_func != "sigmoid" or moe.shared_gate or not moe.shared_size
                            or moe.shared_size % moe.expert_size):
        problems.append("MoE must use sigmoid scores and an ungated shared expert of a whole number of expert widths")
    if cfg.zero_centered_norm:
        problems.append("zero_centered_norm must be False")
    if isinstance(mla, MLAConfig) and mla.has_indexer and not mla.rope_interleaved:
        problems.append("an MLA with the V3.2 indexer must use interleaved RoPE (deepseek_v32 always does)")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a DeepSeek-V3 HF checkpoint: "
                         + "; ".join(problems))
    rope: dict = {"rope_type": "default", "rope_theta": mla.rope_theta}
    if mla.rope_scaling == "yarn":
        rope.update(rope_type="yarn", factor=mla.yarn_factor, beta_fast=mla.yarn_beta_fast,
                    beta_slow=mla.yarn_beta_slow, original_max_position_embeddings=mla.yarn_original_max_position)
        for name in ("mscale", "mscale_all_dim"):  # 0.0 stands for absent
            if getattr(mla, f"yarn_{name}"):
                rope[name] = getattr(mla, f"yarn_{name}")
    out = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers, "first_k_dense_replace": k,
        "intermediate_size": dense[0].intermediate_size if dense else 4 * cfg.d_model,
        "num_attention_heads": mla.num_heads, "num_key_value_heads": mla.num_heads, "q_lora_rank": mla.q_lora_rank,
        "kv_lora_rank": mla.kv_lora_rank, "qk_nope_head_dim": mla.qk_nope_head_dim,
        "qk_rope_head_dim": mla.qk_rope_head_dim, "v_head_dim": mla.v_head_dim, "rope_parameters": rope,
        "rope_interleave": mla.rope_interleaved, "attention_bias": False, "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_seq_len, "num_nextn_predict_layers": cfg.mtp_depth, "torch_dtype": "float32",
    }
    if mla.has_indexer:  # DeepSeek-V3.2: transformers' DeepseekV32Config (no rope_interleave field: always on)
        del out["rope_interleave"]
        out.update(architectures=["DeepseekV32ForCausalLM"], model_type="deepseek_v32", index_n_heads=mla.index_n_heads,
                   index_head_dim=mla.index_head_dim, index_topk=mla.index_topk)
    if moe is not None:
        out.update(n_routed_experts=moe.num_experts, num_experts_per_tok=moe.top_k,
                   moe_intermediate_size=moe.expert_size, n_shared_experts=moe.shared_size // moe.expert_size,
                   routed_scaling_factor=moe.routed_scale, norm_topk_prob=moe.norm_topk, n_group=moe.n_groups,
                   topk_group=moe.topk_groups)
    return out


# -- weights --------------------------------------------------------------------------------------
def _block_to_hf(w: dict, p: str, cfg: ModelConfig, f: str, fused_experts: bool = False) -> dict[str, torch.Tensor]:
    out = {p + "input_layernorm.weight": w["mixer_norm.weight"],
           p + "post_attention_layernorm.weight": w["ffn_norm.weight"]}
    out.update({p + "self_attn." + n[len("mixer."):]: t for n, t in w.items() if n.startswith("mixer.")})
    fc = cfg.ffns[f]
    if fc.kind == "dense":
        out.update({p + "mlp." + n: w["ffn." + n] for n in SWIGLU})
        return out
    I = fc.expert_size
    if fused_experts:
        out[p + "mlp.experts.gate_up_proj"] = w["ffn.gate_up_proj"]
        out[p + "mlp.experts.down_proj"] = w["ffn.down_proj"]
    for e in range(0 if fused_experts else fc.num_experts):
        out[f"{p}mlp.experts.{e}.gate_proj.weight"] = w["ffn.gate_up_proj"][e, :I]
        out[f"{p}mlp.experts.{e}.up_proj.weight"] = w["ffn.gate_up_proj"][e, I:]
        out[f"{p}mlp.experts.{e}.down_proj.weight"] = w["ffn.down_proj"][e]
    out[p + "mlp.gate.weight"] = w["ffn.router.weight"]
    out[p + "mlp.gate.e_score_correction_bias"] = w["ffn.expert_bias"]
    out.update({p + "mlp.shared_experts." + n: w["ffn.shared." + n] for n in SWIGLU})
    return out


def _block_from_hf(get, p: str, cfg: ModelConfig, f: str, mixer_names: list[str]) -> dict[str, torch.Tensor]:
    out = {"mixer_norm.weight": get(p + "input_layernorm.weight"),
           "ffn_norm.weight": get(p + "post_attention_layernorm.weight")}
    out.update({f"mixer.{n}": get(p + "self_attn." + n) for n in mixer_names})
    fc = cfg.ffns[f]
    if fc.kind == "dense":
        out.update({f"ffn.{n}": get(p + "mlp." + n) for n in SWIGLU})
        return out
    e = p + "mlp.experts."
    if get.has(e + "gate_up_proj"):  # fused layout
        out["ffn.gate_up_proj"], out["ffn.down_proj"] = get(e + "gate_up_proj"), get(e + "down_proj")
    else:  # one tensor per expert (the published checkpoints, and what transformers writes)
        out["ffn.gate_up_proj"] = torch.stack([
            torch.cat((get(f"{e}{i}.gate_proj.weight"), get(f"{e}{i}.up_proj.weight"))) for i in range(fc.num_experts)])
        out["ffn.down_proj"] = torch.stack([get(f"{e}{i}.down_proj.weight") for i in range(fc.num_experts)])
    out["ffn.router.weight"] = get(p + "mlp.gate.weight")
    out["ffn.expert_bias"] = get(p + "mlp.gate.e_score_correction_bias").float()
    out.update({f"ffn.shared.{n}": get(p + "mlp.shared_experts." + n) for n in SWIGLU})
    return out


def _to_hf_state(model, cfg: ModelConfig, fused_experts: bool = False) -> dict[str, torch.Tensor]:
    """Our state dict -> HF names (also run on a meta model to list what a checkpoint must hold)."""
    w = dict(model.state_dict())
    out = {"model.embed_tokens.weight": w["embed.weight"], "model.norm.weight": w["norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = w["lm_head.weight"]
    for i, f in enumerate(cfg.layer_ffns):
        blk = {n[len(f"layers.{i}."):]: t for n, t in w.items() if n.startswith(f"layers.{i}.")}
        out.update(_block_to_hf(blk, f"model.layers.{i}.", cfg, f, fused_experts))
    if model.mtp is not None:
        p = f"model.layers.{cfg.num_layers}."
        blk = {n[len("mtp.block."):]: t for n, t in w.items() if n.startswith("mtp.block.")}
        out.update(_block_to_hf(blk, p, cfg, cfg.mtp_ffn, fused_experts))
        out.update({p + "enorm.weight": w["mtp.emb_norm.weight"], p + "hnorm.weight": w["mtp.hidden_norm.weight"],
                    p + "eh_proj.weight": w["mtp.proj.weight"], p + "shared_head.norm.weight": w["mtp.norm.weight"],
                    p + "embed_tokens.weight": w["embed.weight"],  # DeepSeek stores copies of the shared matrices
                    p + "shared_head.head.weight": model.head_weight})
    return out


def _from_hf_state(get, model) -> dict[str, torch.Tensor]:
    cfg = model.config
    mixer_names = [n[len("layers.0.mixer."):] for n, _ in model.named_parameters() if n.startswith("layers.0.mixer.")]
    state = {"embed.weight": get("model.embed_tokens.weight"), "norm.weight": get("model.norm.weight")}
    if not cfg.tie_embeddings:
        state["lm_head.weight"] = get("lm_head.weight")
    for i, f in enumerate(cfg.layer_ffns):
        blk = _block_from_hf(get, f"model.layers.{i}.", cfg, f, mixer_names)
        state.update({f"layers.{i}.{n}": t for n, t in blk.items()})
    if cfg.mtp_depth:
        p = f"model.layers.{cfg.num_layers}."
        state.update({"mtp.emb_norm.weight": get(p + "enorm.weight"), "mtp.hidden_norm.weight": get(p + "hnorm.weight"),
                      "mtp.proj.weight": get(p + "eh_proj.weight"),
                      "mtp.norm.weight": get(p + "shared_head.norm.weight")})
        state.update({f"mtp.block.{n}": t for n, t in _block_from_hf(get, p, cfg, cfg.mtp_ffn, mixer_names).items()})
    return state


class DeepSeekConverter(Converter):
    """deepseek_v3 / kimi_k2 (written back as deepseek_v3) and deepseek_v32. The checkpoint keeps the routing
    bias (e_score_correction_bias, float32 as transformers keeps it) and the MTP layer's own copies of the embedding
    and head."""

    model_types = MODEL_TYPES
    kept_buffers: ClassVar[dict[str, str]] = {"expert_bias": "e_score_correction_bias"}

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_hf(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_hf(cfg)

    def default_model_type(self, cfg: ModelConfig) -> str | None:
        # MLA on every layer: a KDA + MLA layout is kimi_linear
        return "deepseek_v3" if all(m.kind == "mla" for m in cfg.mixers.values()) else None

    def prepare(self, path, cfg: ModelConfig, get) -> ModelConfig:
        if cfg.mtp_depth and not any(k.startswith(f"model.layers.{cfg.num_layers}.") for k in get.specs):
            cfg = cfg.replace(mtp_depth=0, mtp_mixer=None, mtp_ffn=None)  # transformers saves no MTP weights
        return cfg

    def label(self, hf: dict, cfg: ModelConfig) -> str:
        return hf.get("model_type", "deepseek_v3")

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        fused = get is not None and any(k.endswith("experts.gate_up_proj") for k in get.specs)
        return _to_hf_state(model, model.config, fused)

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        return _from_hf_state(get, model)


register_converter(DeepSeekConverter())
