"""Training data: read text, tokenize, pack into fixed-length sequences, split, and serve resumable batches.

Sources (`read_documents`):
    None            the built-in corpus: the running interpreter's own standard-library .py sources (read from
                    this machine, no download), sorted by relative path, capped at `max_bytes`
    FILE.txt        one document
    FILE.jsonl      one document per line, taken from a text field (default "text")
    FILE.parquet    one document per row of a text column (needs pyarrow: `pip install hybridlm[parquet]`)
    DIR             every .txt / .jsonl / .parquet file under it, sorted by relative path

Packing: documents are tokenized and concatenated (with the tokenizer's end-of-text id between them when it has
one) into one stream, cut into N = len // seq_len sequences of seq_len tokens (the tail is dropped). The split
is deterministic: sequence i is validation when i % k == k - 1, k = round(1 / val_fraction), so validation is
spread over every source rather than being the last file. Train batches come from a seeded permutation per epoch;
the position (epoch, index) is all a checkpoint needs to resume the stream exactly.

Shape legend: N sequences, T = seq_len.
"""

from __future__ import annotations

import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..interop.tokenizer import ByteTokenizer, HFTokenizer

SUFFIXES = (".txt", ".jsonl", ".parquet")
EOT_TOKENS = ("<|endoftext|>", "</s>", "<eos>")  # a tokenizer's document separator, when it has one


