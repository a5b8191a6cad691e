"""Hugging Face interop for Kimi Linear (model_type kimi_linear): KDA layers, NoPE MLA layers, DeepSeek-style MoE.

Reads a checkpoint directory into HybridLM and writes one back in the published checkpoint's layout, which
transformers' KimiLinearForCausalLM loads (its conversion mapping stacks the convs and the experts at load time).

Config (the published config.json, transformers' spellings read too):
  linear_attn_config {num_heads, head_dim, short_conv_kernel_size, kda_layers, full_attn_layers}: the layer lists
  are 1-indexed; `layer_types`, where present, must agree (transformers' default pattern, full attention at every
  4th 0-indexed layer, is not the checkpoint's: Kimi-Linear-48B's MLA layers are 3, 7, ..., 23 and 26).
  first_k_dense_replace (or mlp_layer_types) dense layers first, then MoE: sigmoid scores plus the selection bias,
  group limit num_expert_group / topk_group, top-k renormalised (moe_renormalize), x routed_scaling_factor, an
  ungated shared expert of num_shared_experts x moe_intermediate_size. MLA without RoPE (mla_use_nope).
Tensors (HF name -> ours, per layer `model.layers.{i}.`):
  input_layernorm / post_attention_layernorm                     -> mixer_norm / ffn_norm
  KDA: self_attn.{q,k,v}_proj, f_a_proj, f_b_proj, dt_bias, b_proj, g_a_proj, g_b_proj, o_norm, o_proj -> mixer.*
       self_attn.{q,k,v}_conv1d.weight [H dk, 1, K] (three tensors) -> mixer.conv_weight [3 H dk, K] (q | k | v)
       self_attn.A_log [1, 1, H, 1]                               -> mixer.A_log [H]
  MLA: self_attn.{q_proj, kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj} -> mixer.* (same names)
  mlp.{gate,up,down}_proj (dense layers)                         -> ffn.*
  block_sparse_moe.gate.weight / .gate.e_score_correction_bias   -> ffn.router.weight / ffn.expert_bias
  block_sparse_moe.experts.{e}.w1 | w3 | w2                      -> ffn.gate_up_proj[e] (gate | up), ffn.down_proj[e]
  block_sparse_moe.shared_experts.{gate,up,down}_proj            -> ffn.shared.*
Read also: transformers' spellings (the dense layer under block_sparse_moe., the MoE under mlp., the forget gate
under self_attn.forget_gate.).
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch

from ...layers.ffn.dense import DenseFFNConfig
from ...layers.ffn.moe import MoEConfig
from ...layers.mixers.kda import KDAConfig
from ...layers.mixers.mla import MLAConfig
from ...model.config import ModelConfig
from ...registry import register_converter
from .base import SWIGLU, Converter, Reader, RenamedReader, runs

KDA_NAMES = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "f_a_proj.weight", "f_b_proj.weight", "dt_bias",
             "b_proj.weight", "g_a_proj.weight", "g_b_proj.weight", "o_norm.weight", "o_proj.weight")
CONVS = ("q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight")
EXPERT = (("w1", "gate"), ("w3", "up"), ("w2", "down"))  # the checkpoint's expert names
_SPELLINGS = [  # transformers' spellings -> the checkpoint's
    (re.compile(r"\.block_sparse_moe\.((gate|up|down)_proj\.weight)$"), r".mlp.\1"),  # a dense layer
    (re.compile(r"\.mlp\.(gate\.|experts\.|shared_experts\.)"), r".block_sparse_moe.\1"),  # an MoE layer
    (re.compile(r"\.self_attn\.forget_gate\."), ".self_attn."),
]


def _canonical(name: str) -> str:
    for pattern, repl in _SPELLINGS:
        name = pattern.sub(repl, name)
    return name


# -- config ---------------------------------------------------------------------------------------
def _get(hf: dict, *names, default=None):
    """The first of `names` present (the checkpoint's spelling first, then transformers' attribute names)."""
    return next((hf[n] for n in names if hf.get(n) is not None), default)


def _layer_letters(hf: dict, n: int) -> list[str]:
    lin = hf.get("linear_attn_config") or {}
    from_lists = None
    if "full_attn_layers" in lin:
        full = lin["full_attn_layers"]
        kda = lin.get("kda_layers", [i for i in range(1, n + 1) if i not in full])
        if sorted([*full, *kda]) != list(range(1, n + 1)):
            raise ValueError(f"config.json linear_attn_config: full_attn_layers {full} and kda_layers {kda} must "
                             f"number the layers 1..{n} (1-indexed) exactly once")
        from_lists = ["L" if i + 1 in full else "K" for i in range(n)]
    types = hf.get("layer_types")
    if types is not None:
        if len(types) != n or set(types) - {"full_attention", "linear_attention"}:
            raise ValueError(f"config.json layer_types {types}: expected {n} of 'full_attention' / 'linear_attention'")
        letters = ["L" if t == "full_attention" else "K" for t in types]
        if from_lists is not None and letters != from_lists:
            raise ValueError("config.json layer_types disagrees with linear_attn_config.full_attn_layers (1-indexed): "
                             f"{runs(letters)} vs {runs(from_lists)}")
        return letters
    if from_lists is None:
        raise ValueError("config.json (kimi_linear) has neither linear_attn_config.full_attn_layers nor layer_types: "
                         "the layer layout is unknown")
    return from_lists


def config_from_hf(hf: dict) -> ModelConfig:
    required = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
                "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "intermediate_size"]
    absent = [k for k in required if k not in hf]
    if absent:
        raise ValueError(f"config.json (kimi_linear) is missing field(s) {absent}")
    lin = hf.get("linear_attn_config") or {}
    unsupported = {k: v for k, v, ok in (
        ("moe_router_activation_func", hf.get("moe_router_activation_func", "sigmoid"), "sigmoid"),
        ("mla_use_nope", hf.get("mla_use_nope", True), True), ("hidden_act", hf.get("hidden_act", "silu"), "silu"),
        ("attention_bias", hf.get("attention_bias", False), False)) if v != ok}
    if unsupported:
        raise ValueError(f"config.json has unsupported Kimi Linear settings {unsupported} (hybridlm reads the "
                         "published model's: sigmoid router, NoPE MLA, silu, no attention bias)")
    n = hf["num_hidden_layers"]
    mixer_letters = _layer_letters(hf, n)
    mla = MLAConfig(num_heads=hf["num_attention_heads"], kv_lora_rank=hf["kv_lora_rank"],
                    q_lora_rank=hf.get("q_lora_rank"), qk_nope_head_dim=hf["qk_nope_head_dim"],
                    qk_rope_head_dim=hf["qk_rope_head_dim"], v_head_dim=hf["v_head_dim"], use_rope=False)
    kda = KDAConfig(num_heads=_get(lin, "num_heads", default=_get(hf, "linear_num_heads", default=32)),
                    head_dim=_get(lin, "head_dim", default=_get(hf, "linear_head_dim", default=128)),
                    conv_kernel=_get(lin, "short_conv_kernel_size", default=_get(hf, "linear_conv_kernel_dim",
                                                                                 default=4)))
    experts = _get(hf, "num_experts", "num_local_experts", "n_routed_experts")
    mlp_types = hf.get("mlp_layer_types")
    if mlp_types is None:
        k = _get(hf, "first_k_dense_replace", default=1)
        mlp_types = ["dense" if i < k or not experts else "sparse" for i in range(n)]
    if len(mlp_types) != n or set(mlp_types) - {"dense", "sparse"}:
        raise ValueError(f"config.json mlp_layer_types {mlp_types}: expected {n} of 'dense' / 'sparse'")
    ffn_letters = ["M" if t == "sparse" else "D" for t in mlp_types]
    ffns: dict = {"D": DenseFFNConfig(intermediate_size=hf["intermediate_size"])}
    if "M" in ffn_letters:
        width = hf["moe_intermediate_size"]
        ffns["M"] = MoEConfig(
            num_experts=experts, top_k=_get(hf, "num_experts_per_token", "num_experts_per_tok", default=8),
            expert_size=width, shared_size=_get(hf, "num_shared_experts", "n_shared_experts", default=0) * width,
            shared_gate=False, score_func="sigmoid", norm_topk=bool(_get(hf, "moe_renormalize", "norm_topk_prob",
                                                                           default=True)),
            routed_scale=float(_get(hf, "routed_scaling_factor", default=1.0)),
            n_groups=_get(hf, "num_expert_group", "n_group", default=1), topk_groups=_get(hf, "topk_group", default=1))
    return ModelConfig(
        name=hf.get("_name_or_path") or "kimi_linear", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
        num_layers=n, mixer_pattern=runs(mixer_letters), ffn_pattern=runs(ffn_letters),
        mixers={x: c for x, c in (("K", kda), ("L", mla)) if x in mixer_letters},
        ffns={f: c for f, c in ffns.items() if f in ffn_letters}, norm_eps=hf.get("rms_norm_eps", 1e-5),
        zero_centered_norm=False, tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_seq_len=_get(hf, "model_max_length", "max_position_embeddings", default=1_048_576),
        hf_model_type="kimi_linear")


def config_to_hf(cfg: ModelConfig) -> dict:
    """One KDA config and one NoPE MLA config; dense layers first, then one MoE config; plain RMSNorm."""
    problems = []
    kdas = [c for c in cfg.mixers.values() if isinstance(c, KDAConfig)]
    mlas = [c for c in cfg.mixers.values() if isinstance(c, MLAConfig)]
    if len(kdas) + len(mlas) != len(cfg.mixers) or len(kdas) > 1 or len(mlas) > 1:
        problems.append("mixers must be one kda config and at most one mla config")
    if mlas and (mlas[0].use_rope or mlas[0].has_indexer or mlas[0].latent_norm_eps != 1e-6):
        problems.append("the MLA layers must be NoPE (use_rope=False), without an indexer, latent norm eps 1e-6")
    dense = [c for c in cfg.ffns.values() if isinstance(c, DenseFFNConfig)]
    moes = [c for c in cfg.ffns.values() if isinstance(c, MoEConfig)]
    letters = cfg.layer_ffns
    k = next((i for i, f in enumerate(letters) if cfg.ffns[f].kind == "moe"), len(letters))
    if len(dense) > 1 or len(moes) > 1 or any(cfg.ffns[f].kind != "moe" for f in letters[k:]) or \
            len(dense) + len(moes) != len(cfg.ffns):
        problems.append("ffn_pattern must be dense layers then MoE layers, one config of each")
    moe = moes[0] if moes else None
    if moe is not None and (moe.score_func != "sigmoid" or moe.shared_gate or moe.shared_size % moe.expert_size
                            or moe.hash_routing or moe.swiglu_limit or moe.scale_input):
        problems.append("MoE must use sigmoid scores and an ungated shared expert of a whole number of expert widths")
    if cfg.zero_centered_norm or cfg.norm != "rmsnorm":
        problems.append("the norms must be plain RMSNorm (zero_centered_norm False)")
    if cfg.mtp_depth or cfg.hc_mult > 1:
        problems.append("the format has no MTP layer and no hyper-connections")
    if problems:
        raise ValueError(f"config {cfg.name!r} cannot be written as a kimi_linear HF checkpoint: " + "; ".join(problems))
    kda = kdas[0]
    mla = mlas[0] if mlas else MLAConfig(num_heads=kda.num_heads, q_lora_rank=None, use_rope=False)
    kinds = [cfg.mixers[x].kind for x in cfg.layer_mixers]
    out = {
        "architectures": ["KimiLinearForCausalLM"], "model_type": "kimi_linear", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers, "first_k_dense_replace": k,
        "moe_layer_freq": 1, "intermediate_size": dense[0].intermediate_size if dense else 4 * cfg.d_model,
        "num_attention_heads": mla.num_heads, "num_key_value_heads": mla.num_heads, "q_lora_rank": mla.q_lora_rank,
        "kv_lora_rank": mla.kv_lora_rank, "qk_nope_head_dim": mla.qk_nope_head_dim,
        "qk_rope_head_dim": mla.qk_rope_head_dim, "v_head_dim": mla.v_head_dim, "mla_use_nope": True,
        "linear_attn_config": {
            "num_heads": kda.num_heads, "head_dim": kda.head_dim, "short_conv_kernel_size": kda.conv_kernel,
            "kda_layers": [i + 1 for i, t in enumerate(kinds) if t == "kda"],
            "full_attn_layers": [i + 1 for i, t in enumerate(kinds) if t == "mla"]},
        "hidden_act": "silu", "attention_bias": False, "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": False, "model_max_length": cfg.max_seq_len, "torch_dtype": "float32",
        "pad_token_id": None, "bos_token_id": None, "eos_token_id": None,
    }
    if moe is not None:
        out.update(num_experts=moe.num_experts, num_experts_per_token=moe.top_k, moe_intermediate_size=moe.expert_size,
                   num_shared_experts=moe.shared_size // moe.expert_size, moe_router_activation_func="sigmoid",
                   moe_renormalize=moe.norm_topk, routed_scaling_factor=moe.routed_scale, use_grouped_topk=True,
                   num_expert_group=moe.n_groups, topk_group=moe.topk_groups)
    return out


# -- weights --------------------------------------------------------------------------------------
def _to_hf_state(model) -> dict[str, torch.Tensor]:
    """Our state dict -> the checkpoint's names (also run on a meta model to list what a checkpoint must hold)."""
    cfg = model.config
    w = dict(model.state_dict())
    # transformers' KimiLinearForCausalLM never ties the head, so a tied model writes it as a copy
    out = {"model.embed_tokens.weight": w["embed.weight"], "model.norm.weight": w["norm.weight"],
           "lm_head.weight": model.head_weight}
    for i, (x, f) in enumerate(zip(cfg.layer_mixers, cfg.layer_ffns)):
        ours, p = f"layers.{i}.", f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = w[ours + "mixer_norm.weight"]
        out[p + "post_attention_layernorm.weight"] = w[ours + "ffn_norm.weight"]
        mixer = {n[len(ours + "mixer."):]: t for n, t in w.items() if n.startswith(ours + "mixer.")}
        if cfg.mixers[x].kind == "kda":
            dim = mixer["conv_weight"].shape[0] // 3
            out.update({p + "self_attn." + n: mixer[n] for n in KDA_NAMES})
            out[p + "self_attn.A_log"] = mixer["A_log"].view(1, 1, -1, 1)
            for j, n in enumerate(CONVS):
                out[p + "self_attn." + n] = mixer["conv_weight"][j * dim:(j + 1) * dim, None, :]
        else:
            out.update({p + "self_attn." + n: t for n, t in mixer.items()})
        fc = cfg.ffns[f]
        if fc.kind == "dense":
            out.update({p + "mlp." + n: w[ours + "ffn." + n] for n in SWIGLU})
            continue
        q, I = p + "block_sparse_moe.", fc.expert_size
        for e in range(fc.num_experts):
            out[f"{q}experts.{e}.w1.weight"] = w[ours + "ffn.gate_up_proj"][e, :I]
            out[f"{q}experts.{e}.w3.weight"] = w[ours + "ffn.gate_up_proj"][e, I:]
            out[f"{q}experts.{e}.w2.weight"] = w[ours + "ffn.down_proj"][e]
        out[q + "gate.weight"] = w[ours + "ffn.router.weight"]
        out[q + "gate.e_score_correction_bias"] = w[ours + "ffn.expert_bias"]
        out.update({q + "shared_experts." + n: w[ours + "ffn.shared." + n] for n in SWIGLU})
    return out


