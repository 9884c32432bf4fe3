"""``rnnkit fit`` end to end on tiny files: train → save → --eval → --predict, and
the errors a user sees for bad input."""

import json
import math

import pytest

from rnnkit.cli import main
from rnnkit.data.conll import read_conll, write_conll
from rnnkit.data.slots import slot_filling_data

from . import needs

SMALL = ["--hidden-size", "12", "--max-steps", "30", "--eval-every", "10"]


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_tagger_train_eval_predict(tmp_path, capsys):
    write_conll(tmp_path / "train.conll", slot_filling_data(120, seed=0))
    write_conll(tmp_path / "test.conll", slot_filling_data(30, seed=1))
    rc, out, err = _run(capsys, "fit", "tagger", "--data", tmp_path / "train.conll", "--valid",
                        tmp_path / "test.conll", "--out", tmp_path / "m", *SMALL, "--cell", "gru")
    assert rc == 0, err
    assert "held-out (also picked the best weights) span F1 (micro)" in out
    assert "baseline (most frequent tag per word)" in out
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["kind"] == "tagger" and meta["config"]["cell"] == "gru" and meta["config"]["hidden_size"] == 12
    trained_f1 = float(out.split("span F1 (micro) ")[1].split()[0])

    rc, out, _ = _run(capsys, "fit", "tagger", "--eval", tmp_path / "m", "--data", tmp_path / "test.conll")
    assert rc == 0 and float(out.split("span F1 (micro) ")[1].split()[0]) == pytest.approx(trained_f1, abs=1e-4)

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("I\nwant\nto\nfly\nto\nOslo\n\nshow\nme\nflights\n")
    rc, _, _ = _run(capsys, "fit", "tagger", "--predict", tmp_path / "m", "--data", tokens, "--output",
                    tmp_path / "pred.conll")
    assert rc == 0
    predicted = read_conll(tmp_path / "pred.conll")
    assert [s.tokens for s in predicted] == [["I", "want", "to", "fly", "to", "Oslo"], ["show", "me", "flights"]]


def test_refuses_to_overwrite_a_saved_model(tmp_path, capsys):
    write_conll(tmp_path / "train.conll", slot_filling_data(40, seed=0))
    args = ["fit", "tagger", "--data", tmp_path / "train.conll", "--out", tmp_path / "m", *SMALL, "--max-steps", "2"]
    assert _run(capsys, *args)[0] == 0
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    rc, _, err = _run(capsys, *args)
    assert rc == 2 and "already holds a saved model; pass --overwrite" in err
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert _run(capsys, *args, "--overwrite", "--seed", "1")[0] == 0
    assert (tmp_path / "m" / "model.safetensors").read_bytes() != before


