"""Hugging Face interop for DeepSeek-V4 (model_type deepseek_v4): config.json + safetensors <-> HybridLM.

Tensor names are DeepSeek's own (the published checkpoints'), which transformers 5.23 renames on load and writes
back on save (with a "model." prefix and a few of its own names: model.embed_tokens.weight, model.hc_head.hc_fn...;
both spellings are read). Per layer `layers.{i}.`:
  attn_norm / ffn_norm                                   -> mixer_norm / ffn_norm
  attn.{wq_a, q_norm, wq_b, wkv, kv_norm, wo_a, wo_b, attn_sink, compressor.*, indexer.*}   -> mixer.* (same names)
  hc_attn_{fn,base,scale} / hc_ffn_{fn,base,scale}       -> attn_hc.* / ffn_hc.*
  ffn.gate.weight, ffn.gate.bias (score-routed) or ffn.gate.tid2eid (hash-routed)
                                                         -> ffn.router.weight, ffn.expert_bias, ffn.tid2eid
  ffn.experts.{e}.{w1,w3,w2}                             -> ffn.gate_up_proj[e] (w1 rows then w3 rows), down_proj[e]
  ffn.shared_experts.{w1,w2,w3}                          -> ffn.shared.{gate,down,up}_proj
Top level: embed, norm, head, hc_head_{fn,base,scale} -> embed, norm, lm_head, hc_head.*.
MTP (`mtp.0.`, in DeepSeek's checkpoints; transformers drops it): e_proj | h_proj -> the two halves of mtp.proj,
enorm / hnorm / norm / hc_head_* -> mtp.emb_norm / hidden_norm / norm / hc_head.*, and a full block -> mtp.block.
Quantised checkpoints (FP8 / FP4 weights with `.scale` tensors) are not read: dequantise them first.

config.json: the modern fields (layer_types, mlp_layer_types, compress_rates, rope_parameters {main, compress}) or
DeepSeek's legacy ones (compress_ratios, num_hash_layers, qk_rope_head_dim, rope_scaling, compress_rope_theta).
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch

from ...layers.ffn.moe import MoEConfig
from ...layers.mixers.compressed_attention import CompressedAttentionConfig
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import Converter, Reader, RenamedReader, runs

MODEL_TYPES = ("deepseek_v4",)
CSA, HCA, SWA = "compressed_sparse_attention", "heavily_compressed_attention", "sliding_attention"
_LETTER = {SWA: "S", CSA: "C", HCA: "H"}
# transformers' DeepseekV4Config defaults (= DeepSeek-V4-Flash), for fields a config.json may leave out.
_DEFAULTS = {
    "moe_intermediate_size": 2048, "num_key_value_heads": 1, "head_dim": 512, "q_lora_rank": 1024,
    "num_experts_per_tok": 6, "n_routed_experts": 256, "n_shared_experts": 1, "scoring_func": "sqrtsoftplus",
    "norm_topk_prob": True, "routed_scaling_factor": 1.5, "max_position_embeddings": 1_048_576,
    "rope_theta": 10_000.0, "compress_rope_theta": 160_000.0, "hc_mult": 4, "hc_sinkhorn_iters": 20,
    "hc_eps": 1e-6, "swiglu_limit": 10.0, "sliding_window": 128, "o_groups": 8, "o_lora_rank": 1024,
    "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512, "num_nextn_predict_layers": 1,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
    "mlp_bias": False,
}
_YARN = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow")


# -- config ---------------------------------------------------------------------------------------
def _rope(hf: dict) -> tuple[dict, dict]:
    """-> (main, compress) rope dicts with rope_theta and, for yarn, the four YaRN fields."""
    rp = hf.get("rope_parameters") or {}
    if isinstance(rp.get("main"), dict) and isinstance(rp.get("compress"), dict):
        main, comp = rp["main"], rp["compress"]
    else:  # legacy: rope_theta / rope_scaling (yarn for the compressed layers) / compress_rope_theta
        main = {"rope_type": "default", "rope_theta": hf["rope_theta"]}
        comp = {**(hf.get("rope_scaling") or rp), "rope_theta": hf["compress_rope_theta"]}
    out = []
    for name, r in (("main", main), ("compress", comp)):
        kind = r.get("rope_type", r.get("type", "default"))
        if kind == "default":
            out.append({"rope_theta": float(r["rope_theta"]), "rope_scaling": None})
        elif kind == "yarn":
            if r.get("attention_factor", 1.0) != 1.0 or r.get("mscale") or r.get("mscale_all_dim"):
                raise ValueError(f"config.json rope parameters ({name}) {r}: V4 applies no YaRN attention factor")
            missing = [k for k in _YARN if r.get(k) is None]
            if missing:
                raise ValueError(f"config.json rope parameters ({name}) {r}: yarn needs {missing}")
            out.append({"rope_theta": float(r["rope_theta"]),
                        "rope_scaling": {"rope_type": "yarn", **{k: r[k] for k in _YARN}}})
        else:
            raise ValueError(f"config.json rope type {kind!r} ({name}) is not supported for deepseek_v4 "
                             "(default or yarn)")
    return out[0], out[1]


def config_from_hf(hf: dict) -> ModelConfig:
    required = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"]
    absent = [k for k in required if k not in hf]
    if absent:
        raise ValueError(f"config.json (deepseek_v4) is missing field(s) {absent}")
    hf = {**_DEFAULTS, **{k: v for k, v in hf.items() if v is not None}}
    unsupported = {k: hf[k] for k, ok in (("num_key_value_heads", 1), ("hidden_act", "silu"),
                                          ("attention_bias", False), ("mlp_bias", False)) if hf[k] != ok}
    if unsupported:
        raise ValueError(f"config.json has unsupported DeepSeek-V4 settings {unsupported}")
    n = hf["num_hidden_layers"]
    rates = {CSA: 4, HCA: 128, **(hf.get("compress_rates") or {})}
    if hf.get("layer_types"):
        types = list(hf["layer_types"])
    elif hf.get("compress_ratios"):  # DeepSeek's field; one entry per layer (+ the MTP layer's)
        ratios = list(hf["compress_ratios"])
        types = [SWA if r == 0 else CSA if r == 4 else HCA for r in ratios[:n]]
        hca = {r for r in ratios[:n] if r not in (0, 4)}
        if len(hca) > 1:
            raise ValueError(f"config.json compress_ratios {ratios}: more than one HCA ratio {sorted(hca)}")
        rates[HCA] = hca.pop() if hca else rates[HCA]
    else:  # transformers' default: 2 HCA then CSA / HCA alternating
        types = [HCA] * min(n, 2) + [CSA if i % 2 else HCA for i in range(max(n - 2, 0))]
    if len(types) != n or any(t not in _LETTER for t in types):
        raise ValueError(f"config.json layer_types {types}: need {n} entries from {sorted(_LETTER)}")
    if hf.get("mlp_layer_types"):
        mlp = list(hf["mlp_layer_types"])
    else:
        k = int(hf.get("num_hash_layers", 3))
        mlp = ["hash_moe"] * min(n, k) + ["moe"] * max(0, n - k)
    if len(mlp) != n or any(t not in ("hash_moe", "moe") for t in mlp):
        raise ValueError(f"config.json mlp_layer_types {mlp}: need {n} entries of 'hash_moe' / 'moe'")
    head_dim = hf["head_dim"]
    rope_dim = int(hf.get("qk_rope_head_dim") or round(head_dim * (hf.get("partial_rotary_factor") or 64 / 512)))
    main, comp = _rope(hf)
    common = {"num_heads": hf["num_attention_heads"], "head_dim": head_dim, "rope_dim": rope_dim,
              "q_lora_rank": hf["q_lora_rank"], "o_groups": hf["o_groups"], "o_lora_rank": hf["o_lora_rank"],
              "sliding_window": hf["sliding_window"], "index_n_heads": hf["index_n_heads"],
              "index_head_dim": hf["index_head_dim"], "index_topk": hf["index_topk"]}
    mixers = {"S": CompressedAttentionConfig(**common, **main),
              "C": CompressedAttentionConfig(**common, **comp, compression="csa", compress_ratio=rates[CSA]),
              "H": CompressedAttentionConfig(**common, **comp, compression="hca", compress_ratio=rates[HCA])}
    if hf["scoring_func"] not in ("sqrtsoftplus", "sigmoid", "softmax"):
        raise ValueError(f"config.json scoring_func {hf['scoring_func']!r} is not supported")
    width = hf["moe_intermediate_size"]
    moe = {"num_experts": hf["n_routed_experts"], "top_k": hf["num_experts_per_tok"], "expert_size": width,
           "shared_size": hf["n_shared_experts"] * width, "score_func": hf["scoring_func"],
           "norm_topk": bool(hf["norm_topk_prob"]), "routed_scale": float(hf["routed_scaling_factor"]),
           "swiglu_limit": float(hf["swiglu_limit"])}
    ffns = {"X": MoEConfig(**moe, hash_routing=True), "M": MoEConfig(**moe)}
    mixer_letters = [_LETTER[t] for t in types]
    ffn_letters = ["X" if t == "hash_moe" else "M" for t in mlp]
    mtp = min(int(hf["num_nextn_predict_layers"] or 0), 1)
    used_m = set(mixer_letters) | ({"S"} if mtp else set())
    used_f = set(ffn_letters) | ({"M"} if mtp else set())
    return ModelConfig(
        name=hf.get("_name_or_path") or "deepseek_v4", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
        num_layers=n, mixer_pattern=runs(mixer_letters), ffn_pattern=runs(ffn_letters),
        mixers={k: v for k, v in mixers.items() if k in used_m}, ffns={k: v for k, v in ffns.items() if k in used_f},
        norm_eps=hf["rms_norm_eps"], zero_centered_norm=False, tie_embeddings=bool(hf["tie_word_embeddings"]),
        mtp_depth=mtp, mtp_mixer="S" if mtp else None, mtp_ffn="M" if mtp else None,
        max_seq_len=hf["max_position_embeddings"], hc_mult=hf["hc_mult"], hc_sinkhorn_iters=hf["hc_sinkhorn_iters"],
        hc_eps=hf["hc_eps"], hf_model_type="deepseek_v4")


def _rope_to_hf(c: CompressedAttentionConfig, rope_dim: int, head_dim: int) -> dict:
    out = {"rope_type": "default", "rope_theta": c.rope_theta, "partial_rotary_factor": rope_dim / head_dim}
    if c.rope_scaling is not None:
        out.update({k: c.rope_scaling[k] for k in _YARN}, rope_type="yarn", attention_factor=1.0)
    return out


def config_to_hf(cfg: ModelConfig) -> dict:
    """The deepseek_v4 format: one attention shape for every layer (window-only / CSA / HCA differ only in
    compression and RoPE), MoE on every layer with the hash-routed ones first, mHC, plain RMSNorm."""
    problems = []
    atts = list(cfg.mixers.values())
    if not all(isinstance(c, CompressedAttentionConfig) for c in atts):
        problems.append("every mixer must be compressed_attention")
    moes = list(cfg.ffns.values())
    if not all(isinstance(c, MoEConfig) for c in moes):
        problems.append("every FFN must be an MoE")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a deepseek_v4 HF checkpoint: " + "; ".join(problems))
    shape = ("num_heads", "head_dim", "rope_dim", "q_lora_rank", "o_groups", "o_lora_rank", "sliding_window",
             "index_n_heads", "index_head_dim", "index_topk")
    if len({tuple(getattr(c, f) for f in shape) for c in atts}) > 1:
        problems.append(f"every attention layer must share {', '.join(shape)}")
    by_kind: dict[str, set] = {}
    for c in atts:
        by_kind.setdefault(c.compression, set()).add((c.compress_ratio if c.compression != "none" else 0,
                                                      c.rope_theta, repr(c.rope_scaling)))
    if any(len(v) > 1 for v in by_kind.values()):
        problems.append("each compression kind must have one ratio and one RoPE setting")
    comp = {(t, s) for k, v in by_kind.items() if k != "none" for _, t, s in v}
    if len(comp) > 1:
        problems.append("CSA and HCA layers must share their RoPE setting")
    strip = [{k: v for k, v in vars(c).items() if k not in ("hash_routing",)} for c in moes]
    if any(s != strip[0] for s in strip) or any(c.shared_size != moes[0].expert_size or c.shared_gate or
                                                 c.n_groups > 1 or c.scale_input for c in moes):
        problems.append("every MoE must be the same (but for hash routing), with one ungated shared expert of the "
                        "expert width, no group limit, unscaled inputs")
    kinds = [cfg.ffns[f].hash_routing for f in cfg.layer_ffns]
    k = kinds.count(True)
    if any(kinds[k:]) or (cfg.mtp_depth and cfg.ffns[cfg.mtp_ffn].hash_routing):
        problems.append("the hash-routed MoE layers must come first (and the MTP block's MoE must not be one)")
    if cfg.hc_mult < 2:
        problems.append("hc_mult must be >= 2 (deepseek_v4 always uses hyper-connections)")
    if cfg.zero_centered_norm:
        problems.append("zero_centered_norm must be False")
    if cfg.mtp_depth and cfg.mixers[cfg.mtp_mixer].compression != "none":
        problems.append("the MTP block's attention must be window-only (its compress ratio is 0)")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a deepseek_v4 HF checkpoint: " + "; ".join(problems))
    a, moe = atts[0], moes[0]
    main = next((c for c in atts if c.compression == "none"), None)
    compressed = next((c for c in atts if c.compression != "none"), None)
    rates = {CSA: 4, HCA: 128}
    for c in atts:
        if c.compression != "none":
            rates[CSA if c.compression == "csa" else HCA] = c.compress_ratio
    kind_name = {"none": SWA, "csa": CSA, "hca": HCA}
    return {
        "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers, "num_attention_heads": a.num_heads,
        "num_key_value_heads": 1, "head_dim": a.head_dim, "qk_rope_head_dim": a.rope_dim,
        "partial_rotary_factor": a.rope_dim / a.head_dim, "q_lora_rank": a.q_lora_rank, "o_groups": a.o_groups,
        "o_lora_rank": a.o_lora_rank, "sliding_window": a.sliding_window, "index_n_heads": a.index_n_heads,
        "index_head_dim": a.index_head_dim, "index_topk": a.index_topk,
        "layer_types": [kind_name[cfg.mixers[m].compression] for m in cfg.layer_mixers],
        "mlp_layer_types": ["hash_moe" if h else "moe" for h in kinds], "compress_rates": rates,
        "rope_parameters": {"main": _rope_to_hf(main or a, a.rope_dim, a.head_dim),
                            "compress": _rope_to_hf(compressed or a, a.rope_dim, a.head_dim)},
        "rope_theta": (main or a).rope_theta, "compress_rope_theta": (compressed or a).rope_theta,
        "moe_intermediate_size": moe.expert_size, "n_routed_experts": moe.num_experts, "n_shared_experts": 1,
        "num_experts_per_tok": moe.top_k, "scoring_func": moe.score_func, "norm_topk_prob": moe.norm_topk,
        "routed_scaling_factor": moe.routed_scale, "swiglu_limit": moe.swiglu_limit, "hc_mult": cfg.hc_mult,
        "hc_sinkhorn_iters": cfg.hc_sinkhorn_iters, "hc_eps": cfg.hc_eps, "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings, "max_position_embeddings": cfg.max_seq_len,
        "num_nextn_predict_layers": cfg.mtp_depth, "hidden_act": "silu", "attention_bias": False,
        "torch_dtype": "float32",
    }


# -- weights --------------------------------------------------------------------------------------
_HC = {"attn_hc.": "hc_attn_", "ffn_hc.": "hc_ffn_"}
_SHARED = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}


def _expert_blocks(model) -> list[tuple[str, str, MoEConfig]]:
    """(DeepSeek prefix, our prefix, MoE config) of every block, the MTP block's included."""
    cfg = model.config
    out = [(f"layers.{i}.", f"layers.{i}.", cfg.ffns[f]) for i, f in enumerate(cfg.layer_ffns)]
    return out + ([("mtp.0.", "mtp.block.", cfg.ffns[cfg.mtp_ffn])] if model.mtp is not None else [])


