"""``rnnkit fit MODEL``: train one of the design-pattern models on a file (or a
built-in demo), report it on held-out data next to its trivial baseline, save it; or
score (``--eval DIR``) or apply (``--predict DIR``) a saved one.

    rnnkit fit tagger     --data train.conll [--valid test.conll] --out runs/tagger
    rnnkit fit tagger     --eval runs/tagger --data test.conll
    rnnkit fit tagger     --predict runs/tagger --data tokens.txt [--output tagged.conll]
    rnnkit fit classifier --data reviews.csv --tokens word --pooling attention --out runs/cls
    rnnkit fit forecaster --data series.csv --target load --features temp --horizon 24 --out runs/fc
    rnnkit fit generator  --demo --out runs/gen && rnnkit fit generator --predict runs/gen --condition class

One module per model (its data options and its run); the model and training options are
generated from the config dataclasses (``TaggerConfig``..., ``FitConfig``), whose defaults
and help texts live there only (:mod:`rnnkit.cli._options`).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

MODELS = ("tagger", "classifier", "forecaster", "generator")
_HELPS = {"tagger": "many-to-many: one tag per token (CoNLL files, span F1)",
          "classifier": "many-to-one: one label per text or numeric sequence (CSV/TSV)",
          "forecaster": "time-series regression from CSV columns (MAE/RMSE vs naive)",
          "generator": "one-to-many: condition → character sequence (CSV of text,condition)"}


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def register(subparsers) -> None:
    from ...train.fit import FitConfig
    from .. import add_command
    from .._options import add_dataclass_options, add_quiet

    fit = add_command(subparsers, "fit", help="train, evaluate or apply a tagger/classifier/forecaster/generator",
                      description="Train a tagger, classifier, forecaster or generator on a file or a built-in "
                                  "demo and report it next to its trivial baseline; or score (--eval DIR) or apply "
                                  "(--predict DIR) a saved one. See docs/models.md.")
    models = fit.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name in MODELS:
        module = _module(name)
        p = models.add_parser(name, help=_HELPS[name], description=_HELPS[name])
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        mode = p.add_argument_group("what to do (default: train)")
        src = mode.add_mutually_exclusive_group()
        src.add_argument("--data", type=Path, metavar="FILE", help="training data (or the data for --eval/--predict)")
        src.add_argument("--demo", action="store_true", help="use the built-in demo data (no download)")
        mode.add_argument("--valid", type=Path, metavar="FILE",
                          help="held-out data; default: a --holdout share of --data")
        mode.add_argument("--test", type=Path, metavar="FILE",
                          help="data for the final report; default: the --valid data (which also picks the "
                               "best weights, so the figure is slightly optimistic)")
        mode.add_argument("--holdout", type=float, default=0.1, metavar="F",
                          help="share of --data held out when no --valid is given (default: 0.1)")
        mode.add_argument("--out", type=Path, metavar="DIR",
                          help="the run directory: the model, checkpoints, metrics.jsonl (rnnkit info/report DIR)")
        mode.add_argument("--resume", action="store_true",
                          help="continue the run in --out exactly where its last checkpoint (or Ctrl-C) left it; "
                               "give the same data; budget options (--max-steps, --max-time, ...) may change")
        mode.add_argument("--overwrite", action="store_true", help="allow --out to replace a saved model")
        what = mode.add_mutually_exclusive_group()
        what.add_argument("--eval", type=Path, metavar="DIR", help="score the model saved in DIR on --data")
        what.add_argument("--predict", type=Path, metavar="DIR", help="apply the model saved in DIR to --data")
        mode.add_argument("--output", type=Path, metavar="FILE", help="write predictions here (default: stdout)")
        mode.add_argument("--threads", type=int, default=1, metavar="N",
                          help="torch CPU threads (default: 1; small recurrent models run fastest on one thread, "
                               "and several threads on a busy machine can be many times slower)")
        add_quiet(mode)
        data = p.add_argument_group("data format")
        module.add_data_options(data)
        data.add_argument("--delimiter", default=None, help="CSV delimiter (default: tab for .tsv, comma otherwise)")
        add_dataclass_options(p, module.config_class(), title=f"{name} model")
        add_dataclass_options(p, FitConfig, title="training")
        p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.resume and (args.eval is not None or args.predict is not None or args.overwrite):
        raise ValueError("--resume continues a training run: not with --eval, --predict or --overwrite")
    if args.eval is None and args.predict is None:
        if args.data is None and not args.demo:
            raise ValueError("give --data FILE or --demo to train (or --eval/--predict DIR)")
        from ._shared import check_out

        check_out(args)
    elif args.demo:
        raise ValueError("--demo trains a model; --eval/--predict take a saved model and --data FILE")
    elif args.data is None and not (args.model == "generator" and args.predict is not None):
        raise ValueError("--eval/--predict need --data FILE")
    from .._common import TrainingBar, rank_zero_output

    # the trainer's progress (rnnkit.cli.fit._shared.run_options); under torchrun rank 0 reports
    with rank_zero_output(), TrainingBar(args.quiet) as args.bar:
        return _module(args.model).run(args)
