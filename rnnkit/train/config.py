"""Training configuration (one dataclass; the CLI reads its defaults from here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .._config import option

SCHEDULES = ("constant", "linear", "cosine")
ON_NAN = ("stop", "rollback")
PRECISIONS = ("fp32", "bf16", "fp64")
CLOCKS = ("wall", "cpu")


@dataclass
class TrainConfig:
    """How to train: optimiser (AdamW), clipping, truncated BPTT shape, budget, schedule.

    The budget is ``max_steps`` and/or ``max_time`` seconds (0 = no limit; at least one must
    be set); training stops at whichever comes first. The learning rate decays over the
    budget: with progress p ∈ [0, 1] (the larger of step/max_steps and time/max_time) and
    r = ``min_lr_ratio``,

        cosine:  lr(p) = lr · (r + (1 − r) · ½(1 + cos πp))
        linear:  lr(p) = lr · (1 − (1 − r) · p)

    after a linear warm-up over ``warmup_steps``. A time budget makes the schedule depend on
    the machine's speed, so only step budgets are reproducible run to run.

    ``clock`` says what ``max_time`` counts: ``"wall"`` seconds, or ``"cpu"`` — the CPU seconds
    of the training process (all its threads; ``time.process_time``). On one thread
    (``OMP_NUM_THREADS=1``) a CPU budget is the wall time the run would take on an idle core,
    whatever else the machine runs: comparisons "at equal time" stay fair on a shared machine.

    A NaN/Inf loss or gradient stops training with a TrainingError naming the step and the
    parameters whose gradient is not finite (``on_nan="stop"``), or (``"rollback"``) restores
    the last checkpoint's weights, optimizer and position, multiplies the learning rate by
    ``nan_lr_factor`` and goes on, at most ``nan_max_retries`` times over the run.
    """

    lr: float = option(5e-3, "peak learning rate (AdamW)")
    lr_schedule: str = option("cosine", "constant, linear or cosine decay over the budget")
    min_lr_ratio: float = option(0.05, "final learning rate as a fraction of --lr")
    warmup_steps: int = option(20, "linear warm-up steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    clip: float = option(5.0, "max global gradient norm (0: off)")
    clip_value: float = option(0.0, "max |gradient| per element (0: off)")
    batch_size: int = option(32, "parallel streams B")
    seq_len: int = option(48, "truncated-BPTT length T")
    max_steps: int = option(0, "stop after this many steps")
    max_time: float = option(300.0, "stop after this long: 90s, 5m, 1h or seconds (0: no limit)", type="duration")
    val_fraction: float = option(0.01, "held-out tail of the corpus for validation")
    eval_every: int = option(250, "validate and checkpoint every N steps")
    sample_every: int = option(200, "print a sample every N steps (0: never)")
    sample_length: int = option(200, "characters per progress sample")
    seed: int = option(0, "random seed")
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: only at --eval-every)")
    on_nan: str = option("stop", "NaN/Inf loss or gradient: stop, or rollback to the last checkpoint")
    nan_lr_factor: float = option(0.5, "each rollback multiplies the learning rate by this")
    nan_max_retries: int = option(3, "rollbacks allowed before training stops")
    precision: str = option("fp32", "fp32, bf16 (autocast forward pass) or fp64")
    clock: str = option("wall", "what --max-time counts: wall seconds, or cpu seconds of this process "
                                "(one thread: the time on an idle core, even on a busy machine)")

    def __post_init__(self) -> None:
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("batch_size", "seq_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("max_steps", "max_time", "clip", "clip_value", "weight_decay", "warmup_steps",
                     "eval_every", "sample_every", "sample_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")
        if self.on_nan not in ON_NAN:
            raise ValueError(f"on_nan must be one of {ON_NAN}, got {self.on_nan!r}")
        if not 0.0 < self.nan_lr_factor <= 1.0:
            raise ValueError(f"nan_lr_factor must be in (0, 1], got {self.nan_lr_factor}")
        if self.nan_max_retries < 0 or self.checkpoint_every < 0:
            raise ValueError(f"nan_max_retries and checkpoint_every must be non-negative, got "
                             f"{self.nan_max_retries} and {self.checkpoint_every}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_steps == 0 and self.max_time == 0:
            raise ValueError("give a budget: max_steps or max_time (both are 0)")

    def progress(self, step: int, elapsed: float) -> float:
        """Fraction of the budget used, in [0, 1]."""
        p = 0.0
        if self.max_steps:
            p = max(p, step / self.max_steps)
        if self.max_time:
            p = max(p, elapsed / self.max_time)
        return min(p, 1.0)

    def lr_at(self, step: int, elapsed: float) -> float:
        """The learning rate for the next step (see the class docstring)."""
        r = self.min_lr_ratio
        p = self.progress(step, elapsed)
        if self.lr_schedule == "cosine":
            factor = r + (1 - r) * 0.5 * (1 + math.cos(math.pi * p))
        elif self.lr_schedule == "linear":
            factor = 1 - (1 - r) * p
        else:
            factor = 1.0
        if self.warmup_steps and step < self.warmup_steps:
            factor *= (step + 1) / self.warmup_steps
        return self.lr * factor

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**d)
