"""argparse value types and the parser class every command uses: each bad value is a one-line message naming it."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse with two traps closed: no abbreviations (`--step 5` must not silently mean `--steps 5`), and a
    value that starts with '-' and a digit (`--context -8K`) reaches its flag's checks instead of being taken
    for an unknown option ("expected one argument"). No hybridlm flag starts with a digit."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _parse_optional(self, arg_string):
        if len(arg_string) > 1 and arg_string[0] == "-" and arg_string[1].isdigit():
            return None
        return super()._parse_optional(arg_string)


def token_ids(text: str) -> list[int]:
    """--stop '0,13' -> [0, 13]."""
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of token ids like 0,13") from None
    if any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(f"{text!r}: token ids must be >= 0")
    return ids


def positive_int(text: str) -> int:
    n = count(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 1")
    return n


def count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 0")
    return n


def quantize(text: str) -> str:
    """--quantize experts-int8 (docs/quantize.md): a key of layers.ffn.moe.QUANTIZATIONS."""
    from ..layers.ffn.moe import QUANTIZATIONS
    if text not in QUANTIZATIONS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a quantisation hybridlm builds; the one there is: "
                                         f"{', '.join(QUANTIZATIONS)} (docs/quantize.md)")
    return text


def add_quantize(p, what: str) -> None:
    p.add_argument("--quantize", type=quantize, default=None, metavar="experts-int8",
                   help=f"ExpertsInt8: routed expert weights in int8 with one fp32 scale per output channel, {what} "
                        "(docs/quantize.md)")
