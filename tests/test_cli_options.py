"""The one options vocabulary of the commands (rnnkit/cli/_options.py): one duration parser,
options generated from the config dataclasses whose defaults live there only."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from rnnkit.cli import build_parser, main
from rnnkit.cli._options import add_dataclass_options, duration, given, parse_duration, positive_duration
from rnnkit.data.tabular import read_numeric_rows
from rnnkit.errors import DataError
from rnnkit.models.charlm import CharLMConfig
from rnnkit.models.classifier import ClassifierConfig
from rnnkit.models.forecaster import ForecasterConfig
from rnnkit.models.generator import GeneratorConfig
from rnnkit.models.seq2seq import SamplingSchedule, Seq2SeqConfig
from rnnkit.models.tagger import TaggerConfig
from rnnkit.tasks.run import TaskRunConfig
from rnnkit.tasks.seq2seq_train import Seq2SeqTrainConfig
from rnnkit.train.config import TrainConfig
from rnnkit.train.fit import FitConfig


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("2.5", 2.5), ("90s", 90), ("5m", 300), ("1h", 3600), ("1.5h", 5400), ("1h30m", 5400),
    ("2m30s", 150), ("1h0m5s", 3605), (" 5M ", 300), (".5m", 30), ("0", 0), ("0s", 0),
])
def test_a_duration_is_read_in_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "  ", "-5", "-1m", "5 minutes", "m", "1h1h", "30m1h", "5x", "1.2.3", "h5",
                                  "nan", "inf", "1e3"])
def test_a_bad_duration_is_one_line_naming_the_text(text):
    with pytest.raises(ValueError) as e:
        parse_duration(text)
    message = str(e.value)
    assert "\n" not in message and repr(text) in message and "1h30m" in message
    if text.startswith("-"):
        assert "negative" in message
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_a_positive_duration_rejects_zero():
    assert positive_duration("2m") == 120
    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        positive_duration("0s")


COMMANDS = [  # (command line, the --max-time field's config class)
    (["train"], TrainConfig),
    (["fit", "tagger"], FitConfig),
    (["fit", "classifier"], FitConfig),
    (["task", "adding"], TaskRunConfig),
    (["seq2seq", "train", "--task", "reverse", "--out", "x"], Seq2SeqTrainConfig),
]


@pytest.mark.parametrize("argv, cls", COMMANDS)
def test_every_command_reads_durations_with_the_one_parser(argv, cls):
    args = build_parser().parse_args([*argv, "--max-time", "1h30m"])
    assert args.max_time == 5400


@pytest.mark.parametrize("argv", [c[0] for c in COMMANDS])
def test_every_command_rejects_a_negative_duration_in_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--max-time=-5m"])  # (with a space argparse takes -5m for an option)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "negative" in err[-1] and "--max-time" in err[-1]


@pytest.mark.parametrize("argv, classes", [
    (["train"], [CharLMConfig, TrainConfig]),
    (["fit", "tagger", "--demo"], [TaggerConfig, FitConfig]),
    (["fit", "classifier", "--demo"], [ClassifierConfig, FitConfig]),
    (["fit", "forecaster", "--demo"], [ForecasterConfig, FitConfig]),
    (["fit", "generator", "--demo"], [GeneratorConfig, FitConfig]),
    (["task", "adding"], [TaskRunConfig]),
    (["seq2seq", "train", "--data", "pairs.tsv", "--out", "x"], [SamplingSchedule, Seq2SeqTrainConfig]),
])
def test_the_defaults_live_only_in_the_dataclasses(argv, classes):
    """No option given → no field given: the dataclass's own default applies; and the help
    text of each generated option shows that default."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for cls in classes:
        assert given(args, cls) == {}
        assert cls(**given(args, cls)) == cls()


@pytest.mark.parametrize("cls", [CharLMConfig, TrainConfig, FitConfig, TaggerConfig, ClassifierConfig,
                                 ForecasterConfig, GeneratorConfig])
def test_each_field_has_help_text_and_its_option_shows_the_dataclass_default(cls):
    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, cls)
    actions = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
        default = f.default
        shown = "none" if default is None else ("on" if default is True else "off" if default is False else default)
        assert actions[f.name].help.endswith(f"(default: {shown})")
        assert actions[f.name].default is argparse.SUPPRESS


