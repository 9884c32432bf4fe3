"""The four ready models (tagger, classifier, forecaster, generator) train on the one
Trainer into the one run-directory format: exact resume, Ctrl-C checkpoints, metrics.jsonl,
``rnnkit info`` / ``rnnkit report`` and ``rnnkit.load``; old ``rnnkit fit`` directories
still load."""

from __future__ import annotations

import html
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.data.conll import write_conll
from rnnkit.data.slots import slot_filling_data
from rnnkit.models.classifier import Classifier, ClassifierConfig
from rnnkit.models.classifier_app import train_classifier
from rnnkit.models.forecaster import Forecaster, ForecasterConfig
from rnnkit.models.forecaster_app import train_forecaster
from rnnkit.models.generator import Generator, GeneratorConfig
from rnnkit.models.generator_app import train_generator
from rnnkit.models.tagger import Tagger, TaggerConfig
from rnnkit.models.tagger_app import train_tagger
from rnnkit.train import rundir
from rnnkit.train.fit import FitConfig

from .runs import ctrl_c_after_three_steps, interrupt_at, weights

ROOT = Path(__file__).resolve().parent.parent
FIT = dict(batch_size=8, max_steps=9, eval_every=4, lr=1e-2)


def _tagger(**kw):
    sentences = slot_filling_data(40, seed=0)
    return Tagger, train_tagger(sentences[:32], sentences[32:], TaggerConfig(hidden_size=8, char_channels=4),
                                FitConfig(**FIT), **kw)


def _classifier(**kw):
    texts = [("ab" * (i % 5 + 1)) if i % 2 else ("zq" * (i % 4 + 1)) for i in range(48)]
    labels = ["a" if i % 2 else "z" for i in range(48)]
    return Classifier, train_classifier(texts[:40], labels[:40], (texts[40:], labels[40:]),
                                        ClassifierConfig(hidden_size=8, embedding_dim=8), FitConfig(**FIT), **kw)


def _forecaster(**kw):
    series = {"y": [math.sin(t / 3) for t in range(120)]}
    model, result, _ = train_forecaster(series, "y", (), ForecasterConfig(hidden_size=8, window=6),
                                        FitConfig(**FIT), **kw)
    return Forecaster, (model, result)


def _generator(**kw):
    texts = ["abc", "abd", "xyz", "xyw"] * 10
    conditions = ["a", "a", "x", "x"] * 10
    return Generator, train_generator(texts, conditions, (texts[:4], conditions[:4]),
                                      GeneratorConfig(hidden_size=8, embedding_dim=8, condition_dim=4),
                                      FitConfig(**FIT), **kw)


TRAIN = {"tagger": _tagger, "classifier": _classifier, "forecaster": _forecaster, "generator": _generator}


@pytest.mark.parametrize("name", sorted(TRAIN))
def test_resume_after_an_interrupt_gives_bit_identicalweights(name, tmp_path):
    """Interrupted at step 5 (Ctrl-C checkpoint) and resumed to step 9: the same losses,
    validation scores and weights as one uninterrupted run."""
    _, (full, full_result) = TRAIN[name](out=tmp_path / "full")
    assert full_result.steps == 9 and full_result.stopped_by == "max_steps"
    _, (_, first) = TRAIN[name](out=tmp_path / "part", callback=interrupt_at(5))
    assert first.stopped_by == "interrupted" and first.steps == 5
    assert json.loads((tmp_path / "part" / rundir.STATE_JSON).read_text())["step"] == 5
    _, (resumed, result) = TRAIN[name](out=tmp_path / "part", resume=True)
    assert result.steps == 9
    a, b = rundir.read_metrics(tmp_path / "full"), rundir.read_metrics(tmp_path / "part")
    assert [r["step"] for r in b] == list(range(1, 10))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r.get("val_score") for r in a] == [r.get("val_score") for r in b]
    for file in (rundir.LATEST, rundir.BEST):
        wa, wb = weights(tmp_path / "full" / file), weights(tmp_path / "part" / file)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert result.best_score == full_result.best_score and result.evaluations == full_result.evaluations
    sa, sb = full.state_dict(), resumed.state_dict()  # both hold the best weights
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", sorted(TRAIN))
def test_a_run_directory_loads_with_its_best_weights_by_every_loader(name, tmp_path):
    cls, (model, result) = TRAIN[name](out=tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / rundir.CONFIG).read_text())
    assert (cfg["format_version"], cfg["model_type"], cfg["kind"]) == (rundir.FORMAT_VERSION, name, name)
    assert cfg["model"] == cfg["config"] and cfg["train"]["max_steps"] == 9 and cfg["fit"]["eval_every"] == 4
    best = weights(tmp_path / "run" / rundir.BEST)
    for loaded in (rnnkit.load(tmp_path / "run"), cls.load(tmp_path / "run")):
        assert type(loaded) is cls and not loaded.training
        assert all(torch.equal(loaded.state_dict()[k], best[k]) for k in best)
        assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)
    assert result.best_step in (4, 8, 9) and result.best_score == min(s for _, s in result.evaluations)


