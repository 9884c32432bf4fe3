"""A small training loop for the benchmark tasks and the seq2seq demos: Adam (or RMSProp or
plain SGD, for the papers' settings), gradient clipping, a budget of steps and/or seconds,
periodic evaluation, early stop when solved.

(:func:`rnnkit.tasks.run_task` trains on the one :class:`~rnnkit.train.Trainer`, with its
run directory and exact resume; this loop remains for code that calls it with its own
batches and evaluation.)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import TrainingError
from ..train import rundir
from ..train.config import TrainConfig
from ..train.trainer import Trainer

log = logging.getLogger(__name__)

#: the optimizers :class:`LoopConfig` accepts
OPTIMIZERS = ("adam", "rmsprop", "sgd")


@dataclass
class LoopConfig:
    """Budget and optimiser settings of :func:`train_loop`."""

    lr: float = 1e-3
    #: "adam" (torch defaults), "rmsprop" (decay 0.9, as Arjovsky et al. 2016 train) or "sgd"
    #: (plain gradient descent, no momentum, as Hochreiter & Schmidhuber 1997 train online)
    optimizer: str = "adam"
    #: clip the global gradient norm to this value (None: no clipping)
    clip_norm: float | None = 1.0
    #: clip every gradient element to [-clip_value, clip_value] (None: no clipping); applied
    #: before the norm clipping
    clip_value: float | None = None
    #: stop after this many optimiser steps (None: no step limit)
    max_steps: int | None = None
    #: stop after this many seconds of wall-clock time (None: no time limit)
    max_time: float | None = 120.0
    #: evaluate every this many steps (and once at the end)
    eval_every: int = 100
    #: stop as soon as an evaluation says solved
    stop_when_solved: bool = True

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive or None, got {self.clip_norm}")
        if self.clip_value is not None and self.clip_value <= 0:
            raise ValueError(f"clip_value must be positive or None, got {self.clip_value}")
        if self.max_steps is None and self.max_time is None:
            raise ValueError("give a budget: max_steps or max_time (or both)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.max_time is not None and self.max_time <= 0:
            raise ValueError(f"max_time must be positive seconds, got {self.max_time}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every}")


@dataclass
class EvalPoint:
    step: int
    seconds: float
    train_loss: float
    metrics: dict[str, float]
    solved: bool
    verdict: str


@dataclass
class LoopResult:
    steps: int
    seconds: float
    solved: bool
    #: every evaluation, in order; the last one is the final result
    history: list[EvalPoint] = field(default_factory=list)
    #: the run was stopped by Ctrl-C (it ends with a checkpoint; ``rnnkit task --resume`` goes on)
    interrupted: bool = False

    @property
    def final(self) -> EvalPoint:
        return self.history[-1]


def make_optimizer(parameters, config: LoopConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names, with learning rate ``config.lr``."""
    if config.optimizer == "rmsprop":
        # running average of g² with decay 0.9 (Arjovsky et al. 2016; torch's default is 0.99)
        return torch.optim.RMSprop(parameters, lr=config.lr, alpha=0.9)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr)
    return torch.optim.Adam(parameters, lr=config.lr)


