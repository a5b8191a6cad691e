"""One declarative config for every family: a layer pattern plus a legend of named mixer / FFN configs.

A decoder is described by two short patterns, one letter per layer:

    mixer_pattern = "GGGA*12"   # token mixer of each layer (G = Gated DeltaNet, A = attention)
    ffn_pattern   = "M*48"      # feed-forward of each layer (M = MoE, D = dense SwiGLU)

and a legend, `mixers={"G": GatedDeltaNetConfig(...), "A": AttentionConfig(...)}`,
`ffns={"M": MoEConfig(...)}`. Pattern grammar: whitespace-separated terms, each `LETTERS` or
`LETTERS*N` (repeat N times); e.g. "D*3 M*58". The patterns are expanded and validated once in
`__post_init__` into `layer_mixers` / `layer_ffns`; every user mistake raises ValueError naming the field.

Every config round-trips through JSON (`to_dict` / `from_dict`); a mixer or FFN config carries a
`kind` string that `from_dict` resolves in one place (`MIXER_CONFIGS`, `FFN_CONFIGS`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


def _fail(field_name: str, value: Any, why: str) -> None:
    raise ValueError(f"{field_name}={value!r}: {why}")


def _at_least_one(cfg: Any, where: str, *names: str) -> None:
    """The counts and sizes every config has: each named field must be >= 1."""
    for name in names:
        if getattr(cfg, name) < 1:
            _fail(f"{where}.{name}", getattr(cfg, name), "must be >= 1")


@dataclass
class AttentionConfig:
    """Softmax attention: GQA, partial RoPE, optional QK-norm, sigmoid output gate, sliding window."""

    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None  # None: d_model // num_heads
    rope_fraction: float = 1.0  # share of head_dim that is rotated; 0.0 = no positional encoding (NoPE)
    rope_theta: float = 10_000.0
    qk_norm: bool = True  # per-head RMSNorm on q and k (Qwen3)
    output_gate: bool = False  # o <- o * sigmoid(W_g x), per element (Qwen gated attention)
    sliding_window: int | None = None
    bias: bool = False
    # Llama 4 (iRoPE). chunk_size: fixed-block local attention, token i sees j iff i//chunk == j//chunk and j <= i
    # (the cache keeps only the current block). qk_norm_weight=False: weightless RMSNorm, applied after RoPE.
    # temperature_tuning: q <- q * (1 + attn_scale * log(floor((pos + 1) / floor_scale) + 1)), pos 0-based.
    # rope_interleaved: rotate adjacent pairs (complex form) rather than the two halves. rope_scaling: the
    # "llama3" inv_freq adjustment, {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    # "original_max_position_embeddings"}.
    chunk_size: int | None = None
    qk_norm_weight: bool = True
    temperature_tuning: bool = False
    attn_scale: float = 0.1
    floor_scale: int = 8192
    rope_interleaved: bool = False
    rope_scaling: dict | None = None
    kind: Literal["attention"] = "attention"

    def validate(self, where: str, d_model: int) -> None:
        _at_least_one(self, where, "num_heads", "num_kv_heads")
        if self.head_dim is None:
            if d_model % self.num_heads:
                _fail(f"{where}.num_heads", self.num_heads, f"does not divide d_model={d_model} (or set head_dim)")
            self.head_dim = d_model // self.num_heads
        if self.head_dim < 1:
            _fail(f"{where}.head_dim", self.head_dim, "must be >= 1")
        if self.num_heads % self.num_kv_heads:
            _fail(f"{where}.num_kv_heads", self.num_kv_heads, f"must divide num_heads={self.num_heads}")
        if not 0.0 <= self.rope_fraction <= 1.0:
            _fail(f"{where}.rope_fraction", self.rope_fraction, "must be in [0, 1]")
        if self.rope_dim % 2:
            _fail(f"{where}.rope_fraction", self.rope_fraction, f"gives an odd rotary dim {self.rope_dim}")
        if self.sliding_window is not None and self.sliding_window < 1:
            _fail(f"{where}.sliding_window", self.sliding_window, "must be >= 1 or None")
        if self.chunk_size is not None:
            if self.chunk_size < 1:
                _fail(f"{where}.chunk_size", self.chunk_size, "must be >= 1 or None")
            if self.sliding_window is not None:
                _fail(f"{where}.chunk_size", self.chunk_size,
                      f"cannot be combined with sliding_window={self.sliding_window} (choose one local pattern)")
        if not self.qk_norm_weight and not self.qk_norm:
            _fail(f"{where}.qk_norm_weight", False, "needs qk_norm=True")
        if self.temperature_tuning and self.floor_scale < 1:
            _fail(f"{where}.floor_scale", self.floor_scale, "must be >= 1")
        if self.rope_scaling is not None:
            self._validate_rope_scaling(f"{where}.rope_scaling")

    _LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")

    def _validate_rope_scaling(self, where: str) -> None:
        rs = self.rope_scaling
        if not isinstance(rs, dict) or rs.get("rope_type") != "llama3":
            _fail(where, rs, "only {'rope_type': 'llama3', ...} is supported")
        if not self.rope_dim:
            _fail(where, rs, "has no rotary dims to scale (rope_fraction=0)")
        missing = [k for k in self._LLAMA3_KEYS if k not in rs]
        unknown = sorted(set(rs) - {"rope_type", *self._LLAMA3_KEYS})
        if missing or unknown:
            _fail(where, rs, f"needs exactly the keys rope_type, {', '.join(self._LLAMA3_KEYS)}"
                  f" (missing {missing}, unknown {unknown})")
        if not (rs["factor"] > 0 and 0 < rs["low_freq_factor"] <= rs["high_freq_factor"]
                and rs["original_max_position_embeddings"] > 0):
            _fail(where, rs, "needs factor > 0, 0 < low_freq_factor <= high_freq_factor, "
                  "original_max_position_embeddings > 0")

    @property
    def rope_dim(self) -> int:
        return int(self.head_dim * self.rope_fraction)

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            label = ("gated " if self.output_gate else "") + f"attention {self.num_heads}q/{self.num_kv_heads}kv"
            label += f" window {self.sliding_window}" if self.sliding_window else ""
            label += f" chunk {self.chunk_size}" if self.chunk_size else ""
            return label + (" NoPE" if not self.rope_dim else "")
        extras = [f"rope {self.rope_dim}/{self.head_dim}" if self.rope_dim else "NoPE"]
        extras += ["qk-norm"] * self.qk_norm + ["out-gate"] * self.output_gate
        extras += [f"window {self.sliding_window}"] if self.sliding_window else []
        extras += [f"chunk {self.chunk_size}"] if self.chunk_size else []
        extras += [f"temperature tuning (floor {self.floor_scale})"] if self.temperature_tuning else []
        return f"attention {self.num_heads}q/{self.num_kv_heads}kv x {self.head_dim} ({', '.join(extras)})"


@dataclass
class GatedDeltaNetConfig:
    """Gated DeltaNet (Qwen3-Next / Qwen3.5): grouped value heads share num_qk_heads query/key heads."""

    num_qk_heads: int
    num_v_heads: int
    head_k_dim: int = 128
    head_v_dim: int = 128
    conv_kernel: int = 4
    chunk_size: int = 64
    kind: Literal["gated_deltanet"] = "gated_deltanet"

    def validate(self, where: str, d_model: int) -> None:
        _at_least_one(self, where, "num_qk_heads", "num_v_heads", "head_k_dim", "head_v_dim", "conv_kernel",
                      "chunk_size")
        if self.num_v_heads % self.num_qk_heads:
            _fail(f"{where}.num_v_heads", self.num_v_heads, f"must be a multiple of num_qk_heads={self.num_qk_heads}")

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            return "Gated DeltaNet"
        return (f"gated deltanet {self.num_qk_heads}qk/{self.num_v_heads}v x {self.head_k_dim}/{self.head_v_dim}, "
                f"conv {self.conv_kernel}")


@dataclass
class MLAConfig:
    """Multi-head Latent Attention (DeepSeek-V2/V3): low-rank query and KV compression with decoupled RoPE.

    Per token and layer the cache holds the normalised KV latent (kv_lora_rank values) and one roped key head
    shared by all heads (qk_rope_head_dim values). rope_scaling="yarn" rescales the rotary frequencies (YaRN)
    and the softmax scale (mscale), as transformers' deepseek_v3 does; 0.0 in yarn_mscale / yarn_mscale_all_dim
    stands for a field absent from the HF rope parameters."""

    num_heads: int
    kv_lora_rank: int = 512
    q_lora_rank: int | None = 1536  # None: one full-rank query projection (DeepSeek-V2-Lite)
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    rope_theta: float = 10_000.0
    rope_interleaved: bool = True  # rotary pairs (x0, x1), (x2, x3), ... as DeepSeek's weights are laid out
    rope_scaling: Literal["yarn"] | None = None
    yarn_factor: float = 1.0
    yarn_original_max_position: int = 4096
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_mscale: float = 0.0
    yarn_mscale_all_dim: float = 0.0
    latent_norm_eps: float = 1e-6  # the q / kv latent RMSNorms (1e-6 in DeepSeek's and transformers' code)
    # DeepSeek Sparse Attention (V3.2) lightning indexer: index_n_heads 0 = no indexer (dense MLA).
    index_n_heads: int = 0
    index_head_dim: int = 128
    index_topk: int = 2048
    index_loss_coef: float = 0.0  # > 0: train the indexer with its KL loss (a training knob, not in checkpoints)
    kind: Literal["mla"] = "mla"

    def validate(self, where: str, d_model: int) -> None:
        _at_least_one(self, where, "num_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        if self.q_lora_rank is not None and self.q_lora_rank < 1:
            _fail(f"{where}.q_lora_rank", self.q_lora_rank, "must be >= 1 or None (no query compression)")
        if self.qk_rope_head_dim % 2:
            _fail(f"{where}.qk_rope_head_dim", self.qk_rope_head_dim, "must be even (rotary pairs)")
        if self.rope_scaling not in (None, "yarn"):
            _fail(f"{where}.rope_scaling", self.rope_scaling, "must be None or 'yarn'")
        if self.rope_scaling == "yarn":
            for name in ("yarn_factor", "yarn_original_max_position", "yarn_beta_fast", "yarn_beta_slow"):
                if getattr(self, name) <= 0:
                    _fail(f"{where}.{name}", getattr(self, name), "must be > 0")
            for name in ("yarn_mscale", "yarn_mscale_all_dim"):
                if getattr(self, name) < 0:
                    _fail(f"{where}.{name}", getattr(self, name), "must be >= 0 (0 = absent)")
        if self.latent_norm_eps <= 0:
            _fail(f"{where}.latent_norm_eps", self.latent_norm_eps, "must be > 0")
        if self.index_n_heads < 0:
            _fail(f"{where}.index_n_heads", self.index_n_heads, "must be >= 0 (0 = no indexer)")
        if self.index_n_heads:
            if self.q_lora_rank is None:
                _fail(f"{where}.q_lora_rank", None, "must be set when index_n_heads > 0 (the indexer query reads c_Q)")
            if self.index_head_dim < self.qk_rope_head_dim:
                _fail(f"{where}.index_head_dim", self.index_head_dim,
                      f"must be >= qk_rope_head_dim ({self.qk_rope_head_dim}): RoPE goes on its first dims")
            if self.index_topk < 1:
                _fail(f"{where}.index_topk", self.index_topk, "must be >= 1")
        if self.index_loss_coef < 0:
            _fail(f"{where}.index_loss_coef", self.index_loss_coef, "must be >= 0 (0 = the indexer is not trained)")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def has_indexer(self) -> bool:
        return self.index_n_heads > 0

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            return f"MLA {self.num_heads}q, latent {self.kv_lora_rank}+{self.qk_rope_head_dim}"
        q = f"q_lora {self.q_lora_rank}" if self.q_lora_rank else "full-rank q"
        rope = f"rope {self.qk_rope_head_dim}" + (f", yarn x{self.yarn_factor:g}" if self.rope_scaling == "yarn" else "")
        return (f"MLA {self.num_heads}q x {self.qk_nope_head_dim}+{self.qk_rope_head_dim}/{self.v_head_dim} ({q}, "
                f"kv_lora {self.kv_lora_rank}, {rope}; cache {self.kv_lora_rank + self.qk_rope_head_dim}/token)")


@dataclass
class CompressedAttentionConfig:
    """DeepSeek-V4 attention: one shared key=value head, a sliding window with a learnable per-head sink, and
    optionally compressed long-range entries: "csa" (overlapping windows of 2 x compress_ratio tokens, top-k picked
    by a lightning indexer) or "hca" (disjoint windows, every closed one attended). Low-rank query, grouped
    low-rank output projection. RoPE (interleaved pairs) on the last rope_dim dims of each head; rope_scaling is
    None or {"rope_type": "yarn", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow"}
    (frequencies only: V4 scales neither cos/sin nor the softmax)."""

    num_heads: int
    head_dim: int = 512
    rope_dim: int = 64
    q_lora_rank: int = 1024
    o_groups: int = 8
    o_lora_rank: int = 1024
    sliding_window: int = 128
    compression: Literal["none", "csa", "hca"] = "none"
    compress_ratio: int = 4
    rope_theta: float = 10_000.0
    rope_scaling: dict | None = None
    index_n_heads: int = 64  # CSA only: the lightning indexer
    index_head_dim: int = 128
    index_topk: int = 512
    index_loss_coef: float = 0.0  # > 0: train the CSA indexer with the KL loss (a training knob, not in checkpoints)
    kind: Literal["compressed_attention"] = "compressed_attention"

    _YARN_KEYS = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow")

    def validate(self, where: str, d_model: int) -> None:
        _at_least_one(self, where, "num_heads", "head_dim", "q_lora_rank", "o_groups", "o_lora_rank", "sliding_window",
                      "compress_ratio", "index_n_heads", "index_head_dim", "index_topk")
        if self.rope_dim < 0 or self.rope_dim % 2 or self.rope_dim > self.head_dim:
            _fail(f"{where}.rope_dim", self.rope_dim, f"must be even and in [0, head_dim={self.head_dim}]")
        if self.num_heads % self.o_groups:
            _fail(f"{where}.o_groups", self.o_groups, f"must divide num_heads={self.num_heads}")
        if self.compression not in ("none", "csa", "hca"):
            _fail(f"{where}.compression", self.compression, "must be 'none', 'csa' or 'hca'")
        if self.index_loss_coef < 0:
            _fail(f"{where}.index_loss_coef", self.index_loss_coef, "must be >= 0 (0 = the indexer is not trained)")
        if self.compression == "csa" and self.index_head_dim < self.rope_dim:
            _fail(f"{where}.index_head_dim", self.index_head_dim, f"must be >= rope_dim ({self.rope_dim})")
        rs = self.rope_scaling
        if rs is not None:
            missing = [k for k in self._YARN_KEYS if k not in rs] if isinstance(rs, dict) else list(self._YARN_KEYS)
            unknown = sorted(set(rs) - {"rope_type", *self._YARN_KEYS}) if isinstance(rs, dict) else []
            if not isinstance(rs, dict) or rs.get("rope_type") != "yarn" or missing or unknown:
                _fail(f"{where}.rope_scaling", rs, f"must be {{'rope_type': 'yarn', {', '.join(self._YARN_KEYS)}}} "
                      f"(missing {missing}, unknown {unknown})")
            if not all(rs[k] > 0 for k in self._YARN_KEYS):
                _fail(f"{where}.rope_scaling", rs, "needs every value > 0")

    def describe(self, brief: bool = False) -> str:
        """What `hybridlm info` shows for this mixer; brief: its label in `cost`'s layout summary."""
        if brief:
            label = {"none": f"window-only ({self.sliding_window})",
                     "csa": f"CSA ({self.compress_ratio}x, top-{self.index_topk})",
                     "hca": f"HCA ({self.compress_ratio}x)"}[self.compression]
            return f"shared-KV {self.num_heads}q x {self.head_dim} {label}"
        comp = {"none": "window only",
                "csa": f"CSA {self.compress_ratio}x, indexer {self.index_n_heads}h top-{self.index_topk}",
                "hca": f"HCA {self.compress_ratio}x"}[self.compression]
        yarn = f", yarn x{self.rope_scaling['factor']:g}" if self.rope_scaling else ""
        return (f"shared-KV attention {self.num_heads}q x {self.head_dim} (window {self.sliding_window} + sink, "
                f"{comp}; rope {self.rope_dim} theta {self.rope_theta:g}{yarn}; output {self.o_groups} groups x "
                f"{self.o_lora_rank})")


@dataclass
class DenseFFNConfig:
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    intermediate_size: int
    kind: Literal["dense"] = "dense"

    def validate(self, where: str, d_model: int) -> None:
        if self.intermediate_size < 1:
            _fail(f"{where}.intermediate_size", self.intermediate_size, "must be >= 1")

    def describe(self) -> str:
        """What `hybridlm info` shows for this FFN."""
        return f"swiglu {self.intermediate_size}"


@dataclass
class MoEConfig:
    """Token-choice, dropless mixture of SwiGLU experts with optional shared expert(s)."""

    num_experts: int
    top_k: int
    expert_size: int  # intermediate width of one routed expert
    shared_size: int = 0  # intermediate width of the shared expert(s) together; 0 = none
    shared_gate: bool = False  # shared output scaled by sigmoid(w_s . x) (Qwen)
    score_func: Literal["softmax", "sigmoid", "sqrtsoftplus"] = "softmax"  # sqrtsoftplus: sqrt(softplus(u)), V4
    norm_topk: bool = True  # renormalise the top-k gates to sum to 1
    routed_scale: float = 1.0
    aux_loss_coef: float = 0.0  # switch-style load-balancing loss weight
    bias_update_rate: float = 0.0  # DeepSeek-V3 aux-loss-free bias step (gamma); 0 = off
    scale_input: bool = False  # Llama 4: a routed expert computes E(gate * x) and its output is not gated
    # Group-limited routing (DeepSeek-V3 noaux_tc): experts split into n_groups equal groups; a group's score is
    # the sum of its top-2 biased scores; only the best topk_groups groups' experts compete for the top-k.
    n_groups: int = 1
    topk_groups: int = 1
    # DeepSeek-V4. swiglu_limit > 0 clamps every expert's (routed and shared) gate pre-activation to <= limit and
    # up to [-limit, limit]. hash_routing: the experts come from a frozen token-id table (tid2eid [vocab, top_k]),
    # the router only weighs them (V4's first layers).
    swiglu_limit: float = 0.0
    hash_routing: bool = False
    kind: Literal["moe"] = "moe"

    def validate(self, where: str, d_model: int) -> None:
        _at_least_one(self, where, "num_experts", "top_k", "expert_size")
        if self.top_k > self.num_experts:
            _fail(f"{where}.top_k", self.top_k, f"exceeds num_experts={self.num_experts}")
        if self.shared_size < 0:
            _fail(f"{where}.shared_size", self.shared_size, "must be >= 0")
        if self.shared_gate and not self.shared_size:
            _fail(f"{where}.shared_gate", True, "needs a shared expert (shared_size > 0)")
        if self.score_func not in ("softmax", "sigmoid", "sqrtsoftplus"):
            _fail(f"{where}.score_func", self.score_func, "must be 'softmax', 'sigmoid' or 'sqrtsoftplus'")
        if self.swiglu_limit < 0:
            _fail(f"{where}.swiglu_limit", self.swiglu_limit, "must be >= 0 (0 = no clamp)")
        if self.hash_routing and self.n_groups > 1:
            _fail(f"{where}.hash_routing", True, "cannot be combined with group-limited routing (n_groups > 1)")
        if self.n_groups < 1 or self.num_experts % self.n_groups:
            _fail(f"{where}.n_groups", self.n_groups, f"must be >= 1 and divide num_experts={self.num_experts}")
        if not 1 <= self.topk_groups <= self.n_groups:
            _fail(f"{where}.topk_groups", self.topk_groups, f"must be in [1, n_groups={self.n_groups}]")
        if self.top_k > self.topk_groups * (self.num_experts // self.n_groups):
            _fail(f"{where}.top_k", self.top_k, f"exceeds the experts of topk_groups={self.topk_groups} groups "
                  f"({self.topk_groups * (self.num_experts // self.n_groups)})")

    def describe(self) -> str:
        """What `hybridlm info` shows for this FFN."""
        shared = f" + shared {self.shared_size}" if self.shared_size else ""
        groups = f", {self.topk_groups} of {self.n_groups} groups" if self.topk_groups < self.n_groups else ""
        extra = (", hash-routed" if self.hash_routing else "") + (f", swiglu clamp {self.swiglu_limit:g}"
                                                                  if self.swiglu_limit else "")
        return f"moe {self.num_experts}e top-{self.top_k} x {self.expert_size}{shared} ({self.score_func}{groups}{extra})"


MixerConfig = AttentionConfig | GatedDeltaNetConfig | MLAConfig | CompressedAttentionConfig
FFNConfig = DenseFFNConfig | MoEConfig
MIXER_CONFIGS: dict[str, type] = {"attention": AttentionConfig, "gated_deltanet": GatedDeltaNetConfig,
                                  "mla": MLAConfig, "compressed_attention": CompressedAttentionConfig}
FFN_CONFIGS: dict[str, type] = {"dense": DenseFFNConfig, "moe": MoEConfig}

_TERM = re.compile(r"^([A-Za-z]+)(?:\*(\d+))?$")


def expand_pattern(pattern: str, field_name: str) -> list[str]:
    """'GGGA*2 A' -> ['G','G','G','A','G','G','G','A','A']."""
    letters: list[str] = []
    terms = pattern.split()
    if not terms:
        _fail(field_name, pattern, "is empty")
    for term in terms:
        m = _TERM.match(term)
        if not m:
            _fail(field_name, pattern, f"term {term!r} is not LETTERS or LETTERS*N")
        letters.extend(list(m.group(1)) * int(m.group(2) or 1))
    return letters


def _from_kind(table: dict[str, type], data: Any, where: str):
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict) or "kind" not in data:
        _fail(where, data, f"must be a dict with a 'kind' in {sorted(table)}")
    if data["kind"] not in table:
        _fail(f"{where}.kind", data["kind"], f"unknown; known kinds: {sorted(table)}")
    cls = table[data["kind"]]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        _fail(where, unknown, f"unknown field(s) for kind {data['kind']!r}; known: {sorted(known)}")
    return cls(**data)


@dataclass
class ModelConfig:
    """A decoder-only LM: embeddings, num_layers pre-norm blocks (mixer + FFN), final norm, head, optional MTP."""

    vocab_size: int
    d_model: int
    num_layers: int
    mixer_pattern: str
    ffn_pattern: str
    mixers: dict[str, Any]
    ffns: dict[str, Any]
    name: str = "custom"
    norm_eps: float = 1e-6
    zero_centered_norm: bool = True  # x_hat * (1 + w), w initialised at 0 (Qwen3-Next)
    tie_embeddings: bool = False
    mtp_depth: int = 0  # multi-token prediction modules (0 or 1), as in DeepSeek-V3 / Qwen3-Next
    mtp_mixer: str | None = None  # legend letter for the MTP block's mixer (default: first attention letter)
    mtp_ffn: str | None = None  # legend letter for the MTP block's FFN (default: last layer's)
    mtp_loss_weight: float = 0.3
    aux_loss_weight: float = 1.0  # weight of the mixers' and FFNs' aux losses (MoE balance, trained indexers' KL)
    max_seq_len: int = 4096
    init_std: float = 0.02
    # Manifold-constrained hyper-connections (DeepSeek-V4): the residual is hc_mult streams mixed by a
    # Sinkhorn-normalised matrix around every sublayer; 1 = the plain residual.
    hc_mult: int = 1
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    hf_model_type: str | None = None  # Hugging Face format `save_hf` writes (e.g. "qwen3_next"); None = inferred
    # Filled by __post_init__: the expanded per-layer plan.
    layer_mixers: list[str] = field(init=False, repr=False)
    layer_ffns: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_layers", "max_seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                _fail(name, getattr(self, name), "must be a positive integer")
        if self.norm_eps <= 0:
            _fail("norm_eps", self.norm_eps, "must be > 0")
        w = self.aux_loss_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            _fail("aux_loss_weight", w, "must be a finite number >= 0")
        self.mixers = {k: _from_kind(MIXER_CONFIGS, v, f"mixers[{k!r}]") for k, v in self.mixers.items()}
        self.ffns = {k: _from_kind(FFN_CONFIGS, v, f"ffns[{k!r}]") for k, v in self.ffns.items()}
        for legend, table in (("mixers", self.mixers), ("ffns", self.ffns)):
            for letter, cfg in table.items():
                if len(letter) != 1 or not letter.isalpha():
                    _fail(legend, letter, "keys must be single letters")
                cfg.validate(f"{legend}[{letter!r}]", self.d_model)
        self.layer_mixers = self._expand("mixer_pattern", self.mixers)
        self.layer_ffns = self._expand("ffn_pattern", self.ffns)
        if self.hc_mult < 1:
            _fail("hc_mult", self.hc_mult, "must be >= 1 (1 = plain residual)")
        if self.hc_sinkhorn_iters < 1:
            _fail("hc_sinkhorn_iters", self.hc_sinkhorn_iters, "must be >= 1")
        if self.hc_eps <= 0:
            _fail("hc_eps", self.hc_eps, "must be > 0")
        if self.mtp_depth not in (0, 1):
            _fail("mtp_depth", self.mtp_depth, "only depth 0 or 1 is supported")
        if self.mtp_depth:
            if self.mtp_mixer is None:
                attn = [k for k, v in self.mixers.items() if isinstance(v, AttentionConfig)]
                self.mtp_mixer = attn[0] if attn else self.layer_mixers[-1]
            if self.mtp_ffn is None:
                self.mtp_ffn = self.layer_ffns[-1]
            if self.mtp_mixer not in self.mixers:
                _fail("mtp_mixer", self.mtp_mixer, f"has no entry in mixers (known: {sorted(self.mixers)})")
            if self.mtp_ffn not in self.ffns:
                _fail("mtp_ffn", self.mtp_ffn, f"has no entry in ffns (known: {sorted(self.ffns)})")

    def _expand(self, field_name: str, legend: dict[str, Any]) -> list[str]:
        letters = expand_pattern(getattr(self, field_name), field_name)
        if len(letters) != self.num_layers:
            _fail(field_name, getattr(self, field_name), f"expands to {len(letters)} layers, num_layers={self.num_layers}")
        for i, letter in enumerate(letters):
            if letter not in legend:
                legend_name = "mixers" if field_name.startswith("mixer") else "ffns"
                _fail(field_name, getattr(self, field_name),
                      f"letter {letter!r} at layer {i} has no entry in {legend_name} (known: {sorted(legend)})")
        return letters

    # -- the per-layer plan ----------------------------------------------------------------
    def mixer(self, layer: int) -> MixerConfig:
        return self.mixers[self.layer_mixers[layer]]

    def ffn(self, layer: int) -> FFNConfig:
        return self.ffns[self.layer_ffns[layer]]

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        out["mixers"] = {k: dataclasses.asdict(v) for k, v in self.mixers.items()}
        out["ffns"] = {k: dataclasses.asdict(v) for k, v in self.ffns.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """From JSON-like data: unknown, missing and wrongly typed fields (here and in every mixers / ffns entry)
        raise ValueError naming the field before anything is built."""
        if not isinstance(data, dict):
            raise ValueError(  # noqa: TRY004 (a user's file: ValueError, as everywhere in hybridlm)
                f"ModelConfig: expected a JSON object, found {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.init and f.default is dataclasses.MISSING and f.name not in data)
        if missing:
            raise ValueError(f"ModelConfig: missing required field(s) {missing}")
        _check_types(cls, data, "")
        for legend, table in (("mixers", MIXER_CONFIGS), ("ffns", FFN_CONFIGS)):
            for letter, entry in data[legend].items():
                if isinstance(entry, dict) and entry.get("kind") in table:
                    _check_types(table[entry["kind"]], entry, f"{legend}[{letter!r}].")
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> ModelConfig:
        """A path to a .json file, or the JSON text itself. Errors are one-line ValueErrors naming the file (when
        there is one) and the field."""
        text = str(path_or_text)
        if text.lstrip().startswith("{"):
            where = "config JSON"
        else:
            where = p = Path(path_or_text)
            if not p.is_file():
                raise ValueError(f"{p}: no such config file")
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{p}: not UTF-8 text (byte {e.start})") from None
            except OSError as e:
                raise ValueError(f"{p}: cannot be read ({e.strerror or e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})


def _check_types(cls: type, data: dict[str, Any], where: str) -> None:
    """Each present field of JSON `data` against `cls`'s annotation (int, float, bool, str, None, Literal, dict)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init and f.name in data and not _fits(data[f.name], hints[f.name]):
            _fail(f"{where}{f.name}", data[f.name], f"must be {_describe(hints[f.name])}")


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if origin is Literal:
        return isinstance(value, str) and value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # beyond 2**53 JSON numbers stop being exact (and no size is that large)
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53
    if hint is float:  # JSON has one number type: an integer is a float; inf and NaN are not numbers a config holds
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return True  # Any


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if hint is type(None):
        return "null"
    if hint is float:
        return "a finite number"
    return {int: "an integer (|n| <= 2**53)", bool: "true or false", str: "a string"}.get(hint, "an object")
