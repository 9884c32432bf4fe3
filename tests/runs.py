"""Helpers shared by the run-directory tests of the applications (tests/test_fit_runs.py,
test_task_runs.py, test_seq2seq_runs.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from rnnkit.train import rundir

ROOT = Path(__file__).resolve().parent.parent


def interrupt_at(step: int):
    """A trainer callback that raises KeyboardInterrupt (what Ctrl-C raises in the loop) at ``step``."""
    def callback(event: dict) -> None:
        if event["kind"] == "step" and event["step"] == step:
            raise KeyboardInterrupt  # what Ctrl-C raises in the loop

    return callback


def weights(path: Path) -> dict[str, torch.Tensor]:
    return rundir.read_tensors(path, "weights")


def ctrl_c_after_three_steps(argv: list[str], run: Path) -> tuple[int, dict]:
    """Start ``argv`` (a training command writing the run directory ``run``), send it SIGINT
    once three steps are logged, and check the interrupted run: exit 130, the one-line resume
    hint, no traceback, a checkpoint at a step ≥ 3 with every step's metrics. Returns (that
    step, the environment the process ran with, for the resume)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait for training to be under way
        if len(rundir.read_metrics(run)) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "resume with the same command and --resume" in err
    step = json.loads((run / rundir.STATE_JSON).read_text())["step"]
    assert step >= 3 and [r["step"] for r in rundir.read_metrics(run)] == list(range(1, step + 1))
    return step, env
