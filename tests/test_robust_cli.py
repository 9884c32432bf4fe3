"""The command line on bad input: one-line errors, a non-zero status, no traceback unless
--debug (which shows it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnkit.cli import main
from rnnkit.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
TEXT = "".join(f"while n > {k}:\n    n -= {k % 3 + 1}\n" for k in range(200))
TINY = ["--hidden-size", "8", "--embed-size", "4", "--batch-size", "2", "--seq-len", "8", "--max-time", "0",
        "--sample-every", "0", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "corpus.txt").write_text(TEXT)
    assert main(["train", "--data", str(root / "corpus.txt"), "--out", str(root / "run"), "--max-steps", "2",
                 *TINY]) == 0
    return root


def _error(capsys, argv) -> str:
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_unknown_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--hidden-sise", "8"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --hidden-sise" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["train", "--resume"], "--resume needs --out"),
    (["train", "--max-steps", "0", "--max-time", "0"], "give a budget"),
    (["train", "--on-nan", "ignore", "--max-steps", "1"], "on_nan must be one of"),
    (["train", "--precision", "fp16", "--max-steps", "1"], "precision must be one of"),
    (["train", "--nan-lr-factor", "2", "--max-steps", "1"], "nan_lr_factor must be in (0, 1]"),
])
def test_conflicting_or_invalid_options(capsys, argv, words):
    assert words in _error(capsys, argv)


def test_resume_with_a_different_model_is_refused(run, capsys):
    msg = _error(capsys, ["train", "--out", str(run / "run"), "--resume", "--hidden-size", "16"])
    assert "hidden_size is 8 in the run, got 16" in msg


def test_output_directory_that_exists(run, capsys):
    msg = _error(capsys, ["train", "--data", str(run / "corpus.txt"), "--out", str(run / "run"), "--max-steps", "1"])
    assert "already exists and is not empty" in msg and "--resume" in msg


@pytest.mark.parametrize("config, found", [
    ({"kind": "tagger", "config": {"hidden_size": 8}}, "a 'tagger' model written by `rnnkit fit`"),
    ({"format": "rnnkit-seq2seq-1", "model": {}}, "a sequence-to-sequence model written by `rnnkit seq2seq`"),
])
@pytest.mark.parametrize("command", [["sample"], ["info"], ["eval", "--data", "x.txt"]])
def test_a_run_directory_of_another_model_type(tmp_path, capsys, config, found, command):
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"")
    msg = _error(capsys, [command[0], str(tmp_path), *command[1:]])
    if command == ["info"]:  # info describes the earlier formats too: it reads the (here empty) weights
        assert "model.safetensors" in msg
    else:
        assert found in msg and "rnnkit train" in msg


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "classifier"}))
    with pytest.raises(CheckpointError, match="'classifier' model"):
        main(["sample", str(tmp_path), "--debug"])


def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    """Through the interpreter: stderr is exactly one line; with --debug, a traceback."""
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 7, "model_type": "charlm"}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "rnnkit", "info", str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "format_version 7, newer than the version 1" in res.stderr
    res = subprocess.run([sys.executable, "-m", "rnnkit", "info", str(tmp_path), "--debug"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback (most recent call last)" in res.stderr
    assert "CheckpointError" in res.stderr
