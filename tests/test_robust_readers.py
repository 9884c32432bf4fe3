"""Bad input through every data reader: random bytes give only the documented error
(DataError, nothing else), and the usual accidents (empty file, one huge line, mixed line
endings, a BOM, another encoding) are handled or named with their line number."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data.conll import read_conll, read_tokens
from rnnkit.data.seq2seq_tasks import read_tsv
from rnnkit.data.tabular import read_columns, read_labelled_sequences, read_labelled_text
from rnnkit.data.text import Vocabulary, read_corpus
from rnnkit.diagnostics.report import read_metrics
from rnnkit.errors import DataError

READERS = {
    "corpus": lambda p: read_corpus([p]).text,
    "conll": read_conll,
    "conll_tokens": read_tokens,
    "csv_text": read_labelled_text,
    "csv_sequences": read_labelled_sequences,
    "csv_columns": lambda p: read_columns(p, ["a", "b"]),
    "tsv": read_tsv,
}
#: files the fuzz tests feed too: a run's vocabulary and its metrics log (JSON formats, with
#: their own rules for BOMs, line endings and empty files)
FUZZED = {
    **READERS,
    "char_vocab": Vocabulary.load,
    "metrics_jsonl": read_metrics,
}
#: texts that look like each format, to mutate: the fuzz starts near valid input
VALID = {
    "char_vocab": '{"format_version": 1, "chars": ["\\ufffd", "a", "b"]}',
    "metrics_jsonl": '{"step": 1, "train_bpc": 2.5}\n{"step": 2, "val_bpc": 2.25}\n',
    "corpus": "def f(x):\n    return x\n",
    "conll": "EU B-ORG\nrejects O\n\nPeter B-PER\n",
    "conll_tokens": "EU B-ORG\nrejects O\n\nPeter B-PER\n",
    "csv_text": "text,label\ngood film,pos\nbad film,neg\n",
    "csv_sequences": "1.0,2.0,3.5,a\n0.5,0.25,0.0,b\n",
    "csv_columns": "a,b\n1,2\n3,4\n",
    "tsv": "abc\tcba\nxy\tyx\n",
}


def _through(reader: str, data: bytes, suffix: str = ".txt"):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"input{suffix}"
        path.write_bytes(data)
        try:
            return FUZZED[reader](path)
        except DataError as e:
            assert "\n" not in str(e).strip() or reader == "corpus", str(e)
            raise


def _only_documented_errors(reader: str, data: bytes) -> None:
    """Bad input is a DataError, the documented type; any other exception (a bare
    ValueError, an IndexError...) escapes and fails the test."""
    try:
        _through(reader, data, ".csv" if reader.startswith("csv") else ".txt")
    except DataError:
        pass


@settings(max_examples=200, deadline=None)
@given(reader=st.sampled_from(sorted(FUZZED)), data=st.binary(max_size=400))
def test_fuzz_random_bytes(reader, data):
    _only_documented_errors(reader, data)


@settings(max_examples=300, deadline=None)
@given(reader=st.sampled_from(sorted(FUZZED)), data=st.data())
def test_fuzz_mutated_valid_files(reader, data):
    raw = bytearray(VALID[reader].encode())
    junk = st.sampled_from(list(b",\t\n\r \"'0123456789.-abc\xef\xbb\xbf\xff\x00") + [0xC3, 0xE9])
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "set" and raw:
            raw[i] = data.draw(junk)
        elif op == "insert":
            raw.insert(i, data.draw(junk))
        elif raw:
            del raw[i]
    _only_documented_errors(reader, bytes(raw))


@settings(max_examples=150, deadline=None)
@given(reader=st.sampled_from(sorted(FUZZED)), text=st.text(max_size=200))
def test_fuzz_random_unicode_text(reader, text):
    _only_documented_errors(reader, text.encode("utf-8"))


# -- specific accidents ---------------------------------------------------------------------
@pytest.mark.parametrize("reader", sorted(READERS))
def test_empty_file_is_a_data_error_naming_the_file(reader):
    with pytest.raises(DataError, match="input"):
        _through(reader, b"")


@pytest.mark.parametrize("reader", sorted(READERS))
def test_bom_and_mixed_line_endings_read_like_plain_lf(reader):
    plain = _through(reader, VALID[reader].encode())
    mixed = VALID[reader].replace("\n", "\r\n", 1).encode()
    mixed = mixed[:-1] + b"\r"  # the last line ends in a lone CR
    assert _through(reader, b"\xef\xbb\xbf" + mixed) == plain


@pytest.mark.parametrize("reader, line", [("corpus", None), ("conll", 2), ("conll_tokens", 2), ("csv_text", 2),
                                          ("csv_sequences", 2), ("csv_columns", 2), ("tsv", 2)])
def test_latin1_file_names_the_line(reader, line):
    lines = VALID[reader].splitlines(keepends=True)
    lines[1] = lines[1].replace(lines[1][0], "é", 1)
    with pytest.raises(DataError) as e:
        _through(reader, "".join(lines).encode("latin-1"))
    msg = str(e.value)
    assert "UTF-8" in msg
    assert f":{line}:" in msg if line else "byte offset" in msg


@pytest.mark.parametrize("reader", sorted(READERS))
def test_huge_single_line_without_newline(reader):
    """5 MB on one line: read (corpus) or refused with an error, in well under the test's time."""
    line = {"corpus": "x" * 5_000_000, "tsv": "a" * 2_500_000 + "\t" + "b" * 2_500_000,
            "conll": "tok" * 1_700_000 + " O", "conll_tokens": "tok" * 1_700_000 + " O",
            "csv_text": "t" * 5_000_000 + ",pos", "csv_sequences": "1," * 2_500_000 + "a",
            "csv_columns": "a,b\n" + "1" * 5_000_000 + ",2"}[reader]
    try:
        out = _through(reader, line.encode(), ".csv" if reader.startswith("csv") else ".txt")
    except DataError as e:
        assert len(str(e)) < 500, "the error message does not quote the whole line"
        return
    if reader == "corpus":
        assert len(out) == 5_000_000
    elif reader == "tsv":
        assert len(out) == 1 and len(out[0][0]) == 2_500_000
    elif reader == "csv_sequences":
        assert len(out.sequences[0]) == 2_500_000
