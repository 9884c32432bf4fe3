"""Untrusted run directories of every type (char LM, tagger, classifier, forecaster, generator,
seq2seq) through every command that reads one: a hostile config.json (not an object, missing
fields, wrong types, bad ranges, unknown cells, sizes that disagree with the weights) is a
one-line error with exit status 2 that names the file and the field, and nothing big is
allocated before the config is found to match the weight file.

The atomic save of the fit models and seq2seq is in test_robust_saves.py."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import rnnkit
from rnnkit import CharLMConfig, TrainConfig
from rnnkit.cli import main
from rnnkit.data.conll import write_conll
from rnnkit.data.slots import slot_filling_data
from rnnkit.errors import CheckpointError
from rnnkit.models import Classifier, Forecaster, Generator, Tagger
from rnnkit.models.classifier import ClassifierConfig
from rnnkit.models.forecaster import ForecasterConfig
from rnnkit.models.generator import GeneratorConfig
from rnnkit.models.seq2seq import Seq2SeqConfig
from rnnkit.models.tagger import TaggerConfig
from rnnkit.tasks.seq2seq_train import Seq2SeqTrainConfig, load_run, save_run, train_seq2seq

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["charlm", "tagger", "classifier", "forecaster", "generator", "seq2seq"]
#: the config.json section that holds each type's model config
SECTION = {"charlm": "model", "seq2seq": "model", "tagger": "config", "classifier": "config",
           "forecaster": "config", "generator": "config"}
LOADERS = {"charlm": lambda d: rnnkit.load(d), "tagger": Tagger.load, "classifier": Classifier.load,
           "forecaster": Forecaster.load, "generator": Generator.load, "seq2seq": load_run}
CORPUS = "".join(f"def f{i}(x):\n    return x * {i % 7}\n\n" for i in range(60))
TEXTS = [("a fine film", "pos"), ("a dull film", "neg"), ("fine acting", "pos"), ("dull plot", "neg")] * 5


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One small saved model of each type (hidden size 8, LSTM), and data for its commands."""
    root = tmp_path_factory.mktemp("runs")
    (root / "corpus.txt").write_text(CORPUS)
    rnnkit.train(root / "corpus.txt", root / "charlm", CharLMConfig(cell="lstm", hidden_size=8, embed_size=4),
                 TrainConfig(batch_size=2, seq_len=8, max_steps=2, max_time=0, eval_every=2, sample_every=0,
                             val_fraction=0.1))
    sentences = slot_filling_data(20, seed=1)
    write_conll(root / "tags.conll", sentences)
    (root / "tokens.txt").write_text("".join("\n".join(s.tokens) + "\n\n" for s in sentences[:3]))
    Tagger.from_data(sentences, TaggerConfig(hidden_size=8, embedding_dim=6, char_channels=4)).save(root / "tagger")
    (root / "texts.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in TEXTS))
    (root / "lines.txt").write_text("a fine plot\n")
    Classifier.from_data([t for t, _ in TEXTS], [y for _, y in TEXTS],
                         ClassifierConfig(hidden_size=8, embedding_dim=6)).save(root / "classifier")
    series = {"y": [math.sin(i / 3) for i in range(40)], "x": [math.cos(i / 5) for i in range(40)]}
    (root / "series.csv").write_text("y,x\n" + "".join(f"{a},{b}\n" for a, b in zip(series["y"], series["x"])))
    Forecaster.from_series(series, "y", ["x"], ForecasterConfig(hidden_size=8, window=5)).save(root / "forecaster")
    Generator.from_data([t for t, _ in TEXTS], [y for _, y in TEXTS],
                        GeneratorConfig(hidden_size=8, embedding_dim=6, condition_dim=4)).save(root / "generator")
    config = Seq2SeqTrainConfig(task="reverse", model=Seq2SeqConfig(4, 4, hidden_size=8, embedding_size=4),
                                max_steps=1, max_time=None, eval_every=1, test_size=4)
    save_run(train_seq2seq(config), root / "seq2seq", config)
    return root


def commands(kind: str, d: Path, root: Path) -> list[list[str]]:
    """Every command that reads a run directory of ``kind``, reading ``d``."""
    d = str(d)
    return {
        "charlm": [["info", d], ["sample", d, "--length", "3"], ["eval", d, "--data", str(root / "corpus.txt")],
                   ["report", d, "--chars", "40", "--out", str(Path(d) / "r.html")],
                   ["train", "--out", d, "--resume", "--max-steps", "3", "--quiet"]],
        "tagger": [["fit", "tagger", "--eval", d, "--data", str(root / "tags.conll")],
                   ["fit", "tagger", "--predict", d, "--data", str(root / "tokens.txt")]],
        "classifier": [["fit", "classifier", "--eval", d, "--data", str(root / "texts.csv")],
                       ["fit", "classifier", "--predict", d, "--data", str(root / "lines.txt")]],
        "forecaster": [["fit", "forecaster", "--eval", d, "--data", str(root / "series.csv")],
                       ["fit", "forecaster", "--predict", d, "--data", str(root / "series.csv")]],
        "generator": [["fit", "generator", "--eval", d, "--data", str(root / "texts.csv")],
                      ["fit", "generator", "--predict", d, "--samples", "1"]],
        "seq2seq": [["seq2seq", "eval", d, "--task", "reverse", "--n", "4"], ["seq2seq", "translate", d, "123"],
                    ["report", d, "--out", str(Path(d) / "r.html")]],
    }[kind]


def _copy(runs: Path, kind: str, tmp_path: Path) -> Path:
    d = tmp_path / kind
    shutil.copytree(runs / kind, d)
    return d


def _edit(d: Path, edit) -> None:
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(edit(cfg)))


