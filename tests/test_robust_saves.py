"""The atomic save of the fit models (tagger, classifier, forecaster, generator) and seq2seq:
a save that fails at any step, or a process killed at any moment, leaves the previous model
or the new one, complete and loadable, never a mix and never nothing.

A save writes model.safetensors (which carries the config too) and then config.json, each
through a temporary file, fsync and a rename; the first rename is the switch (see
rnnkit/checkpoint.py, save_model_files)."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rnnkit import checkpoint
from rnnkit.data.slots import slot_filling_data
from rnnkit.errors import CheckpointError
from rnnkit.models import Classifier, Forecaster, Generator, Tagger
from rnnkit.models.classifier import ClassifierConfig
from rnnkit.models.forecaster import ForecasterConfig
from rnnkit.models.generator import GeneratorConfig
from rnnkit.models.seq2seq import Seq2SeqConfig
from rnnkit.models.tagger import TaggerConfig
from rnnkit.tasks.seq2seq_train import Seq2SeqRun, Seq2SeqTrainConfig, load_run, save_run, train_seq2seq

KINDS = ["tagger", "classifier", "forecaster", "generator", "seq2seq"]
TEXTS = [("a fine film", "pos"), ("a dull film", "neg"), ("fine acting", "pos")] * 3


def _model(kind: str, hidden: int):
    """A small model of ``kind``; two hidden sizes give weights that cannot be mixed."""
    torch.manual_seed(hidden)
    if kind == "tagger":
        return Tagger.from_data(slot_filling_data(10, seed=1), TaggerConfig(hidden_size=hidden, embedding_dim=4,
                                                                              char_channels=2))
    if kind == "classifier":
        return Classifier.from_data([t for t, _ in TEXTS], [y for _, y in TEXTS],
                                    ClassifierConfig(hidden_size=hidden, embedding_dim=4))
    if kind == "forecaster":
        series = {"y": [math.sin(i) for i in range(30)]}
        return Forecaster.from_series(series, "y", (), ForecasterConfig(hidden_size=hidden, window=4))
    if kind == "generator":
        return Generator.from_data([t for t, _ in TEXTS], [y for _, y in TEXTS],
                                   GeneratorConfig(hidden_size=hidden, embedding_dim=4, condition_dim=2))
    config = Seq2SeqTrainConfig(task="reverse", model=Seq2SeqConfig(4, 4, hidden_size=hidden, embedding_size=4),
                                max_steps=1, max_time=None, eval_every=1, test_size=2)
    return train_seq2seq(config)


def _save(kind: str, model, directory: Path) -> None:
    if kind == "seq2seq":
        save_run(model, directory)
    else:
        model.save(directory)


def _load(kind: str, directory: Path):
    return load_run(directory)[0] if kind == "seq2seq" else type_of(kind).load(directory)


def type_of(kind: str):
    return {"tagger": Tagger, "classifier": Classifier, "forecaster": Forecaster, "generator": Generator}[kind]


def _weights(model) -> dict[str, torch.Tensor]:
    return (model.model if isinstance(model, Seq2SeqRun) else model).state_dict()


def _which(kind: str, directory: Path, a, b) -> str:
    """'a' or 'b': the saved model that ``directory`` loads as, exactly (weights and config)."""
    loaded = _weights(_load(kind, directory))
    for name, model in (("a", a), ("b", b)):
        want = _weights(model)
        if set(loaded) == set(want) and all(torch.equal(loaded[k], want[k]) for k in want):
            return name
    raise AssertionError(f"{directory} loads neither of the two saved models")


@pytest.fixture(scope="module")
def models():
    return {kind: (_model(kind, 6), _model(kind, 10)) for kind in KINDS}


class _Injected(OSError):
    pass


@pytest.mark.parametrize("kind", KINDS)
def test_a_save_that_fails_at_any_step_leaves_the_previous_model_or_the_new_one(models, kind, tmp_path,
                                                                                 monkeypatch):
    """Each file operation of a save (creating a temporary file, fsync, rename) fails in turn
    with an OSError, as a full disk or an I/O error would: before the weight file's rename the
    previous model loads, after it the new one, and no temporary file is left."""
    a, b = models[kind]
    steps = {"mkstemp": (tempfile, "mkstemp"), "fsync": (os, "fsync"), "replace": (os, "replace")}
    calls: list[str] = []
    fail_at = [-1]

    def counted(name, real):
        def call(*args, **kwargs):
            calls.append(name)
            if len(calls) - 1 == fail_at[0]:
                raise _Injected(f"injected failure of {name}")
            return real(*args, **kwargs)
        return call

    for name, (module, attr) in steps.items():
        monkeypatch.setattr(module, attr, counted(name, getattr(module, attr)))
    _save(kind, b, tmp_path / "dry-run")
    sequence, switch = list(calls), calls.index("replace")  # the first rename: model.safetensors
    assert sequence.count("replace") == 2 and sequence.count("mkstemp") == 2 and sequence.count("fsync") >= 4
    outcomes = []
    for k, step in enumerate(sequence):
        d = tmp_path / f"fail-{k}"
        calls.clear()
        fail_at[0] = -1
        _save(kind, a, d)
        calls.clear()
        fail_at[0] = k
        try:
            _save(kind, b, d)
            raised = False
        except _Injected:
            raised = True
        fail_at[0] = -1
        got = _which(kind, d, a, b)
        assert got == ("a" if k <= switch else "b"), (k, step, sequence)
        assert not [p for p in d.iterdir() if p.name.endswith(".tmp")], (k, step)
        outcomes.append((step, raised, got))
    # a failed fsync of the directory is ignored (not every file system can); every other failure is raised
    assert all(raised or step == "fsync" for step, raised, _ in outcomes)
    assert {got for _, _, got in outcomes} == {"a", "b"}


@pytest.mark.parametrize("kind", KINDS)
def test_config_json_of_an_earlier_save_gives_the_config_stored_with_the_weights(models, kind, tmp_path, caplog):
    """The state a crash between the two renames leaves: model.safetensors of the new save,
    config.json of the previous one. The save ids differ, so the config stored with the
    weights is used (with a warning); without config.json at all, too."""
    a, b = models[kind]
    _save(kind, a, tmp_path / "a")
    _save(kind, b, tmp_path / "b")
    (tmp_path / "b" / "config.json").write_bytes((tmp_path / "a" / "config.json").read_bytes())
    with caplog.at_level(logging.WARNING, logger="rnnkit"):
        assert _which(kind, tmp_path / "b", a, b) == "b"
    assert "is from an earlier save" in caplog.text
    (tmp_path / "b" / "config.json").unlink()
    assert _which(kind, tmp_path / "b", a, b) == "b"


@pytest.mark.parametrize("stored, words", [("{broken", "is not JSON"), ("[1]", "is a list, not a JSON object"),
                                           ('{"kind": "other", "format": "other"}', "holds a 'other' model")])
def test_a_hostile_config_stored_with_the_weights_is_a_one_line_error(models, tmp_path, stored, words):
    a, _ = models["tagger"]
    a.save(tmp_path / "m")
    tensors = {k: v.contiguous() for k, v in a.state_dict().items()}
    save_file(tensors, str(tmp_path / "m" / "model.safetensors"),
              metadata={checkpoint.SAVED_CONFIG: stored, checkpoint.SAVE_ID: "another save"})
    with pytest.raises(CheckpointError) as e:
        Tagger.load(tmp_path / "m")
    assert words in str(e.value) and "model.safetensors" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_directories_saved_before_the_atomic_format_still_load(models, kind, tmp_path):
    """The earlier layout: model.safetensors without metadata and config.json without a save id."""
    a, b = models[kind]
    _save(kind, a, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    del cfg[checkpoint.SAVE_ID]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in _weights(a).items()}, str(tmp_path / "m" / "model.safetensors"))
    assert _which(kind, tmp_path / "m", a, b) == "a"


# -- kill -9 ------------------------------------------------------------------------------------
def _save_forever(kind: str, a, b, directory: str) -> None:
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the child dies with it open
    torch.set_num_threads(1)
    while True:
        for model in (a, b):
            _save(kind, model, Path(directory))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("kind", ["tagger", "seq2seq"])
def test_kill_9_during_saves_leaves_one_complete_model(models, kind, tmp_path):
    """A child saves two models in turn into one directory without pause; it is killed at
    random moments, half of them just after config.json's temporary file appears (the new
    weights are in place, config.json is the previous save's). After every kill the
    directory loads as one of the two models, exactly."""
    a, b = models[kind]
    d = tmp_path / "m"
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(0)
    seen, between = set(), 0
    for i in range(12):
        proc = ctx.Process(target=_save_forever, args=(kind, a, b, str(d)))
        proc.start()
        deadline = time.monotonic() + 30
        while not (d / "config.json").exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        if i % 2:
            while time.monotonic() < deadline and not any(n.startswith(".config.json.") for n in os.listdir(d)):
                pass
        else:
            time.sleep(rng.uniform(0.0, 0.05))
        proc.kill()
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL
        config_id = json.loads((d / "config.json").read_text()).get(checkpoint.SAVE_ID)
        between += config_id != checkpoint.read_header(d / "model.safetensors", "w")[1][checkpoint.SAVE_ID]
        seen.add(_which(kind, d, a, b))
    print(f"{kind}: 12 kills, {between} between the two renames, loaded {sorted(seen)}")
    assert between >= 1, "no kill landed between the weights' rename and config.json's"