def _from_hf_state(get, model) -> dict[str, torch.Tensor]:
    cfg = model.config
    state = {"embed.weight": get("model.embed_tokens.weight"), "norm.weight": get("model.norm.weight")}
    if not cfg.tie_embeddings:  # tied: the file's head is the embedding's copy (checked for its shape only)
        state["lm_head.weight"] = get("lm_head.weight")
    for i, (x, f) in enumerate(zip(cfg.layer_mixers, cfg.layer_ffns)):
        ours, p = f"layers.{i}.", f"model.layers.{i}."
        state[ours + "mixer_norm.weight"] = get(p + "input_layernorm.weight")
        state[ours + "ffn_norm.weight"] = get(p + "post_attention_layernorm.weight")
        a = p + "self_attn."
        if cfg.mixers[x].kind == "kda":
            state.update({f"{ours}mixer.{n}": get(a + n) for n in KDA_NAMES})
            state[ours + "mixer.A_log"] = get(a + "A_log").reshape(-1)
            state[ours + "mixer.conv_weight"] = torch.cat([get(a + n)[:, 0, :] for n in CONVS])
        else:
            names = [n[len(ours + "mixer."):] for n, _ in model.named_parameters() if n.startswith(ours + "mixer.")]
            state.update({f"{ours}mixer.{n}": get(a + n) for n in names})
        fc = cfg.ffns[f]
        if fc.kind == "dense":
            state.update({f"{ours}ffn.{n}": get(p + "mlp." + n) for n in SWIGLU})
            continue
        q = p + "block_sparse_moe."
        state[ours + "ffn.gate_up_proj"] = torch.stack([
            torch.cat((get(f"{q}experts.{e}.w1.weight"), get(f"{q}experts.{e}.w3.weight")))
            for e in range(fc.num_experts)])
        state[ours + "ffn.down_proj"] = torch.stack([get(f"{q}experts.{e}.w2.weight") for e in range(fc.num_experts)])
        state[ours + "ffn.router.weight"] = get(q + "gate.weight")
        state[ours + "ffn.expert_bias"] = get(q + "gate.e_score_correction_bias").float()
        state.update({f"{ours}ffn.shared.{n}": get(q + "shared_experts." + n) for n in SWIGLU})
    return state


class KimiLinearConverter(Converter):
    """kimi_linear, written in the published checkpoint's names; the checkpoint keeps the routing bias
    (e_score_correction_bias, float32)."""

    model_types = ("kimi_linear",)
    kept_buffers: ClassVar[dict[str, str]] = {"expert_bias": "e_score_correction_bias"}

    def config_from_hf(self, hf: dict) -> ModelConfig:
        return config_from_hf(hf)

    def config_to_hf(self, cfg: ModelConfig, model_type: str) -> dict:
        return config_to_hf(cfg)

    def default_model_type(self, cfg: ModelConfig) -> str | None:
        return "kimi_linear" if any(m.kind == "kda" for m in cfg.mixers.values()) else None

    def view(self, reader: Reader) -> RenamedReader:
        """The reader through the checkpoint's names, whichever spelling the file uses."""
        return RenamedReader(reader, _canonical)

    def label(self, hf: dict, cfg: ModelConfig) -> str:
        return "kimi_linear"

    def to_hf_state(self, model, model_type: str, get=None) -> dict[str, torch.Tensor]:
        return _to_hf_state(model)

    def from_hf_state(self, get, model) -> dict[str, torch.Tensor]:
        return _from_hf_state(get, model)


register_converter(KimiLinearConverter())