def _to_hf_state(model) -> dict[str, torch.Tensor]:
    """Our state dict -> DeepSeek names (also run on a meta model to list what a checkpoint must hold)."""
    D, w = model.config.d_model, dict(model.state_dict())
    out = {theirs: w[ours] for theirs, ours in _name_map(model).items()}
    for theirs, ours, c in _expert_blocks(model):
        I = c.expert_size
        for e in range(c.num_experts):
            out[f"{theirs}ffn.experts.{e}.w1.weight"] = w[ours + "ffn.gate_up_proj"][e, :I]
            out[f"{theirs}ffn.experts.{e}.w3.weight"] = w[ours + "ffn.gate_up_proj"][e, I:]
            out[f"{theirs}ffn.experts.{e}.w2.weight"] = w[ours + "ffn.down_proj"][e]
    if model.mtp is not None:
        out["mtp.0.e_proj.weight"], out["mtp.0.h_proj.weight"] = w["mtp.proj.weight"].split(D, dim=1)
    return out


def _canonical(name: str) -> str:
    """transformers' save_pretrained spelling -> DeepSeek's (model.layers.0.attn.wq_a.weight -> layers.0...)."""
    name = name.removeprefix("model.")
    name = re.sub(r"^embed_tokens\.", "embed.", name)
    name = re.sub(r"\.attn\.norm\.weight$", ".attn.kv_norm.weight", name)  # transformers writes it as attn.norm
    return re.sub(r"^hc_head\.hc_(fn|base|scale)$", r"hc_head_\1", name)


