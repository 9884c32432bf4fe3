"""``rnnkit task``: the benchmark tasks of the RNN papers (adding, copy, temporal order, Reber)."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace

import torch

from . import add_command


def parse_duration(text: str) -> float:
    """'90', '90s', '2m', '1.5h' → seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration like 90s, 2m or 1h, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def register(subparsers) -> None:
    from ..models._layer_util import cell_names
    from ..tasks.loop import OPTIMIZERS

    p = add_command(subparsers, "task", "train a cell on a benchmark task of the RNN papers",
                    "Train a cell on a synthetic task of the RNN papers and judge it by the paper's criterion "
                    "on fresh test data. Unset options take the task's own defaults (see --list).")
    p.add_argument("name", nargs="?", help="the task (see --list)")
    p.add_argument("--list", action="store_true", help="list the tasks, their defaults and their papers' settings")
    p.add_argument("--table", action="store_true", help="run every cell on every task and print a markdown table")
    p.add_argument("--cell", default="lstm", choices=cell_names(), help="recurrent cell (default lstm)")
    p.add_argument("--paper-settings", action="store_true",
                   help="the paper's hyper-parameters (hidden size, optimizer, learning rate, batch, budget) "
                        "instead of rnnkit's defaults; options given explicitly still override them")
    p.add_argument("--seq-len", type=int, help="T, the time lag of the task")
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--clip", type=float, help="gradient-norm clipping (0: none; default: the task's)")
    p.add_argument("--max-time", type=parse_duration, help="wall-clock budget, e.g. 90s, 2m (alone: instead of "
                   "the task's step budget; with --table: per cell and task, default 20s)")
    p.add_argument("--max-steps", type=int, help="step budget (default: the task's, see --list; with --table: per "
                   "cell and task, instead of the time budget, so that the table does not depend on the "
                   "machine's speed)")
    p.add_argument("--batch-norm", action="store_true",
                   help="recurrent batch normalization (Cooijmans et al. 2017), with --cell lstm")
    p.add_argument("--eval-every", type=int, help="evaluate on the test set every N steps")
    p.add_argument("--test-size", type=int, help="sequences in the fresh test set")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..tasks import TASKS
    from ..tasks.run import TaskRunConfig, make_task, run_task
    from ..tasks.table import TableConfig, format_table, progress_line, run_table

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.list:
        for name, cls in TASKS.items():
            print(f"{name}: {cls.paper}")
            print(f"  defaults: {cls.defaults.describe()}")
            if cls.paper_settings is not None:
                print(f"  --paper-settings ({cls.paper_settings.source}): {cls.paper_settings.describe()}")
        return 0
    if args.table:
        if args.max_time is not None and args.max_steps is not None:
            raise ValueError("--table takes one budget: --max-time or --max-steps")
        config = TableConfig(seconds_per_run=args.max_time or 20.0, steps_per_run=args.max_steps, seed=args.seed)
        results = run_table(config, on_result=lambda r: print(progress_line(r), flush=True))
        print()
        print(format_table(results, config))
        return 0
    if args.name is None:
        raise ValueError("name a task (rnnkit task --list shows them)")
    config = TaskRunConfig(task=args.name, cell=args.cell, seq_len=args.seq_len, hidden_size=args.hidden_size,
                           batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, clip_norm=args.clip,
                           max_steps=args.max_steps, max_time=args.max_time, eval_every=args.eval_every,
                           test_size=args.test_size, seed=args.seed, paper_settings=args.paper_settings).resolved()
    if args.batch_norm:
        if args.cell != "lstm":
            raise ValueError(f"--batch-norm needs --cell lstm, got --cell {args.cell}")
        config = replace(config, layer_options={**config.layer_options, "batch_norm": True})
    print(f"{make_task(args.name, config.seq_len).describe()} with {args.cell}: {describe_run(config)}")
    result = run_task(config, on_eval=lambda p: print(f"step {p.step:6d}  {p.seconds:7.1f}s  "
                                                       f"train loss {p.train_loss:.4g}  {p.verdict}", flush=True))
    print(f"{result.verdict} after {result.loop.steps} steps in {result.loop.seconds:.1f}s")
    return 0


def describe_run(c) -> str:
    """The settings of a resolved :class:`~rnnkit.tasks.TaskRunConfig` in one line."""
    budget = " and ".join(([f"{c.max_steps} steps"] if c.max_steps is not None else [])
                          + ([f"{c.max_time:g}s"] if c.max_time is not None else []))
    clip = [f"clip norm {c.clip_norm:g}"] if c.clip_norm else []
    clip += [f"clip values to ±{c.clip_value:g}"] if c.clip_value else []
    options = [f"{k}={v}" for k, v in c.layer_options.items()]
    source = "the paper's settings" if c.paper_settings else "defaults"
    return ", ".join([f"hidden {c.hidden_size}", f"batch {c.batch_size}", f"{c.optimizer} lr {c.lr:g}", *clip,
                      *options, f"budget {budget}"]) + f" ({source})"