def test_without_a_directory_the_run_leaves_nothing_and_keeps_the_bestweights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, (model, result) = _classifier()
    assert list(tmp_path.iterdir()) == []
    assert [s for s, _ in result.evaluations] == [4, 8, 9] and len(result.train_loss) == 3


def test_info_and_report_read_a_fit_run(tmp_path, capsys):
    _tagger(out=tmp_path / "run")
    assert main(["info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "model: tagger " in out and "steps: 9 " in out and "last train loss: " in out
    best = min(r["val_score"] for r in rundir.read_metrics(tmp_path / "run") if "val_score" in r)
    assert f"best val score: {best:.4f}" in out
    assert main(["report", str(tmp_path / "run")]) == 0
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "Training curves" in page and "data:image/png" in page  # the curves of metrics.jsonl
    assert '"model_type": "tagger"' in html.unescape(page)
    capsys.readouterr()
    for command in (["sample", str(tmp_path / "run")], ["eval", str(tmp_path / "run"), "--data", __file__]):
        assert main(command) == 2  # a clear one-line error, not a crash in the char LM's code
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "holds a tagger" in err and "rnnkit fit tagger --eval/--predict" in err


def test_an_old_fit_directory_still_loads_and_evaluates(tmp_path, capsys):
    """A model saved by .save() (the `rnnkit fit --out` format before run directories)."""
    sentences = slot_filling_data(30, seed=0)
    model = Tagger.from_data(sentences, TaggerConfig(hidden_size=8, char_channels=4))
    model.save(tmp_path / "old")
    assert set(json.loads((tmp_path / "old" / "config.json").read_text())) >= {"kind", "config", "words"}
    again = Tagger.load(tmp_path / "old")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    write_conll(tmp_path / "test.conll", sentences[:5])
    assert main(["fit", "tagger", "--eval", str(tmp_path / "old"), "--data", str(tmp_path / "test.conll")]) == 0
    assert "span F1 (micro)" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "old")]) == 0
    out = capsys.readouterr().out
    params = sum(p.numel() for p in model.parameters())
    assert "format: earlier" in out and "model: tagger " in out and f"parameters: {params:,}" in out


def test_resume_needs_the_same_data_and_a_valid_config(tmp_path):
    sentences = slot_filling_data(40, seed=0)
    train_tagger(sentences[:32], None, TaggerConfig(hidden_size=8, char_channels=4), FitConfig(**FIT),
                 out=tmp_path / "run", callback=interrupt_at(3))
    with pytest.raises(rnnkit.errors.CheckpointError, match="31 training examples, the run was trained on 32"):
        train_tagger(sentences[:31], None, out=tmp_path / "run", resume=True)
    cfg = json.loads((tmp_path / "run" / rundir.CONFIG).read_text())
    cfg["fit"]["batch_size"] = "eight"  # a hand-edited or hostile config: one line naming the field
    (tmp_path / "run" / rundir.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(rnnkit.errors.CheckpointError, match="batch_size") as e:
        train_tagger(sentences[:32], None, out=tmp_path / "run", resume=True)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_rnnkit_fit_leaves_a_loadable_checkpoint_and_resume_finishes(tmp_path):
    write_conll(tmp_path / "train.conll", slot_filling_data(60, seed=0))
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "rnnkit", "fit", "tagger", "--data", str(tmp_path / "train.conll"),
            "--out", str(run), "--hidden-size", "8", "--char-channels", "4", "--batch-size", "4",
            "--eval-every", "1000", "--checkpoint-every", "0", "--max-steps", "100000"]
    step, env = ctrl_c_after_three_steps(argv, run)
    assert type(rnnkit.load(run, "latest")) is Tagger
    res = subprocess.run([*argv[:-1], str(step + 2), "--resume"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert [r["step"] for r in rundir.read_metrics(run)] == list(range(1, step + 3))
