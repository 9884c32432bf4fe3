"""Running one benchmark task with one cell: :func:`run_task`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .base import Task, TaskModel
from .loop import EvalPoint, LoopConfig, LoopResult, train_loop


@dataclass
class TaskRunConfig:
    """One run of a task. ``None`` means the task's own default (``Task.defaults``)."""

    task: str = "adding"
    cell: str = "lstm"
    seq_len: int | None = None
    hidden_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    clip_norm: float | None = 1.0
    max_steps: int | None = None
    max_time: float | None = 120.0
    eval_every: int | None = None
    test_size: int | None = None
    seed: int = 0


@dataclass
class TaskRunResult:
    config: TaskRunConfig
    task: Task
    model: TaskModel | None
    loop: LoopResult | None
    #: why the run stopped without a result (a diverged loss), else None
    error: str | None = None

    @property
    def verdict(self) -> str:
        return self.error if self.loop is None else self.loop.final.verdict


def make_task(name: str, seq_len: int | None = None) -> Task:
    from . import TASKS

    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}") from None
    return cls(seq_len)


def run_task(config: TaskRunConfig, on_eval: Callable[[EvalPoint], None] | None = None) -> TaskRunResult:
    """Train a :class:`TaskModel` on fresh batches of the task and judge it on a fresh
    test set drawn from a separate random stream (seed + 1 000 003)."""
    task = make_task(config.task, config.seq_len)
    d = task.defaults
    hidden = config.hidden_size or d.hidden_size
    batch_size = config.batch_size or d.batch_size
    test_size = config.test_size or d.test_size
    torch.manual_seed(config.seed)
    model = TaskModel(task, config.cell, hidden)
    train_gen = torch.Generator().manual_seed(config.seed)
    test = task.sample(test_size, torch.Generator().manual_seed(config.seed + 1_000_003))

    def train_step_loss(step: int):
        batch = task.sample(batch_size, train_gen)
        return task.loss(model(batch), batch)

    def evaluate():
        ev = task.evaluate(model(test), test)
        return ev.metrics, ev.solved, ev.verdict

    loop_config = LoopConfig(lr=config.lr or d.lr, clip_norm=config.clip_norm, max_steps=config.max_steps,
                             max_time=config.max_time, eval_every=config.eval_every or d.eval_every)
    loop = train_loop(model, train_step_loss, evaluate, loop_config, on_eval)
    return TaskRunResult(config, task, model, loop)
