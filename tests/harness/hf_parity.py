"""Hugging Face parity: transformers (the independent oracle) against HybridLM, through the real converter.

The steps every family's parity test takes, as functions it composes (family-specific checks, such as which
mechanism moves the logits or what the cache holds, stay in the family's file):

    hf = randomise(build_hf(transformers.DeepseekV3Config(**TINY)))     # transformers' tiny model, random weights
    ours, ref = convert(hf, tmp_path / "hf", ids)                      # save_pretrained -> HybridLM.from_hf
    assert_logits_match(ours, ids, ref)                                # max |ours - transformers| <= atol
    assert_round_trip(ours, tmp_path / "ours", ids, ref)               # save_hf -> transformers loads it, same logits
    assert_greedy_generate_matches(ours, hf, prompt)                   # generate(temperature=0) == hf.generate
    assert_cached_decode_matches(ours, ids, split_steps(T, [9]), ref)  # harness.cached_decode

or all of them at once with check_hf_parity(hf, tmp_path, ids, ...), which returns what the family asserts on next.
Needs transformers; the family file skips when it is absent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.cached_decode import assert_cached_decode_matches
from hybridlm import HybridLM


def build_hf(config, model_cls=None, seed: int | None = 0):
    """transformers' model for `config` (AutoModelForCausalLM unless `model_cls`, e.g. AutoModelForImageTextToText
    for a VL checkpoint or a concrete class), in eval mode; seeded first when `seed` is not None."""
    import transformers
    if seed is not None:
        torch.manual_seed(seed)
    cls = model_cls or transformers.AutoModelForCausalLM
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    return model.eval()


def randomise(model, norm_jitter: float = 0.1, norm_names: tuple[str, ...] = ("norm",),
              matrix_gain: float | None = None):
    """Move transformers' init away from the identities it starts at, so a wrong mapping shows in the logits: every
    parameter whose name contains one of `norm_names` gets `norm_jitter` * N(0, 1) added; with `matrix_gain`, every
    other matrix (but the embedding) is redrawn at matrix_gain / sqrt(fan-in) (peaked attention and routing)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(n in name for n in norm_names):
                p.add_(norm_jitter * torch.randn_like(p))
            elif matrix_gain is not None and p.dim() >= 2 and "embed" not in name:
                p.normal_(0.0, matrix_gain / p.shape[-1] ** 0.5)
    return model.eval()


def hf_logits(model, ids: torch.Tensor, **kw) -> torch.Tensor:
    """Logits of a transformers model (or of ours: both take input_ids) without autograd."""
    with torch.no_grad():
        return model(input_ids=ids, **kw).logits


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def convert(hf, path: str | Path, ids: torch.Tensor | None = None, **save_kw):
    """hf.save_pretrained(path, **save_kw) (e.g. max_shard_size) -> HybridLM.from_hf(path) in eval mode. Returns
    (ours, transformers' logits of `ids`) or just ours without ids."""
    hf.save_pretrained(path, **save_kw)
    ours = HybridLM.from_hf(path).eval()
    return ours if ids is None else (ours, hf_logits(hf, ids))


def assert_logits_match(ours, ids: torch.Tensor, ref: torch.Tensor, atol: float = 1e-4) -> torch.Tensor:
    """max |ours(ids) - ref| <= atol; returns our logits."""
    got = hf_logits(ours, ids)
    assert max_diff(got, ref) <= atol, f"max |ours - transformers| = {max_diff(got, ref):.3g} > {atol}"
    return got


def assert_round_trip(ours, path: str | Path, ids: torch.Tensor, ref: torch.Tensor, atol: float = 1e-4,
                      model_cls=None, **save_kw):
    """ours.save_hf(path) loads back in transformers (AutoModelForCausalLM unless `model_cls`) with logits within
    atol of `ref`; returns the transformers model for the caller's checks (its class, the config written)."""
    import transformers
    ours.save_hf(path, **save_kw)
    back = (model_cls or transformers.AutoModelForCausalLM).from_pretrained(path).eval()
    got = hf_logits(back, ids)
    assert max_diff(got, ref) <= atol, f"save_hf round trip: max |back - ref| = {max_diff(got, ref):.3g} > {atol}"
    return back


def assert_greedy_generate_matches(ours, hf, prompt: torch.Tensor, max_new_tokens: int = 20) -> torch.Tensor:
    """Our greedy generate (temperature 0) produces exactly transformers' greedy tokens; returns them."""
    with torch.no_grad():
        want = hf.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False)
    got = ours.generate(prompt, max_new_tokens=max_new_tokens, temperature=0.0)
    assert torch.equal(got, want), f"greedy generate differs:\n ours {got.tolist()}\n  hf {want.tolist()}"
    return got


@dataclass
class Parity:
    """What check_hf_parity saw, for the family's own assertions."""

    ours: HybridLM
    ref: torch.Tensor  # transformers' logits of the ids
    logits: torch.Tensor  # ours
    back: object | None = None  # transformers' model loaded from save_hf's output
    cache: object | None = None  # the cache after the cached-decode check


def check_hf_parity(hf, tmp_path: str | Path, ids: torch.Tensor, *, atol: float = 1e-4, round_trip: bool = True,
                    cached_steps=None, generate_prompt: torch.Tensor | None = None, max_new_tokens: int = 20,
                    save_kw: dict | None = None, model_cls=None) -> Parity:
    """The whole parity check on one transformers model: convert (tmp_path/hf), logits within atol, the save_hf
    round trip (tmp_path/ours) when `round_trip`, cached decode in `cached_steps` (harness.cached_decode.split_steps)
    against transformers' full forward when given, greedy generate from `generate_prompt` when given."""
    tmp_path = Path(tmp_path)
    ours, ref = convert(hf, tmp_path / "hf", ids, **(save_kw or {}))
    res = Parity(ours=ours, ref=ref, logits=assert_logits_match(ours, ids, ref, atol))
    if round_trip:
        res.back = assert_round_trip(ours, tmp_path / "ours", ids, ref, atol, model_cls=model_cls)
    if cached_steps is not None:
        res.cache = assert_cached_decode_matches(ours, ids, cached_steps, ref=ref, atol=atol)
    if generate_prompt is not None:
        assert_greedy_generate_matches(ours, hf, generate_prompt, max_new_tokens)
    return res
