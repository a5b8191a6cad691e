"""The two matplotlib helpers every figure of `hybridlm compare` uses (report.py, sweeps.py): a headless pyplot and
a save that keeps legends placed outside the axes."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight": legends placed outside the axes are kept
    pyplot().close(fig)
    return True
