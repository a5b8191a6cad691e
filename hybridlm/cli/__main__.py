"""`python -m hybridlm.cli ...` (torchrun uses this form)."""

import sys

from .app import main

sys.exit(main())