def _one_line_error(capsys, argv: list[str]) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert status == 2, f"{argv}: status {status}\n{captured.out[-500:]}\n{err}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "internal error" not in err, err
    return err


def _section(kind: str, edit):
    """An edit of the model config section of config.json."""
    s = SECTION[kind]
    return lambda c: {**c, s: edit(dict(c[s]))}


def _set(**fields):
    return lambda m: {**m, **fields}


def _drop(name):
    return lambda m: {k: v for k, v in m.items() if k != name}


#: hostile config.json contents: (id, edit of the whole object or None, edit of the model
#: section or None, words the error must contain; {section} is the section's name)
HOSTILE = [
    ("list", lambda c: [1, 2], None, ["does not hold a JSON object", "a list"]),
    ("number", lambda c: 3, None, ["does not hold a JSON object", "an integer"]),
    ("string", lambda c: "model", None, ["does not hold a JSON object", "a string"]),
    ("null", lambda c: None, None, ["does not hold a JSON object", "null"]),
    ("section_missing", "drop_section", None, ["'{section}'"]),
    ("section_a_list", "list_section", None, ["'{section}' must be a JSON object, got a list"]),
    ("hidden_missing", None, _drop("hidden_size"), ["hidden_size", "(missing: the default)", "fit hidden_size 8"]),
    ("hidden_string", None, _set(hidden_size="8"), ["{section}.hidden_size must be an integer, got '8' (a string)"]),
    ("hidden_bool", None, _set(hidden_size=True), ["{section}.hidden_size must be an integer, got True (a boolean)"]),
    ("hidden_float", None, _set(hidden_size=8.0), ["{section}.hidden_size must be an integer, got 8.0 (a number)"]),
    ("hidden_negative", None, _set(hidden_size=-2), ["hidden_size", "-2"]),
    ("hidden_zero", None, _set(hidden_size=0), ["hidden_size must be", "got 0"]),
    ("hidden_huge", None, _set(hidden_size=1099511627776), ["hidden_size 1099511627776 cannot match",
                                                             "largest tensor dimension"]),
    ("hidden_large", None, _set(hidden_size=100000), ["hidden_size 100000 does not match", "fit hidden_size 8",
                                                      "(400000, "]),
    ("hidden_other", None, _set(hidden_size=16), ["hidden_size 16 does not match", "fit hidden_size 8"]),
    ("layers_other", None, _set(num_layers=2), ["num_layers 2 does not match", "fit num_layers 1"]),
    ("layers_huge", None, _set(num_layers=10**12), ["num_layers 1000000000000 cannot match"]),
    ("layers_string", None, _set(num_layers="1"), ["{section}.num_layers must be an integer"]),
    ("cell_unknown", None, _set(cell="transformer"), ["unknown cell 'transformer'; expected one of"]),
    ("cell_not_a_string", None, _set(cell=7), ["{section}.cell must be a string, got 7"]),
    ("cell_other", None, _set(cell="gru"), ["does not match"]),
    ("field_unknown", None, _set(colour="red"), ["{section} has field(s) ['colour']", "does not know"]),
    ("dropout_nan", None, _set(dropout=float("nan")), ["{section}.dropout must be a finite number, got nan"]),
    ("dropout_range", None, _set(dropout=1.5), ["dropout must be in [0, 1), got 1.5"]),
]


