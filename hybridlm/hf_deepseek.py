"""Moved to hybridlm.interop.hf.deepseek (its load and save are now the shared pipeline's, interop.hf.base); this
shim keeps the old import path until the final import rewrite of issue 11."""

import sys

from .interop.hf import deepseek as _moved

sys.modules[__name__] = _moved
