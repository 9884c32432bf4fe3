"""``rnnkit eval``: bits per character and perplexity of a trained model on a text."""

from __future__ import annotations

import argparse
import logging
import math

from . import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "eval", "bits per character of a trained model on a text",
                    "Evaluate a trained character language model on text files: bits per character and "
                    "per-character perplexity, streamed as in training.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by rnnkit train")
    p.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="text file, directory or - for stdin; repeatable")
    p.add_argument("--glob", metavar="PAT", help="only files matching this name pattern inside directories")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="weights to use (default: best)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data.text import scan_corpus
    from ..train import rundir
    from ..train.trainer import evaluate_bpc
    from ._common import require_char_lm

    require_char_lm(args.run_dir, "eval")
    model = rundir.load(args.run_dir, args.checkpoint)
    train_cfg = rundir.read_config(args.run_dir)["train"]
    with scan_corpus(args.data, args.glob) as corpus:  # streamed: only the ids are held, 1-4 bytes a character
        ids, n_unknown = corpus.encode(model.vocab)
    if n_unknown:
        logging.getLogger("rnnkit").warning("%d of %d characters are not in the model's vocabulary "
                                            "(scored as the unknown symbol)", n_unknown, len(ids))
    if len(ids) < 2:
        raise ValueError(f"the evaluation text has {len(ids)} character(s); at least 2 are needed")
    bpc = evaluate_bpc(model, ids, train_cfg["batch_size"], train_cfg["seq_len"])
    print(f"bits per character: {bpc:.4f}")
    print(f"perplexity: {math.pow(2.0, bpc):.4f}")
    print(f"characters: {len(ids) - 1} predicted, {len(corpus.files)} file(s)")
    return 0
