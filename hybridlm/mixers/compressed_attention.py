"""Shim: moved to hybridlm.layers.mixers.compressed_attention (the lead removes this at the end of issue 11)."""

import sys

from ..layers.mixers import compressed_attention as _moved

sys.modules[__name__] = _moved  # the same module object, so monkeypatching either name patches both
