"""``rnnkit train``: train a character language model (default corpus: the Python standard library)."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from . import add_command
from ._common import NativeBuildProgress
from ._options import add_dataclass_options, given


def register(subparsers) -> None:
    from ..models.charlm import CharLMConfig
    from ..train.config import TrainConfig

    p = add_command(subparsers, "train", "train a character language model",
                    "Train a character-level language model. With no --data, the corpus is the Python "
                    "standard library's own source code; with no budget options, training takes 5 minutes.")
    p.add_argument("--data", action="append", metavar="PATH",
                   help="text file, directory (read recursively) or - for stdin; repeatable")
    p.add_argument("--glob", metavar="PAT",
                   help="only files matching this name pattern inside directories, e.g. '*.py'")
    p.add_argument("--min-count", type=int, default=1,
                   help="fold characters seen fewer times into the unknown symbol (default: 1)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/charlm-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no samples")
    add_dataclass_options(p, CharLMConfig, title="model")
    add_dataclass_options(p, TrainConfig, title="training")
    p.set_defaults(run=run)


class _Progress:
    """The tqdm bar over the budget (steps or time), with a sample printed now and then;
    before it, a line while the native loops compile (before the clock starts)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar: tqdm | None = None
        self.val: float | None = None
        self.native = NativeBuildProgress(sys.stderr)

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        kind = event["kind"]
        if kind == "native":
            self.native(event)
        elif kind == "start":
            self.native.close()
            self.bar = tqdm(total=1000, unit="‰", dynamic_ncols=True, file=sys.stderr,
                            bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}")
            self.bar.update(int(event["progress"] * 1000))
        elif kind == "eval":
            self.val = event["val_bpc"]
        elif kind == "step" and self.bar is not None:
            post = f" step {event['step']}, {event['chars_per_sec'] or 0:,.0f} chars/s, train {event['train_bpc']:.3f}"
            if self.val is not None:
                post += f", val {self.val:.3f}"
            self.bar.set_postfix_str(post + " bpc", refresh=False)
            self.bar.update(int(event["progress"] * 1000) - self.bar.n)
        elif kind == "sample":
            text = event["text"]
            tqdm.write(f"--- sample at step {event['step']} ---\n{text}\n---", file=sys.stderr)

    def close(self) -> None:
        self.native.close()
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from ..models.charlm import CharLMConfig
    from ..models.charlm_app import train as train_run
    from ..train import rundir
    from ..train.config import TrainConfig

    model_opts, train_opts = given(args, CharLMConfig), given(args, TrainConfig)
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out DIR, the run to continue")
        stored = rundir.read_config(args.out)
        model = CharLMConfig.from_dict({**stored["model"], **model_opts})
        config = TrainConfig.from_dict({**stored["train"], **train_opts})
    else:
        model, config = CharLMConfig(**model_opts), TrainConfig(**train_opts)
    from ..train.distributed import DistEnv

    env = DistEnv.from_env()
    if not env.is_main:  # under torchrun rank 0 reports; the others only warn
        logging.getLogger("rnnkit").setLevel(logging.WARNING)
    progress = _Progress(args.quiet or not env.is_main)
    try:
        result = train_run(args.data, args.out, model, config, glob=args.glob, min_count=args.min_count,
                           resume=args.resume, callback=progress, device=args.device)
    finally:
        progress.close()
    if not env.is_main:  # under torchrun only rank 0 reports
        return 130 if result.interrupted else 0
    best = f", best val {result.best_val_bpc:.4f} bpc" if result.best_val_bpc is not None else ""
    print(f"{'interrupted' if result.interrupted else 'done'}: {result.steps} steps in {result.elapsed:.0f}s"
          f"{best}; run directory {result.run_dir}")
    if result.interrupted:
        print(f"resume with: rnnkit train --out {result.run_dir} --resume", file=sys.stderr)
        return 130
    print(f"sample with: rnnkit sample {result.run_dir}", file=sys.stderr)
    return 0