def _from_hf_state(get, model) -> dict[str, torch.Tensor]:
    """Inverse of _to_hf_state, reading each tensor by its DeepSeek name."""
    state = {ours: get(theirs) for theirs, ours in _name_map(model).items()}
    for theirs, ours, c in _expert_blocks(model):
        state[ours + "ffn.gate_up_proj"] = torch.stack([
            torch.cat((get(f"{theirs}ffn.experts.{e}.w1.weight"), get(f"{theirs}ffn.experts.{e}.w3.weight")))
            for e in range(c.num_experts)])
        state[ours + "ffn.down_proj"] = torch.stack([get(f"{theirs}ffn.experts.{e}.w2.weight")
                                                     for e in range(c.num_experts)])
        if c.hash_routing:  # a hash-routed gate has no selection bias: keep ours at zero
            state[ours + "ffn.expert_bias"] = torch.zeros(c.num_experts)
    if model.mtp is not None:
        state["mtp.proj.weight"] = torch.cat((get("mtp.0.e_proj.weight"), get("mtp.0.h_proj.weight")), dim=1)
    return state


def _name_map(model) -> dict[str, str]:
    """DeepSeek name -> our state-dict name, for every tensor that maps one to one (experts and the MTP
    projection are assembled from several)."""
    cfg = model.config
    out = {"embed.weight": "embed.weight", "norm.weight": "norm.weight"}
    out.update({f"hc_head_{n}": f"hc_head.{n}" for n in ("fn", "base", "scale")})
    if not cfg.tie_embeddings:
        out["head.weight"] = "lm_head.weight"
    blocks = [(f"layers.{i}.", f"layers.{i}.", model.layers[i]) for i in range(cfg.num_layers)]
    if model.mtp is not None:
        blocks.append(("mtp.0.", "mtp.block.", model.mtp.block))
        out.update({"mtp.0." + t: "mtp." + o for t, o in (("enorm.weight", "emb_norm.weight"),
                    ("hnorm.weight", "hidden_norm.weight"), ("norm.weight", "norm.weight"))})
        out.update({f"mtp.0.hc_head_{n}": f"mtp.hc_head.{n}" for n in ("fn", "base", "scale")})
    for theirs, ours, blk in blocks:
        out[theirs + "attn_norm.weight"] = ours + "mixer_norm.weight"
        out[theirs + "ffn_norm.weight"] = ours + "ffn_norm.weight"
        out.update({theirs + "attn." + n: ours + "mixer." + n for n, _ in blk.mixer.named_parameters()})
        for o, t in _HC.items():
            out.update({f"{theirs}{t}{n}": f"{ours}{o}{n}" for n in ("fn", "base", "scale")})
        out[theirs + "ffn.gate.weight"] = ours + "ffn.router.weight"
        if blk.ffn.cfg.hash_routing:
            out[theirs + "ffn.gate.tid2eid"] = ours + "ffn.tid2eid"
        else:
            out[theirs + "ffn.gate.bias"] = ours + "ffn.expert_bias"
        out.update({f"{theirs}ffn.shared_experts.{t}.weight": f"{ours}ffn.shared.{o}.weight" for o, t in _SHARED.items()})
    return out


