"""Running one benchmark task with one cell: :func:`run_task`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .._config import option
from .base import Task, TaskDefaults, TaskModel
from .loop import EvalPoint, LoopConfig, LoopResult, train_loop


@dataclass
class TaskRunConfig:
    """One run of a task. ``None`` means the task's own setting: its defaults
    (``Task.defaults``), or with ``paper_settings=True`` its paper's (``Task.paper_settings``);
    a value given here overrides either.

    Budget: with neither ``max_steps`` nor ``max_time`` the run has the task's step budget;
    ``max_time`` alone is a wall-clock budget only; both: whichever ends first.
    ``clip_norm=0`` / ``clip_value=0`` turn the norm / element-wise clipping off.
    """

    task: str = "adding"
    cell: str = option("lstm", "recurrent cell")
    seq_len: int | None = option(None, "T, the time lag of the task")
    hidden_size: int | None = option(None, "hidden units")
    batch_size: int | None = option(None, "sequences per batch")
    lr: float | None = option(None, "learning rate")
    #: "adam", "rmsprop" or "sgd"
    optimizer: str | None = option(None, "adam, rmsprop or sgd")
    clip_norm: float | None = option(None, "gradient-norm clipping (0: none)")
    clip_value: float | None = option(None, "clip each gradient element to ±this (0: none)")
    max_steps: int | None = option(None, "step budget (see --list; with --table: per cell and task, instead of "
                                         "the time budget, so that the table does not depend on the machine's speed)")
    max_time: float | None = option(None, "wall-clock budget, e.g. 90s, 2m (alone: instead of the task's step "
                                          "budget; with --table: per cell and task, default 20s)",
                                    type="positive_duration")
    eval_every: int | None = option(None, "evaluate on the test set every N steps")
    test_size: int | None = option(None, "sequences in the fresh test set")
    seed: int = option(0, "random seed")
    #: the paper's hyper-parameters instead of rnnkit's defaults
    paper_settings: bool = option(False, "the paper's hyper-parameters (hidden size, optimizer, learning rate, "
                                         "batch, budget) instead of rnnkit's defaults; options given explicitly "
                                         "still override them")
    #: options of the cell's layer (``rnnkit.make_layer`` keywords), e.g. ``{"forget_bias": 1.0}``
    layer_options: dict | None = None

    def settings(self) -> TaskDefaults:
        """The task's settings this run starts from (its defaults or its paper's)."""
        return _task_class(self.task).settings(self.paper_settings)

    def resolved(self) -> TaskRunConfig:
        """This config with every ``None`` replaced by the task's setting (``max_time`` stays
        None unless given, ``max_steps`` when only ``max_time`` is given; no clipping is 0), so
        that ``resolved()`` of it is itself."""
        s = self.settings()
        steps = self.max_steps if self.max_steps is not None or self.max_time is not None else s.max_steps
        return replace(
            self, seq_len=_given(self.seq_len, s.seq_len),
            hidden_size=_given(self.hidden_size, s.hidden_for(self.cell)),
            batch_size=_given(self.batch_size, s.batch_size), lr=_given(self.lr, s.lr),
            optimizer=_given(self.optimizer, s.optimizer), clip_norm=_given(self.clip_norm, s.clip_norm) or 0.0,
            clip_value=_given(self.clip_value, s.clip_value) or 0.0, max_steps=steps,
            eval_every=_given(self.eval_every, s.eval_every), test_size=_given(self.test_size, s.test_size),
            layer_options=_given(self.layer_options, s.options_for(self.cell)))


def _given(value, default):
    return default if value is None else value


@dataclass
class TaskRunResult:
    #: the run's configuration with every setting resolved (:meth:`TaskRunConfig.resolved`)
    config: TaskRunConfig
    task: Task
    model: TaskModel | None
    loop: LoopResult | None
    #: why the run stopped without a result (a diverged loss), else None
    error: str | None = None

    @property
    def verdict(self) -> str:
        return self.error if self.loop is None else self.loop.final.verdict


def _task_class(name: str) -> type[Task]:
    from . import TASKS

    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}") from None


def make_task(name: str, seq_len: int | None = None) -> Task:
    return _task_class(name)(seq_len)


def run_task(config: TaskRunConfig, on_eval: Callable[[EvalPoint], None] | None = None) -> TaskRunResult:
    """Train a :class:`TaskModel` on fresh batches of the task and judge it on a fresh
    test set drawn from a separate random stream (seed + 1 000 003)."""
    config = config.resolved()
    task = make_task(config.task, config.seq_len)
    torch.manual_seed(config.seed)
    model = TaskModel(task, config.cell, config.hidden_size, **config.layer_options)
    train_gen = torch.Generator().manual_seed(config.seed)
    test = task.sample(config.test_size, torch.Generator().manual_seed(config.seed + 1_000_003))

    def train_step_loss(step: int):
        batch = task.sample(config.batch_size, train_gen)
        return task.loss(model(batch), batch)

    def evaluate():
        ev = task.evaluate(model(test), test)
        return ev.metrics, ev.solved, ev.verdict

    loop_config = LoopConfig(lr=config.lr, optimizer=config.optimizer, clip_norm=config.clip_norm or None,
                             clip_value=config.clip_value or None, max_steps=config.max_steps, max_time=config.max_time,
                             eval_every=config.eval_every)
    loop = train_loop(model, train_step_loss, evaluate, loop_config, on_eval)
    return TaskRunResult(config, task, model, loop)
