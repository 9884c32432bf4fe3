"""The table of what each cell reaches on each task in a fixed budget (docs/tasks.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import TrainingError
from ..models._layer_util import cell_names
from .run import TaskRunConfig, TaskRunResult, make_task, run_task

#: per task, the settings of the table: short sequences so that a CPU budget of seconds
#: separates the cells (the long-T results are separate commands in docs/tasks.md)
TABLE_SETTINGS: dict[str, dict] = {
    "adding": {"seq_len": 30},
    "adding-hs": {"seq_len": 30},
    "copy": {"seq_len": 10},
    "temporal-order": {"seq_len": 30},
    "reber": {},
}


@dataclass
class TableConfig:
    seconds_per_run: float = 20.0
    #: a step budget per cell and task instead of the wall-clock one: the same table on any
    #: machine and under any load (runs that solve their task early still stop early)
    steps_per_run: int | None = None
    hidden_size: int = 64
    batch_size: int = 50
    lr: float = 1e-2
    seed: int = 0
    #: None: every registered cell (``rnnkit.LAYER_TYPES`` and ``irnn``)
    cells: Sequence[str] | None = None
    tasks: Sequence[str] | None = None


def run_table(config: TableConfig, on_result: Callable[[TaskRunResult], None] | None = None) -> list[TaskRunResult]:
    if config.steps_per_run is not None and config.steps_per_run < 1:
        raise ValueError(f"steps_per_run must be at least 1, got {config.steps_per_run}")
    cells = list(config.cells) if config.cells else cell_names()
    tasks = list(config.tasks) if config.tasks else list(TABLE_SETTINGS)
    budget = ({"max_steps": config.steps_per_run, "max_time": None} if config.steps_per_run is not None
              else {"max_time": config.seconds_per_run})
    results = []
    for task in tasks:
        for cell in cells:
            run = TaskRunConfig(task=task, cell=cell, hidden_size=config.hidden_size, batch_size=config.batch_size,
                                lr=config.lr, seed=config.seed, **budget, **TABLE_SETTINGS.get(task, {}))
            try:
                result = run_task(run)
            except TrainingError as e:  # a diverged run is a result of the table, not its end
                result = TaskRunResult(run, make_task(task, run.seq_len), None, None, f"diverged: {e}")
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _cell_text(r: TaskRunResult) -> str:
    if r.loop is None:
        return "diverged (non-finite loss)"
    m = r.loop.final.metrics
    mark = "**solved**" if r.loop.solved else "not solved"
    if "mse" in m and "wrong" in m:
        figure = f"MSE {m['mse']:.3g}, {m['fraction_correct']:.1%} within 0.04"
    elif "mse" in m:
        figure = f"MSE {m['mse']:.3g}"
    elif "copy_accuracy" in m:
        figure = f"CE {m['cross_entropy']:.3g}, copy acc {m['copy_accuracy']:.2f}"
    elif "accuracy" in m:
        figure = f"acc {m['accuracy']:.3f}"
    else:
        figure = f"{m['strings_right']:.1%} strings right"
    when = f" at step {r.loop.steps}" if r.loop.solved else f" ({r.loop.steps} steps)"
    return f"{mark}{when}: {figure}"


def format_table(results: Sequence[TaskRunResult], config: TableConfig) -> str:
    """A markdown table: one row per task (with its baseline), one column per cell."""
    cells = list(dict.fromkeys(r.config.cell for r in results))
    tasks = list(dict.fromkeys(r.config.task for r in results))
    by = {(r.config.task, r.config.cell): r for r in results}
    lines = ["| task | baseline | " + " | ".join(cells) + " |", "|---|---|" + "---|" * len(cells)]
    for task in tasks:
        any_result = next(r for r in results if r.config.task == task)
        base = any_result.task.baseline
        base_text = "50% strings" if task == "reber" else f"{base:.3g}"
        row = [f"{any_result.task.describe()}", base_text]
        row += [_cell_text(by[(task, c)]) if (task, c) in by else "" for c in cells]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    budget = (f"{config.steps_per_run} training steps" if config.steps_per_run is not None
              else f"{config.seconds_per_run:g} s of wall-clock training")
    lines.append(f"Budget: {budget} per cell and task, 1 CPU thread, "
                 f"hidden size {config.hidden_size}, batch {config.batch_size}, Adam lr {config.lr:g}, "
                 f"gradient norm clipped at 1, seed {config.seed}; figures on a fresh test set.")
    return "\n".join(lines)


def progress_line(r: TaskRunResult) -> str:
    """One line per finished run, for the CLI and the benchmark script."""
    steps = r.loop.steps if r.loop is not None else 0
    return f"{r.config.task:15s} {r.config.cell:8s} {steps:6d} steps  {r.verdict}"
