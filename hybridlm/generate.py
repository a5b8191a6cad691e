"""Shim: moved to hybridlm.model.generate (the lead removes this at the end of issue 11)."""

import sys

from .model import generate as _moved

sys.modules[__name__] = _moved  # the same module object, so monkeypatching either name patches both
