"""The interfaces every token mixer and FFN implements, so the model, the cache container, `cost` and `info` never
ask which kind a layer is.

A mixer kind is one file, layers/mixers/<kind>.py, holding its config dataclass (`kind` field, `validate`,
`describe`), its module (this protocol) and its cache class (`kind`, `memory_bytes()`), and registered with
`@register_mixer(kind, ConfigClass)` (hybridlm.registry). Accounting conventions (docs/cost.md): FLOPs count
matmuls at 2 per multiply-add, elementwise ops are not counted; `context` is a number of tokens.

Shapes: B batch, T new tokens, D d_model.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from .context import ForwardContext


@runtime_checkable
class MixerConfig(Protocol):
    """A mixer's config dataclass: serialisable fields plus these."""

    kind: str

    def validate(self, where: str, d_model: int) -> None:
        """Raise ValueError naming `where`.<field> for a user's mistake; may fill derived defaults."""

    def describe(self, brief: bool = False) -> str:
        """One line for `hybridlm info` (brief: the label `hybridlm cost` groups layers by)."""


def context_io(cfg: MixerConfig, d_model: int) -> tuple[dict, dict]:
    """(writes, reads) of a mixer config in the forward context (layers/context.py), each {name: spec}: what its
    optional `context_io(d_model)` declares (Mamba's memory_out, GMU's memory, attention's kv_out / kv_source),
    ({}, {}) for a kind that touches no context."""
    io = getattr(cfg, "context_io", None)
    return io(d_model) if io is not None else ({}, {})


@runtime_checkable
class LayerCache(Protocol):
    """One layer's decode state."""

    kind: str  # the label HybridCache.memory_by_kind and HybridLM.cache_bytes_by_kind group by

    def memory_bytes(self) -> int: ...

    # Optional, for a cache that holds several kinds (Titans' MAG / MAC: a KV and a memory state):
    # memory_by_kind() -> {kind: bytes}, which HybridCache.memory_by_kind uses instead of {kind: memory_bytes()};
    # its mixer then defines cache_bytes_by_kind(context, batch, dtype_bytes, state_bytes) the same way.


@runtime_checkable
class Mixer(Protocol):
    """A token mixer module, built as `Mixer(cfg, d_model, norm_eps, zero_centered)` (on the meta device first)."""

    cfg: Any
    cache_kind: str  # = the `kind` of the cache new_cache() returns: "kv" | "latent" | "recurrent" | "compressed"
    aux_loss: torch.Tensor | None  # a training loss of the last forward (a trained indexer's KL), or None

    def forward(self, x_BTD: torch.Tensor, pos0: int = 0, cache: Any = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        """[B, T, D] -> [B, T, D] for tokens at absolute positions pos0 .. pos0+T-1; advances `cache` when given.
        `ctx`: what earlier layers of this forward left (None: nothing, e.g. a mixer called on its own)."""

    def init_weights(self, std: float, out_std: float) -> None:
        """Initialise every parameter (after to_empty): std for projections, out_std for the output projection."""

    def new_cache(self) -> LayerCache: ...

    def num_params(self) -> int:
        """Parameters, computed from the config (tests hold it against a direct count)."""

    def flops_per_token(self, context: int, causal_skip: bool = True) -> float:
        """Prefill FLOPs per token averaged over a causal pass of `context` tokens from an empty cache.
        causal_skip=False: every query against all keys, as a dense masked kernel (or torch's FLOP counter) does;
        mixers whose cost does not depend on the mask ignore it."""

    def decode_flops(self, context: int) -> float:
        """FLOPs of one decode step whose new token is token number `context`."""

    def cache_bytes(self, context: int, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = None) -> int:
        """What new_cache() holds after `context` tokens: cached tensors in dtype_bytes, recurrent state in
        state_bytes (None = dtype_bytes; mixers without such state ignore it)."""

    def describe(self) -> str:
        """One line for `hybridlm info` (the config's describe())."""


@runtime_checkable
class FFNConfig(Protocol):
    kind: str

    def validate(self, where: str, d_model: int) -> None: ...

    def describe(self) -> str: ...


@runtime_checkable
class FFN(Protocol):
    """A feed-forward module, built as `FFN(cfg, d_model, vocab_size)`."""

    cfg: Any
    aux_loss: torch.Tensor | None  # a training loss the model adds with aux_loss_weight (None: none this forward)

    def forward(self, x_BTD: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor: ...

    def init_weights(self, std: float) -> None: ...

    def num_params(self) -> int: ...

    def active_params(self) -> int:
        """Parameters one token uses (routed FFNs: top-k experts)."""

    def flops_per_token(self) -> int: ...

    def describe(self) -> str: ...
