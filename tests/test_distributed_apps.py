"""``rnnkit fit MODEL``, ``rnnkit task NAME`` and ``rnnkit seq2seq train`` under torchrun: 2
CPU processes (gloo) on localhost finish, rank 0 writes the run directory, every rank ends
with the same weights, and a fit model follows the single-process run with the same global
batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnkit.cli import main
from rnnkit.errors import CheckpointError
from rnnkit.tasks import run_task
from rnnkit.tasks.seq2seq_train import train_seq2seq
from rnnkit.train import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 150  # seconds per torchrun launch: a hang fails the test instead of the CI job


def torchrun(ranks_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "RNNKIT_THREADS": "2"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "ddp_ranks.py"), str(ranks_dir), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)


def _same_weights_on_both_ranks(ranks_dir: Path) -> dict:
    w0, w1 = load_file(ranks_dir / "rank0.safetensors"), load_file(ranks_dir / "rank1.safetensors")
    assert w0.keys() == w1.keys() and w0
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    return w0


def test_a_fit_model_under_torchrun_follows_the_single_process_run(tmp_path):
    # 37 rows: 4 held out, 33 trained on in batches of 8 -> the last batch of each epoch has 1
    # example: rank 0 has none of it (a zero loss), rank 1's loss weighs 2 (the weighting is
    # exercised); 10 steps cross an epoch boundary
    rows = [f"{i % 3},{(i * 7) % 5},{(i * 3) % 4},{(i * 5) % 3},{i % 2}" for i in range(37)]
    data = tmp_path / "rows.csv"
    data.write_text("\n".join(rows) + "\n")
    args = ["fit", "classifier", "--data", str(data), "--format", "numeric", "--no-header", "--hidden-size", "8",
            "--dropout", "0", "--batch-size", "8", "--max-steps", "10", "--eval-every", "5", "--quiet"]
    single = tmp_path / "single"
    assert main([*args, "--out", str(single)]) == 0
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    proc = torchrun(ranks, *args, "--out", str(tmp_path / "ddp"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("saved ") == 1  # only rank 0 reports
    ddp = tmp_path / "ddp"
    assert json.loads((ddp / "config.json").read_text())["fit"]["batch_size"] == 8  # the global batch
    assert not list(ranks.glob("*.json"))  # rank 1 wrote no run anywhere but its weights
    ms, md = read_metrics(single), read_metrics(ddp)
    assert [r["step"] for r in md] == [r["step"] for r in ms] == list(range(1, 11))
    for rs, rd in zip(ms, md):
        assert rd["train_loss"] == pytest.approx(rs["train_loss"], rel=1e-5), rs["step"]
        assert ("val_score" in rd) == ("val_score" in rs) == (rs["step"] % 5 == 0)
        if "val_score" in rs:
            assert rd["val_score"] == pytest.approx(rs["val_score"], rel=1e-5)
    trained = _same_weights_on_both_ranks(ranks)
    ws, wd = load_file(single / "model.safetensors"), load_file(ddp / "model.safetensors")
    for k in ws:
        torch.testing.assert_close(wd[k], ws[k], rtol=1e-4, atol=1e-5, msg=k)
        assert torch.equal(wd[k], trained[k])  # rank 0's run holds the weights the ranks ended with


def test_a_task_under_torchrun(tmp_path):
    ranks, out = tmp_path / "ranks", tmp_path / "run"
    ranks.mkdir()
    proc = torchrun(ranks, "task", "adding", "--seq-len", "8", "--hidden-size", "8", "--batch-size", "8",
                    "--max-steps", "6", "--eval-every", "3", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("after 6 steps") == 1  # only rank 0 reports
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("step ")] == ["3", "6"]
    metrics = read_metrics(out)
    assert [r["step"] for r in metrics] == list(range(1, 7))
    assert [r["step"] for r in metrics if "test_verdict" in r] == [3, 6]
    assert json.loads((out / "config.json").read_text())["task"]["batch_size"] == 8  # the global batch
    _same_weights_on_both_ranks(ranks)
    # each rank drew from its own stream (seed + rank): both positions are in the checkpoint
    generators = load_file(out / "trainer_state.safetensors")["task.generators"]
    assert generators.shape[0] == 2 and not torch.equal(generators[0], generators[1])
    # a resume needs the same number of processes (the streams are per rank)
    with pytest.raises(CheckpointError, match="torchrun --nproc_per_node 2"):
        run_task(None, out=out, resume=True)


def test_seq2seq_under_torchrun(tmp_path):
    ranks, out = tmp_path / "ranks", tmp_path / "run"
    ranks.mkdir()
    proc = torchrun(ranks, "seq2seq", "train", "--task", "reverse", "--hidden-size", "16", "--batch-size", "8",
                    "--max-steps", "4", "--eval-every", "2", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("after 4 steps") == 1  # only rank 0 reports
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("step ")] == ["2", "4"]
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]
    assert json.loads((out / "config.json").read_text())["seq2seq"]["batch_size"] == 8  # the global batch
    _same_weights_on_both_ranks(ranks)
    rngs = load_file(out / "trainer_state.safetensors")["task.rngs"]  # each rank's pair stream (seed + rank)
    assert rngs.shape[0] == 2 and not torch.equal(rngs[0], rngs[1])
    with pytest.raises(CheckpointError, match="torchrun --nproc_per_node 2"):
        train_seq2seq(None, out=out, resume=True)


@pytest.mark.parametrize("examples", [10, 11])
@pytest.mark.parametrize("world", [2, 3])
def test_example_task_ranks_take_contiguous_shares_of_each_batch(world, examples, monkeypatch):
    from rnnkit.train import distributed
    from rnnkit.train.examples import ExampleTask

    task = ExampleTask(list(range(examples)), 4, lambda chosen: list(chosen), lambda m, b: None, seed=3)
    full = list(task.batches(0, epoch=1))  # 3 batches: 4, 4 and the rest
    assert [(n, total) for n, total, _ in full] == [(4, 4), (4, 4), (examples - 8, examples - 8)]
    shards = []
    for rank in range(world):
        monkeypatch.setattr(distributed, "_current", distributed.DistEnv(rank, world, rank, world))
        shards.append(list(task.batches(0, epoch=1)))
    for b, (n, total, data) in enumerate(full):
        parts = [shards[r][b] for r in range(world)]
        assert all(p[1] == total for p in parts)  # every rank knows the whole batch's size
        assert sum(p[0] for p in parts) == n
        assert [x for p in parts for x in (p[2] or [])] == data  # in rank order: the same global batch
    if world == 3:  # 3 examples over 3 ranks: one each; 4 over 3: 1, 1, 2
        assert [shards[r][0][0] for r in range(3)] == [1, 1, 2]
    if world == 3 and examples == 10:  # 2 examples over 3 ranks: rank 0 has none of the last batch
        assert shards[0][2] == (0, 2, None)
