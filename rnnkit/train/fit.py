"""A small generic training loop: any model, any loss, batches from any iterable; and
:class:`FitConfig`, the settings of the ready models' training, which their applications run
on the one :class:`~rnnkit.train.Trainer` (:meth:`FitConfig.train_config`).

    for step in 1..max_steps (or until max_time):
        loss = loss_fn(model, batch);  loss.backward()
        clip ‖∇‖₂ to ``clip``;  optimizer.step()
        every ``eval_every`` steps: score = eval_fn(model), keep the best weights

Progress goes to the ``log`` callback (library code does not print).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._config import option
from ..engine import native, uses_native_loops
from ..errors import TrainingError
from .config import ON_NAN, TrainConfig


@dataclass
class FitConfig:
    """How to train (the model's own settings live in its config)."""

    lr: float = option(3e-3, "learning rate (Adam)")
    clip: float = option(1.0, "clip the gradient norm to this value (0 = off)")
    batch_size: int = option(32, "examples per mini-batch")
    max_steps: int = option(2000, "stop training after this many optimizer steps")
    max_time: float = option(0.0, "stop training after this long, e.g. 90s, 2m, 1h (0 = no limit)", type="duration")
    eval_every: int = option(100, "evaluate (and keep the best weights) every this many steps")
    weight_decay: float = option(0.0, "Adam weight decay")
    seed: int = option(0, "random seed")
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: only at each evaluation)")
    on_nan: str = option("stop", "NaN/Inf loss or gradient: stop, or rollback to the last checkpoint")

    def __post_init__(self) -> None:
        for name in ("lr", "batch_size", "max_steps", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("clip", "max_time", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be non-negative, got {self.checkpoint_every}")
        if self.on_nan not in ON_NAN:
            raise ValueError(f"on_nan must be one of {ON_NAN}, got {self.on_nan!r}")

    def train_config(self) -> TrainConfig:
        """The trainer's config of these settings: Adam (AdamW without weight decay is Adam;
        with it, the decay is decoupled), a constant learning rate without warm-up, clipping
        of the gradient norm, an evaluation and checkpoint every ``eval_every`` steps."""
        return TrainConfig(lr=self.lr, lr_schedule="constant", warmup_steps=0, weight_decay=self.weight_decay,
                           clip=self.clip, batch_size=self.batch_size, seq_len=1, max_steps=self.max_steps,
                           max_time=self.max_time, eval_every=self.eval_every, sample_every=0, seed=self.seed,
                           checkpoint_every=self.checkpoint_every, on_nan=self.on_nan)


@dataclass
class FitResult:
    """What happened: steps run, time taken, the training-loss history (one mean per
    ``eval_every`` steps), the evaluations ``(step, score)`` and the best score."""

    steps: int = 0
    seconds: float = 0.0
    train_loss: list[float] = field(default_factory=list)
    evaluations: list[tuple[int, float]] = field(default_factory=list)
    best_score: float | None = None
    best_step: int | None = None
    stopped_by: str = "max_steps"


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    train_batches: Iterable[Any],
    config: FitConfig | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    log: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train ``model`` in place and return a :class:`FitResult`.

    Args:
        loss_fn: ``loss_fn(model, batch)`` → scalar loss tensor (the model is in train mode).
        train_batches: an iterable of batches, iterated again whenever it runs out
            (a list, or an object whose ``__iter__`` reshuffles).
        config: a :class:`FitConfig` (defaults if None).
        optimizer: default Adam with ``config.lr`` and ``config.weight_decay``.
        eval_fn: ``eval_fn(model)`` → a score where **lower is better** (e.g. held-out
            loss or 1 - F1), called in eval mode under ``no_grad`` every
            ``config.eval_every`` steps and at the end; the weights with the best score
            are restored at the end.
        log: called with a dict ``{"step", "loss", "seconds"[, "score"]}`` every
            ``config.eval_every`` steps.

    Raises TrainingError on a NaN/Inf loss or gradient norm.
    """
    cfg = config or FitConfig()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    opt = optimizer or torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = FitResult()
    best_state = None
    if uses_native_loops(model):  # build them before the clock starts (a first run compiles)
        native.load()
    start = time.perf_counter()
    window: list[float] = []

    def evaluate(step: int) -> None:
        nonlocal best_state
        entry: dict[str, Any] = {"step": step, "seconds": time.perf_counter() - start}
        if window:
            entry["loss"] = sum(window) / len(window)
            result.train_loss.append(entry["loss"])
            window.clear()
        if eval_fn is not None:
            model.eval()
            with torch.no_grad():
                score = float(eval_fn(model))
            model.train()
            entry["score"] = score
            result.evaluations.append((step, score))
            if result.best_score is None or score < result.best_score:
                result.best_score, result.best_step = score, step
                best_state = copy.deepcopy(model.state_dict())
        if log is not None:
            log(entry)

    model.train()
    step = 0
    while step < cfg.max_steps:
        produced = False
        for batch in train_batches:
            produced = True
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss is {loss.item()} at step {step + 1}; try a lower lr or --clip")
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip else math.inf)
            if not torch.isfinite(norm):
                raise TrainingError(f"gradient norm is {norm.item()} at step {step + 1}; try a lower lr or --clip")
            opt.step()
            step += 1
            window.append(loss.item())
            if step % cfg.eval_every == 0:
                evaluate(step)
            if step >= cfg.max_steps:
                break
            if cfg.max_time and time.perf_counter() - start >= cfg.max_time:
                result.stopped_by = "max_time"
                break
        if not produced:
            raise ValueError("train_batches produced no batches")
        if result.stopped_by == "max_time":
            break
    if step % cfg.eval_every != 0 or (eval_fn is not None and not result.evaluations):
        evaluate(step)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.steps = step
    result.seconds = time.perf_counter() - start
    return result


class Shuffled:
    """Re-iterable mini-batches of a list of examples, reshuffled (seeded) each pass:
    ``collate(examples)`` builds one batch."""

    def __init__(self, examples: list, batch_size: int, collate: Callable[[list], Any], seed: int = 0):
        if not examples:
            raise ValueError("no training examples")
        self.examples, self.batch_size, self.collate = examples, batch_size, collate
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        order = torch.randperm(len(self.examples), generator=self.generator).tolist()
        for i in range(0, len(order), self.batch_size):
            yield self.collate([self.examples[j] for j in order[i : i + self.batch_size]])

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)
