"""Hugging Face checkpoints <-> HybridLM. The pipeline is base.py; each format is one converter file, registered
under its model_types by the import below (adding a format: one file plus one line here). Importing this package
also registers the pipeline as HybridLM.from_hf / save_hf's (registry.HF_IO), so the model never imports upward."""

from ...registry import register_hf_io
from . import deepseek, deepseek_v4, kimi_linear, llama4, qwen  # noqa: F401  (each registers its converter)
from . import jamba  # noqa: F401
from . import minimax  # noqa: F401
from . import falcon_h1, granite, mamba2, nemotron_h  # noqa: F401
from .base import (  # noqa: F401
    Converter,
    Reader,
    RenamedReader,
    check_tensors,
    checked_config,
    checkpoint_files,
    checkpoint_total,
    config_from_hf,
    converter_for,
    converters,
    load,
    read_config,
    save,
    save_target,
    write_hf_dir,
)

register_hf_io(load, save)
