"""Moved to hybridlm.interop.safeio; this shim keeps the old import path (the same module object, so a test's
monkeypatch reaches it) until the final import rewrite of issue 11."""

import sys

from .interop import safeio as _moved

sys.modules[__name__] = _moved
