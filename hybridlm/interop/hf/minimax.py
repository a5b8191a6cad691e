"""Hugging Face interop for MiniMax-01 / M1 (model_type `minimax`, MiniMaxForCausalLM), both ways; the original
configs' model types `minimax_text_01` / `minimax_m1` are read as configs (their field names: attn_type_list,
layernorm_*_alpha / _beta, rotary_dim, postnorm) for `info` and `cost`.

The mapping (reference: transformers 5.23.0 `models/minimax/modeling_minimax.py`, MiniMax's own
modeling_minimax_text_01.py for what transformers leaves out):
  layer_types[i] "linear_attention" (attn_type_list 0) -> letter L: lightning attention, num_attention_heads x
                                                          head_dim, block_size; its output RMSNorm at eps 1e-6
  layer_types[i] "full_attention"   (attn_type_list 1) -> letter A: GQA, RoPE (rope_theta) on rotary_dim of head_dim,
                                                          no QK-norm, no bias, scale d^-1/2
  every FFN                                            -> letter M: softmax router (fp32), top-k renormalised,
                                                          SwiGLU experts of intermediate_size, no shared expert
  residuals: postnorm (transformers always; the original's `postnorm`), [alpha, beta] per sublayer from
  {full,linear}_attn_{alpha,beta}_factor and mlp_{alpha,beta}_factor (the original: layernorm_*_alpha / _beta)
  RMSNorm x_hat * w (not zero-centred), eps rms_norm_eps.

Partial RoPE: the published models rotate rotary_dim = 64 of the 128 dims (MiniMax's code; the model card: "RoPE on
half the head dim"). transformers' port rotates the whole head whatever rotary_dim or partial_rotary_factor says.
from_hf follows the published model: rotary_dim (or rope_parameters.partial_rotary_factor x head_dim) when given,
else the whole head; save_hf writes rotary_dim, which transformers keeps in the config and ignores. The two
therefore agree only with rotary_dim = head_dim (tests/families/test_minimax.py shows the difference).
Slopes: MiniMax interpolates ALiBi's slopes for a head count that is not a power of 2; transformers uses
2^(-8 (h + 1) / H) for every H (the same for powers of 2), and its depth factor is 1 - l / (L - 1 + 1e-5) + 1e-5
against MiniMax's 1 - l / (L - 1) + 1e-5. hybridlm follows MiniMax (layers/mixers/lightning.py).

Tensor names, per layer `model.layers.{i}.` -> ours `layers.{i}.`:
  input_layernorm / post_attention_layernorm               -> mixer_norm / ffn_norm
  self_attn.{qkv_proj,output_gate,out_proj,norm}.weight    -> mixer.* (lightning layers, same names)
  self_attn.{q,k,v,o}_proj.weight                          -> mixer.* (softmax layers)
  self_attn.{slope_rate,query_decay,key_decay,diagonal_decay]  transformers' derived buffers: skipped when present,
                                                           never written (the published checkpoints hold none)
  block_sparse_moe.gate.weight                             -> ffn.router.weight
  block_sparse_moe.experts.{e}.w1 / w3 / w2.weight         -> ffn.gate_up_proj [E, 2I, D] (rows w1 | w3) / down_proj
  model.embed_tokens / model.norm / lm_head                -> embed / norm / lm_head (absent when tied)
"""

from __future__ import annotations

import re

import torch

from ...layers.ffn.moe import MoEConfig
from ...layers.mixers.attention import AttentionConfig
from ...layers.mixers.lightning import LightningConfig
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import Converter, runs

_WHERE = "config.json (minimax)"
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
_HF_NORM_EPS = 1e-6  # transformers' and MiniMax's lightning output norm: the RMSNorm default, fixed
# (ours, transformers' name, the original's name) of each sublayer's residual [alpha, beta]
_SCALES = (("linear", "linear_attn_{}_factor", "layernorm_linear_attention_{}"),
           ("full", "full_attn_{}_factor", "layernorm_full_attention_{}"),
           ("mlp", "mlp_{}_factor", "layernorm_mlp_{}"))
_EXPERT = (("w1", "gate"), ("w3", "up"), ("w2", "down"))


# -- config ---------------------------------------------------------------------------------------
def _get(hf: dict, name: str, default):
    value = hf.get(name)
    return default if value is None else value


