"""Data-parallel training under torchrun: 2 CPU processes (gloo) on localhost follow the
single-process trajectory with the same global batch, resume exactly, and fail cleanly."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnkit.models.charlm import CharLMConfig
from rnnkit.models.charlm_app import train
from rnnkit.train import LanguageModelTask, TrainConfig, distributed, read_metrics

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 150  # seconds per torchrun launch: a hang fails the test instead of the CI job
ARGS = ["--cell", "lstm", "--num-layers", "2", "--hidden-size", "24", "--embed-size", "8",
        "--batch-size", "4", "--seq-len", "12", "--max-time", "0", "--eval-every", "4",
        "--sample-every", "0", "--lr-schedule", "constant", "--quiet"]


def _model() -> CharLMConfig:
    return CharLMConfig(cell="lstm", num_layers=2, hidden_size=24, embed_size=8)


def _config(steps: int) -> TrainConfig:
    return TrainConfig(batch_size=4, seq_len=12, max_steps=steps, max_time=0, eval_every=4, sample_every=0,
                       lr_schedule="constant")  # (so that a shorter first session is a prefix)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(1)
    words = ["def", "return", "self", "class", "import", "for", "in", "if", "else", "None"]
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    # short enough that 10 steps cross an epoch boundary (the carry is reset there)
    path.write_text(" ".join(rng.choice(words) for _ in range(60)) + "\n")
    return path


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory) -> Path:
    """The reference: one process, batch 4, 10 steps."""
    out = tmp_path_factory.mktemp("single") / "run"
    train([corpus], out, _model(), _config(10))
    return out


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1",
           # two threads per rank oversubscribe a 2-core machine: the conditions under which
           # gloo's worker threads lagged into interpreter shutdown and aborted a finished rank
           "RNNKIT_THREADS": "2"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "rnnkit", "train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)


def _assert_same_run(a: Path, b: Path) -> None:
    ma, mb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == list(range(1, 11))
    for ra, rb in zip(ma, mb):
        assert rb["train_bpc"] == pytest.approx(ra["train_bpc"], rel=1e-5), ra["step"]
        assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-12)
        if ra["step"] % 4 == 0:
            assert "val_bpc" in ra and "val_bpc" in rb
        if "val_bpc" in ra and "val_bpc" in rb:
            assert rb["val_bpc"] == pytest.approx(ra["val_bpc"], rel=1e-5)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5, msg=k)
    # the carried state of all 4 streams is gathered into the checkpoint in stream order
    sa, sb = load_file(a / "trainer_state.safetensors"), load_file(b / "trainer_state.safetensors")
    for k in ("carry.0", "carry.1"):
        assert sb[k].shape == sa[k].shape == (2, 4, 24)
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-4, atol=1e-5)


def test_two_processes_follow_the_single_process_trajectory(corpus, single, tmp_path):
    out = tmp_path / "ddp"
    proc = torchrun("--data", str(corpus), "--out", str(out), "--max-steps", "10", *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: 10 steps") == 1  # only rank 0 reports
    _assert_same_run(single, out)
    # the stored batch size is the global one
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 4


def test_resume_under_torchrun_and_with_one_process_is_exact(corpus, single, tmp_path):
    out = tmp_path / "ddp"
    first = torchrun("--data", str(corpus), "--out", str(out), "--max-steps", "6", *ARGS)
    assert first.returncode == 0, first.stderr[-3000:]
    assert read_metrics(out)[-1]["step"] == 6
    alone = tmp_path / "alone"  # the same checkpoint resumed by one process, without torchrun
    shutil.copytree(out, alone)
    second = torchrun("--out", str(out), "--resume", "--max-steps", "10", "--quiet")
    assert second.returncode == 0, second.stderr[-3000:]
    _assert_same_run(single, out)
    train(out=alone, config=_config(10), resume=True)
    _assert_same_run(single, alone)


def test_an_error_on_rank_0_stops_every_rank(corpus, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "something").write_text("x")
    proc = torchrun("--data", str(corpus), "--out", str(out), "--max-steps", "2", *ARGS)
    assert proc.returncode != 0
    assert "already exists and is not empty" in proc.stderr


def test_env_parsing_and_shards():
    assert distributed.DistEnv.from_env({}) == distributed.DistEnv()
    env = distributed.DistEnv.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                        "LOCAL_WORLD_SIZE": "2"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 4, 1, 2)
    assert env.enabled and not env.is_main
    assert env.shard(8) == slice(6, 8)
    shards = [distributed.DistEnv(r, 3, r, 3).shard(7) for r in range(3)]
    assert [(s.start, s.stop) for s in shards] == [(0, 2), (2, 4), (4, 7)]
    with pytest.raises(ValueError, match="inconsistent torchrun environment"):
        distributed.DistEnv.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="malformed"):
        distributed.DistEnv.from_env({"WORLD_SIZE": "two"})


def test_batch_size_must_divide_by_the_world_size(monkeypatch):
    monkeypatch.setattr(distributed, "_current", distributed.DistEnv(0, 2, 0, 2))
    ids = torch.arange(500) % 7
    with pytest.raises(ValueError, match="batch_size 5 is not divisible by the 2 processes"):
        LanguageModelTask(ids, None, TrainConfig(batch_size=5, max_steps=1))
    task = LanguageModelTask(ids, None, TrainConfig(batch_size=4, seq_len=10, max_steps=1))
    x, _ = next(task.batches(0))
    assert x.shape == (10, 2)
    monkeypatch.setattr(distributed, "_current", distributed.DistEnv(1, 2, 1, 2))
    x1, _ = next(task.batches(0))
    monkeypatch.setattr(distributed, "_current", distributed.DistEnv())
    full_x, _ = next(task.batches(0))
    assert torch.equal(torch.cat([x, x1], 1), full_x)  # rank r has streams [2r, 2r+2) of the same layout
