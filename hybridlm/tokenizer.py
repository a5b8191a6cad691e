"""Moved to hybridlm.interop.tokenizer; this shim keeps the old import path (the same module object, so a test's
monkeypatch reaches it) until the final import rewrite of issue 11."""

import sys

from .interop import tokenizer as _moved

sys.modules[__name__] = _moved