def _layer_kinds(hf: dict, n: int) -> list[str]:
    """'linear' / 'full' per layer: layer_types, else the original's attn_type_list (0 = lightning), else
    transformers' default (full attention at even layers)."""
    if hf.get("layer_types") is not None:
        kinds = {"linear_attention": "linear", "full_attention": "full"}
        bad = [t for t in hf["layer_types"] if t not in kinds]
        if bad or len(hf["layer_types"]) != n:
            raise ValueError(f"{_WHERE} layer_types must list {n} of 'linear_attention' / 'full_attention' "
                             f"(got {len(hf['layer_types'])} entries{', unknown ' + repr(bad[:3]) if bad else ''})")
        return [kinds[t] for t in hf["layer_types"]]
    if hf.get("attn_type_list") is not None:
        types = hf["attn_type_list"]
        if len(types) != n or any(t not in (0, 1) for t in types):
            raise ValueError(f"{_WHERE} attn_type_list must list {n} entries of 0 (lightning) / 1 (softmax)")
        return ["full" if t == 1 else "linear" for t in types]
    return ["full" if (i + 1) % 2 else "linear" for i in range(n)]


def _rope(hf: dict, head_dim: int) -> tuple[float, float]:
    """(theta, rope_fraction): rotary_dim, else partial_rotary_factor, else the whole head (see the module doc)."""
    rope = dict(hf.get("rope_parameters") or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"{_WHERE} rope_type={rope_type!r} is not supported (only 'default')")
    theta = float(rope.get("rope_theta", _get(hf, "rope_theta", 1_000_000.0)))
    rotary = hf.get("rotary_dim")
    if rotary is None:
        frac = rope.get("partial_rotary_factor", _get(hf, "partial_rotary_factor", 1.0))
        rotary = round(frac * head_dim)
    if not (isinstance(rotary, int) and 0 < rotary <= head_dim and rotary % 2 == 0):
        raise ValueError(f"{_WHERE} rotary_dim={rotary!r} must be an even number in (0, head_dim={head_dim}]")
    return theta, rotary / head_dim


def _scale(hf: dict, hf_name: str, orig_name: str) -> list[float]:
    return [float(_get(hf, hf_name.format(ab), _get(hf, orig_name.format(ab), 1.0))) for ab in ("alpha", "beta")]