def _apply(kind: str, whole, section) -> callable:
    s = SECTION[kind]
    if whole == "drop_section":
        return lambda c: {k: v for k, v in c.items() if k != s}
    if whole == "list_section":
        return lambda c: {**c, s: [1]}
    return whole if whole is not None else _section(kind, section)


@pytest.mark.parametrize("kind", KINDS)
def test_every_command_reads_the_intact_run_directory(runs, kind, tmp_path, capsys):
    """The baseline of the hostile cases below: each command works on the unedited copy."""
    d = _copy(runs, kind, tmp_path)
    for argv in commands(kind, d, runs):
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    capsys.readouterr()


@pytest.mark.parametrize("case", HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("kind", KINDS)
def test_hostile_config_is_a_one_line_error_in_every_command(runs, kind, case, tmp_path, capsys):
    name, whole, section, words = case
    d = _copy(runs, kind, tmp_path)
    _edit(d, _apply(kind, whole, section))
    words = [w.format(section=SECTION[kind]) for w in words]
    if kind == "seq2seq" and name == "hidden_large":
        words[-1] = "(200000, "  # the bidirectional encoder has hidden_size / 2 units per direction
    if name == "hidden_negative" and kind == "seq2seq":
        words = ["hidden_size", "got -2"]
    for argv in commands(kind, d, runs):
        err = _one_line_error(capsys, argv)
        assert str(d / "config.json") in err, err
        assert all(w in err for w in words), f"{argv}: {err}"
    with pytest.raises(CheckpointError) as e:
        LOADERS[kind](d)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


# -- what else config.json holds: vocabularies, columns, scaling, the train and data sections ------
EXTRAS = [
    ("charlm", "train_type", lambda c: {**c, "train": {**c["train"], "batch_size": "2"}},
     ["train.batch_size must be an integer, got '2'"]),
    ("charlm", "train_range", lambda c: {**c, "train": {**c["train"], "seq_len": 0}}, ["seq_len must be a positive"]),
    ("charlm", "train_a_list", lambda c: {**c, "train": []}, ["'train' must be a JSON object, got a list"]),
    ("charlm", "data_a_number", lambda c: {**c, "data": 5}, ["'data' must be a JSON object, got an integer"]),
    ("charlm", "data_chars", lambda c: {**c, "data": {**c["data"], "chars": -1}},
     ["data.chars must be a non-negative integer"]),
    ("charlm", "precision_fp64", lambda c: {**c, "train": {**c["train"], "precision": "fp64"}},
     ["does not match", "F32", "F64"]),
    ("tagger", "words_not_a_vocabulary", lambda c: {**c, "words": ["a", "b"]}, ["words must be a vocabulary"]),
    ("tagger", "tags_missing", lambda c: {k: v for k, v in c.items() if k != "tags"}, ["tags must be a vocabulary"]),
    ("tagger", "words_more", lambda c: {**c, "words": {**c["words"], "symbols": c["words"]["symbols"] + ["zz"]}},
     ["does not match", "embedding.weight"]),
    ("tagger", "chars_dropped", lambda c: {**c, "chars": None}, ["char_channels > 0 needs a character vocabulary"]),
    ("tagger", "kind_other", lambda c: {**c, "kind": "classifier"}, ["holds a 'classifier' model, expected 'tagger'"]),
    ("classifier", "scale_short", lambda c: {**c, "scale": [0.0]}, ["scale must be [mean, standard deviation > 0]"]),
    ("classifier", "labels_numbers", lambda c: {**c, "labels": {"symbols": [1, 2], "specials": False}},
     ["labels must be a vocabulary"]),
    ("forecaster", "std_zero", lambda c: {**c, "std": [0.0, 1.0]}, ["std must be a list of positive finite numbers"]),
    ("forecaster", "target_number", lambda c: {**c, "target": 3}, ["target must be a string, got 3"]),
    ("forecaster", "features_more", lambda c: {**c, "features": ["x", "z"], "mean": [0, 0, 0], "std": [1, 1, 1]},
     ["does not match", "rnn.weight_ih_l0"]),
    ("forecaster", "horizon_large", lambda c: {**c, "config": {**c["config"], "horizon": 100000}},
     ["horizon 100000 does not match", "fit horizon 1"]),
    ("generator", "symbols_without_bos", lambda c: {**c, "symbols": {**c["symbols"], "symbols": ["a", "b"]}},
     ["must contain '<bos>'"]),
    ("seq2seq", "vocab_size", lambda c: {**c, "model": {**c["model"], "src_vocab_size": 5}},
     ["src_vocab has", "src_vocab_size is 5"]),
    ("seq2seq", "vocab_not_an_object", lambda c: {**c, "src_vocab": "abc"}, ["src_vocab must be an object"]),
    ("seq2seq", "pad_id", lambda c: {**c, "model": {**c["model"], "pad_id": 99}}, ["pad_id must be in [0, "]),
    ("seq2seq", "train_a_list", lambda c: {**c, "train": [1]}, ["train must be an object"]),
    ("seq2seq", "format_other", lambda c: {**c, "format": "rnnkit-seq2seq-9"}, ["holds a 'rnnkit-seq2seq-9' model"]),
]


@pytest.mark.parametrize("kind, name, edit, words", EXTRAS, ids=[f"{k}-{n}" for k, n, _, _ in EXTRAS])
def test_hostile_entries_beyond_the_model_config(runs, kind, name, edit, words, tmp_path, capsys):
    d = _copy(runs, kind, tmp_path)
    _edit(d, edit)
    argvs = commands(kind, d, runs)
    if name == "format_other":
        argvs = argvs[:2]  # report reads any other format as a char-LM run directory
    for argv in argvs:
        err = _one_line_error(capsys, argv)
        assert all(w in err for w in words), f"{argv}: {err}"


@pytest.mark.parametrize("lines", ["[1, 2]\n", '{"step": "a", "train_bpc": "b", "val_bpc": "c"}\n', "7\n{\n"])
def test_info_reads_a_hostile_metrics_log(runs, tmp_path, capsys, lines):
    d = _copy(runs, "charlm", tmp_path)
    (d / "metrics.jsonl").write_text(lines)
    assert main(["info", str(d)]) == 0
    out = capsys.readouterr().out
    assert "steps: 0 (0s)" in out and "best val bpc: -" in out


# -- nothing big is allocated -------------------------------------------------------------------
class _LargestAllocation(TorchDispatchMode):
    """Records the largest tensor storage (bytes) any torch operation creates off the meta device."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


@pytest.mark.parametrize("hidden", [100000, 1099511627776])
@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_size_allocates_nothing_big(runs, kind, hidden, tmp_path):
    """Every tensor created while loading (meta builds included) is small: the largest is the
    size of the real weights (a few KB), where the config would need hundreds of GB."""
    d = _copy(runs, kind, tmp_path)
    _edit(d, _section(kind, _set(hidden_size=hidden)))
    with _LargestAllocation() as probe, pytest.raises(CheckpointError, match=f"hidden_size {hidden}"):
        LOADERS[kind](d)
    assert probe.largest < 2**20, probe.largest
    _edit(d, _section(kind, _set(hidden_size=8)))
    with _LargestAllocation() as probe:
        LOADERS[kind](d)
    assert 0 < probe.largest < 2**20  # the check sees the allocations of a real load


def _peak_rss_of(argv: list[str]) -> tuple[int, str]:
    """(peak resident memory in bytes, stderr) of ``python -m rnnkit argv`` in its own process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rnnkit", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024, err


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 for a child's own peak memory")
def test_cli_with_a_moderately_large_hidden_size_stays_at_the_memory_of_a_good_run(runs, tmp_path):
    """``rnnkit info`` in its own process, on a char-LM run whose config says hidden_size 6000
    (an LSTM weight_hh of 24000 × 6000 floats, 576 MB, if it were built): the process peaks
    within 64 MB of the same command on the intact run."""
    good = _copy(runs, "charlm", tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    _edit(bad, _section("charlm", _set(hidden_size=6000)))
    base, err = _peak_rss_of(["info", str(good)])
    assert err == ""
    hostile, err = _peak_rss_of(["info", str(bad)])
    assert "hidden_size 6000 does not match" in err and err.count("\n") == 1, err
    print(f"rnnkit info peak RSS: intact run {base / 2**20:.0f} MB, hidden_size 6000 {hostile / 2**20:.0f} MB")
    assert hostile - base < 64 * 2**20, (base, hostile)


# -- the meta builds themselves -------------------------------------------------------------------
def _build(kind: str, cell: str, hidden: int):
    """A model of ``kind`` with ``cell`` and ``hidden`` units (vocabularies etc. as in the runs)."""
    from rnnkit.data.text import Vocabulary as CharVocabulary
    from rnnkit.data.vocabulary import Vocabulary
    from rnnkit.models.charlm import CharLM
    from rnnkit.models.seq2seq import Seq2Seq

    words = Vocabulary(["a", "b", "c"])
    labels = Vocabulary(["x", "y"], specials=False)
    if kind == "charlm":
        return CharLM(CharLMConfig(cell=cell, hidden_size=hidden, embed_size=4), CharVocabulary.build("abc\n"))
    if kind == "tagger":
        return Tagger(TaggerConfig(cell=cell, hidden_size=hidden, embedding_dim=4, char_channels=2), words, labels,
                      words)
    if kind == "classifier":
        return Classifier(ClassifierConfig(cell=cell, hidden_size=hidden, embedding_dim=4, pooling="attention"),
                          labels, words)
    if kind == "forecaster":
        return Forecaster(ForecasterConfig(cell=cell, hidden_size=hidden, horizon=2), "y", ["x"], [0, 0], [1, 1])
    if kind == "generator":
        return Generator(GeneratorConfig(cell=cell, hidden_size=hidden, embedding_dim=4, condition_dim=2),
                         Vocabulary(["<bos>", "<eos>", "a"]), labels)
    return Seq2Seq(Seq2SeqConfig(5, 6, cell=cell, hidden_size=hidden, embedding_size=4, num_layers=2))


@pytest.mark.parametrize("cell", ["gru", "indrnn", "irnn", "jordan", "lstm", "mingru", "minlstm", "rnn"])
@pytest.mark.parametrize("kind", KINDS)
def test_meta_builds_give_the_real_shapes_and_allocate_nothing(kind, cell):
    """What the weights check relies on, for every model type and cell: a model built on the
    meta device has the state dict (names, shapes, dtypes) of the real one, and building it
    with 100000 hidden units creates no tensor off the meta device bigger than a few bytes."""
    from rnnkit.layers.registry import names as cell_names

    assert cell in cell_names()
    real = _build(kind, cell, 8).state_dict()
    with torch.device("meta"):
        meta = _build(kind, cell, 8).state_dict()
    assert {k: (v.shape, v.dtype) for k, v in meta.items()} == {k: (v.shape, v.dtype) for k, v in real.items()}
    with _LargestAllocation() as probe, torch.device("meta"):
        big = _build(kind, cell, 100000).state_dict()
    assert all(t.device.type == "meta" for t in big.values())
    assert sum(t.numel() for t in big.values()) > 5 * 100000  # the sizes are there, on meta only
    assert probe.largest <= 64, probe.largest


@pytest.mark.parametrize("name, kwargs", [("jordan", {"output_size": 3}), ("lstm", {"proj_size": 2}),
                                          ("gru", {"bidirectional": True, "num_layers": 2}),
                                          ("mingru", {"bidirectional": True})])
def test_sizes_on_meta_agree_with_the_layer_on_cpu(name, kwargs):
    from rnnkit.layers.registry import build as build_layer

    on_cpu = build_layer(name, 5, 6, **kwargs)
    with torch.device("meta"):
        on_meta = build_layer(name, 5, 6, **kwargs)
    assert (on_meta.output_size, tuple(on_meta.state_sizes)) == (on_cpu.output_size, tuple(on_cpu.state_sizes))
