"""Moved to hybridlm.analysis.lm_eval_adapter; this shim keeps the old import path (the same module object) until the final
import rewrite of issue 11."""

import sys

from .analysis import lm_eval_adapter as _moved

sys.modules[__name__] = _moved
