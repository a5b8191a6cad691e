"""Moved to hybridlm.analysis.compare; this module re-exports it for the old import path until the final import
rewrite of issue 11 (the command: hybridlm/cli/commands/compare.py)."""

from __future__ import annotations

from .analysis.compare import (  # noqa: F401
    EVAL_STAGES,
    SWEEP,
    CompareConfig,
    Progress,
    _kind,
    _period,
    default_presets,
    evaluate_model,
    label_of,
    run_compare,
    run_model,
    sweep_specs,
)


def __getattr__(name: str):  # the command's names, lazily (importing this shim does not import the CLI)
    if name in ("cmd_compare", "config_from_args", "add_compare_parser", "_contexts"):
        from .cli.commands import compare as _command
        return _command.register if name == "add_compare_parser" else getattr(_command, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
