"""Moved to hybridlm.analysis.evals; this shim keeps the old import path (the same module object) until the final
import rewrite of issue 11."""

import sys

from .analysis import evals as _moved

sys.modules[__name__] = _moved
