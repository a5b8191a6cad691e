"""Interop: model specs, training checkpoints, safetensors I/O, tokenizers and Hugging Face converters."""
