"""The forward context: a layer leaves a named value, a later layer of the same forward reads it (YOCO's shared KV,
SambaY's saved memory). Two toy mixer kinds, registered only inside these tests: a writer that keeps a running sum
of its inputs in its cache and puts the sum so far (past and new tokens) into the context, and a reader that gates
its projection by that sum. Cached decode must see exactly what a full forward sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from torch import nn

from hybridlm import AttentionConfig, HybridLM, ModelConfig, MoEConfig
from hybridlm.layers.context import ForwardContext
from hybridlm.layers.protocol import Mixer
from hybridlm.registry import MIXER_CONFIGS, MIXERS, register_mixer


@dataclass
class RunningSum:
    total: torch.Tensor | None = None  # [B, D]: sum of the writer's inputs over every token so far
    kind = "toy"

    def memory_bytes(self) -> int:
        return 0 if self.total is None else self.total.numel() * self.total.element_size()


@dataclass
class NoCache:
    kind = "toy"

    def memory_bytes(self) -> int:
        return 0


@dataclass
class WriterConfig:
    name: str = "memory"
    kind: Literal["toy_writer"] = "toy_writer"

    def validate(self, where: str, d_model: int) -> None:
        pass

    def describe(self, brief: bool = False) -> str:
        return f"toy writer of {self.name!r}"


@dataclass
class ReaderConfig:
    name: str = "memory"
    kind: Literal["toy_reader"] = "toy_reader"

    def validate(self, where: str, d_model: int) -> None:
        pass

    def describe(self, brief: bool = False) -> str:
        return f"toy reader of {self.name!r}"


class _Toy(nn.Module):
    cache_kind = "toy"

    def __init__(self, cfg, d_model: int, norm_eps: float = 1e-6, zero_centered: bool = True):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.last: torch.Tensor | None = None
        self.aux_loss = None

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.proj.weight, std=std)

    def num_params(self) -> int:
        return self.proj.weight.numel()

    def flops_per_token(self, context: int, causal_skip: bool = True) -> float:
        return 2 * self.num_params()

    def decode_flops(self, context: int) -> float:
        return 2 * self.num_params()

    def cache_bytes(self, context: int, batch: int = 1, dtype_bytes: int = 2, state_bytes: int | None = None) -> int:
        return 0

    def describe(self) -> str:
        return self.cfg.describe()


class Writer(_Toy):
    def new_cache(self) -> RunningSum:
        return RunningSum()

    def forward(self, x_BTD, pos0=0, cache=None, ctx=None):
        past = cache.total if cache is not None and cache.total is not None else x_BTD.new_zeros(x_BTD[:, 0].shape)
        sums_BTD = past[:, None] + x_BTD.cumsum(1)  # the sum up to each token, earlier steps included
        if cache is not None:
            cache.total = sums_BTD[:, -1].detach()
        self.last = sums_BTD
        ctx.put(self.cfg.name, sums_BTD)
        return self.proj(x_BTD)


class Reader(_Toy):
    def new_cache(self) -> NoCache:
        return NoCache()

    def forward(self, x_BTD, pos0=0, cache=None, ctx=None):
        self.last = ctx.get(self.cfg.name)
        return self.proj(x_BTD) * torch.sigmoid(self.last / (pos0 + torch.arange(1, x_BTD.shape[1] + 1))[:, None])


@pytest.fixture
def toy_kinds():
    """Register the two toy kinds for one test only, so no other test sees them in the registry."""
    register_mixer("toy_writer", WriterConfig)(Writer)
    register_mixer("toy_reader", ReaderConfig)(Reader)
    yield
    for kind in ("toy_writer", "toy_reader"):
        MIXERS.pop(kind)
        MIXER_CONFIGS.pop(kind)


def _config(pattern: str = "W A R A") -> ModelConfig:
    return ModelConfig(
        vocab_size=53, d_model=16, num_layers=len(pattern.split()), mixer_pattern=pattern,
        ffn_pattern=f"M*{len(pattern.split())}",
        mixers={"W": WriterConfig(), "R": ReaderConfig(), "A": AttentionConfig(num_heads=2, num_kv_heads=1)},
        ffns={"M": MoEConfig(num_experts=3, top_k=2, expert_size=8)}, mtp_depth=1, mtp_mixer="A")


def test_a_later_layer_reads_what_an_earlier_one_put(toy_kinds):
    model = HybridLM(_config()).eval()
    writer, reader = model.layers[0].mixer, model.layers[2].mixer
    assert isinstance(writer, Mixer) and isinstance(reader, Mixer)
    ids = torch.randint(0, 53, (2, 9))
    model(ids)
    assert reader.last is writer.last  # the very tensor the writer left, this forward's
    first = writer.last
    model(ids[:, :4])
    assert reader.last is writer.last and reader.last is not first and reader.last.shape[1] == 4  # never stale


def test_cached_decode_sees_what_a_full_forward_sees(toy_kinds):
    torch.manual_seed(0)
    model = HybridLM(_config()).eval()
    ids = torch.randint(0, 53, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        parts = [model(ids[:, :5], cache=cache).logits]
        parts += [model(ids[:, t:t + 1], cache=cache).logits for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.memory_by_kind()["toy"] == 2 * 16 * 4  # the writer's running sum [B, D] in fp32


def test_a_reader_before_its_writer_is_a_clear_error(toy_kinds):
    model = HybridLM(_config("R W A A")).eval()
    with pytest.raises(KeyError, match=r"no 'memory' before layer 0"):
        model(torch.randint(0, 53, (1, 4)))


def test_context_put_get():
    ctx = ForwardContext(pos0=3)
    assert "kv" not in ctx and ctx.get("kv", None) is None
    ctx.put("kv", 1)
    ctx.put("kv", 2)  # a later writer replaces an earlier one
    assert "kv" in ctx and ctx.get("kv") == 2
    with pytest.raises(KeyError, match="present: \\['kv'\\]"):
        ctx.get("memory")
