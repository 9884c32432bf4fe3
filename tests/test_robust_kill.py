"""Kill -9 and Ctrl-C against a real training run.

A tiny model checkpoints at every step, so most of a run's time is spent writing checkpoints
and many kills land inside a write. After every kill the last complete checkpoint must load,
``--resume`` must continue from it, and the run that finally completes must have exactly the
losses of a run that was never killed.

Most kills hit a child forked from the test process that runs the very code of
``python -m rnnkit train`` (``rnnkit.cli.main``) without paying for a new interpreter and
``import torch`` each time; a few hit real ``python -m rnnkit train`` subprocesses.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.train import rundir

ROOT = Path(__file__).resolve().parents[1]
FORK_KILLS = 22
SUBPROCESS_KILLS = 2
ARGS = ["--hidden-size", "8", "--embed-size", "4", "--batch-size", "2", "--seq-len", "8",
        "--max-time", "0", "--eval-every", "0", "--checkpoint-every", "1", "--sample-every", "0",
        "--lr-schedule", "constant", "--val-fraction", "0.02", "--quiet"]
BIG_BUDGET = ["--max-steps", "100000"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _corpus(path: Path) -> Path:
    rng = random.Random(0)
    words = ["def", "class", "return", "self", "x", "y", "if", "else", "for", "in", "range", "print"]
    path.write_text("".join(" ".join(rng.choice(words) for _ in range(8)) + "\n" for _ in range(400)))
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _child(argv: list[str]) -> None:
    from rnnkit.cli import main

    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the child dies with it open
    os._exit(main(argv))


def _state_step(run: Path) -> int:
    return int(rundir.read_safetensors(run / rundir.STATE_TENSORS, "trainer state")[1]["step"])


def _wait_for_checkpoint(run: Path, after: float, alive, timeout: float = 60.0) -> None:
    """Wait until the run writes a checkpoint after time ``after`` (its resume succeeded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (run / rundir.STATE_TENSORS).stat().st_mtime > after:
                return
        except FileNotFoundError:
            pass
        if not alive():
            return
        time.sleep(0.002)
    raise AssertionError("the training run wrote no checkpoint within a minute")


def _kill_mid_write(run: Path, kill, alive, rng: random.Random) -> None:
    """Half the time kill as soon as a temporary checkpoint file exists (inside a write),
    otherwise after a random delay."""
    if rng.random() < 0.5:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and alive():
            if any(name.endswith(".tmp") for name in os.listdir(run)):
                break
    else:
        time.sleep(rng.uniform(0.0, 0.15))
    kill()


def _check_after_kill(run: Path, last_step: int) -> int:
    """The last complete checkpoint loads and is consistent; returns its step."""
    model = rnnkit.load(run, checkpoint="latest")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    step = _state_step(run)
    weights_step = int(rundir.read_safetensors(run / rundir.LATEST, "weights")[1]["step"])
    assert weights_step >= step, "model.safetensors is never behind the resume file"
    assert step >= last_step, "a kill never loses a checkpoint that was complete"
    # the resume file's weights are a full, matching set for the model
    tensors, _ = rundir.read_safetensors(run / rundir.STATE_TENSORS, "trainer state")
    weights = {k[len("model."):]: t for k, t in tensors.items() if k.startswith("model.")}
    assert set(weights) == set(model.state_dict())
    return step


def test_kill_9_at_random_moments_then_resume_exactly(tmp_path):
    corpus = _corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    base = ["train", "--data", str(corpus), "--out", str(run), *ARGS]
    rng = random.Random(1)
    ctx = multiprocessing.get_context("fork")
    kills = mid_write = 0
    step = 0
    for i in range(FORK_KILLS + SUBPROCESS_KILLS):
        argv = base + BIG_BUDGET + (["--resume"] if i else [])
        started = time.time() - 1e-3
        if i % 12 == 4:  # a real interpreter now and then
            proc = subprocess.Popen([sys.executable, "-m", "rnnkit", *argv], env=_env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            alive, kill = (lambda p=proc: p.poll() is None), proc.kill
        else:
            proc = ctx.Process(target=_child, args=(argv,))
            proc.start()
            alive, kill = proc.is_alive, proc.kill
        _wait_for_checkpoint(run, started, alive)
        assert alive(), f"the run exited by itself before kill {i + 1} (a failed resume?)"
        _kill_mid_write(run, kill, alive, rng)
        if isinstance(proc, subprocess.Popen):
            assert proc.wait(30) == -signal.SIGKILL, proc.stderr.read().decode()
            proc.stderr.close()
        else:
            proc.join(30)
            assert proc.exitcode == -signal.SIGKILL
        kills += 1
        mid_write += any(p.name.endswith(".tmp") for p in run.iterdir())
        step = _check_after_kill(run, step)
    assert kills == FORK_KILLS + SUBPROCESS_KILLS
    assert mid_write >= 3, f"only {mid_write} kills landed inside a checkpoint write"
    assert step > 20

    # the final resume completes, cleans the dead writers' temporary files, and the whole run
    # has the losses of one uninterrupted run
    final = step + 15
    proc = ctx.Process(target=_child, args=(base + ["--max-steps", str(final), "--resume"],))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    records = rundir.read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, final + 1))

    ref = tmp_path / "ref"
    proc = ctx.Process(target=_child, args=(["train", "--data", str(corpus), "--out", str(ref), *ARGS,
                                              "--max-steps", str(final), "--checkpoint-every", "0"],))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert [r["train_bpc"] for r in records] == [r["train_bpc"] for r in rundir.read_metrics(ref)]
    a, b = rnnkit.load(run, "latest").state_dict(), rnnkit.load(ref, "latest").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    print(f"kill test: {kills} SIGKILLs ({SUBPROCESS_KILLS} of real subprocesses), {mid_write} inside a "
          f"checkpoint write, resumed to step {final}")


def test_ctrl_c_writes_a_checkpoint_exits_130_and_resume_continues(tmp_path):
    corpus = _corpus(tmp_path / "corpus.txt")
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "rnnkit", "train", "--data", str(corpus), "--out", str(run),
            *[a for a in ARGS if a != "--quiet"], "--checkpoint-every", "0", "--eval-every", "0",
            *BIG_BUDGET, "--quiet"]
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # wait for training to be under way
        if len(rundir.read_metrics(run)) >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in out
    assert out.startswith("interrupted: ") and len(out.splitlines()) == 1
    assert f"rnnkit train --out {run} --resume" in err
    step = _state_step(run)
    assert step >= 5
    assert [r["step"] for r in rundir.read_metrics(run)] == list(range(1, step + 1))
    rnnkit.load(run, "latest")

    res = subprocess.run([*argv[:-3], "--max-steps", str(step + 5), "--resume", "--quiet"], env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert [r["step"] for r in rundir.read_metrics(run)] == list(range(1, step + 6))
    assert json.loads((run / rundir.STATE_JSON).read_text())["step"] == step + 5