class DeepSeekV4Converter(Converter):
    """deepseek_v4, in DeepSeek's own tensor names (transformers' spellings read too). The checkpoint keeps the
    routing bias (gate.bias, float32) and the hash-routed layers' tid2eid tables."""

    model_types = MODEL_TYPES
    kept_buffers: ClassVar[dict[str, str]] = {"expert_bias": "gate.bias"}

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_hf(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_hf(cfg)

    def default_model_type(self, cfg: ModelConfig) -> str | None:
        return "deepseek_v4" if any(m.kind == "compressed_attention" for m in cfg.mixers.values()) else None

    def view(self, reader: Reader) -> RenamedReader:
        """The reader through DeepSeek's names, whichever spelling the checkpoint uses."""
        return RenamedReader(reader, _canonical)

    def prepare(self, path, cfg: ModelConfig, get: RenamedReader) -> ModelConfig:
        quantised = [k for k in get.names if k.endswith(".scale") and not k.endswith("_scale")]
        if quantised:
            raise ValueError(f"{path}: quantised weights ({len(quantised)} '.scale' tensors, e.g. {quantised[0]}): "
                             "hybridlm reads bf16/fp16/fp32 checkpoints only; dequantise the FP8/FP4 weights first")
        if cfg.mtp_depth and not any(k.startswith("mtp.") for k in get.names):
            cfg = cfg.replace(mtp_depth=0, mtp_mixer=None, mtp_ffn=None)  # transformers saves no MTP weights
        return cfg

    def label(self, hf: dict, cfg: ModelConfig) -> str:
        return "deepseek_v4"

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        return _to_hf_state(model)

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        return _from_hf_state(get, model)


register_converter(DeepSeekV4Converter())
