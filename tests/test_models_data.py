"""Readers of CoNLL and CSV files (good and bad input), vocabularies, and the
synthetic slot-filling and identifier data."""

import pytest

from rnnkit.data.conll import TaggedSentence, read_conll, read_tokens, write_conll
from rnnkit.data.identifiers import KINDS, stdlib_identifiers
from rnnkit.data.slots import slot_filling_data, write_slot_filling
from rnnkit.data.tabular import read_columns, read_labelled_sequences, read_labelled_text
from rnnkit.data.vocabulary import Vocabulary
from rnnkit.errors import DataError
from rnnkit.models.metrics import spans


def _write(tmp_path, name, text, binary=False):
    path = tmp_path / name
    path.write_bytes(text) if binary else path.write_text(text, encoding="utf-8")
    return path


# -- CoNLL --------------------------------------------------------------------------------------
def test_read_conll_sentences_docstart_and_tag_column(tmp_path):
    path = _write(tmp_path, "a.conll", "-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\n\n"
                                       "Peter NNP B-PER\n-DOCSTART- -X- O O\nBlackburn NNP B-PER\n")
    s = read_conll(path)
    assert [x.tokens for x in s] == [["EU", "rejects"], ["Peter"], ["Blackburn"]]
    assert s[0].tags == ["B-ORG", "O"]
    assert read_conll(path, tag_column=1)[0].tags == ["NNP", "VBZ"]
    assert read_tokens(path) == [["EU", "rejects"], ["Peter"], ["Blackburn"]]


def test_read_conll_malformed_line_named(tmp_path):
    path = _write(tmp_path, "bad.conll", "EU B-ORG\nrejects O\n\nPeter NNP B-PER\n")
    with pytest.raises(DataError, match=r"bad\.conll:4: expected 2 columns .* got 3"):
        read_conll(path)


def test_read_conll_one_column_and_bad_index(tmp_path):
    with pytest.raises(DataError, match=r":1: expected a token and a tag column"):
        read_conll(_write(tmp_path, "one.conll", "EU\nrejects\n"))
    assert read_tokens(tmp_path / "one.conll") == [["EU", "rejects"]]
    with pytest.raises(DataError, match=r":1: tag_column=5 but the line has 2"):
        read_conll(_write(tmp_path, "two.conll", "EU B-ORG\n"), tag_column=5)


