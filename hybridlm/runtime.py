"""Shim: moved to hybridlm.core.runtime; check_fits (it builds a meta model) to hybridlm.model.model (the lead
removes this at the end of issue 11 and points runtime.check_fits callers at hybridlm.model)."""

import sys

from .core import runtime as _moved
from .model.model import check_fits

_moved.check_fits = check_fits  # old callers say runtime.check_fits
sys.modules[__name__] = _moved  # the same module object, so monkeypatching either name patches both