# -- reading ---------------------------------------------------------------------------------------------------
def default_corpus(max_bytes: int = 4_000_000) -> list[tuple[str, str]]:
    """The standard library's .py files of this interpreter (test suites and site-packages left out), sorted by
    relative path and capped at max_bytes: always present, needs no download, and is code plus prose."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
    docs, total = [], 0
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root)
        if skip & set(rel.parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not text.strip():
            continue
        docs.append((rel.as_posix(), text))
        total += len(text.encode("utf-8"))
        if total >= max_bytes:
            break
    if not docs:
        raise ValueError(f"built-in corpus: no readable .py files under {root}; pass --data PATH")
    return docs


def _read_jsonl(path: Path, text_field: str) -> list[tuple[str, str]]:
    docs = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
            if not isinstance(row, dict) or text_field not in row:
                keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise ValueError(f"{path}:{n}: no text field {text_field!r} (keys: {keys}); set --text-field")
            if not isinstance(row[text_field], str):
                raise ValueError(  # noqa: TRY004 (a user's data mistake: ValueError, as everywhere in hybridlm)
                    f"{path}:{n}: field {text_field!r} is {type(row[text_field]).__name__}, not a string")
            docs.append((f"{path}:{n}", row[text_field]))
    return docs


def _read_parquet(path: Path, text_field: str) -> list[tuple[str, str]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{path}: reading .parquet needs pyarrow (pip install 'hybridlm[parquet]')") from None
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:  # a corrupt or non-parquet file
        raise ValueError(f"{path}: not a readable parquet file ({e})") from None
    if text_field not in schema.names:
        raise ValueError(f"{path}: no text column {text_field!r} (columns: {schema.names}); set --text-field")
    column = pq.read_table(path, columns=[text_field]).column(text_field).to_pylist()
    return [(f"{path}:{i}", t) for i, t in enumerate(column) if isinstance(t, str)]


def read_file(path: Path, text_field: str = "text") -> list[tuple[str, str]]:
    if path.suffix == ".txt":
        try:
            docs = [(str(path), path.read_text(encoding="utf-8"))]
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    elif path.suffix == ".jsonl":
        docs = _read_jsonl(path, text_field)
    elif path.suffix == ".parquet":
        docs = _read_parquet(path, text_field)
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    docs = [(name, text) for name, text in docs if text]
    if not docs:
        raise ValueError(f"{path}: empty (no text)")
    return docs


def read_documents(path: str | Path | None, text_field: str = "text", max_bytes: int = 4_000_000
                   ) -> list[tuple[str, str]]:
    """-> [(name, text)] in a deterministic order; ValueError naming the file for a bad path or an empty file."""
    if path is None:
        return default_corpus(max_bytes)
    p = Path(path)
    if not p.exists():
        raise ValueError(f"--data {p}: no such file or directory")
    if p.is_file():
        return read_file(p, text_field)
    files = sorted((f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES),
                   key=lambda f: f.relative_to(p).as_posix())
    if not files:
        raise ValueError(f"--data {p}: no {', '.join(SUFFIXES)} files in this directory")
    return [doc for f in files for doc in read_file(f, text_field)]


# -- tokenizers ------------------------------------------------------------------------------------------------
def train_bpe(texts: list[str], vocab_size: int, path: str | Path) -> HFTokenizer:
    """Byte-level BPE (GPT-2 style) trained with the `tokenizers` library; saved as tokenizer.json at `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise ValueError(f"bpe vocab_size={vocab_size}: needs at least {len(alphabet) + 1} "
                         f"(256 byte symbols + <|endoftext|>); raise --vocab-size")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return HFTokenizer(path)


def load_tokenizer(spec: str) -> ByteTokenizer | HFTokenizer:
    """'bytes', a tokenizer.json file, or a directory holding one (e.g. a Hugging Face checkpoint)."""
    if spec == "bytes":
        return ByteTokenizer()
    p = Path(spec)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise ValueError(f"--tokenizer {spec}: not 'bytes', 'bpe', a tokenizer.json, or a directory holding one")
    return HFTokenizer(p)


def eot_id(tok) -> int | None:
    if isinstance(tok, HFTokenizer):
        for t in EOT_TOKENS:
            i = tok.tok.token_to_id(t)
            if i is not None:
                return i
    return None


def encode(tok, text: str) -> np.ndarray:
    if isinstance(tok, ByteTokenizer):
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
    return np.asarray(tok.encode(text), dtype=np.int32)


def num_bytes(tok, ids: list[int]) -> int:
    """UTF-8 bytes of the text the ids encode (exact for bytes; via decode for other tokenizers)."""
    if isinstance(tok, ByteTokenizer):
        return sum(1 for i in ids if 0 <= i < 256)
    return len(tok.decode(ids).encode("utf-8"))


# -- packing and splitting -------------------------------------------------------------------------------------
@dataclass
class PackedData:
    train: torch.Tensor  # [N_train, T] int64
    val: torch.Tensor  # [N_val, T] int64
    val_bytes: torch.Tensor  # [N_val] bytes of the text each val sequence's predicted tokens (1..T-1) encode
    num_tokens: int  # tokens in the stream before packing

    def summary(self) -> str:
        T = self.train.shape[1]
        return (f"{self.num_tokens:,} tokens -> {len(self.train):,} train + {len(self.val):,} val sequences "
                f"of {T} tokens")


def pack(docs: list[tuple[str, str]], tok, seq_len: int, val_fraction: float = 0.05) -> PackedData:
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len}: must be >= 2 (one input and one target)")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: must be in [0, 1)")
    sep = eot_id(tok)
    parts = []
    for _, text in docs:
        parts.append(encode(tok, text))
        if sep is not None:
            parts.append(np.array([sep], dtype=np.int32))
    stream = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    n = len(stream) // seq_len
    need = 2 if val_fraction > 0 else 1
    if n < need:
        where = docs[0][0] if len(docs) == 1 else f"{len(docs)} documents"
        raise ValueError(f"data ({where}) has {len(stream):,} tokens: shorter than {need} sequence(s) of "
                         f"seq_len={seq_len} (needed: {need * seq_len:,}); add data or lower --seq-len")
    seqs_NT = torch.from_numpy(stream[: n * seq_len].astype(np.int64)).view(n, seq_len)
    is_val = torch.zeros(n, dtype=torch.bool)
    if val_fraction > 0:
        k = max(2, round(1 / val_fraction))
        is_val[k - 1::k] = True
        if not is_val.any():
            is_val[-1] = True
    val = seqs_NT[is_val]
    val_bytes = torch.tensor([num_bytes(tok, s[1:].tolist()) for s in val], dtype=torch.float64)
    return PackedData(train=seqs_NT[~is_val], val=val, val_bytes=val_bytes, num_tokens=len(stream))


def unigram_loss(data: PackedData) -> float:
    """Cross-entropy (nats/token) on the val targets of the unigram model fitted to the train split (add-one
    smoothing): the baseline a model must beat to have learned anything beyond token frequencies."""
    V = int(max(data.train.max(), data.val.max())) + 1
    counts = torch.bincount(data.train[:, 1:].reshape(-1), minlength=V).double() + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[data.val[:, 1:].reshape(-1)].mean())


# -- the resumable batch stream --------------------------------------------------------------------------------
class Batches:
    """Seeded epoch permutations of the train sequences; `position` = (epoch, index into that epoch's order)."""

    def __init__(self, num_sequences: int, seed: int):
        self.n, self.seed = num_sequences, seed
        self.epoch, self.index = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def next(self, count: int) -> torch.Tensor:
        """The next `count` sequence indices (crossing into the next epoch's permutation when needed)."""
        out = []
        while count:
            if self.index == self.n:
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(count, self.n - self.index)
            out.append(self._order[self.index:self.index + take])
            self.index, count = self.index + take, count - take
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "num_sequences": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state["num_sequences"] != self.n or state["seed"] != self.seed:
            raise ValueError(f"data position was saved for {state['num_sequences']} train sequences and seed "
                             f"{state['seed']}, but this run has {self.n} and seed {self.seed}: the data, "
                             f"tokenizer, seq_len or seed changed since the checkpoint")
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._permutation(self.epoch)
