"""``rnnkit train``: train a character language model (default corpus: the Python standard library)."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from . import add_command
from ._common import NativeBuildProgress, add_field_options, duration, given

_MODEL_OPTIONS = [
    ("--cell", "cell", str, "recurrent layer type (any registered name, e.g. lstm, gru, irnn, mlstm, lru, s6)"),
    ("--hidden-size", "hidden_size", int, "hidden units per layer"),
    ("--num-layers", "num_layers", int, "stacked recurrent layers"),
    ("--embed-size", "embed_size", int, "character embedding size"),
    ("--dropout", "dropout", float, "dropout on the recurrent output and between layers"),
    ("--layer-norm", "layer_norm", bool, "layer-normalised cell (LSTM, GRU)"),
    ("--batch-norm", "batch_norm", bool, "recurrent batch normalization (LSTM; Cooijmans et al. 2017)"),
    ("--peephole", "peephole", bool, "LSTM peephole connections"),
    ("--recurrent-dropout", "recurrent_dropout", float, "variational dropout on the recurrent input"),
    ("--zoneout", "zoneout", float, "zoneout rate"),
    ("--init", "init", str, "weight initialisation: pytorch, orthogonal, identity, xavier"),
    ("--forget-bias", "forget_bias", float, "LSTM forget-gate bias"),
]
_TRAIN_OPTIONS = [
    ("--lr", "lr", float, "peak learning rate (AdamW)"),
    ("--lr-schedule", "lr_schedule", str, "constant, linear or cosine decay over the budget"),
    ("--min-lr-ratio", "min_lr_ratio", float, "final learning rate as a fraction of --lr"),
    ("--warmup-steps", "warmup_steps", int, "linear warm-up steps"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay"),
    ("--clip", "clip", float, "max global gradient norm (0: off)"),
    ("--clip-value", "clip_value", float, "max |gradient| per element (0: off)"),
    ("--batch-size", "batch_size", int, "parallel streams B"),
    ("--seq-len", "seq_len", int, "truncated-BPTT length T"),
    ("--max-steps", "max_steps", int, "stop after this many steps"),
    ("--max-time", "max_time", duration, "stop after this long: 90s, 5m, 1h or seconds (0: no limit)"),
    ("--val-fraction", "val_fraction", float, "held-out tail of the corpus for validation"),
    ("--eval-every", "eval_every", int, "validate and checkpoint every N steps"),
    ("--sample-every", "sample_every", int, "print a sample every N steps (0: never)"),
    ("--sample-length", "sample_length", int, "characters per progress sample"),
    ("--seed", "seed", int, "random seed"),
    ("--checkpoint-every", "checkpoint_every", int, "also checkpoint every N steps (0: only at --eval-every)"),
    ("--on-nan", "on_nan", str, "NaN/Inf loss or gradient: stop, or rollback to the last checkpoint"),
    ("--nan-lr-factor", "nan_lr_factor", float, "each rollback multiplies the learning rate by this"),
    ("--nan-max-retries", "nan_max_retries", int, "rollbacks allowed before training stops"),
    ("--precision", "precision", str, "fp32, bf16 (autocast forward pass) or fp64"),
]


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
    add_field_options(p.add_argument_group("model"), CharLMConfig, _MODEL_OPTIONS)
    add_field_options(p.add_argument_group("training"), TrainConfig, _TRAIN_OPTIONS)
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
    from ..train import rundir
    from ..train import train as train_run
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
