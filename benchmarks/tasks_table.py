"""Run every registered cell on every benchmark task in a fixed CPU budget and write the
table into docs/tasks.md (between the ``tasks-table`` markers).

    python benchmarks/tasks_table.py [--seconds 20 | --steps N] [--output docs/tasks.md]
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from pathlib import Path

import torch

from rnnkit.tasks.table import TableConfig, format_table, progress_line, run_table

START, END = "<!-- tasks-table:start -->", "<!-- tasks-table:end -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, default=20.0, help="training budget per cell and task")
    budget.add_argument("--steps", type=int, help="a step budget per cell and task instead (the same table on "
                        "any machine)")
    parser.add_argument("--output", default="docs/tasks.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = TableConfig(seconds_per_run=args.seconds, steps_per_run=args.steps, seed=args.seed)
    start = time.perf_counter()
    results = run_table(config, on_result=lambda r: print(progress_line(r), flush=True))
    table = format_table(results, config)
    flag = f"--steps {args.steps}" if args.steps is not None else f"--seconds {args.seconds:g}"
    note = "" if args.steps is not None else ", a shared machine: step counts vary with its load"
    table += (f"\n\nProduced by `python benchmarks/tasks_table.py {flag}` in "
              f"{(time.perf_counter() - start) / 60:.1f} min on {platform.processor() or platform.machine()} "
              f"(torch {torch.__version__}{note}).")
    print(table)
    out = Path(args.output)
    text = out.read_text() if out.exists() else f"{START}\n{END}\n"
    if START not in text or END not in text:
        print(f"{out}: markers {START} / {END} not found; not written", file=sys.stderr)
        return 1
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{table}\n{END}", text, flags=re.S)
    out.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