def test_generated_options_parse_types_booleans_and_renamed_flags():
    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, TaskRunConfig, exclude=("task", "layer_options"),
                          flags={"clip_norm": ["--clip", "--clip-norm"]})
    args = parser.parse_args(["--hidden-size", "7", "--clip", "0.5", "--max-time", "2m", "--paper-settings"])
    assert given(args, TaskRunConfig) == {"hidden_size": 7, "clip_norm": 0.5, "max_time": 120.0,
                                          "paper_settings": True}
    assert given(parser.parse_args(["--clip-norm", "2", "--no-paper-settings"]), TaskRunConfig) == {
        "clip_norm": 2.0, "paper_settings": False}
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-time", "0"])  # the task's wall-clock budget must be positive
    with pytest.raises(ValueError, match="no field"):
        add_dataclass_options(argparse.ArgumentParser(), FitConfig, only=["lr", "nope"])


def test_task_cli_passes_only_what_was_given(capsys, monkeypatch):
    """`rnnkit task` builds its TaskRunConfig from the given options alone (no restated defaults)."""
    from types import SimpleNamespace

    import rnnkit.tasks.run as run_module
    import rnnkit.tasks.table  # noqa: F401  (imported before the patch, so that it keeps the real run_task)

    seen = {}

    def fake_run_task(config, on_eval=None, callback=None):  # callback: the progress bar
        seen["config"] = config
        return SimpleNamespace(verdict="not run", loop=SimpleNamespace(steps=0, seconds=0.0))

    monkeypatch.setattr(run_module, "run_task", fake_run_task)
    assert main(["task", "adding", "--hidden-size", "9", "--max-steps", "3"]) == 0
    expected = TaskRunConfig(task="adding", hidden_size=9, max_steps=3).resolved()
    assert seen["config"] == expected


def test_numeric_rows_are_read_by_the_data_layer(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("1,2,3\n\n4.5, 6\n", encoding="utf-8")
    rows, lines = read_numeric_rows(path)
    assert rows == [[1.0, 2.0, 3.0], [4.5, 6.0]] and lines == ["1,2,3", "4.5, 6"]
    path.write_text("1,2\n3,x\n", encoding="utf-8")
    with pytest.raises(DataError, match="example 2: not a comma-separated row of numbers: '3,x'"):
        read_numeric_rows(path)
    tsv = tmp_path / "rows.tsv"
    tsv.write_text("1\t2\n3\tx\n", encoding="utf-8")
    with pytest.raises(DataError, match="example 2: not a tab-separated row of numbers"):
        read_numeric_rows(tsv)


def test_the_seq2seq_flags_keep_their_old_spellings():
    args = build_parser().parse_args(["seq2seq", "train", "--task", "sort", "--out", "x", "--unidirectional",
                                      "--no-input-feeding", "--sampling", "linear", "--sampling-min", "0.25",
                                      "--target", "0.9", "--beam", "3", "--hidden-size", "16"])
    assert given(args, Seq2SeqConfig) == {"bidirectional": False, "input_feeding": False, "hidden_size": 16}
    assert given(args, SamplingSchedule) == {"kind": "linear", "epsilon_min": 0.25}
    assert given(args, Seq2SeqTrainConfig) == {"task": "sort", "target_exact_match": 0.9, "beam_size": 3}


def test_gradflow_options_come_from_its_config(tmp_path):
    from rnnkit.diagnostics.gradflow import GradFlowConfig

    args = build_parser().parse_args(["gradflow", "--seq-len", "7", "--clip", "1.5", "--init", "orthogonal"])
    assert given(args, GradFlowConfig) == {"seq_len": 7, "clip": 1.5, "init": "orthogonal"}
    assert GradFlowConfig(**given(args, GradFlowConfig)).clip_steps == GradFlowConfig.clip_steps
    done = subprocess.run([sys.executable, "-m", "rnnkit", "gradflow", "--seq-len", "0"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "rnnkit gradflow: error: --seq-len must be positive, got 0"]
