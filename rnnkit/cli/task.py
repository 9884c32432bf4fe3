"""``rnnkit task``: the benchmark tasks of the RNN papers (adding, copy, temporal order, Reber)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

from . import add_command
from ._options import add_dataclass_options, add_quiet, given


def register(subparsers) -> None:
    from ..layers.registry import names as cell_names
    from ..tasks.loop import OPTIMIZERS
    from ..tasks.run import TaskRunConfig
    from ..train.config import ON_NAN

    p = add_command(subparsers, "task", "train a cell on a benchmark task of the RNN papers",
                    "Train a cell on a synthetic task of the RNN papers and judge it by the paper's criterion "
                    "on fresh test data. Unset options take the task's own defaults (see --list).")
    p.add_argument("name", nargs="?", help="the task (see --list)")
    p.add_argument("--list", action="store_true", help="list the tasks, their defaults and their papers' settings")
    p.add_argument("--table", action="store_true", help="run every cell on every task and print a markdown table")
    add_dataclass_options(p, TaskRunConfig, exclude=("task", "layer_options"), none_means="the task's, see --list",
                          flags={"clip_norm": ["--clip", "--clip-norm"]},
                          choices={"cell": cell_names(), "optimizer": OPTIMIZERS, "on_nan": ON_NAN})
    p.add_argument("--batch-norm", action="store_true",
                   help="recurrent batch normalization (Cooijmans et al. 2017), with --cell lstm")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="the run directory: weights, checkpoints, trainer state, metrics.jsonl (rnnkit info/report "
                        "DIR); Ctrl-C leaves a checkpoint there")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where its last checkpoint (or Ctrl-C) left it; budget "
                        "options (--max-steps, --max-time, --eval-every, --checkpoint-every, --on-nan) may change")
    p.add_argument("--overwrite", action="store_true", help="allow --out to replace a run already there")
    add_quiet(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ._common import rank_zero_output

    with rank_zero_output():  # under torchrun rank 0 reports
        return _run(args)


def _run(args) -> int:
    from ..tasks import TASKS
    from ..tasks.run import RESUMABLE, TaskRunConfig, make_task, run_task
    from ..tasks.table import TableConfig, format_table, progress_line, run_table
    from ..train import rundir
    from ._common import TrainingBar

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
    options = given(args, TaskRunConfig)
    if args.table:
        if "max_time" in options and "max_steps" in options:
            raise ValueError("--table takes one budget: --max-time or --max-steps")
        budget = {"max_time": "seconds_per_run", "max_steps": "steps_per_run", "seed": "seed"}
        config = TableConfig(**{budget[k]: v for k, v in options.items() if k in budget})
        results = run_table(config, on_result=lambda r: print(progress_line(r), flush=True))
        print()
        print(format_table(results, config))
        return 0
    # (only the options given: run_task(config, on_eval) is the call without a run directory)
    run_dir = {k: v for k, v in {"out": args.out, "resume": args.resume, "overwrite": args.overwrite}.items() if v}
    if (args.out is not None or args.resume) and args.table:
        raise ValueError("--out/--resume are for one run, not --table")
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out DIR, the run to continue")
        if args.overwrite:
            raise ValueError("--resume continues the run in --out: not with --overwrite")
        budget = {k: v for k, v in options.items() if k in RESUMABLE}
        other = sorted(set(options) - set(budget)) + (["batch_norm"] if args.batch_norm else [])
        if other:
            raise ValueError(f"--resume keeps the run's settings; it takes only budget options, not "
                             f"{', '.join('--' + k.replace('_', '-') for k in other)}")
        name = args.name or rundir.read_config(args.out).get("task", {}).get("task")
        if args.name is not None and name != rundir.read_config(args.out).get("task", {}).get("task"):
            raise ValueError(f"--resume: {args.out} holds a run of another task, not {args.name!r}")
        config = TaskRunConfig(task=name, **budget)
        print(f"resuming {args.out}", flush=True)
    else:
        if args.name is None:
            raise ValueError("name a task (rnnkit task --list shows them)")
        config = TaskRunConfig(task=args.name, **options).resolved()
        if args.batch_norm:
            if config.cell != "lstm":
                raise ValueError(f"--batch-norm needs --cell lstm, got --cell {config.cell}")
            config = replace(config, layer_options={**config.layer_options, "batch_norm": True})
        print(f"{make_task(args.name, config.seq_len).describe()} with {config.cell}: {describe_run(config)}")
    with TrainingBar(args.quiet) as bar:
        result = run_task(config, on_eval=lambda p: bar.line(f"step {p.step:6d}  {p.seconds:7.1f}s  "
                                                             f"train loss {p.train_loss:.4g}  {p.verdict}"),
                          callback=bar, **run_dir)
    if getattr(result.loop, "interrupted", False):
        where = (f"checkpoint in {args.out}; resume with the same command and --resume" if args.out
                 else "nothing saved (give --out DIR to keep a checkpoint)")
        print(f"interrupted after {result.loop.steps} steps: {where}", file=sys.stderr)
        return 130
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
