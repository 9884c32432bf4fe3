"""Seq2seq data: demo task generators, the TSV reader, vocabularies, metrics, the CLI."""

import datetime as dt
import random

import pytest

from rnnkit.cli import main
from rnnkit.data.seq2seq_tasks import (
    DATE_FORMATS,
    Vocab,
    add_task,
    dates_task,
    generate,
    make_batch,
    read_tsv,
    reverse_task,
    sequence_metrics,
    sort_task,
)
from rnnkit.errors import DataError


def test_reverse_sort_add_targets():
    rng = random.Random(0)
    for s, t in reverse_task(200, rng, 2, 7):
        assert s.isdigit() and 2 <= len(s) <= 7 and t == s[::-1]
    for s, t in sort_task(200, rng):
        assert t == "".join(sorted(s)) and sorted(t) == sorted(s)
    for s, t in add_task(500, rng, 1, 4):
        a, b = s.split("+")
        assert int(a) + int(b) == int(t) and len(a) <= 4 and (a == "0" or not a.startswith("0"))


def test_dates_formats_and_targets():
    d = dt.date(2024, 11, 2)
    texts = {f(d) for f in DATE_FORMATS}
    assert {"November 2nd, 2024", "2 Nov 2024", "11/02/24", "Sat, Nov 2 2024"} <= texts
    assert len(texts) == len(DATE_FORMATS)
    assert DATE_FORMATS[0](dt.date(2011, 3, 11)) == "March 11th, 2011"
    assert DATE_FORMATS[0](dt.date(2011, 3, 22)) == "March 22nd, 2011"
    pairs = dates_task(3000, random.Random(1))
    for src, tgt in pairs:
        day = dt.date.fromisoformat(tgt)
        assert 1950 <= day.year <= 2049
        assert src in {f(day) for f in DATE_FORMATS}
    assert len({tgt for _, tgt in pairs}) > 2800  # ≈ 2877 expected for 3000 draws of 36 524 days
    used = {next(i for i, f in enumerate(DATE_FORMATS) if f(dt.date.fromisoformat(t)) == s) for s, t in pairs}
    assert used == set(range(len(DATE_FORMATS)))


def test_generate_is_seeded_and_checks_the_name():
    assert generate("sort", 5, 3) == generate("sort", 5, 3) != generate("sort", 5, 4)
    with pytest.raises(ValueError, match="unknown seq2seq task 'nope'"):
        generate("nope", 1, 0)


def test_read_tsv_good_file(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("hello world\tbonjour le monde\n\nab\tba\n", encoding="utf-8")
    assert read_tsv(p) == [("hello world", "bonjour le monde"), ("ab", "ba")]
    v = Vocab.build(["hello world", "ab"], level="token")
    assert v.encode("hello ab zz") == [v.index["hello"], v.index["ab"], 3]
    assert v.decode([*v.encode("hello world"), 2, v.index["ab"]]) == "hello world"


@pytest.mark.parametrize("content, message", [
    ("a\tb\nno tab here\n", r":2: expected 'source<TAB>target' \(one tab\), found 0 tabs"),
    ("a\tb\nc\td\n\na\tb\tc\n", r":4: .*found 2 tabs"),
    ("a\tb\n\t b\n", r":2: empty source"),
    ("a\tb\nc\t  \n", r":2: empty target"),
    ("\n\n", r"no 'source<TAB>target' lines"),
])
def test_read_tsv_errors_name_the_line(tmp_path, content, message):
    p = tmp_path / "bad.tsv"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_tsv(p)


def test_read_tsv_encoding_and_missing(tmp_path):
    p = tmp_path / "latin.tsv"
    p.write_bytes(b"a\tb\nc\td\ncaf\xe9\tx\n")
    with pytest.raises(DataError, match=r"latin.tsv:3: not valid UTF-8"):
        read_tsv(p)
    with pytest.raises(DataError, match="no such file"):
        read_tsv(tmp_path / "nothing.tsv")


def test_make_batch_layout():
    v = Vocab.build(["abc", "x"])
    b = make_batch([("abc", "x"), ("a", "abc")], v, v)
    assert b.src_lengths.tolist() == [3, 1] and b.src[1, 1:].tolist() == [0, 0]
    assert b.tgt_in[:, 0].tolist() == [1, 1] and b.tgt_out[0, :2].tolist() == [v.index["x"], 2]
    assert b.tgt_out[1].tolist() == [*v.encode("abc"), 2]


def test_sequence_metrics():
    m = sequence_metrics([[5, 6, 7], [5, 6], [5, 9, 7, 8]], [[5, 6, 7], [5, 6, 7], [5, 6, 7]])
    assert m["exact_match"] == pytest.approx(1 / 3)
    # positions: 4 right of 4; 2 right of 4 (EOS vs 7, missing EOS); 2 right of 5
    assert m["token_accuracy"] == pytest.approx((4 + 2 + 2) / (4 + 4 + 5))


def test_cli_seq2seq_train_eval_translate(tmp_path, capsys):
    data = tmp_path / "train.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in reverse_task(60, random.Random(0), 2, 4)))
    out = tmp_path / "run"
    args = ["seq2seq", "train", "--data", str(data), "--out", str(out), "--hidden-size", "16",
            "--embedding-size", "8", "--max-steps", "4", "--eval-every", "2", "--batch-size", "8",
            "--attention", "concat", "--sampling", "linear", "--sampling-c", "0.1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "step      4" in text and "saved to" in text
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    assert main(args) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["seq2seq", "eval", str(out), "--data", str(data), "--beam", "3"]) == 0
    assert "60 pairs, beam 3: exact match" in capsys.readouterr().out
    assert main(["seq2seq", "translate", str(out), "123", "45", "--show-attention"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("123\t") and any(line.startswith("45\t") for line in lines)
    assert "<eos>" in "\n".join(lines) or len(lines) > 2


def test_cli_seq2seq_reports_bad_data(tmp_path, capsys):
    data = tmp_path / "bad.tsv"
    data.write_text("ab\tba\nabc cba\n")
    assert main(["seq2seq", "train", "--data", str(data), "--out", str(tmp_path / "r"), "--max-steps", "1"]) == 2
    assert "bad.tsv:2: expected 'source<TAB>target'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["seq2seq", "eval", str(tmp_path / "missing"), "--task", "sort"]) == 2
    assert "not a seq2seq run directory" in capsys.readouterr().err