def config_from_minimax(hf: dict) -> ModelConfig:
    absent = [k for k in _REQUIRED if k not in hf]
    if absent:
        raise ValueError(f"{_WHERE} is missing field(s) {absent}")
    if _get(hf, "hidden_act", "silu") != "silu":  # the lightning q/k/v activation and the SwiGLU both use it
        raise ValueError(f"{_WHERE} hidden_act={hf['hidden_act']!r} is not supported (only 'silu')")
    for name in ("attention_dropout", "router_jitter_noise", "shared_intermediate_size"):
        if _get(hf, name, 0):
            raise ValueError(f"{_WHERE} {name}={hf[name]!r} is not supported (the published models use 0)")
    n, d, heads = hf["num_hidden_layers"], hf["hidden_size"], hf["num_attention_heads"]
    head_dim = _get(hf, "head_dim", d // heads)
    theta, fraction = _rope(hf, head_dim)
    kinds = _layer_kinds(hf, n)
    letters = ["L" if k == "linear" else "A" for k in kinds]
    mixers = {"L": LightningConfig(num_heads=heads, head_dim=head_dim, block_size=_get(hf, "block_size", 256),
                                   norm_eps=_HF_NORM_EPS),
              "A": AttentionConfig(num_heads=heads, num_kv_heads=_get(hf, "num_key_value_heads", heads),
                                   head_dim=head_dim, rope_fraction=fraction, rope_theta=theta, qk_norm=False,
                                   output_gate=False, bias=False, sliding_window=hf.get("sliding_window"))}
    moe = MoEConfig(num_experts=_get(hf, "num_local_experts", 8), top_k=_get(hf, "num_experts_per_tok", 2),
                    expert_size=_get(hf, "intermediate_size", 14336), score_func="softmax", norm_topk=True,
                    aux_loss_coef=float(_get(hf, "router_aux_loss_coef", 0.001)))
    scales = {k: _scale(hf, h, o) for k, h, o in _SCALES}
    return ModelConfig(
        name=hf.get("_name_or_path") or "minimax", vocab_size=hf["vocab_size"], d_model=d, num_layers=n,
        mixer_pattern=runs(letters), ffn_pattern=f"M*{n}",
        mixers={k: v for k, v in mixers.items() if k in letters}, ffns={"M": moe},
        norm_eps=float(_get(hf, "rms_norm_eps", 1e-5)), zero_centered_norm=False,
        tie_embeddings=bool(_get(hf, "tie_word_embeddings", False)),
        max_seq_len=_get(hf, "max_position_embeddings", 4096 * 32), init_std=float(_get(hf, "initializer_range", 0.02)),
        postnorm=bool(_get(hf, "postnorm", True)),
        mixer_residual_scale={"L": scales["linear"], "A": scales["full"]} if set(letters) == {"L", "A"}
        else {letters[0]: scales[kinds[0]]},
        ffn_residual_scale={"M": scales["mlp"]}, hf_model_type="minimax")


def _one(cfg: ModelConfig, cls, what: str, problems: list[str]):
    found = [c for c in (cfg.mixer(i) for i in range(cfg.num_layers)) if isinstance(c, cls)]
    if any(c != found[0] for c in found):
        problems.append(f"several different {what} entries")
    return found[0] if found else None


def _layer_scales(cfg: ModelConfig, what: str) -> list[list[float]]:
    """The [alpha, beta] of every `what` sublayer ('linear', 'full' or 'mlp'), layer by layer."""
    if what == "mlp":
        return [cfg.ffn_residual_scale.get(f, [1.0, 1.0]) for f in cfg.layer_ffns]
    cls = LightningConfig if what == "linear" else AttentionConfig
    return [cfg.mixer_residual_scale.get(m, [1.0, 1.0]) for m in cfg.layer_mixers if isinstance(cfg.mixers[m], cls)]


def _kind_scale(cfg: ModelConfig, what: str) -> list[float]:
    return next(iter(_layer_scales(cfg, what)), [1.0, 1.0])


def config_to_minimax(cfg: ModelConfig) -> dict:
    """The minimax config.json for a model that fits the format; ValueError listing what does not."""
    problems: list[str] = []
    mixers = [cfg.mixer(i) for i in range(cfg.num_layers)]
    ffns = [cfg.ffn(i) for i in range(cfg.num_layers)]
    if not all(isinstance(c, (LightningConfig, AttentionConfig)) for c in mixers) or \
            not all(isinstance(c, MoEConfig) for c in ffns):
        raise ValueError(f"config {cfg.name!r} cannot be written as a MiniMax checkpoint: every mixer must be "
                         "lightning or attention, every FFN moe")
    lin, att = _one(cfg, LightningConfig, "lightning", problems), _one(cfg, AttentionConfig, "attention", problems)
    e = ffns[0]
    if any(f != e for f in ffns):
        problems.append("several different MoE entries")
    heads = {c.num_heads for c in (lin, att) if c is not None}
    dims = {c.head_dim for c in (lin, att) if c is not None}
    if len(heads) > 1 or len(dims) > 1:
        problems.append("lightning and attention must share num_heads and head_dim (num_attention_heads, head_dim)")
    if lin is not None and lin.norm_eps != _HF_NORM_EPS:
        problems.append(f"lightning norm_eps must be {_HF_NORM_EPS} (fixed in the format)")
    if att is not None and (att.qk_norm or att.output_gate or att.bias or att.out_bias or att.chunk_size
                            or att.temperature_tuning or att.rope_interleaved or att.rope_scaling
                            or att.softmax_scale or att.differential or att.kv_out or att.kv_source
                            or not att.rope_dim):
        problems.append("attention must be plain GQA with RoPE (no QK-norm, output gate, bias, chunking, temperature "
                        "tuning, interleaved or scaled RoPE, custom scale, differential or shared KV)")
    if not (e.num_experts > 1 and e.score_func == "softmax" and e.norm_topk and e.routed_scale == 1.0
            and not e.shared_size and not e.scale_input and e.n_groups == 1 and not e.swiglu_limit
            and not e.hash_routing and e.bias_update_rate == 0):
        problems.append("MoE must be >= 2 experts, softmax top-k renormalised, routed_scale=1, no shared expert, "
                        "input scaling, groups, clamp, hash routing or bias updates")
    if not cfg.postnorm:
        problems.append("postnorm must be true (transformers' MiniMax always takes the residual after the norm)")
    if cfg.zero_centered_norm or cfg.norm != "rmsnorm" or cfg.mtp_depth or cfg.hc_mult > 1 \
            or cfg.embedding_multiplier != 1 or cfg.logits_scaling != 1:
        problems.append("norms must be plain RMSNorm (zero_centered_norm=False), with no MTP, hyper-connections, "
                        "embedding multiplier or logits scaling")
    for what, _, _ in _SCALES:
        if len({tuple(p) for p in _layer_scales(cfg, what)}) > 1:
            problems.append(f"every {what} sublayer must have the same [alpha, beta] residual scale")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a MiniMax checkpoint: " + "; ".join(problems))
    ref = lin or att
    layer_types = ["linear_attention" if isinstance(c, LightningConfig) else "full_attention" for c in mixers]
    out = {
        "architectures": ["MiniMaxForCausalLM"], "model_type": "minimax", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers, "num_attention_heads": ref.num_heads,
        "num_key_value_heads": att.num_kv_heads if att else ref.num_heads, "head_dim": ref.head_dim,
        "hidden_act": "silu", "intermediate_size": e.expert_size, "layer_types": layer_types,
        "block_size": lin.block_size if lin else 256, "num_local_experts": e.num_experts,
        "num_experts_per_tok": e.top_k, "router_aux_loss_coef": e.aux_loss_coef, "router_jitter_noise": 0.0,
        "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_seq_len, "initializer_range": cfg.init_std, "attention_dropout": 0.0,
        "sliding_window": att.sliding_window if att else None, "torch_dtype": "float32",
        "rope_parameters": {"rope_type": "default", "rope_theta": att.rope_theta if att else 1_000_000.0},
    }
    if att is not None:
        out["rotary_dim"] = att.rope_dim  # the published model's field; transformers keeps it and rotates all dims
    for what, hf_name, _ in _SCALES:
        for ab, v in zip(("alpha", "beta"), _kind_scale(cfg, what)):
            out[hf_name.format(ab)] = v
    return out


# -- weights --------------------------------------------------------------------------------------
def _pairs(model) -> list[tuple[str, str, str]]:
    """(HF name, our name, how) for every tensor a MiniMax checkpoint holds; how: "" (same tensor) or, for the
    per-expert tensors, "gate:e" / "up:e" / "down:e" (a slice of our fused ones)."""
    cfg = model.config
    out = [("model.embed_tokens.weight", "embed.weight", ""), ("model.norm.weight", "norm.weight", "")]
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", "lm_head.weight", ""))
    for i in range(cfg.num_layers):
        p, o = f"model.layers.{i}.", f"layers.{i}."
        out += [(p + "input_layernorm.weight", o + "mixer_norm.weight", ""),
                (p + "post_attention_layernorm.weight", o + "ffn_norm.weight", "")]
        names = ("qkv_proj", "output_gate", "out_proj", "norm") if cfg.mixer(i).kind == "lightning" else \
            ("q_proj", "k_proj", "v_proj", "o_proj")
        out += [(f"{p}self_attn.{n}.weight", f"{o}mixer.{n}.weight", "") for n in names]
        f = p + "block_sparse_moe."
        out.append((f + "gate.weight", o + "ffn.router.weight", ""))
        for e in range(cfg.ffn(i).num_experts):
            out += [(f"{f}experts.{e}.{w}.weight", o + ("ffn.down_proj" if part == "down" else "ffn.gate_up_proj"),
                     f"{part}:{e}") for w, part in _EXPERT]
    return out


class MiniMaxConverter(Converter):
    """minimax, both ways; minimax_text_01 / minimax_m1 (the original configs) read as configs only. The format holds
    no routing bias: expert_bias comes from init_weights (zero)."""

    model_types = ("minimax", "minimax_text_01", "minimax_m1")
    weight_types = ("minimax",)
    strict = False
    skip = re.compile(r"^model\.layers\.\d+\.self_attn\.(slope_rate|query_decay|key_decay|diagonal_decay)$")

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_minimax(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_minimax(cfg)

    def default_model_type(self, cfg: ModelConfig) -> str | None:
        kinds = {m.kind for m in cfg.mixers.values()}
        return "minimax" if "lightning" in kinds and kinds <= {"lightning", "attention"} else None

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        w = model.state_dict()
        out = {}
        for h, o, how in _pairs(model):
            t = w[o]
            if how:
                part, e = how.split(":")
                half = t.shape[1] // 2
                t = {"gate": t[int(e), :half], "up": t[int(e), half:], "down": t[int(e)]}[part]
            out[h] = t
        return out

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        state, experts = {}, {}
        for h, o, how in _pairs(model):
            if how:
                part, e = how.split(":")
                experts.setdefault(o, {}).setdefault(int(e), {})[part] = get(h)
            else:
                state[o] = get(h)
        for o, per in experts.items():  # [E, 2I, D] rows gate | up, or [E, D, I]
            state[o] = torch.stack([torch.cat((per[e]["gate"], per[e]["up"])) if "gate" in per[e]
                                    else per[e]["down"] for e in sorted(per)])
        return state

register_converter(MiniMaxConverter())
