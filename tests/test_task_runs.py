"""`rnnkit task` trains on the one Trainer: the same numbers as the task loop it replaced, exact
resume (the synthetic stream's generator state is in the checkpoint), stop when solved,
Ctrl-C checkpoints, NaN handling, metrics.jsonl and `rnnkit info` / `report` / `rnnkit.load`
on its run directory."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.errors import TrainingError
from rnnkit.tasks import LoopConfig, TaskModel, TaskRunConfig, run_task, train_loop
from rnnkit.tasks.adding import AddingProblem
from rnnkit.tasks.run import make_task
from rnnkit.train import rundir

from .runs import ctrl_c_after_three_steps, interrupt_at, weights

ROOT = Path(__file__).resolve().parent.parent


def _config(name: str, **kw) -> TaskRunConfig:
    small = dict(seq_len=None if name == "reber" else 12, hidden_size=6, batch_size=8, test_size=16,
                 max_steps=14, eval_every=5)
    return TaskRunConfig(task=name, **{**small, **kw})


def _old_run_task(config: TaskRunConfig):
    """run_task as it was before the Trainer: the task loop with the same seeds."""
    config = config.resolved()
    task = make_task(config.task, config.seq_len)
    torch.manual_seed(config.seed)
    model = TaskModel(task, config.cell, config.hidden_size, **config.layer_options)
    gen = torch.Generator().manual_seed(config.seed)
    test = task.sample(config.test_size, torch.Generator().manual_seed(config.seed + 1_000_003))

    def step_loss(step):
        batch = task.sample(config.batch_size, gen)
        return task.loss(model(batch), batch)

    def evaluate():
        ev = task.evaluate(model(test), test)
        return ev.metrics, ev.solved, ev.verdict

    loop = train_loop(model, step_loss, evaluate, LoopConfig(
        lr=config.lr, optimizer=config.optimizer, clip_norm=config.clip_norm or None,
        clip_value=config.clip_value or None, max_steps=config.max_steps, max_time=None, eval_every=config.eval_every))
    return model, loop


@pytest.mark.parametrize("name,options", [
    ("adding", {}), ("temporal-order", {"cell": "gru"}), ("reber", {}),
    ("copy", {"optimizer": "rmsprop", "clip_norm": 0.0}),
    ("adding", {"optimizer": "sgd", "lr": 0.5, "clip_norm": 0.0, "clip_value": 0.01}),
])
def test_the_trainer_gives_the_numbers_of_the_old_task_loop(name, options):
    """Same seed → bit-identical weights, training losses and test figures as train_loop."""
    config = _config(name, **options)
    old_model, old = _old_run_task(config)
    new = run_task(config)
    assert new.loop.steps == old.steps == 14 and not new.loop.interrupted
    assert [p.step for p in new.loop.history] == [p.step for p in old.history] == [5, 10, 14]
    assert [p.train_loss for p in new.loop.history] == pytest.approx([p.train_loss for p in old.history], rel=1e-12)
    assert [p.metrics for p in new.loop.history] == [p.metrics for p in old.history]
    assert [p.verdict for p in new.loop.history] == [p.verdict for p in old.history]
    a, b = old_model.state_dict(), new.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_run_stops_at_the_first_evaluation_that_says_solved(monkeypatch):
    monkeypatch.setattr(AddingProblem, "threshold", 1e9)  # every evaluation says solved
    r = run_task(_config("adding", max_steps=40))
    assert r.loop.solved and r.loop.steps == 5 and [p.step for p in r.loop.history] == [5]
    r = run_task(_config("adding", max_steps=12), stop_when_solved=False)
    assert r.loop.solved and r.loop.steps == 12 and [p.step for p in r.loop.history] == [5, 10, 12]


@pytest.mark.parametrize("name", ["adding", "temporal-order", "reber"])
def test_resume_after_an_interrupt_is_bit_identical(name, tmp_path):
    """Interrupted at step 7 and resumed to step 14: the same batches (the generator's state
    is restored), losses, test figures and weights as one uninterrupted run."""
    full = run_task(_config(name), out=tmp_path / "full")
    part = run_task(_config(name), out=tmp_path / "part", callback=interrupt_at(7))
    assert part.loop.interrupted and part.loop.steps == 7
    assert json.loads((tmp_path / "part" / rundir.STATE_JSON).read_text())["step"] == 7
    resumed = run_task(None, out=tmp_path / "part", resume=True)
    assert resumed.loop.steps == 14 and not resumed.loop.interrupted
    a, b = rundir.read_metrics(tmp_path / "full"), rundir.read_metrics(tmp_path / "part")
    assert [r["step"] for r in b] == list(range(1, 15))
    for key in ("train_loss", "val_score", "test_verdict"):
        assert [r.get(key) for r in a] == [r.get(key) for r in b]
    for file in (rundir.LATEST, rundir.BEST):
        wa, wb = weights(tmp_path / "full" / file), weights(tmp_path / "part" / file)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [p.metrics for p in resumed.loop.history] == [p.metrics for p in full.loop.history]
    assert resumed.verdict == full.verdict


def test_resume_takes_a_new_budget_only_and_checks_the_run(tmp_path):
    run_task(_config("adding", max_steps=6), out=tmp_path / "run")
    r = run_task(TaskRunConfig(task="adding", max_steps=9, hidden_size=99), out=tmp_path / "run", resume=True)
    assert r.loop.steps == 9 and r.config.hidden_size == 6  # the run's model, the new budget
    with pytest.raises(ValueError, match="already holds a saved model"):
        run_task(_config("adding"), out=tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / rundir.CONFIG).read_text())
    cfg["task"]["batch_size"] = "eight"
    (tmp_path / "run" / rundir.CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(rnnkit.errors.CheckpointError, match="batch_size") as e:
        run_task(None, out=tmp_path / "run", resume=True)
    assert "\n" not in str(e.value)


def test_without_a_directory_nothing_is_left(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    r = run_task(_config("adding", max_steps=3))
    assert r.loop.steps == 3 and list(tmp_path.iterdir()) == []


def _nan_at(monkeypatch, call: int) -> list[int]:
    """Make AddingProblem.loss return NaN at its ``call``-th training call (once)."""
    calls = []
    real = AddingProblem.loss

    def loss(self, y, batch):
        value = real(self, y, batch)
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == call:
                return value * float("nan")
        return value

    monkeypatch.setattr(AddingProblem, "loss", loss)
    return calls


def test_a_nan_loss_stops_or_rolls_back(monkeypatch, tmp_path):
    _nan_at(monkeypatch, 8)
    with pytest.raises(TrainingError, match="the loss is nan at step 8"):
        run_task(_config("adding"))
    calls = _nan_at(monkeypatch, 8)
    events = []
    r = run_task(_config("adding", on_nan="rollback"), out=tmp_path / "run", callback=events.append)
    rollbacks = [e for e in events if e["kind"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["step"] == 5  # back to the checkpoint of step 5
    assert r.loop.steps == 14 and len(calls) == 14 + 3  # steps 6-8 ran twice
    assert [m["step"] for m in rundir.read_metrics(tmp_path / "run")] == list(range(1, 15))
    lrs = [m["lr"] for m in rundir.read_metrics(tmp_path / "run")]
    assert lrs[:5] == [1e-2] * 5 and lrs[5:] == [5e-3] * 9  # the learning rate halved after the rollback


def test_info_report_and_load_read_a_task_run(tmp_path, capsys):
    r = run_task(_config("temporal-order"), out=tmp_path / "run")
    model = rnnkit.load(tmp_path / "run")
    best = weights(tmp_path / "run" / rundir.BEST)
    assert type(model) is TaskModel and all(torch.equal(model.state_dict()[k], best[k]) for k in best)
    assert main(["info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "model: task " in out and "steps: 14 " in out and '"cell": "lstm"' in out
    vals = [m["val_score"] for m in rundir.read_metrics(tmp_path / "run") if "val_score" in m]
    assert len(vals) == 3 and f"best val score: {min(vals):.4f}" in out
    assert r.loop.final.metrics["cross_entropy"] == vals[-1]  # the val score is the test loss
    assert main(["report", str(tmp_path / "run")]) == 0
    page = html.unescape((tmp_path / "run" / "report.html").read_text(encoding="utf-8"))
    assert "Training curves" in page and "data:image/png" in page and '"model_type": "task"' in page
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--data", __file__]) == 2  # one line, not a crash in the char LM's code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds a benchmark-task model (rnnkit task --out)" in err


def test_the_cli_resume_options_are_checked(tmp_path, capsys):
    assert main(["task", "adding", "--resume"]) == 2
    assert "--resume needs --out DIR" in capsys.readouterr().err
    assert main(["task", "adding", "--seq-len", "8", "--hidden-size", "4", "--batch-size", "4", "--test-size",
                 "8", "--max-steps", "4", "--eval-every", "2", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["task", "--out", str(tmp_path / "run"), "--resume", "--hidden-size", "8"]) == 2
    assert "only budget options, not --hidden-size" in capsys.readouterr().err
    assert main(["task", "copy", "--out", str(tmp_path / "run"), "--resume"]) == 2
    assert "another task" in capsys.readouterr().err
    assert main(["task", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "6"]) == 0
    assert "after 6 steps" in capsys.readouterr().out


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_rnnkit_task_leaves_a_loadable_checkpoint_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "rnnkit", "task", "adding", "--seq-len", "10", "--hidden-size", "6",
            "--batch-size", "4", "--test-size", "8", "--eval-every", "100000", "--out", str(run),
            "--max-steps", "1000000"]
    step, env = ctrl_c_after_three_steps(argv, run)
    assert type(rnnkit.load(run, "latest")) is TaskModel
    res = subprocess.run([sys.executable, "-m", "rnnkit", "task", "--out", str(run), "--resume", "--max-steps",
                          str(step + 2)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"after {step + 2} steps" in res.stdout
    assert [r["step"] for r in rundir.read_metrics(run)] == list(range(1, step + 3))
