"""The tables of docs/tasks.md: what each cell reaches on each task in a fixed budget at
short lags (:func:`run_table`), and at the papers' lags over several seeds, next to the
papers' own figures (:func:`run_paper_table`, cached run by run in a JSON file)."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import TrainingError
from ..layers.registry import names as cell_names
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
    #: None: each task's default (``rnnkit task --list``)
    hidden_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
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
    given = [f"hidden size {config.hidden_size}"] if config.hidden_size is not None else []
    given += [f"batch {config.batch_size}"] if config.batch_size is not None else []
    given += [f"lr {config.lr:g}"] if config.lr is not None else []
    settings = ", ".join(given + ["otherwise each task's defaults" if given else "each task's defaults"])
    lines.append(f"Budget: {budget} per cell and task, 1 CPU thread, {settings} (`rnnkit task --list`), "
                 f"seed {config.seed}; figures on a fresh test set.")
    return "\n".join(lines)


def progress_line(r: TaskRunResult) -> str:
    """One line per finished run, for the CLI and the benchmark script."""
    steps = r.loop.steps if r.loop is not None else 0
    return f"{r.config.task:15s} {r.config.cell:8s} {steps:6d} steps  {r.verdict}"


# -- the papers' lags, several seeds, next to the papers' figures --------------------------------------------
@dataclass(frozen=True)
class PaperRow:
    """One row group of the papers' table: a task at a lag, its step budget per run, and what
    the paper reports for the cells it ran (cell name → text)."""

    task: str
    seq_len: int | None
    max_steps: int
    paper: dict[str, str] = field(default_factory=dict)


#: the papers' lags, a step budget per run, and the papers' figures (docs/tasks.md says how they were read)
PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("adding", 100, 3000, {
        "lstm": "solved: MSE near 0 after about 4,000 steps (Arjovsky et al. 2016, Fig. 2)",
        "rnn": "at the baseline for 30,000 steps (Arjovsky et al. 2016, Fig. 2)",
        "irnn": "comparable to the LSTM (Le et al. 2015, §4.1, at T = 150-400)",
    }),
    PaperRow("adding", 200, 4000, {
        "lstm": "solved: MSE near 0 after about 20,000 steps (Arjovsky et al. 2016, Fig. 2)",
        "rnn": "at the baseline for 35,000 steps (Arjovsky et al. 2016, Fig. 2)",
    }),
    PaperRow("temporal-order", 100, 3000, {
        "lstm": "solved after 31,390 sequences (Hochreiter & Schmidhuber 1997, Table 8, task 6a)",
    }),
    PaperRow("copy", 100, 2000, {
        "lstm": "at the baseline, then slowly below it: CE about 0.145 after 10⁶ sequences "
                "(Arjovsky et al. 2016, Fig. 1)",
        "rnn": "at the baseline for 10⁶ sequences (Arjovsky et al. 2016, Fig. 1)",
        "irnn": "far above the baseline: CE about 1.7 after 10⁶ sequences (Arjovsky et al. 2016, Fig. 1)",
    }),
    PaperRow("reber", None, 3000, {
        "lstm": "solved after 8,440 strings, in all trials (Hochreiter & Schmidhuber 1997, Table 1)",
        "rnn": "Elman net: 0% of trials solved (Hochreiter & Schmidhuber 1997, Table 1)",
    }),
)


@dataclass
class PaperTableConfig:
    seeds: Sequence[int] = (0, 1, 2)
    #: None: every registered cell (``rnnkit.LAYER_TYPES`` and ``irnn``)
    cells: Sequence[str] | None = None
    rows: Sequence[PaperRow] = PAPER_ROWS
    #: run only the runs whose index modulo ``shards`` is ``shard`` (two processes can share the work)
    shard: int = 0
    shards: int = 1
    #: stop after this many new runs (None: all that are missing)
    max_runs: int | None = None

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if self.shards < 1 or not 0 <= self.shard < self.shards:
            raise ValueError(f"shard must be in 0..shards-1, got shard {self.shard} of {self.shards}")
        if self.max_runs is not None and self.max_runs < 0:
            raise ValueError(f"max_runs must be at least 0, got {self.max_runs}")


def paper_runs(config: PaperTableConfig) -> list[TaskRunConfig]:
    """Every run of the papers' table, resolved (the task defaults filled in), in table order."""
    cells = list(config.cells) if config.cells else cell_names()
    return [TaskRunConfig(task=row.task, cell=cell, seq_len=row.seq_len, max_steps=row.max_steps,
                          seed=seed).resolved()
            for row in config.rows for cell in cells for seed in config.seeds]


