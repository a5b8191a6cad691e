"""Moved to hybridlm.analysis.hardware; this shim keeps the old import path (the same module object) until the final
import rewrite of issue 11."""

import sys

from .analysis import hardware as _moved

sys.modules[__name__] = _moved
