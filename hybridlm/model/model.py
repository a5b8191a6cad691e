"""HybridLM: one decoder for every family, assembled from the config's per-layer plan.

    x = embed(ids)
    for each layer l:  x = x + mixer_l(norm(x));  x = x + ffn_l(norm(x))      (pre-norm residual)
                       MiniMax (postnorm, alpha / beta): h = norm(x);  x = alpha h + beta f(h)
    logits = head(norm(x))                          head tied to the embedding or not
    MTP (depth 1, DeepSeek-V3 / Qwen3-Next): h' = proj([norm(embed(t+1)); norm(h)]) -> block -> norm -> head,
    predicting token t+2; h is the main stack's final (normed) hidden state, as vLLM feeds it.

Every block and mixer gets the forward's `ForwardContext` (layers/context.py): a layer may leave a named value for
later layers (YOCO's shared KV, SambaY's saved memory).

YOCO prefill: when every layer from `stateless_from` on keeps no cache (SambaY's cross-decoder: GMUs and
cross-attention reading the context), a prefill runs those layers only for the positions whose logits it needs
(`keep`: the last one; none for the chunks before it). Earlier positions there would feed nothing: no state of
theirs survives the step. A causal stack with no such suffix has stateless_from = num_layers and skips nothing.

With hc_mult = n > 1 (DeepSeek-V4's mHC, hyper.py) the residual is n copies [B, T, n, D]: each sublayer reads a
learned mix of them and writes back through a Sinkhorn-normalised mixing, and a hyper-head collapses them before the
final norm; the MTP module then takes the copies.

loss = CE(next token) + aux_loss_weight * the mixers' and FFNs' aux losses (MoE balance, trained indexers' KL;
       the MTP block's included) + mtp_loss_weight * CE(token after next)   (`total_loss`, the trainer's objective).
Built on the meta device, then materialised and initialised in `init_weights()`, so a full-scale preset
can be inspected without memory: `HybridLM(cfg, device="meta")`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..core.norms import build_norm, norm_params
from ..core.runtime import available_memory_bytes
from ..layers.cache import HybridCache
from ..layers.context import ForwardContext
from ..layers.ffn import build_ffn
from ..layers.mixers import build_mixer
from ..registry import HF_IO
from .config import ModelConfig
from .hyper import HyperConnection, HyperHead


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, T, V]
    loss: torch.Tensor | None = None
    ce_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None
    mtp_logits: torch.Tensor | None = None


class Block(nn.Module):
    """Pre-norm mixer + FFN. Plain residual (x [B, T, D]) when hc_mult == 1 (MiniMax's post-norm residual and alpha /
    beta scales are config: ModelConfig.postnorm, *_residual_scale); otherwise x is the mHC stream [B, T, n, D] and
    each sublayer is wrapped by its own HyperConnection (hyper.py)."""

    def __init__(self, cfg: ModelConfig, mixer_letter: str, ffn_letter: str):
        super().__init__()
        self.mixer_letter, self.ffn_letter = mixer_letter, ffn_letter
        self.residual_multiplier = cfg.residual_multiplier
        # MiniMax's residuals (ModelConfig.postnorm, *_residual_scale): x <- a * (norm(x) if postnorm else x) + b * y
        self.postnorm = cfg.postnorm
        self.mixer_ab = tuple(cfg.mixer_residual_scale.get(mixer_letter, (1.0, 1.0)))
        self.ffn_ab = tuple(cfg.ffn_residual_scale.get(ffn_letter, (1.0, 1.0)))
        eps, zc = cfg.norm_eps, cfg.zero_centered_norm
        self.mixer = build_mixer(cfg.mixers[mixer_letter], cfg.d_model, eps, zc)
        self.ffn = build_ffn(cfg.ffns[ffn_letter], cfg.d_model, cfg.vocab_size)
        # An empty sublayer (kind "none", pattern letter "-") has no norm, no hyper-connection and no residual add.
        self.has_mixer = not getattr(self.mixer, "identity", False)
        self.has_ffn = not getattr(self.ffn, "identity", False)
        self.mixer_norm = build_norm(cfg.norm, cfg.d_model, eps, zc) if self.has_mixer else None
        self.ffn_norm = build_norm(cfg.norm, cfg.d_model, eps, zc) if self.has_ffn else None
        self.norm_kind = cfg.norm
        self.attn_hc = self.ffn_hc = None
        if cfg.hc_mult > 1:
            hc = lambda: HyperConnection(cfg.hc_mult, cfg.d_model, cfg.hc_sinkhorn_iters, cfg.hc_eps, eps)  # noqa: E731
            self.attn_hc = hc() if self.has_mixer else None
            self.ffn_hc = hc() if self.has_ffn else None

    def init_weights(self, std: float, out_std: float) -> None:
        for norm in (self.mixer_norm, self.ffn_norm):
            if norm is not None:
                norm.init_weights()
        self.mixer.init_weights(std, out_std)
        self.ffn.init_weights(std)
        for hc in (self.attn_hc, self.ffn_hc):
            if hc is not None:
                hc.init_weights(std)

    def forward(self, x: torch.Tensor, pos0: int = 0, cache=None, token_ids: torch.Tensor | None = None,
                ctx: ForwardContext | None = None) -> torch.Tensor:
        if self.has_mixer:
            if self.attn_hc is None:
                h = self.mixer_norm(x)
                x = self._residual(x, h, self.mixer(h, pos0, cache, ctx), self.mixer_ab)
            else:
                u, post, comb = self.attn_hc(x)
                x = HyperConnection.expand(self.mixer(self.mixer_norm(u), pos0, cache, ctx), x, post, comb)
        if self.has_ffn:
            if self.ffn_hc is None:
                h = self.ffn_norm(x)
                x = self._residual(x, h, self.ffn(h, token_ids), self.ffn_ab)
            else:
                u, post, comb = self.ffn_hc(x)
                x = HyperConnection.expand(self.ffn(self.ffn_norm(u), token_ids), x, post, comb)
        return x

    def _residual(self, x: torch.Tensor, h: torch.Tensor, y: torch.Tensor, ab: tuple[float, float]) -> torch.Tensor:
        """x + residual_multiplier * y (pre-norm); with postnorm the residual is h = norm(x); alpha, beta = ab."""
        res = h if self.postnorm else x
        alpha, beta = ab
        r = self.residual_multiplier
        if alpha == 1.0 and beta == 1.0:
            return res + (y if r == 1.0 else r * y)
        return alpha * res + beta * y

    def hc_flops(self) -> int:
        return sum(h.flops_per_token() for h in (self.attn_hc, self.ffn_hc) if h is not None)

    def num_params(self) -> int:
        hc = sum(h.num_params() for h in (self.attn_hc, self.ffn_hc) if h is not None)
        norms = sum(norm_params(self.norm_kind, n.weight.numel()) for n in (self.mixer_norm, self.ffn_norm)
                    if n is not None)
        return norms + self.mixer.num_params() + self.ffn.num_params() + hc


class MTP(nn.Module):
    """Depth-1 multi-token prediction module; shares the embedding and output head with the main model.
    With mHC (hc_mult > 1, DeepSeek-V4) h is the main stack's stream [B, T, n, D] before its head, each copy is
    projected with the (broadcast) next-token embedding, and the module collapses its block's stream with a
    HyperHead of its own before the norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        eps, zc = cfg.norm_eps, cfg.zero_centered_norm
        self.emb_norm = build_norm(cfg.norm, cfg.d_model, eps, zc)
        self.hidden_norm = build_norm(cfg.norm, cfg.d_model, eps, zc)
        self.proj = nn.Linear(2 * cfg.d_model, cfg.d_model, bias=False)  # [W_e | W_h] on [emb; h]
        self.block = Block(cfg, cfg.mtp_mixer, cfg.mtp_ffn)
        self.norm = build_norm(cfg.norm, cfg.d_model, eps, zc)
        self.hc_head = HyperHead(cfg.hc_mult, cfg.d_model, cfg.hc_eps, eps) if cfg.hc_mult > 1 else None

    def init_weights(self, std: float, out_std: float) -> None:
        for norm in (self.emb_norm, self.hidden_norm, self.norm):
            norm.init_weights()
        nn.init.normal_(self.proj.weight, std=std)
        self.block.init_weights(std, out_std)
        if self.hc_head is not None:
            self.hc_head.init_weights(std)

    def forward(self, h: torch.Tensor, emb_next_BTD: torch.Tensor, next_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        e = self.emb_norm(emb_next_BTD)
        hn = self.hidden_norm(h)
        if self.hc_head is not None:
            e = e.unsqueeze(2).expand_as(hn)
        x = self.block(self.proj(torch.cat((e, hn), dim=-1)), token_ids=next_ids, ctx=ForwardContext())
        return self.norm(x if self.hc_head is None else self.hc_head(x))


class HybridLM(nn.Module):
    def __init__(self, config: ModelConfig, device: str | torch.device | None = None):
        super().__init__()
        self.config = config
        with torch.device("meta"):
            self.embed = nn.Embedding(config.vocab_size, config.d_model)
            self.layers = nn.ModuleList(
                Block(config, m, f) for m, f in zip(config.layer_mixers, config.layer_ffns)
            )
            self.norm = build_norm(config.norm, config.d_model, config.norm_eps, config.zero_centered_norm)
            self.hc_head = (HyperHead(config.hc_mult, config.d_model, config.hc_eps, config.norm_eps)
                            if config.hc_mult > 1 else None)
            self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
            self.mtp = MTP(config) if config.mtp_depth else None
        self.stateless_from = len(self.layers)  # first layer of the cacheless suffix (none: num_layers)
        while self.stateless_from > 0 and self.layers[self.stateless_from - 1].mixer.cache_kind is None:
            self.stateless_from -= 1
        device = torch.device(device) if device is not None else torch.device("cpu")
        if device.type != "meta":
            self.to_empty(device=device)
            self.init_weights()

    # -- construction ---------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, init_std) for projections and embeddings; output projections scaled by 1/sqrt(2 L)
        (GPT-2) so the residual stream's variance does not grow with depth; norms at identity. Routed experts come
        from per-expert generators (MoE.init_experts), so a shard can be initialised alone
        (training/sharded_init.py gives a sharded model exactly these values)."""
        if seed is not None:
            torch.manual_seed(seed)
        for name, init in self.init_steps():
            init(self.get_submodule(name))

    def init_steps(self) -> list[tuple[str, object]]:
        """The initialisation in order, one (submodule name, init function of that submodule) per step; every step
        draws from the global RNG in this order (a sharded init replays it unit by unit)."""
        std = self.config.init_std
        out_std = std / (2 * self.config.num_layers) ** 0.5
        steps = [("embed", lambda m: nn.init.normal_(m.weight, std=std))]
        steps += [(f"layers.{i}", lambda m: m.init_weights(std, out_std)) for i in range(len(self.layers))]
        steps.append(("norm", lambda m: m.init_weights()))
        if self.hc_head is not None:
            steps.append(("hc_head", lambda m: m.init_weights(std)))
        if self.lm_head is not None:
            steps.append(("lm_head", lambda m: nn.init.normal_(m.weight, std=std)))
        if self.mtp is not None:
            steps.append(("mtp", lambda m: m.init_weights(std, out_std)))
        return steps

    @property
    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The output head on normed hidden states [..., D] -> [..., V] (divided by logits_scaling)."""
        out = F.linear(h, self.head_weight)
        return out if self.config.logits_scaling == 1.0 else out / self.config.logits_scaling

    def new_cache(self) -> HybridCache:
        return HybridCache(layers=[block.mixer.new_cache() for block in self.layers])

    # -- forward --------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, cache: HybridCache | None = None, keep: int | None = None
                      ) -> torch.Tensor:
        """Final normed hidden states [B, T, D]; advances the cache by T when one is given.
        keep: only the last `keep` positions are wanted ([B, keep, D]); the cacheless suffix then runs on those
        alone (YOCO prefill, see the module docstring). None: every position."""
        return self.norm(self._stack(input_ids, cache, keep)[0])

    def _stack(self, input_ids: torch.Tensor, cache: HybridCache | None = None, keep: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (the residual after the last block [B, T, D], collapsed by the mHC head when there is one;
        the uncollapsed mHC stream [B, T, n, D] or None), before the final norm. keep: see hidden_states (the
        result is then [B, keep, D]: the last positions, through every layer)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, time], got shape {tuple(input_ids.shape)}")
        V = self.config.vocab_size
        if input_ids.numel() and not torch.compiler.is_compiling() and (
                int(input_ids.min()) < 0 or int(input_ids.max()) >= V):  # (a compiled step's ids come from sampling)
            raise ValueError(f"input_ids has ids outside [0, vocab_size={V}): "
                             f"min {int(input_ids.min())}, max {int(input_ids.max())}")
        pos0 = cache.pos if cache is not None else 0
        x = self.embed(input_ids)
        if self.config.embedding_multiplier != 1.0:
            x = x * self.config.embedding_multiplier
        if self.hc_head is not None:
            x = x.unsqueeze(2).expand(-1, -1, self.config.hc_mult, -1).contiguous()
        ctx = ForwardContext(pos0=pos0, num_layers=len(self.layers))  # what a layer leaves for later ones, this forward only (layers/context.py)
        T, ids, pos = input_ids.shape[1], input_ids, pos0
        if keep is not None and not 0 <= keep <= T:
            raise ValueError(f"keep={keep}: must be in [0, {T}] (the positions of this forward)")
        for i, block in enumerate(self.layers):
            if keep is not None and i == self.stateless_from and keep < T:
                if keep == 0:  # nothing wanted from here on, and nothing here keeps state
                    x = x[:, :0]
                    break
                x, ids, pos = x[:, T - keep:], ids[:, T - keep:], pos0 + T - keep
            ctx.layer = i
            x = block(x, pos, cache.layers[i] if cache is not None else None, ids, ctx)
        if cache is not None:
            cache.pos += input_ids.shape[1]
        return (x, None) if self.hc_head is None else (self.hc_head(x), x)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                cache: HybridCache | None = None) -> ModelOutput:
        """labels: [B, T] aligned with input_ids (shifted inside, HF style); -100 is ignored."""
        x, streams = self._stack(input_ids, cache)
        h = self.norm(x)
        logits = self.logits(h)  # [B, T, V]
        if labels is None:
            return ModelOutput(logits=logits)
        if labels.shape != input_ids.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}")
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        aux = self.aux_loss()
        aux_mods = [m for b in self.layers for m in (b.mixer, b.ffn)]
        mtp_loss = mtp_logits = None
        if self.mtp is not None and input_ids.shape[1] > 2:
            h_in = h if streams is None else streams  # mHC: the stream before the main head
            h_mtp = self.mtp(h_in[:, :-1], self.embed(input_ids[:, 1:]), input_ids[:, 1:])  # i predicts token i+2
            mtp_logits = self.logits(h_mtp)
            mtp_loss = F.cross_entropy(mtp_logits[:, :-1].flatten(0, 1).float(), labels[:, 2:].flatten(),
                                       ignore_index=-100)
            aux_mods += [self.mtp.block.mixer, self.mtp.block.ffn]
        loss = self.total_loss(ce, [m.aux_loss for m in aux_mods if m.aux_loss is not None],
                               mtp_loss)
        return ModelOutput(logits=logits, loss=loss, ce_loss=ce, aux_loss=aux, mtp_loss=mtp_loss,
                           mtp_logits=mtp_logits)

    def total_loss(self, ce: torch.Tensor, aux_losses: list[torch.Tensor], mtp_loss: torch.Tensor | None
                   ) -> torch.Tensor:
        """The training objective, defined once: ce + aux_loss_weight * sum(aux losses of every aux module, the
        MTP block's included) + mtp_loss_weight * mtp_loss."""
        loss = ce
        if aux_losses:
            loss = loss + self.config.aux_loss_weight * torch.stack(aux_losses).sum()
        if mtp_loss is not None:
            loss = loss + self.config.mtp_loss_weight * mtp_loss
        return loss

    def aux_loss(self) -> torch.Tensor | None:
        """The main stack's auxiliary losses: MoE balance losses and, where trained, indexer KL losses."""
        mods = [m for b in self.layers for m in (b.mixer, b.ffn)]
        losses = [m.aux_loss for m in mods if m.aux_loss is not None]
        return torch.stack(losses).sum() if losses else None

    def moe_layers(self) -> list[nn.Module]:
        return [b.ffn for b in self.layers if hasattr(b.ffn, "update_bias")]

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, cache: HybridCache, chunk: int = 1024) -> torch.Tensor:
        """Run a prompt into the cache in chunks (no T x T score matrix in one piece); returns the last
        position's logits [B, V]. A cacheless suffix of layers (YOCO) runs for the last position only."""
        T = input_ids.shape[1]
        if T == 0:
            raise ValueError("prefill needs at least one prompt token")
        for s in range(0, T, chunk):
            h = self.hidden_states(input_ids[:, s:s + chunk], cache, keep=1 if s + chunk >= T else 0)
        return self.logits(h[:, -1])

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 32, **kwargs) -> torch.Tensor:
        """Prompt [B, T] -> [B, T + n]; see hybridlm.generate.generate for the sampling options."""
        from .generate import generate
        return generate(self, input_ids, max_new_tokens=max_new_tokens, **kwargs)

    def stream(self, input_ids: torch.Tensor, max_new_tokens: int = 32, **kwargs) -> Iterator[torch.Tensor]:
        from .generate import stream
        return stream(self, input_ids, max_new_tokens=max_new_tokens, **kwargs)

    # -- Hugging Face ---------------------------------------------------------------------
    @classmethod
    def from_hf(cls, path, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> HybridLM:
        return _hf_io("load")(path, device=device, dtype=dtype)

    def save_hf(self, path, dtype: torch.dtype | None = None) -> None:
        _hf_io("save")(self, path, dtype=dtype)

    # -- accounting -----------------------------------------------------------------------
    def num_params(self, mtp: bool = True) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if mtp or not n.startswith("mtp."))

    def active_params(self, embedding: bool = True, head: bool = True, mtp: bool = False) -> int:
        """Parameters touched per token: only the routed experts a token uses. Vendors differ on whether the
        input embedding and the output head count; choose with the flags (a tied matrix counts once)."""
        ffns = [b.ffn for b in self.layers] + ([self.mtp.block.ffn] if mtp and self.mtp is not None else [])
        n = self.num_params(mtp=mtp) - sum(f.num_params() - f.active_params() for f in ffns)
        emb = self.embed.weight.numel()
        if self.lm_head is None:  # tied: one matrix serves as both
            return n if (embedding or head) else n - emb
        return n - (0 if embedding else emb) - (0 if head else self.lm_head.weight.numel())

    # -- analytic accounting (docs/cost.md) -------------------------------------------------
    # Computed from each module's own declaration (mixer/FFN num_params, flops, cache_bytes), never from the
    # tensors, so tests can hold them against a direct count. FLOPs: matmuls at 2 per multiply-add; the MTP
    # module is left out of FLOPs and cache (it is not run by forward without labels, nor by generate).
    def num_params_analytic(self, mtp: bool = True) -> int:
        D, V = self.config.d_model, self.config.vocab_size
        nd = norm_params(self.config.norm, D)
        n = V * D + nd + (0 if self.lm_head is None else V * D)  # embedding, final norm, untied head
        n += sum(b.num_params() for b in self.layers) + (self.hc_head.num_params() if self.hc_head else 0)
        if mtp and self.mtp is not None:
            n += 3 * nd + 2 * D * D + self.mtp.block.num_params()
            n += self.mtp.hc_head.num_params() if self.mtp.hc_head is not None else 0
        return n

    def head_flops(self) -> int:
        """The output head, and the mHC head's collapse when there is one."""
        return 2 * self.config.d_model * self.config.vocab_size + (self.hc_head.flops_per_token() if self.hc_head
                                                                   else 0)

    def flops_per_token(self, context: int, causal_skip: bool = True, head: bool = True) -> float:
        """Forward FLOPs per token averaged over a causal pass of `context` tokens from an empty cache
        (attention: mean keys per query; see Attention.flops_per_token for causal_skip)."""
        n = sum(b.mixer.flops_per_token(context, causal_skip) for b in self.layers)
        n += sum(b.ffn.flops_per_token() + b.hc_flops() for b in self.layers)
        return n + (self.head_flops() if head else 0)

    def forward_flops(self, tokens: int, causal_skip: bool = True) -> float:
        """FLOPs of forward(ids [1, tokens]): every position through the stack and the head."""
        return tokens * self.flops_per_token(tokens, causal_skip)

    def prefill_flops(self, context: int) -> float:
        """FLOPs to prefill a `context`-token prompt for serving (`prefill`): logits for the last position only,
        and the cacheless suffix (YOCO's cross-decoder) run for that position alone, as one decode step."""
        j = self.stateless_from
        pre, suf = self.layers[:j], self.layers[j:]
        n = context * sum(b.mixer.flops_per_token(context) + b.ffn.flops_per_token() + b.hc_flops() for b in pre)
        n += sum(b.mixer.decode_flops(context) + b.ffn.flops_per_token() + b.hc_flops() for b in suf)
        return n + self.head_flops()

    def decode_flops(self, context: int) -> int:
        """FLOPs of one decode step for one sequence whose new token is token number `context`."""
        return (sum(b.mixer.decode_flops(context) + b.ffn.flops_per_token() + b.hc_flops() for b in self.layers)
                + self.head_flops())

    def cache_bytes_by_kind(self, context: int, batch: int = 1, dtype_bytes: int = 2,
                            state_bytes: int | None = 4) -> dict[str, int]:
        """Cache after `context` tokens, split like HybridCache.memory_by_kind() by each mixer's `cache_kind`:
        'kv' (attention), 'latent' (MLA), 'compressed' (DeepSeek-V4), 'recurrent' (conv window in dtype_bytes, state
        in state_bytes; None = dtype_bytes)."""
        out: dict[str, int] = {}
        for b in self.layers:
            kind = b.mixer.cache_kind
            if kind is None:  # an empty sublayer keeps nothing
                continue
            split = getattr(b.mixer, "cache_bytes_by_kind", None)  # a mixer whose cache holds several kinds
            parts = (split(context, batch, dtype_bytes, state_bytes) if split is not None else
                     {kind: b.mixer.cache_bytes(context, batch, dtype_bytes, state_bytes)})
            for k, n in parts.items():
                out[k] = out.get(k, 0) + n
        return out

    def cache_bytes(self, context: int, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = 4) -> int:
        return sum(self.cache_bytes_by_kind(context, batch, dtype_bytes, state_bytes).values())


def _hf_io(name: str):
    """interop.hf's load or save, handed down through the registry (the model ranks below interop)."""
    if name not in HF_IO:  # `import hybridlm` imports interop.hf, which registers them
        raise ValueError("no Hugging Face pipeline registered: import hybridlm.interop.hf first")
    return HF_IO[name]


def check_fits(cfg: ModelConfig, bytes_per_param: int = 4) -> None:
    """Refuse to materialise a model that would not fit in the memory available now (counted on the meta device)."""
    n = HybridLM(cfg, device="meta").num_params()
    need, have = n * bytes_per_param, available_memory_bytes()
    if need > 0.8 * have:
        raise ValueError(f"{cfg.name}: {n:,} parameters need {need / 2**30:.1f} GiB in fp32, but only "
                         f"{have / 2**30:.1f} GiB is available; inspect it with `hybridlm info` (meta device) "
                         f"or use a tiny preset")
