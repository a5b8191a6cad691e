"""The compute dtype every recurrence in ops/ runs in, whatever the model dtype."""

from __future__ import annotations

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (tests compare the forms at ~1e-12); everything else runs in float32, as the
    references do, so long recurrences do not drift in bf16."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
