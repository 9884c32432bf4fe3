"""Helpers shared by the commands (not a command itself); the options vocabulary (durations,
options generated from dataclasses) is :mod:`rnnkit.cli._options`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from ._options import duration  # noqa: F401  (its old home; the one parser is in _options)


def require_char_lm(run_dir, command: str) -> None:
    """A one-line CheckpointError when ``run_dir`` holds another model type than the char LM
    (a run of ``rnnkit fit MODEL --out``), naming the command that reads it."""
    from ..errors import CheckpointError
    from ..train import rundir

    model_type = rundir.read_config(run_dir)["model_type"]
    if model_type == "charlm":
        return
    written, use = {
        "task": ("a benchmark-task model (rnnkit task --out)", f"rnnkit info/report {run_dir}"),
        "seq2seq": ("a seq2seq model (rnnkit seq2seq train --out)", f"rnnkit seq2seq eval/translate {run_dir}"),
    }.get(model_type, (f"a {model_type} (rnnkit fit {model_type} --out)",
                       f"rnnkit fit {model_type} --eval/--predict {run_dir}"))
    raise CheckpointError(f"{run_dir} holds {written}; rnnkit {command} reads the character language models of "
                          f"rnnkit train: use {use}")


class NativeBuildProgress:
    """Shows the native build's progress events (``{"kind": "native", ...}``, see
    :func:`rnnkit.engine.native.load`) on ``stream``: one line rewritten in place on a terminal,
    otherwise a line every ``every`` seconds."""

    def __init__(self, stream=None, every: float = 10.0):
        self.stream = stream or sys.stderr
        self.every = every
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.shown: tuple[str, float] | None = None  # the state and elapsed time last shown
        self.open_line = False

    def __call__(self, event: dict) -> None:
        state, elapsed = event["state"], event["elapsed"]
        if state == "compiling":
            text = f"compiling rnnkit's native loops (once per machine and version): {elapsed:.0f}s"
        elif state == "waiting":
            text = (f"waiting for {event.get('holder') or 'another process'} to finish building rnnkit's native "
                    f"loops (lock {event['lock']}): {elapsed:.0f}s")
        elif state == "built":
            self._show(f"built rnnkit's native loops in {elapsed:.0f}s ({event['path']})", final=True)
            return
        else:  # loaded: another process built them while this one waited
            self._show(f"loaded rnnkit's native loops, built by another process ({event['path']})", final=True)
            return
        if self.tty or self.shown is None or self.shown[0] != state or elapsed - self.shown[1] >= self.every:
            self.shown = (state, elapsed)
            self._show(text)

    def _show(self, text: str, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r" + text + "\033[K" + ("\n" if final else ""))
            self.open_line = not final
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End a line left open on a terminal (a wait that ended without a build of our own)."""
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False


class TrainingBar:
    """The progress bar of a training command on the trainer's events (see
    :class:`rnnkit.train.Trainer`): a tqdm bar on stderr over the budget (steps or time,
    whichever ends the run first), its postfix the step, the training loss and the last
    validation value; before it, the native build's line. ``line(text)`` prints a line on
    stdout above the bar (the command's per-evaluation lines), so stdout is the same with
    or without it. ``quiet`` (or a rank other than 0 under torchrun): no bar.

    ``keys``: the metrics' names of the task (``train``, ``val``), as its ``metric_keys``."""

    def __init__(self, quiet: bool, keys: dict | None = None):
        from ..train.distributed import DistEnv

        self.quiet = quiet or not DistEnv.from_env().is_main
        self.keys = {"train": "train_loss", "val": "val_score", **(keys or {})}
        self.bar = None
        self.val: float | None = None
        self.native = NativeBuildProgress(sys.stderr)

    def __enter__(self) -> TrainingBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        kind = event["kind"]
        if kind == "native":
            self.native(event)
        elif kind == "start":
            from tqdm import tqdm

            self.native.close()
            if self.bar is not None:  # a second run in one command (not expected): a fresh bar
                self.bar.close()
            self.bar = tqdm(total=1000, unit="‰", dynamic_ncols=True, file=sys.stderr,
                            bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}")
            self.bar.update(int(event["progress"] * 1000))
        elif kind == "eval":
            value = event.get(self.keys["val"])
            self.val = value if isinstance(value, (int, float)) else self.val
        elif kind == "step" and self.bar is not None:
            post = f" step {event['step']}"
            train = event.get(self.keys["train"])
            if isinstance(train, (int, float)):
                post += f", train {train:.4g}"
            if self.val is not None:
                post += f", val {self.val:.4g}"
            self.bar.set_postfix_str(post, refresh=False)
            self.bar.update(max(0, min(1000, int(event["progress"] * 1000)) - self.bar.n))

    def line(self, text: str) -> None:
        """``text`` on stdout (above the bar while there is one)."""
        if self.bar is None:
            print(text, flush=True)
            return
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        self.native.close()
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def rank_zero_output() -> Iterator[None]:
    """Under torchrun only rank 0 reports: the other ranks' stdout goes to the null device
    and their log shows warnings only (a single process is rank 0)."""
    from ..train.distributed import DistEnv

    if DistEnv.from_env().is_main:
        yield
        return
    logging.getLogger("rnnkit").setLevel(logging.WARNING)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield
