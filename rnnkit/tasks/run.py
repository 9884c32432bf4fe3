"""Running one benchmark task with one cell: :func:`run_task`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from .._config import option
from .._version import __version__
from ..errors import CheckpointError
from ..train import distributed, rundir
from ..train.config import ON_NAN, TrainConfig
from .base import Batch, Task, TaskDefaults, TaskModel
from .loop import EvalPoint, LoopConfig, LoopResult, make_optimizer, run_trainer


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
    on_nan: str = option("stop", "NaN/Inf loss or gradient: stop (the run's error), or rollback to the last "
                                 "checkpoint with a lower learning rate")
    checkpoint_every: int = option(0, "with --out: also checkpoint every N steps (0: at each evaluation only)")

    def __post_init__(self) -> None:
        if self.on_nan not in ON_NAN:
            raise ValueError(f"on_nan must be one of {ON_NAN}, got {self.on_nan!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be non-negative, got {self.checkpoint_every}")

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


@dataclass
class TaskModelConfig:
    """What builds a :class:`TaskModel` (the ``model`` section of a task run's config.json)."""

    task: str = "adding"
    cell: str = "lstm"
    hidden_size: int = 64
    seq_len: int | None = None
    layer_options: dict | None = None


def build_task_model(config: TaskModelConfig) -> TaskModel:
    return TaskModel(make_task(config.task, config.seq_len), config.cell, config.hidden_size,
                     **(config.layer_options or {}))


#: sequences of the batch ``rnnkit report`` measures a task model on, and the offset of its seed
PROBE_SEQUENCES, PROBE_SEED = 8, 3_000_003


def report_probe(model: TaskModel, run_dir: Path, cfg: dict, text: str | None):
    """What ``rnnkit report`` measures a task model on: :data:`PROBE_SEQUENCES` fresh
    sequences of its task, drawn with the run's seed + :data:`PROBE_SEED` (a stream neither
    training nor the test set used), and the task's loss."""
    from ..diagnostics.report import Probe

    config = rundir.config_from_json(TaskModelConfig, cfg["model"], run_dir / rundir.CONFIG, "model")
    task = make_task(config.task, config.seq_len)
    seed = cfg["train"].get("seed", 0)
    batch = task.sample(PROBE_SEQUENCES, torch.Generator().manual_seed(seed + PROBE_SEED))
    where = "the last step" if task.readout == "last" else "every step"
    return Probe(model, loss=lambda m: task.loss(m(batch), batch),
                 what=f"the loss (read at {where}) of {PROBE_SEQUENCES} fresh sequences of {task.describe()} "
                      f"(seed {seed} + {PROBE_SEED})")


rundir.register_model_type("task", TaskModel, TaskModelConfig, lambda config, cfg, run: build_task_model(config),
                           probe=report_probe)

#: TaskRunConfig fields a resumed run may change (its budget and reporting)
RESUMABLE = ("max_steps", "max_time", "eval_every", "checkpoint_every", "on_nan")
#: the names of the trainer's metrics for a task (the test figures are recorded as ``test_<name>``)
METRIC_KEYS = {"train": "train_loss", "val": "val_score", "rate": "sequences_per_sec"}


class SyntheticStream:
    """The :class:`~rnnkit.train.Trainer`'s task (see rnnkit/train/trainer.py) for a
    benchmark task: an endless stream of fresh batches drawn from a ``torch.Generator``
    seeded with ``seed`` (its state is saved with every checkpoint, so a resumed run draws
    the batches the uninterrupted one would have), the task's loss, and an evaluation on the
    fixed test set ``test`` by the paper's criterion, which stops training once solved
    (``stop_when_solved``).

    The validation value (``val_score``, which picks best.safetensors) is the task's loss on
    the test set; the task's own figures are recorded as ``test_<name>``, with
    ``test_solved`` and ``test_verdict``."""

    loss_scale = 1.0
    metric_keys = METRIC_KEYS

    def __init__(self, task: Task, config: TaskRunConfig, test: Batch, stop_when_solved: bool = True):
        self.task, self.config, self.test = task, config, test
        self.stop_when_solved = stop_when_solved
        env = distributed.current()
        if config.batch_size % env.world_size:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the {env.world_size} processes of "
                             f"the torchrun job; each rank draws batch_size / {env.world_size} sequences")
        self.rank, self.world = env.rank, env.world_size
        self.generator = torch.Generator().manual_seed(config.seed + env.rank)

    def batches(self, start: int, epoch: int = 0) -> Iterator[Batch]:
        """Fresh batches without end (``start``/``epoch`` do not matter: the generator's state
        is the position). Under torchrun rank r draws batch_size / N sequences from its own
        stream, seeded with seed + r (rank 0's is the single process's)."""
        while True:
            yield self.task.sample(self.config.batch_size // self.world, self.generator)

    def loss(self, model: nn.Module, batch: Batch, carry):
        return self.task.loss(model(batch), batch), None, batch.x.shape[1]

    def evaluate(self, model: nn.Module) -> dict:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                y = model(self.test)
                ev = self.task.evaluate(y, self.test)
                val = float(self.task.loss(y, self.test))
        finally:
            model.train(was)
        return {"val_score": val, **{f"test_{k}": v for k, v in ev.metrics.items()}, "test_solved": ev.solved,
                "test_verdict": ev.verdict}

    def solved(self, figures: dict) -> bool:
        return self.stop_when_solved and bool(figures.get("test_solved"))

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        c = self.config
        return make_optimizer(params, LoopConfig(lr=c.lr, optimizer=c.optimizer, max_steps=1))

    def state_dict(self) -> dict[str, Tensor]:
        """The stream's position; under torchrun every rank's (``generators``: one row per
        rank), gathered on each rank (rank 0 writes them)."""
        state = self.generator.get_state()
        if self.world == 1:
            return {"generator": state}
        return {"generators": distributed.all_gather_batch(state.unsqueeze(0), 0)}  # (N, S)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "generator" not in state and "generators" not in state:
            raise CheckpointError("the trainer state has no task.generator: not a `rnnkit task` run")
        ranks = state["generators"].shape[0] if "generators" in state else 1
        if ranks != self.world:
            how = f"torchrun --nproc_per_node {ranks}" if ranks > 1 else "one process (no torchrun)"
            raise CheckpointError(f"cannot resume: the run's batches were drawn by {ranks} process(es), this is "
                                  f"{self.world}; resume it with {how}")
        self.generator.set_state(state["generators"][self.rank].clone() if ranks > 1 else state["generator"])


def train_config(config: TaskRunConfig) -> TrainConfig:
    """The trainer's configuration of a resolved run: a constant learning rate (no warm-up,
    no decay, as the papers train), the task's clipping and budget."""
    return TrainConfig(lr=config.lr, lr_schedule="constant", min_lr_ratio=1.0, warmup_steps=0, weight_decay=0.0,
                       clip=config.clip_norm or 0.0, clip_value=config.clip_value or 0.0,
                       batch_size=config.batch_size, seq_len=config.seq_len or 1,
                       max_steps=config.max_steps or 0, max_time=config.max_time or 0.0,
                       eval_every=config.eval_every, sample_every=0, seed=config.seed,
                       checkpoint_every=config.checkpoint_every, on_nan=config.on_nan)


def _resumed_config(run: Path, config: TaskRunConfig | None) -> TaskRunConfig:
    cfg = rundir.read_config(run)
    if cfg["model_type"] != "task":
        raise CheckpointError(f"cannot resume: {run} holds a {cfg['model_type']!r} run, not a `rnnkit task` run")
    stored = rundir.config_from_json(TaskRunConfig, cfg.get("task", {}), run / rundir.CONFIG, "task")
    if config is not None:  # a config given on resume changes the budget only
        given = {k: getattr(config, k) for k in RESUMABLE if getattr(config, k) is not None}
        stored = replace(stored, **given)
    return stored.resolved()


def run_task(config: TaskRunConfig | None, on_eval: Callable[[EvalPoint], None] | None = None, *,
             out: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
             callback: Callable[[dict], None] | None = None, stop_when_solved: bool = True) -> TaskRunResult:
    """Train a :class:`TaskModel` on fresh batches of the task and judge it on a fresh
    test set drawn from a separate random stream (seed + 1 000 003), on the one
    :class:`~rnnkit.train.Trainer`: the task's optimizer and clipping, a constant learning
    rate, evaluation every ``eval_every`` steps (and at the end), a stop as soon as an
    evaluation says solved.

    ``out``: the run directory (config.json with the run's ``task`` settings, the weights,
    trainer state, metrics.jsonl; ``rnnkit info``/``report``/``rnnkit.load`` read it); with
    ``resume`` the run in ``out`` goes on exactly where it stopped (``config`` may then
    change only the budget: max_steps, max_time, eval_every, checkpoint_every, on_nan; None
    keeps the run's). Without ``out`` the run uses a temporary directory, removed afterwards.
    ``on_eval`` receives each evaluation, ``callback`` the trainer's events. A Ctrl-C
    (KeyboardInterrupt in the loop) ends the run with a checkpoint; ``result.loop.interrupted``
    says so. A NaN/Inf loss or gradient raises TrainingError (``on_nan="stop"``).

    Under torchrun (``WORLD_SIZE`` in the environment) this joins the process group and
    trains data-parallel: rank r draws batch_size / N sequences of every batch from its own
    stream (seed + r), every rank takes rank 0's evaluation (so they agree on solved), rank
    0 writes the run directory and calls ``on_eval`` and ``callback``; every rank returns
    rank 0's model and result. A run resumes with the number of processes it was trained
    with."""
    if config is None and not resume:
        raise ValueError("give a TaskRunConfig (None only with resume)")
    if resume:
        if out is None:
            raise ValueError("resume needs the run directory (out)")
        config = _resumed_config(Path(out), config)
    else:
        config = config.resolved()
    task = make_task(config.task, config.seq_len)  # a bad setting leaves no run directory behind
    with distributed.session() as (env, _), distributed.run_directory(out, resume, overwrite) as run:
        model_config = TaskModelConfig(config.task, config.cell, config.hidden_size, config.seq_len,
                                       config.layer_options)
        torch.manual_seed(config.seed)
        model = build_task_model(model_config)
        test = task.sample(config.test_size, torch.Generator().manual_seed(config.seed + 1_000_003))
        stream = SyntheticStream(task, config, test, stop_when_solved)
        tc = train_config(config)
        cfg_json = {"format_version": rundir.FORMAT_VERSION, "model_type": "task", "model": asdict(model_config),
                    "train": asdict(tc), "task": asdict(config),
                    "data": {"test_size": config.test_size, "test_seed": config.seed + 1_000_003},
                    "rnnkit_version": __version__}
        if resume:
            rundir.check_resume(run, model_config, None, "fp32", cfg_json["model"], rundir.read_config(run))
        if env.is_main:  # under torchrun rank 0 writes the run
            rundir.write_json(run / rundir.CONFIG, cfg_json)
        loop = run_trainer(model, stream, tc, run, resume, on_eval if env.is_main else None,
                           callback if env.is_main else None)
        # every rank returns rank 0's weights and result (rank 0 read the run's history)
        distributed.broadcast_module(model)
        loop = distributed.broadcast_object(loop if env.is_main else None)
    model.eval()
    return TaskRunResult(config, task, model, loop)
