"""Moved to hybridlm.interop.hf (the pipeline in base.py, the Qwen converter in qwen.py); this shim keeps the old
names until the final import rewrite of issue 11. HybridLM.from_hf / save_hf call load_hf / save_hf here."""

from .interop.hf import (  # noqa: F401
    check_tensors,
    checked_config,
    config_from_hf,
    read_config,
    write_hf_dir,
)
from .interop.hf import load as load_hf  # noqa: F401
from .interop.hf import save as save_hf  # noqa: F401
from .interop.hf.base import SWIGLU as _SWIGLU  # noqa: F401
from .interop.hf.base import Reader as _Reader  # noqa: F401
from .interop.hf.base import checkpoint_files as _checkpoint_files  # noqa: F401
from .interop.hf.base import runs as _runs  # noqa: F401
from .interop.hf.deepseek import MODEL_TYPES as DEEPSEEK_TYPES  # noqa: F401
from .interop.hf.qwen import SUPPORTED, config_to_hf  # noqa: F401
