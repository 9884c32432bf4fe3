"""Write the tables of docs/tasks.md.

The short-lag table (between the ``tasks-table`` markers): every registered cell on every
benchmark task in a fixed budget, one seed.

    python benchmarks/tasks_table.py [--seconds 20 | --steps N] [--cells CELL ...] [--output docs/tasks.md]

The papers' table (between the ``tasks-papers`` markers): every cell at the papers' lags
(adding T = 100 and 200, temporal order and copy at T = 100, embedded Reber), three seeds,
each task's default settings and step budget, next to the papers' figures. Each finished run
is stored in a JSON file next to the document, so the table can be built in parts (stop it
any time; two processes can share the work with --shard 0/2 and --shard 1/2) and rendered
again without training (--render-only):

    python benchmarks/tasks_table.py --papers [--shard I/N] [--max-runs N] [--render-only]
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from pathlib import Path

import torch

from rnnkit.tasks.table import (
    PaperTableConfig,
    ResultCache,
    TableConfig,
    format_default_runs,
    format_paper_table,
    format_table,
    format_unit_summary,
    paper_table_seconds,
    progress_line,
    run_paper_table,
    run_table,
)

MARKERS = {"short": ("<!-- tasks-table:start -->", "<!-- tasks-table:end -->"),
           "papers": ("<!-- tasks-papers:start -->", "<!-- tasks-papers:end -->"),
           "defaults": ("<!-- defaults:start -->", "<!-- defaults:end -->"),
           "units": ("<!-- tasks-papers-units:start -->", "<!-- tasks-papers-units:end -->")}


def write_between(path: Path, markers: tuple[str, str], text: str) -> bool:
    start, end = markers
    doc = path.read_text() if path.exists() else f"{start}\n{end}\n"
    if start not in doc or end not in doc:
        print(f"{path}: markers {start} / {end} not found; not written", file=sys.stderr)
        return False
    new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}", doc, flags=re.S)
    path.write_text(new)
    return True


def machine() -> str:
    return f"{platform.processor() or platform.machine()} (torch {torch.__version__})"


def short_table(args) -> int:
    config = TableConfig(seconds_per_run=args.seconds, steps_per_run=args.steps, seed=args.seed,
                         cells=args.cells or None)
    start = time.perf_counter()
    results = run_table(config, on_result=lambda r: print(progress_line(r), flush=True))
    table = format_table(results, config)
    flag = f"--steps {args.steps}" if args.steps is not None else f"--seconds {args.seconds:g}"
    flag += f" --cells {' '.join(args.cells)}" if args.cells else ""
    note = "" if args.steps is not None else ", a shared machine: step counts vary with its load"
    table += (f"\n\nProduced by `python benchmarks/tasks_table.py {flag}` in "
              f"{(time.perf_counter() - start) / 60:.1f} min on {machine()}{note}.")
    print(table)
    return 0 if write_between(Path(args.output), MARKERS["short"], table) else 1


def papers_table(args) -> int:
    shard, shards = 0, 1
    if args.shard:
        m = re.fullmatch(r"(\d+)/(\d+)", args.shard)
        if not m:
            raise SystemExit(f"--shard must look like 0/2, got {args.shard!r}")
        shard, shards = int(m.group(1)), int(m.group(2))
    config = PaperTableConfig(seeds=[int(s) for s in args.seeds.split(",")], cells=args.cells or None,
                              shard=shard, shards=shards, max_runs=args.max_runs)
    cache = ResultCache(args.results)
    if not args.render_only:
        def show(run, record):
            steps = record["steps"] if record["steps"] is not None else 0
            print(f"{run.task:15s} T={run.seq_len} {run.cell:8s} seed {run.seed}  {steps:6d} steps  "
                  f"{record['seconds'] or 0:7.1f}s  {record['verdict']}", flush=True)

        ran = run_paper_table(config, cache, on_result=show)
        print(f"{ran} runs done")
    results = cache.load()
    table, missing = format_paper_table(config, results)
    minutes = paper_table_seconds(config, results) / 60
    seeds = ", ".join(str(s) for s in config.seeds)
    budgets = "; ".join(f"{r.task}{f' T={r.seq_len}' if r.seq_len else ''}: {r.max_steps:,}" for r in config.rows)
    table += (f"\n\nSeeds {seeds}; each task's default settings (`rnnkit task --list`); step budget per run "
              f"({budgets}); a run stops when it solves its task. Training time of all runs together: "
              f"{minutes:.0f} min, one CPU thread each, on {machine()}. Produced by "
              f"`python benchmarks/tasks_table.py --papers` (results cached in `{Path(args.results).name}`).")
    if missing:
        more = ", …" if len(missing) > 5 else ""
        table += f"\n\n**Incomplete: {len(missing)} runs missing** ({', '.join(missing[:5])}{more})."
    print(table)
    defaults = (f"Seed 0 of the table below is the default run; the last line `rnnkit task NAME --cell CELL` "
                f"prints, with its wall time on {machine()} (one thread, a shared 2-core machine):\n\n"
                f"```\n{format_default_runs(config, results)}\n```")
    ok = write_between(Path(args.output), MARKERS["defaults"], defaults)
    units = (f"{format_unit_summary(config, results)} Written by `python benchmarks/tasks_table.py --papers` "
             f"from the papers' table in [tasks.md](tasks.md).")
    ok = write_between(Path(args.units_output), MARKERS["units"], units) and ok
    return 0 if write_between(Path(args.output), MARKERS["papers"], table) and ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, default=20.0, help="short-lag table: training budget per cell "
                        "and task")
    budget.add_argument("--steps", type=int, help="short-lag table: a step budget per cell and task instead (the "
                        "same table on any machine)")
    parser.add_argument("--output", default="docs/tasks.md")
    parser.add_argument("--units-output", default="docs/new-units.md",
                        help="papers' table: the document of the per-unit summary")
    parser.add_argument("--seed", type=int, default=0, help="short-lag table: the seed")
    parser.add_argument("--papers", action="store_true", help="the papers' table instead of the short-lag one")
    parser.add_argument("--results", default="docs/tasks_papers.json", help="papers' table: the results file")
    parser.add_argument("--seeds", default="0,1,2", help="papers' table: comma-separated seeds")
    parser.add_argument("--cells", nargs="*",
                        help="these cells only, as the table's columns (default: every registered one)")
    parser.add_argument("--shard", help="papers' table: I/N runs only the runs whose position in the table is "
                        "I modulo N")
    parser.add_argument("--max-runs", type=int, help="papers' table: stop after this many new runs")
    parser.add_argument("--render-only", action="store_true", help="papers' table: train nothing, write the table "
                        "from the results file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    return papers_table(args) if args.papers else short_table(args)


if __name__ == "__main__":
    sys.exit(main())