def run_key(config: TaskRunConfig) -> str:
    """The cache key of a resolved run: every setting that can change its result."""
    return json.dumps(asdict(config), sort_keys=True)


def run_record(result: TaskRunResult) -> dict:
    """What the papers' table keeps of a run (JSON-serialisable)."""
    if result.loop is None:
        return {"solved": False, "steps": None, "seconds": None, "metrics": {}, "verdict": result.verdict,
                "error": result.error}
    loop = result.loop
    return {"solved": loop.solved, "steps": loop.steps, "seconds": round(loop.seconds, 2),
            "metrics": loop.final.metrics, "verdict": loop.final.verdict, "error": None}


class ResultCache:
    """Results of finished runs in a JSON file, keyed by :func:`run_key`, so that a long table
    can be run in parts (and by two processes at once) and rendered again without rerunning.

    Every update re-reads the file under an exclusive lock (``<file>.lock``) and replaces it
    atomically, so an interrupted run loses at most the run in progress.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            return {run_key(TaskRunConfig(**e["config"])): e["result"] for e in data["runs"]}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{self.path}: not a results file of the tasks table ({type(e).__name__}: {e}); "
                             f"move it away to start a new one") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put(self, config: TaskRunConfig, record: dict) -> None:
        with self._locked():
            runs = self.load()
            runs[run_key(config)] = record
            entries = [{"config": json.loads(k), "result": v} for k, v in sorted(runs.items())]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps({"runs": entries}, indent=1) + "\n")
            os.replace(tmp, self.path)


def run_paper_table(config: PaperTableConfig, cache: ResultCache,
                    on_result: Callable[[TaskRunConfig, dict], None] | None = None) -> int:
    """Run the runs of the papers' table that ``cache`` does not hold yet (this shard's share,
    at most ``max_runs``), storing each result as it finishes; returns how many ran."""
    done = cache.load()
    todo = [r for i, r in enumerate(paper_runs(config)) if i % config.shards == config.shard]
    todo = [r for r in todo if run_key(r) not in done]
    if config.max_runs is not None:
        todo = todo[: config.max_runs]
    for run in todo:
        if run_key(run) in cache.load():  # another process finished it meanwhile
            continue
        start = time.perf_counter()
        try:
            record = run_record(run_task(run))
        except TrainingError as e:  # a diverged run is a result of the table, not its end
            record = run_record(TaskRunResult(run, make_task(run.task, run.seq_len), None, None, f"diverged: {e}"))
            record["seconds"] = round(time.perf_counter() - start, 2)
        cache.put(run, record)
        if on_result is not None:
            on_result(run, record)
    return len(todo)


def _final_figure(task: str, m: dict) -> str:
    if not m:
        return "diverged"
    if task == "copy":
        return f"{m['cross_entropy']:.3f} ({m['copy_accuracy']:.0%})"
    if task == "temporal-order":
        return f"{m['accuracy']:.3f}"
    if task == "reber":
        return f"{m['strings_right']:.1%}"
    if "fraction_correct" in m:
        return f"{m['mse']:.3g} ({m['fraction_correct']:.1%})"
    return f"{m['mse']:.3g}"


_METRIC = {"adding": "test MSE", "adding-hs": "test MSE (share within 0.04)", "copy": "test CE (symbols copied)",
           "temporal-order": "test accuracy", "reber": "test strings fully right"}


def format_paper_table(config: PaperTableConfig, results: dict[str, dict]) -> tuple[str, list[str]]:
    """The markdown table of the runs in ``results`` (a :meth:`ResultCache.load`), and the runs of
    ``config`` it lacks (their :func:`progress_line`-style names)."""
    cells = list(config.cells) if config.cells else cell_names()
    lines = ["| task | baseline | cell | solved | steps to solve (sequences) | final figure | the paper |",
             "|---|---|---|---|---|---|---|"]
    missing = []
    for row in config.rows:
        task = make_task(row.task, row.seq_len)
        base = "50% strings" if row.task == "reber" else f"{task.baseline:.3g}"
        for cell in cells:
            runs = [TaskRunConfig(task=row.task, cell=cell, seq_len=row.seq_len, max_steps=row.max_steps,
                                  seed=seed).resolved() for seed in config.seeds]
            records = [results.get(run_key(r)) for r in runs]
            missing += [f"{row.task} T={row.seq_len} {cell} seed {r.seed}" for r, rec in zip(runs, records)
                        if rec is None]
            have = [rec for rec in records if rec is not None]
            if not have:
                solved_text, steps_text, final_text = "—", "—", "—"
            else:
                solved = [rec["steps"] for rec in have if rec["solved"]]
                solved_text = f"**{len(solved)}/{len(have)}**" if solved else f"0/{len(have)}"
                if solved:
                    steps_text = ", ".join(f"{rec['steps']:,}" if rec["solved"] else "—" for rec in have)
                    steps_text += f" ({statistics.median(solved) * runs[0].batch_size:,.0f})"
                else:
                    steps_text = f"— (budget {row.max_steps:,})"
                final_text = ", ".join(_final_figure(row.task, rec["metrics"]) for rec in have)
            first = cell == cells[0]
            lines.append(f"| {task.describe() if first else ''} | {base if first else ''} | {cell} | {solved_text} | "
                         f"{steps_text} | {_METRIC[row.task]}: {final_text} | {row.paper.get(cell, '')} |")
    return "\n".join(lines), missing


def paper_table_seconds(config: PaperTableConfig, results: dict[str, dict]) -> float:
    """The training time of the table's runs, summed (each run on one thread)."""
    keys = {run_key(r) for r in paper_runs(config)}
    return sum(rec["seconds"] or 0.0 for k, rec in results.items() if k in keys)


