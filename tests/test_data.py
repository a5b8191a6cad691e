"""Data: sources (built-in corpus, .txt/.jsonl/.parquet/folders), tokenizers, packing, split, resumable order.
References are independent: the raw bytes of the files, pure-Python counts, Python's own stdlib listing."""

import collections
import json
import math
import random
import sysconfig
from pathlib import Path

import pytest
import torch

from hybridlm.training.data import Batches, default_corpus, eot_id, load_tokenizer, pack, read_documents, train_bpe, unigram_loss
from hybridlm.interop.tokenizer import ByteTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one intra-op thread

def words(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocab = ["the", "hybrid", "model", "reads", "text", "and", "déjà", "vu", "42", "é", "\n"]
    return " ".join(rng.choice(vocab) for _ in range(n))


def test_default_corpus_is_the_stdlib_sorted_and_capped():
    docs = default_corpus(max_bytes=200_000)
    root = Path(sysconfig.get_paths()["stdlib"])
    names = [n for n, _ in docs]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert all((root / n).is_file() and n.endswith(".py") for n in names)
    assert docs[0][1] == (root / names[0]).read_text(encoding="utf-8")
    sizes = [len(t.encode()) for _, t in docs]
    assert sum(sizes[:-1]) < 200_000 <= sum(sizes)  # stops at the first file that reaches the cap
    assert default_corpus(max_bytes=200_000) == docs  # deterministic


def test_txt_jsonl_parquet_and_folders(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("alpha text")
    (tmp_path / "b" / "rows.jsonl").write_text(json.dumps({"text": "row one", "id": 1}) + "\n\n"
                                               + json.dumps({"text": "row two"}) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"body": ["p0", "p1"], "n": [0, 1]}), tmp_path / "c.parquet")
    (tmp_path / "ignored.md").write_text("not a data file")
    assert [t for _, t in read_documents(tmp_path / "b" / "rows.jsonl")] == ["row one", "row two"]
    assert [t for _, t in read_documents(tmp_path / "c.parquet", text_field="body")] == ["p0", "p1"]
    with pytest.raises(ValueError, match=r"c\.parquet: no text column 'text'.*body"):
        read_documents(tmp_path)
    (tmp_path / "c.parquet").unlink()
    assert [t for _, t in read_documents(tmp_path)] == ["alpha text", "row one", "row two"]  # sorted paths


@pytest.mark.parametrize("name, content, error", [
    ("missing.txt", None, r"missing\.txt: no such file"),
    ("empty.txt", "", r"empty\.txt: empty"),
    ("bad.jsonl", '{"text": "ok"}\n{oops\n', r"bad\.jsonl:2: not valid JSON"),
    ("nofield.jsonl", '{"body": "x"}\n', r"nofield\.jsonl:1: no text field 'text' \(keys: \['body'\]\)"),
    ("notstr.jsonl", '{"text": 3}\n', r"notstr\.jsonl:1: field 'text' is int"),
    ("data.csv", "a,b\n", r"data\.csv: unsupported file type '\.csv'"),
])
def test_bad_sources_name_the_file(tmp_path, name, content, error):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=error):
        read_documents(tmp_path / name)


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no .txt, .jsonl, .parquet files"):
        read_documents(tmp_path)


def test_pack_is_the_byte_stream_cut_and_split_deterministically():
    text = words(3000)
    raw = list(text.encode())
    data = pack([("doc", text)], ByteTokenizer(), seq_len=33, val_fraction=0.1)
    n = len(raw) // 33
    seqs = [raw[i * 33:(i + 1) * 33] for i in range(n)]
    assert data.val.tolist() == [s for i, s in enumerate(seqs) if i % 10 == 9]
    assert data.train.tolist() == [s for i, s in enumerate(seqs) if i % 10 != 9]
    assert data.val_bytes.tolist() == [32.0] * len(data.val)  # one byte per predicted byte token
    assert data.num_tokens == len(raw)


def test_pack_rejects_data_shorter_than_the_context():
    with pytest.raises(ValueError, match=r"has 100 tokens: shorter than 2 sequence\(s\) of seq_len=64"):
        pack([("doc", "x" * 100)], ByteTokenizer(), seq_len=64)


def test_unigram_baseline_matches_a_direct_count():
    data = pack([("doc", words(2000, seed=1))], ByteTokenizer(), seq_len=16, val_fraction=0.2)
    V = int(max(data.train.max(), data.val.max())) + 1
    counts = collections.Counter(data.train[:, 1:].reshape(-1).tolist())
    total = sum(counts.values()) + V
    targets = data.val[:, 1:].reshape(-1).tolist()
    want = -sum(math.log((counts[t] + 1) / total) for t in targets) / len(targets)
    assert unigram_loss(data) == pytest.approx(want, rel=1e-12)


def test_bpe_trained_on_the_data(tmp_path):
    texts = [words(800, seed=s) for s in range(4)]
    tok = train_bpe(texts, vocab_size=300, path=tmp_path / "tokenizer.json")
    assert 257 < tok.vocab_size <= 300 and (tmp_path / "tokenizer.json").is_file()  # merges may run out
    assert tok.decode(tok.encode(texts[0])) == texts[0]  # byte-level: lossless, accents included
    assert len(tok.encode(texts[0])) < len(texts[0].encode()) * 0.7  # merges compress
    sep = eot_id(tok)
    data = pack([("a", texts[0]), ("b", texts[1])], tok, seq_len=20, val_fraction=0.1)
    stream = tok.encode(texts[0]) + [sep] + tok.encode(texts[1]) + [sep]
    assert data.train.reshape(-1).tolist() + data.val.reshape(-1).tolist() != []
    assert sorted(data.train.tolist() + data.val.tolist()) == sorted(
        stream[i * 20:(i + 1) * 20] for i in range(len(stream) // 20))
    assert data.val_bytes[0] == len(tok.decode(data.val[0, 1:].tolist()).encode())
    again = load_tokenizer(str(tmp_path))  # a directory holding tokenizer.json, as beside an HF checkpoint
    assert again.encode(texts[2]) == tok.encode(texts[2])
    with pytest.raises(ValueError, match="needs at least 257"):
        train_bpe(texts, vocab_size=256, path=tmp_path / "small.json")


def test_bad_tokenizer_spec(tmp_path):
    with pytest.raises(ValueError, match="not 'bytes', 'bpe', a tokenizer.json"):
        load_tokenizer(str(tmp_path / "nope.json"))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_batches_cover_each_epoch_once_and_resume_exactly():
    b = Batches(10, seed=3)
    first = torch.cat([b.next(3) for _ in range(3)] + [b.next(1)])  # exactly one epoch
    assert sorted(first.tolist()) == list(range(10))
    straight = Batches(10, seed=3)
    straight.next(7)
    state = straight.state_dict()
    want = torch.cat([straight.next(4) for _ in range(5)])  # crosses two epoch boundaries
    resumed = Batches(10, seed=3)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert torch.equal(torch.cat([resumed.next(4) for _ in range(5)]), want)
    assert not torch.equal(Batches(10, seed=4).next(10), first)
    with pytest.raises(ValueError, match="saved for 10 train sequences and seed 3, but this run has 11"):
        Batches(11, seed=3).load_state_dict(state)
