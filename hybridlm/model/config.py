"""One declarative config for every family: a layer pattern plus a legend of named mixer / FFN configs.

A decoder is described by two short patterns, one letter per layer:

    mixer_pattern = "GGGA*12"   # token mixer of each layer (G = Gated DeltaNet, A = attention)
    ffn_pattern   = "M*48"      # feed-forward of each layer (M = MoE, D = dense SwiGLU)

"-" in either pattern is a layer without that sublayer (the "none" kind, filled in when the legend has no "-"):
Nemotron-H's single-sublayer layers are mixer_pattern "MA-", ffn_pattern "--D" style plans.

and a legend, `mixers={"G": GatedDeltaNetConfig(...), "A": AttentionConfig(...)}`,
`ffns={"M": MoEConfig(...)}`. Pattern grammar: whitespace-separated terms, each `LETTERS` or
`LETTERS*N` (repeat N times); e.g. "D*3 M*58". The patterns are expanded and validated once in
`__post_init__` into `layer_mixers` / `layer_ffns`; every user mistake raises ValueError naming the field.

Every config round-trips through JSON (`to_dict` / `from_dict`); a mixer or FFN config carries a
`kind` string that `from_dict` resolves in one place: the registry's `MIXER_CONFIGS` / `FFN_CONFIGS`, filled by
the `@register_mixer` / `@register_ffn` decorators in layers/mixers/<kind>.py and layers/ffn/<kind>.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import check_types, expand_pattern, fail, from_kind
from ..layers import ffn as _ffn_kinds  # noqa: F401 (importing the packages registers every kind)
from ..layers import mixers as _mixer_kinds  # noqa: F401
from ..layers.mixers.attention import AttentionConfig
from ..layers.protocol import FFNConfig, MixerConfig, context_io
from ..registry import FFN_CONFIGS, MIXER_CONFIGS


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
    zero_centered_norm: bool = True  # x_hat * (1 + w), w initialised at 0 (Qwen3-Next); RMSNorm only
    norm: str = "rmsnorm"  # the block and final norms: "rmsnorm" or "layernorm" (weight and bias; SambaY)
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
    # Scalars some families set (Granite 4.0, muP-style): x = embed(ids) * embedding_multiplier; every residual add
    # is x + residual_multiplier * sublayer(norm(x)); logits = head(h) / logits_scaling (the MTP head's too).
    embedding_multiplier: float = 1.0
    residual_multiplier: float = 1.0
    logits_scaling: float = 1.0
    # MiniMax-01 / M1's residuals. postnorm: a sublayer's residual is its normed input, x <- a * norm(x) + b * f(norm(x))
    # (False: the pre-norm x <- a * x + b * f(norm(x))). (a, b) per legend letter: mixer_residual_scale for the mixer
    # sublayer, ffn_residual_scale for the FFN one, [alpha, beta]; a letter not listed uses [1, 1].
    postnorm: bool = False
    mixer_residual_scale: dict[str, list[float]] = field(default_factory=dict)
    ffn_residual_scale: dict[str, list[float]] = field(default_factory=dict)
    # Filled by __post_init__: the expanded per-layer plan.
    layer_mixers: list[str] = field(init=False, repr=False)
    layer_ffns: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_layers", "max_seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                fail(name, getattr(self, name), "must be a positive integer")
        if self.norm_eps <= 0:
            fail("norm_eps", self.norm_eps, "must be > 0")
        if self.norm not in ("rmsnorm", "layernorm"):
            fail("norm", self.norm, "must be 'rmsnorm' or 'layernorm'")
        if self.norm == "layernorm" and self.zero_centered_norm:
            fail("zero_centered_norm", True, "applies to norm='rmsnorm' only: set it false with norm='layernorm'")
        w = self.aux_loss_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            fail("aux_loss_weight", w, "must be a finite number >= 0")
        self.mixers = {k: from_kind(MIXER_CONFIGS, v, f"mixers[{k!r}]") for k, v in self.mixers.items()}
        self.ffns = {k: from_kind(FFN_CONFIGS, v, f"ffns[{k!r}]") for k, v in self.ffns.items()}
        for legend, table in (("mixers", self.mixers), ("ffns", self.ffns)):
            if "-" in getattr(self, legend[:-1] + "_pattern") and "-" not in table:
                table["-"] = from_kind(MIXER_CONFIGS if legend == "mixers" else FFN_CONFIGS, {"kind": "none"}, "-")
            for letter, cfg in table.items():
                if letter == "-":
                    if cfg.kind != "none":
                        fail(f"{legend}['-']", cfg.kind, "'-' is the empty sublayer: its kind must be 'none'")
                elif len(letter) != 1 or not letter.isalpha():
                    fail(legend, letter, "keys must be single letters (or '-', the empty sublayer)")
                cfg.validate(f"{legend}[{letter!r}]", self.d_model)
        self.layer_mixers = self._expand("mixer_pattern", self.mixers)
        self.layer_ffns = self._expand("ffn_pattern", self.ffns)
        self._check_context()
        for name in ("embedding_multiplier", "residual_multiplier", "logits_scaling"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                fail(name, v, "must be a finite number > 0")
        if self.hc_mult < 1:
            fail("hc_mult", self.hc_mult, "must be >= 1 (1 = plain residual)")
        self._check_residual_scales()
        if self.hc_mult > 1 and self.residual_multiplier != 1.0:
            fail("residual_multiplier", self.residual_multiplier, f"must be 1.0 with hc_mult={self.hc_mult} (the "
                 "hyper-connections weight the residual themselves)")
        if self.hc_sinkhorn_iters < 1:
            fail("hc_sinkhorn_iters", self.hc_sinkhorn_iters, "must be >= 1")
        if self.hc_eps <= 0:
            fail("hc_eps", self.hc_eps, "must be > 0")
        if self.mtp_depth not in (0, 1):
            fail("mtp_depth", self.mtp_depth, "only depth 0 or 1 is supported")
        if self.mtp_depth:
            if self.mtp_mixer is None:
                attn = [k for k, v in self.mixers.items() if isinstance(v, AttentionConfig)]
                self.mtp_mixer = attn[0] if attn else self.layer_mixers[-1]
            if self.mtp_ffn is None:
                self.mtp_ffn = self.layer_ffns[-1]
            if self.mtp_mixer not in self.mixers:
                fail("mtp_mixer", self.mtp_mixer, f"has no entry in mixers (known: {sorted(self.mixers)})")
            if self.mtp_ffn not in self.ffns:
                fail("mtp_ffn", self.mtp_ffn, f"has no entry in ffns (known: {sorted(self.ffns)})")
            if any(context_io(self.mixers[self.mtp_mixer], self.d_model)):  # the MTP block's context is its own
                fail("mtp_mixer", self.mtp_mixer, "writes or reads the forward context, which the MTP block does not "
                     "share: choose a mixer without kv_out / kv_source / memory")

    def _check_residual_scales(self) -> None:
        """postnorm and the per-letter [alpha, beta] residual scales: known letters, finite pairs, and the plain
        residual around them (no hyper-connections; residual_multiplier 1, which beta replaces)."""
        if not isinstance(self.postnorm, bool):
            fail("postnorm", self.postnorm, "must be true or false")
        for name, legend in (("mixer_residual_scale", self.mixers), ("ffn_residual_scale", self.ffns)):
            table = getattr(self, name)
            if not isinstance(table, dict):
                fail(name, table, "must map legend letters to [alpha, beta]")
            for letter, pair in table.items():
                if letter not in legend or letter == "-":
                    fail(f"{name}[{letter!r}]", pair, f"names no {name.split('_')[0]} in the legend "
                         f"(known: {sorted(k for k in legend if k != '-')})")
                if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                               for v in pair)):
                    fail(f"{name}[{letter!r}]", pair, "must be [alpha, beta], two finite numbers")
                table[letter] = [float(v) for v in pair]
        used = [n for n in ("postnorm", "mixer_residual_scale", "ffn_residual_scale") if getattr(self, n)]
        if used:
            if self.hc_mult > 1:
                fail(used[0], getattr(self, used[0]), f"applies to the plain residual only, not with "
                     f"hc_mult={self.hc_mult} (the hyper-connections weight the residual themselves)")
            if self.residual_multiplier != 1.0:
                fail("residual_multiplier", self.residual_multiplier, "must be 1.0 with postnorm or residual scales "
                     "(beta scales the sublayer output)")

    def _check_context(self) -> None:
        """What each layer reads from the forward context (layers/context.py) an earlier layer must write, in the
        same form: a mixer config may declare `context_io(d_model) -> (writes, reads)`, each {name: spec}, e.g. a
        Mamba memory tap {"m": ("memory", 512)} read by a GMU, or a KV source {"kv": ("kv", 2, 32)} read by
        cross-attention. (The MTP block's mixer is checked apart: its context is empty.)"""
        written: dict[str, tuple[int, tuple]] = {}
        for i, (writes, reads) in enumerate(self.layer_context_io()):
            letter = self.layer_mixers[i]
            for name, spec in reads.items():
                if name not in written:
                    fail("mixer_pattern", self.mixer_pattern, f"layer {i} ({letter!r}) reads {name!r} from the "
                         f"forward context, but no earlier layer writes it")
                j, have = written[name]
                if have != spec:
                    fail(f"mixers[{letter!r}]", spec, f"layer {i} reads {name!r} as {spec}, but layer {j} "
                         f"({self.layer_mixers[j]!r}) writes {have}")
            for name, spec in writes.items():
                written[name] = (i, spec)

    def layer_context_io(self) -> list[tuple[dict, dict]]:
        """Per layer, (writes, reads) of its mixer in the forward context (layers.protocol.context_io)."""
        return [context_io(self.mixers[letter], self.d_model) for letter in self.layer_mixers]

    def _expand(self, field_name: str, legend: dict[str, Any]) -> list[str]:
        letters = expand_pattern(getattr(self, field_name), field_name)
        if len(letters) != self.num_layers:
            fail(field_name, getattr(self, field_name), f"expands to {len(letters)} layers, num_layers={self.num_layers}")
        for i, letter in enumerate(letters):
            if letter not in legend:
                legend_name = "mixers" if field_name.startswith("mixer") else "ffns"
                fail(field_name, getattr(self, field_name),
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
                         if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                         and f.name not in data)
        if missing:
            raise ValueError(f"ModelConfig: missing required field(s) {missing}")
        check_types(cls, data, "")
        for legend, table in (("mixers", MIXER_CONFIGS), ("ffns", FFN_CONFIGS)):
            for letter, entry in data[legend].items():
                if isinstance(entry, dict) and isinstance(entry.get("kind"), str) and entry["kind"] in table:
                    check_types(table[entry["kind"]], entry, f"{legend}[{letter!r}].")
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