def test_bad_files_are_named_with_their_line(tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("I O\nwant O\nto\n")
    rc, _, err = _run(capsys, "fit", "tagger", "--data", bad)
    assert rc == 2 and f"{bad}:3: expected 2 columns" in err
    csv = tmp_path / "bad.csv"
    csv.write_text("text,label\nhello,a\nworld,b,c\n")
    rc, _, err = _run(capsys, "fit", "classifier", "--data", csv)
    assert rc == 2 and f"{csv}:3: expected 2 fields, got 3" in err
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\nK\xf6ln,a\n".encode("latin-1"))
    rc, _, err = _run(capsys, "fit", "classifier", "--data", latin)
    assert rc == 2 and f"{latin}:2: not valid UTF-8" in err
    rc, _, err = _run(capsys, "fit", "tagger", "--data", tmp_path / "nope.conll")
    assert rc == 2 and "no such file" in err
    rc, _, err = _run(capsys, "fit", "tagger", "--demo", "--eval", tmp_path)
    assert rc == 2 and "--demo trains a model" in err


def test_classifier_text_and_numeric(tmp_path, capsys):
    rows = ["text,label"] + [f"{w} {w},{'q' if 'q' in w else 'n'}" for w in
                             ["aqb", "abc", "qqa", "bca", "cqa", "cab", "qab", "bac"] * 6]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    rc, out, err = _run(capsys, "fit", "classifier", "--data", tmp_path / "t.csv", "--out", tmp_path / "c",
                        "--pooling", "max", "--holdout", "0.25", *SMALL)
    assert rc == 0, err
    assert "held-out (also picked the best weights) accuracy" in out and "baseline (majority class)" in out
    (tmp_path / "new.txt").write_text("zzq zzq\nzzz\n")
    rc, out, _ = _run(capsys, "fit", "classifier", "--predict", tmp_path / "c", "--data", tmp_path / "new.txt")
    assert rc == 0
    assert [line.split("\t")[1] for line in out.splitlines()] == ["zzq zzq", "zzz"]
    assert all(line.split("\t")[0] in ("q", "n") for line in out.splitlines())

    up, down = ",".join(str(j) for j in range(5)), ",".join(str(-j) for j in range(5))
    (tmp_path / "s.csv").write_text(f"up,{up}\ndown,{down}\n" * 20)
    rc, out, err = _run(capsys, "fit", "classifier", "--format", "numeric", "--label-column", "0", "--data",
                        tmp_path / "s.csv", "--out", tmp_path / "n", *SMALL)
    assert rc == 0, err
    rc, out, _ = _run(capsys, "fit", "classifier", "--eval", tmp_path / "n", "--format", "numeric",
                      "--label-column", "0", "--data", tmp_path / "s.csv")
    assert rc == 0 and "accuracy" in out


def test_forecaster_csv(tmp_path, capsys):
    lines = ["t,load,temp"] + [f"{t},{math.sin(t / 3):.4f},{math.cos(t / 3):.4f}" for t in range(150)]
    (tmp_path / "ts.csv").write_text("\n".join(lines) + "\n")
    rc, out, err = _run(capsys, "fit", "forecaster", "--data", tmp_path / "ts.csv", "--target", "load",
                        "--features", "temp", "--window", "8", "--horizon", "3", "--season", "19",
                        "--out", tmp_path / "f", *SMALL)
    assert rc == 0, err
    assert "naive (last value) MAE" in out and "seasonal naive MAE" in out and "MAE per horizon step" in out
    rc, out, _ = _run(capsys, "fit", "forecaster", "--predict", tmp_path / "f", "--data", tmp_path / "ts.csv")
    assert rc == 0 and out.splitlines()[0] == "step,load" and len(out.splitlines()) == 4
    rc, _, err = _run(capsys, "fit", "forecaster", "--data", tmp_path / "ts.csv")
    assert rc == 2 and "--target COLUMN is required" in err


def test_forecaster_demo_without_statsmodels_says_how_to_install(monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "statsmodels" else real(name, *a))
    rc, _, err = _run(capsys, "fit", "forecaster", "--demo")
    assert rc == 2 and "pip install 'rnnkit[timeseries]'" in err


def test_forecaster_sunspot_demo(capsys):
    needs.module("statsmodels", "pip install statsmodels; the dev extra has it")
    rc, out, err = _run(capsys, "fit", "forecaster", "--demo", "--max-steps", "150", "--eval-every", "50")
    assert rc == 0, err
    # 309 years; origins from row 247 (80 %) to 307 (the last with a next year): 61 one-year forecasts
    assert "sunspot" in out and "61 forecasts" in out
    assert "the model beats the naive baseline" in out


def test_generator_train_and_sample(tmp_path, capsys):
    rows = "".join(f"{'ab' * k},even\n{'xyz' * k},odd\n" for k in range(1, 6))
    (tmp_path / "g.csv").write_text("text,kind\n" + rows * 4)
    rc, out, err = _run(capsys, "fit", "generator", "--data", tmp_path / "g.csv", "--test", tmp_path / "g.csv",
                        "--out", tmp_path / "g", *SMALL)
    assert rc == 0, err
    assert "\ntest " in out and "bits per symbol" in out and "baseline (unigram, unconditioned)" in out
    rc, out, _ = _run(capsys, "fit", "generator", "--predict", tmp_path / "g", "--condition", "odd", "--samples", "3",
                      "--max-length", "5")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 3 and all(line.startswith("odd\t") and len(line) <= 9 for line in lines)