def train_loop(
    model: nn.Module,
    train_step_loss: Callable[[int], Tensor],
    evaluate: Callable[[], tuple[dict[str, float], bool, str]],
    config: LoopConfig,
    on_eval: Callable[[EvalPoint], None] | None = None,
) -> LoopResult:
    """Train ``model`` with the configured optimizer until the budget is spent or
    ``evaluate`` says solved.

    ``train_step_loss(step)`` builds a fresh batch and returns its loss (model in train
    mode); ``evaluate()`` returns (metrics, solved, verdict) on the test set (it is called
    with the model in eval mode and gradients off).
    """
    opt = make_optimizer(model.parameters(), config)
    start = time.perf_counter()
    result = LoopResult(0, 0.0, False)
    recent: list[float] = []
    step = 0

    def run_eval() -> EvalPoint:
        model.eval()
        with torch.no_grad():
            metrics, solved, text = evaluate()
        model.train()
        train_loss = sum(recent) / len(recent) if recent else math.nan
        recent.clear()
        point = EvalPoint(step, time.perf_counter() - start, train_loss, metrics, solved, text)
        result.history.append(point)
        log.debug("step %d (%.1fs): train loss %.4g; %s", step, point.seconds, train_loss, text)
        if on_eval is not None:
            on_eval(point)
        return point

    model.train()
    while True:
        if config.max_steps is not None and step >= config.max_steps:
            break
        if config.max_time is not None and time.perf_counter() - start >= config.max_time:
            break
        loss = train_step_loss(step)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss is {float(loss.detach())} at step {step}; lower the learning rate (--lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_value is not None:
            nn.utils.clip_grad_value_(model.parameters(), config.clip_value)
        if config.clip_norm is not None:
            norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            if not torch.isfinite(norm):
                raise TrainingError(f"gradient norm is {float(norm)} at step {step}; lower the learning rate")
        opt.step()
        step += 1
        recent.append(float(loss.detach()))
        if step % config.eval_every == 0:
            point = run_eval()
            if point.solved and config.stop_when_solved:
                break
    if not result.history or result.history[-1].step != step:
        run_eval()
    result.steps = step
    result.seconds = time.perf_counter() - start
    result.solved = result.final.solved
    return result


# -- on the one Trainer ------------------------------------------------------------------------------
def eval_point(record: dict, window: list[float]) -> EvalPoint:
    """The :class:`EvalPoint` of an evaluation's metrics record (the figures ``test_<name>``,
    ``test_solved``, ``test_verdict``); ``window``: the training losses since the previous
    evaluation, emptied."""
    metrics = {k[len("test_"):]: v for k, v in record.items()
               if k.startswith("test_") and k not in ("test_solved", "test_verdict")}
    point = EvalPoint(int(record["step"]), float(record.get("time", 0.0)),
                      sum(window) / len(window) if window else math.nan, metrics, bool(record["test_solved"]),
                      str(record["test_verdict"]))
    window.clear()
    return point


def history(run_dir: Path) -> list[EvalPoint]:
    """Every evaluation of a run (also those before a resume), from its metrics.jsonl."""
    points, window = [], []
    for record in rundir.read_metrics(run_dir):
        if isinstance(record.get("train_loss"), (int, float)):
            window.append(record["train_loss"])
        if "test_solved" in record:
            points.append(eval_point(record, window))
    return points


def run_trainer(model: nn.Module, stream, config: TrainConfig, run_dir: Path, resume: bool,
                on_eval: Callable[[EvalPoint], None] | None, callback: Callable[[dict], None] | None) -> LoopResult:
    """Train ``model`` on ``stream`` (a trainer task whose evaluation figures are
    ``val_score`` and ``test_<name>``, ``test_solved``, ``test_verdict``) with the one
    :class:`~rnnkit.train.Trainer` in ``run_dir`` (restored first with ``resume``), and
    return what :func:`train_loop` returns: ``on_eval`` receives each evaluation as it comes."""
    window: list[float] = []

    def on_event(event: dict) -> None:
        if callback is not None:
            callback(event)
        if event["kind"] == "step":
            window.append(event["train_loss"])
            if "test_solved" in event and on_eval is not None:
                on_eval(eval_point(event, window))

    trainer = Trainer(model, stream, config, run_dir, on_event)
    if resume:
        trainer.restore()
    result = trainer.run()
    points = history(run_dir)
    if (not points or points[-1].step != result.steps) and result.metrics is not None:
        # the final evaluation of a run resumed with its budget spent (no step, no record)
        points.append(eval_point({"step": result.steps, "time": result.elapsed, **result.metrics}, window))
        if on_eval is not None:
            on_eval(points[-1])
    return LoopResult(result.steps, result.elapsed, bool(points and points[-1].solved), points,
                      interrupted=result.interrupted)
