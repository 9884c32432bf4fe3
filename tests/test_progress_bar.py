"""The progress bar of the training commands (rnnkit fit MODEL, rnnkit task, rnnkit seq2seq
train): one bar on stderr from the trainer's events (rnnkit.cli._common.TrainingBar), the
per-evaluation lines unchanged on stdout, nothing with --quiet."""

from __future__ import annotations

import re

import pytest

from rnnkit.cli import main
from rnnkit.cli._common import TrainingBar

STEPS, EVERY = 12, 4


def _classifier_file(path):
    rows = [f"{i % 3},{(i * 7) % 5},{(i * 3) % 4},{i % 2}" for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    return path


COMMANDS = {
    "fit": lambda tmp: ["fit", "classifier", "--data", str(_classifier_file(tmp / "rows.csv")), "--format",
                        "numeric", "--no-header", "--hidden-size", "8", "--batch-size", "8"],
    "task": lambda tmp: ["task", "adding", "--seq-len", "8", "--hidden-size", "8", "--batch-size", "8"],
    "seq2seq": lambda tmp: ["seq2seq", "train", "--task", "reverse", "--out", str(tmp / "s2s"), "--hidden-size",
                            "16", "--batch-size", "8"],
}


@pytest.mark.parametrize("quiet", [False, True], ids=["bar", "quiet"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_training_commands_show_the_bar_on_stderr(command, quiet, tmp_path, capsys):
    argv = [*COMMANDS[command](tmp_path), "--max-steps", str(STEPS), "--eval-every", str(EVERY)]
    assert main(argv + ["--quiet"] * quiet) == 0
    out, err = capsys.readouterr()
    # the per-evaluation lines stay on stdout, one per evaluation, bar or not
    steps = [int(m) for m in re.findall(r"^\s*step\s+(\d+)\s", out, re.M)]
    assert steps == list(range(EVERY, STEPS + 1, EVERY))
    bars = re.findall(r"(\d+)%\|[^\r\n]*step (\d+)", err)
    if quiet:
        assert bars == [] and "%|" not in err
    else:
        assert bars, err  # the bar's final state: the whole budget, at the last step
        assert bars[-1] == ("100", str(STEPS))


def test_the_bar_follows_the_events(capsys):
    bar = TrainingBar(quiet=False, keys={"train": "train_loss", "val": "val_score"})
    bar({"kind": "start", "step": 0, "elapsed": 0.0, "progress": 0.0})
    bar({"kind": "step", "step": 1, "train_loss": 2.5, "progress": 0.25})
    bar.line("an evaluation line")
    bar({"kind": "eval", "step": 2, "val_score": 0.75})
    bar({"kind": "step", "step": 2, "train_loss": 1.5, "progress": 0.5})
    assert bar.bar.n == 500
    bar.close()
    out, err = capsys.readouterr()
    assert out == "an evaluation line\n"
    assert "step 2, train 1.5, val 0.75" in err.replace("\r", "\n").splitlines()[-1]


def test_the_bar_stays_off_on_the_other_ranks(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    bar = TrainingBar(quiet=False)
    bar({"kind": "start", "step": 0, "elapsed": 0.0, "progress": 0.0})
    bar.line("x")
    bar.close()
    assert bar.bar is None and capsys.readouterr() == ("x\n", "")
