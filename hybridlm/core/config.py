"""The config base every config dataclass builds on: one-line field errors, the layer-pattern grammar, and the
JSON type checks that `ModelConfig.from_dict` runs before anything is built.

Pattern grammar: whitespace-separated terms, each `LETTERS` or `LETTERS*N` (repeat N times); e.g. "GGGA*12",
"D*3 M*58". A user's mistake is a ValueError naming the field: `fail("mixers['A'].num_heads", 0, "must be >= 1")`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal


def fail(field_name: str, value: Any, why: str) -> None:
    raise ValueError(f"{field_name}={value!r}: {why}")


def at_least_one(cfg: Any, where: str, *names: str) -> None:
    """The counts and sizes every config has: each named field must be >= 1."""
    for name in names:
        if getattr(cfg, name) < 1:
            fail(f"{where}.{name}", getattr(cfg, name), "must be >= 1")


_TERM = re.compile(r"^([A-Za-z-]+)(?:\*(\d+))?$")  # "-": no sublayer (the none kind)


def expand_pattern(pattern: str, field_name: str) -> list[str]:
    """'GGGA*2 A' -> ['G','G','G','A','G','G','G','A','A']."""
    letters: list[str] = []
    terms = pattern.split()
    if not terms:
        fail(field_name, pattern, "is empty")
    for term in terms:
        m = _TERM.match(term)
        if not m:
            fail(field_name, pattern, f"term {term!r} is not LETTERS or LETTERS*N")
        letters.extend(list(m.group(1)) * int(m.group(2) or 1))
    return letters


def from_kind(table: dict[str, type], data: Any, where: str):
    """A legend entry -> its config dataclass: a dataclass passes through; a dict is resolved by its 'kind' in
    `table` (the registry's MIXER_CONFIGS or FFN_CONFIGS), the one place a name chooses a class."""
    if dataclasses.is_dataclass(data):
        if getattr(data, "kind", None) not in table:
            fail(f"{where}.kind", getattr(data, "kind", None), f"is not registered; known kinds: {sorted(table)}")
        return data
    if not isinstance(data, dict) or "kind" not in data:
        fail(where, data, f"must be a dict with a 'kind' in {sorted(table)}")
    if not isinstance(data["kind"], str) or data["kind"] not in table:
        fail(f"{where}.kind", data["kind"], f"unknown; known kinds: {sorted(table)}")
    cls = table[data["kind"]]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        fail(where, unknown, f"unknown field(s) for kind {data['kind']!r}; known: {sorted(known)}")
    return cls(**data)


def check_types(cls: type, data: dict[str, Any], where: str) -> None:
    """Each present field of JSON `data` against `cls`'s annotation (int, float, bool, str, None, Literal, dict)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init and f.name in data and not _fits(data[f.name], hints[f.name]):
            fail(f"{where}{f.name}", data[f.name], f"must be {_describe(hints[f.name])}")


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
