"""Tokenizers: byte-level by default (no files needed), or a Hugging Face tokenizer.json beside a checkpoint."""

from __future__ import annotations

from pathlib import Path


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255. Ids >= 256 (a larger model vocabulary) decode to nothing."""

    vocab_size = 256
    name = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A tokenizer.json read with the `tokenizers` library."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer
        self.path = Path(path)
        try:
            self.tok = Tokenizer.from_file(str(self.path))
        except Exception as e:  # the library raises its own exception type for malformed files
            raise ValueError(f"{self.path}: not a readable tokenizer.json ({e})") from None
        self.vocab_size = self.tok.get_vocab_size()
        self.name = str(self.path)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def tokenizer_for(directory: str | Path | None):
    """tokenizer.json in `directory` if there is one, else bytes."""
    if directory is not None and (Path(directory) / "tokenizer.json").exists():
        return HFTokenizer(Path(directory) / "tokenizer.json")
    return ByteTokenizer()
