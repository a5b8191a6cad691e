"""Terminal output shared by the commands."""

from __future__ import annotations

import sys


def console():
    """Rich console; wide when output is not a terminal, so piped tables are not truncated."""
    from rich.console import Console
    return Console() if sys.stdout.isatty() else Console(width=200)


def fmt_count(n: float) -> str:
    """79_674_391_296 -> '79.674B'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f}{unit}"
    return str(int(n))
