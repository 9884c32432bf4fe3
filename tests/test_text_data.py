"""Corpus reading, the character vocabulary, and truncated-BPTT streams."""

import io
import logging
import sys
from pathlib import Path

import pytest
import torch

from rnnkit.data.text import (
    UNKNOWN,
    Vocabulary,
    default_corpus_files,
    num_chunks,
    read_corpus,
    split_train_val,
    truncated_bptt_streams,
)
from rnnkit.errors import DataError


def test_default_corpus_is_the_stdlib_without_tests_sorted():
    files = default_corpus_files()
    assert len(files) > 100
    assert files == sorted(files)
    assert all(f.suffix == ".py" for f in files)
    for f in files:
        parts = f.parts
        assert not any(p in ("test", "tests", "idle_test", "site-packages") or p.startswith("test_") for p in parts)
    assert any(f.name == "textwrap.py" for f in files)


def test_line_endings_normalised_and_bom_stripped(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\n")
    assert read_corpus([tmp_path / "a.txt"]).text == "one\ntwo\nthree\n"


def test_directory_walk_sorted_recursive_glob_and_skips_undecodable(tmp_path, caplog):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.py").write_text("Z")
    (tmp_path / "a.py").write_text("A")
    (tmp_path / "c.txt").write_text("C")
    (tmp_path / "bad.py").write_bytes(b"ok\xff")
    (tmp_path / ".hidden.py").write_text("H")
    with caplog.at_level(logging.WARNING):
        corpus = read_corpus([tmp_path], glob="*.py")
    assert corpus.text == "AZ"  # a.py, b/z.py in sorted order; c.txt filtered, bad.py skipped
    assert corpus.skipped == [str(tmp_path / "bad.py")]
    assert "bad.py" in caplog.text
    assert read_corpus([tmp_path / "c.txt", tmp_path / "a.py"]).text == "CA"  # named files keep their order


@pytest.mark.parametrize("raw, where", [(b"abc\xffdef", "byte offset 3"), (b"ab\x00cd", "byte offset 2")])
def test_named_undecodable_file_names_file_and_offset(tmp_path, raw, where):
    path = tmp_path / "x.bin"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=rf"x\.bin.*{where}"):
        read_corpus([path])


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_corpus([tmp_path / "nope.txt"])
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_corpus([tmp_path / "empty.txt"])
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="no files"):
        read_corpus([tmp_path / "d"])


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\r\n")))
    assert read_corpus(["-"]).text == "from stdin\n"


def test_vocabulary_by_frequency_with_unknown_first():
    v = Vocabulary.build("aaabbc")
    assert v.chars == [UNKNOWN, "a", "b", "c"]
    ids, unknown = v.encode("abcx")
    assert ids.tolist() == [1, 2, 3, 0] and unknown == 1
    assert v.decode(ids) == "abc" + UNKNOWN


def test_vocabulary_min_count_folds_rare_characters():
    v = Vocabulary.build("aaabbc", min_count=2)
    assert v.chars == [UNKNOWN, "a", "b"]
    ids, unknown = v.encode("cab")
    assert ids.tolist() == [0, 1, 2] and unknown == 1


def test_vocabulary_roundtrip_json_and_compact_dtype(tmp_path):
    text = "héllo wörld ∑ 😀\n"
    v = Vocabulary.build(text)
    v.save(tmp_path / "v.json")
    w = Vocabulary.load(tmp_path / "v.json")
    assert w.chars == v.chars
    ids, unknown = w.encode(text)
    assert unknown == 0 and ids.dtype == torch.uint8 and w.decode(ids) == text
    big = Vocabulary.build("".join(chr(0x4E00 + i) for i in range(300)))
    assert big.encode("一")[0].dtype == torch.int16


def test_vocabulary_load_rejects_bad_file(tmp_path):
    (tmp_path / "v.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        Vocabulary.load(tmp_path / "v.json")


def test_streams_targets_are_inputs_shifted_and_cover_the_corpus():
    ids = torch.arange(103, dtype=torch.int16)
    B, T = 4, 7
    L = (103 - 1) // B
    chunks = list(truncated_bptt_streams(ids, B, T))
    assert len(chunks) == num_chunks(103, B, T) == -(-L // T)
    xs = torch.cat([x for x, _ in chunks])  # (L, B)
    ys = torch.cat([y for _, y in chunks])
    assert xs.dtype == torch.int64 and xs.shape == (L, B)
    for b in range(B):
        assert xs[:, b].tolist() == list(range(b * L, b * L + L))
        assert ys[:, b].tolist() == list(range(b * L + 1, b * L + L + 1))
    later = list(truncated_bptt_streams(ids, B, T, start=2))
    assert torch.equal(later[0][0], chunks[2][0])


def test_split_holds_out_the_tail():
    ids = torch.arange(1000)
    train, val = split_train_val(ids, 0.1)
    assert train.tolist() == list(range(900)) and val.tolist() == list(range(900, 1000))
    assert split_train_val(ids, 0.0)[1] is None
    with pytest.raises(DataError, match="too small"):
        split_train_val(torch.arange(10), 0.1)


def test_corpus_describe(tmp_path: Path):
    (tmp_path / "a.txt").write_text("abc")
    assert read_corpus([tmp_path]).describe() == {"files": 1, "chars": 3, "skipped": 0}
