"""Hugging Face checkpoints <-> HybridLM. The pipeline is base.py; each format is one converter file, registered
under its model_types by the import below (adding a format: one file plus one line here)."""

from . import deepseek, deepseek_v4, llama4, qwen  # noqa: F401  (each registers its converter)
from .base import (  # noqa: F401
    Converter,
    Reader,
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
