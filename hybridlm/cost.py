"""Moved: the accounting and roofline serving model -> hybridlm.analysis.accounting, the report / tables / plot /
article / JSON schema -> hybridlm.analysis.cost_report, the hardware table -> hybridlm.analysis.hardware, the
command -> hybridlm/cli/commands/cost.py. This module re-exports them for the old import path until the final import
rewrite of issue 11."""

from __future__ import annotations

from .analysis.accounting import (  # noqa: F401
    DTYPE_BYTES,
    Assumptions,
    assumptions,
    context_label,
    describe_layout,
    expected_experts,
    load_meta,
    model_summary,
    parse_contexts,
    serving_point,
    weight_params_read,
)
from .analysis.cost_report import (  # noqa: F401
    ARTICLE,
    JSON_SCHEMA,
    NOT_IMPLEMENTED,
    REFERENCE,
    article_report,
    cost_report,
    params_b,
    plot_cost,
    print_article,
    print_report,
    seconds,
    si,
    sig,
)
from .analysis.hardware import HARDWARE, Hardware, get_hardware  # noqa: F401

_context_label = context_label


def __getattr__(name: str):  # the command's names, lazily (importing this shim does not import the CLI)
    if name in ("cmd_cost", "add_cost_parser"):
        from .cli.commands import cost as _cost
        return _cost.cmd_cost if name == "cmd_cost" else _cost.register
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