def format_default_runs(config: PaperTableConfig, results: dict[str, dict]) -> str:
    """The last line ``rnnkit task NAME --cell C`` prints, per task and cell, for the rows of
    ``config`` that are a task's default run (its default lag and step budget): their seed-0
    runs are exactly that command."""
    cells = list(config.cells) if config.cells else cell_names()
    lines = []
    for row in config.rows:
        d = make_task(row.task, row.seq_len).defaults
        if row.seq_len != d.seq_len or row.max_steps != d.max_steps or 0 not in config.seeds:
            continue
        lines += ["", f"$ rnnkit task {row.task} --cell CELL"] if lines else [f"$ rnnkit task {row.task} --cell CELL"]
        for cell in cells:
            rec = results.get(run_key(TaskRunConfig(task=row.task, cell=cell, seed=0).resolved()))
            if rec is not None:
                tail = f" after {rec['steps']} steps in {rec['seconds']:.1f}s" if rec["steps"] is not None else ""
                lines.append(f"{cell:8s} {rec['verdict']}{tail}")
    return "\n".join(lines)


#: the cells of docs/new-units.md's summary of the papers' tasks: the two references, then the newer units
UNIT_SUMMARY_CELLS = ("lstm", "gru", "indrnn", "mingru", "minlstm", "slstm", "mlstm", "lru", "rglru", "s6",
                      "qrnn", "sru")


def format_unit_summary(config: PaperTableConfig, results: dict[str, dict],
                        cells: Sequence[str] = UNIT_SUMMARY_CELLS) -> str:
    """The papers' table turned around for docs/new-units.md: one row per unit, one column per
    task of ``config.rows`` — seeds solved of those run and the median steps to solve, or, where
    no seed solved, the median final figure."""
    heads = [make_task(row.task, row.seq_len).describe() for row in config.rows]
    lines = ["| unit | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for cell in cells:
        texts = []
        for row in config.rows:
            runs = [TaskRunConfig(task=row.task, cell=cell, seq_len=row.seq_len, max_steps=row.max_steps,
                                  seed=seed).resolved() for seed in config.seeds]
            have = [rec for r in runs if (rec := results.get(run_key(r))) is not None]
            solved = [rec["steps"] for rec in have if rec["solved"]]
            if not have:
                texts.append("not run")
            elif solved:
                texts.append(f"**{len(solved)}/{len(have)}** in {statistics.median(solved):,.0f} steps")
            else:
                finals = sorted(have, key=lambda rec: _sort_value(row.task, rec["metrics"]))
                median = finals[len(finals) // 2]["metrics"]
                label = {"copy": "CE", "temporal-order": "accuracy", "reber": "strings right"}.get(row.task, "MSE")
                texts.append(f"0/{len(have)}: {label} {_final_figure(row.task, median)}" if median
                             else f"0/{len(have)}: diverged")
        lines.append(f"| {cell} | " + " | ".join(texts) + " |")
    figures = "; ".join(dict.fromkeys(f"{row.task}: {_METRIC[row.task]}" for row in config.rows))
    lines += ["", f"Seeds solved of those run (seeds {', '.join(map(str, config.seeds))}) and the median steps to "
                  f"solve; where no seed solved, the median final figure ({figures})."]
    return "\n".join(lines)


def _sort_value(task: str, m: dict) -> float:
    """A run's final figure as one number, for the median of :func:`format_unit_summary` (a
    diverged run sorts last)."""
    if not m:
        return float("inf")
    key = {"copy": "cross_entropy", "temporal-order": "accuracy", "reber": "strings_right"}.get(task, "mse")
    return -m[key] if key in ("accuracy", "strings_right") else m[key]