def test_read_conll_empty_and_non_utf8(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_conll(_write(tmp_path, "empty.conll", "\n\n"))
    with pytest.raises(DataError, match="no sentences"):
        read_conll(_write(tmp_path, "doc.conll", "-DOCSTART- O\n\n"))
    with pytest.raises(DataError, match=r"latin\.conll:2: not valid UTF-8"):
        read_conll(_write(tmp_path, "latin.conll", "EU B-ORG\nK\xf6ln B-LOC\n".encode("latin-1"), binary=True))
    with pytest.raises(DataError, match="no such file"):
        read_conll(tmp_path / "missing.conll")


def test_write_conll_round_trip(tmp_path):
    sentences = [TaggedSentence(["fly", "to", "Oslo"], ["O", "O", "B-arrive_city"]), TaggedSentence(["hi"], ["O"])]
    write_conll(tmp_path / "x.conll", sentences)
    assert read_conll(tmp_path / "x.conll") == sentences
    with pytest.raises(ValueError, match="whitespace"):
        write_conll(tmp_path / "y.conll", [TaggedSentence(["New York"], ["B-LOC"])])


# -- CSV ----------------------------------------------------------------------------------------
def test_read_labelled_text_by_name_and_quoting(tmp_path):
    path = _write(tmp_path, "t.csv", 'label,text\npos,"good, really good"\nneg,bad\n')
    d = read_labelled_text(path, text_column="text", label_column="label")
    assert d.texts == ["good, really good", "bad"] and d.labels == ["pos", "neg"]
    tsv = _write(tmp_path, "t.tsv", "great film\tpos\nawful\tneg\n")
    d = read_labelled_text(tsv, header=False)
    assert d.texts == ["great film", "awful"] and d.labels == ["pos", "neg"]


@pytest.mark.parametrize("text, message", [
    ("text,label\nhello,a\nworld\n", r"t\.csv:3: expected 2 fields, got 1"),
    ("text,label\nhello,a\n\nworld,\n", r"t\.csv:4: empty label"),
    ("text,label\n", "only a header"),
    ("text,label\nhello,a\n", None),
])
def test_read_labelled_text_bad_lines(tmp_path, text, message):
    path = _write(tmp_path, "t.csv", text)
    if message is None:
        with pytest.raises(DataError, match=r"no text column 'body'; the header has \['text', 'label'\]"):
            read_labelled_text(path, text_column="body")
    else:
        with pytest.raises(DataError, match=message):
            read_labelled_text(path)


def test_read_labelled_sequences(tmp_path):
    path = _write(tmp_path, "s.csv", "1,0.5,0.25,2\n2,1,,\n")
    d = read_labelled_sequences(path, label_column=0)
    assert d.labels == ["1", "2"] and d.sequences == [[0.5, 0.25, 2.0], [1.0]]
    bad = _write(tmp_path, "b.csv", "0.5,0.25,up\n0.1,zero,down\n")
    with pytest.raises(DataError, match=r"b\.csv:2: value 2 'zero' is not a number"):
        read_labelled_sequences(bad)
    nan = _write(tmp_path, "n.csv", "0.5,nan,up\n")
    with pytest.raises(DataError, match=r"n\.csv:1: value 2 is 'nan'"):
        read_labelled_sequences(nan)


def test_read_columns(tmp_path):
    path = _write(tmp_path, "ts.csv", "t,y,x\n0,1.5,2\n1,2.5,3\n")
    assert read_columns(path, ["y", "x"]) == {"y": [1.5, 2.5], "x": [2.0, 3.0]}
    with pytest.raises(DataError, match=r"no column 'z'"):
        read_columns(path, ["z"])
    short = _write(tmp_path, "short.csv", "t,y\n0,1\n1\n")
    with pytest.raises(DataError, match=r"short\.csv:3: expected 2 fields"):
        read_columns(short, ["y"])


# -- vocabulary -----------------------------------------------------------------------------------
def test_vocabulary_order_unknown_and_json():
    v = Vocabulary.build(["b", "a", "b", "c", "a", "b"], min_count=2)
    assert v.symbols == ["<pad>", "<unk>", "b", "a"]
    assert v.encode(["a", "z"]) == [3, 1]
    assert Vocabulary.from_json(v.to_json()).symbols == v.symbols
    labels = Vocabulary(["x", "y"], specials=False)
    with pytest.raises(ValueError, match="unknown label 'z'"):
        labels.encode(["z"])


# -- generated data -------------------------------------------------------------------------------
def test_slot_data_is_deterministic_and_valid_bio(tmp_path):
    a, b = slot_filling_data(200, seed=3), slot_filling_data(200, seed=3)
    assert a == b and a != slot_filling_data(200, seed=4)
    kinds = set()
    for s in a:
        assert len(s.tokens) == len(s.tags)
        for tag, nxt in zip(s.tags, s.tags[1:]):
            if nxt.startswith("I-"):
                assert tag[2:] == nxt[2:]  # every I- continues a span of its own type
        kinds |= {k for k, _, _ in spans(s.tags)}
    assert len(kinds) == 10
    paths = write_slot_filling(tmp_path, n_train=20, n_dev=4, n_test=5, seed=1)
    assert [len(read_conll(paths[k])) for k in ("train", "dev", "test")] == [20, 4, 5]
    assert read_conll(paths["dev"]) != read_conll(paths["test"])


def test_slot_data_needs_context_to_tell_depart_from_arrive():
    # the same words fill both roles: only the context decides
    cities = {"depart": set(), "arrive": set()}
    after_on = {"depart_date": 0, "arrive_date": 0}
    for s in slot_filling_data(1500, seed=0):
        for kind, i, j in spans(s.tags):
            if kind in ("depart_city", "arrive_city"):
                cities[kind[:6]].add(" ".join(s.tokens[i:j]).lower())
            if kind in after_on and i > 0 and s.tokens[i - 1] == "on":
                after_on[kind] += 1
    assert len(cities["depart"] & cities["arrive"]) > 50
    assert min(after_on.values()) > 50


def test_stdlib_identifiers_are_labelled_unambiguously():
    d = stdlib_identifiers(max_files=40)
    assert set(d) == set(KINDS)
    assert all(d[k] for k in KINDS)
    seen = [n for k in KINDS for n in d[k]]
    assert len(seen) == len(set(seen))
    assert all(n.isupper() for n in d["constant"])
