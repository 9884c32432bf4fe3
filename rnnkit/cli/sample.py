"""``rnnkit sample``: stream text from a trained character language model."""

from __future__ import annotations

import argparse
import logging
import sys

from . import add_command

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = add_command(subparsers, "sample", "generate text from a trained model",
                    "Stream characters from a trained character language model to stdout "
                    "(the prime first, then the generated text). With --num-samples N > 1 the N "
                    "samples are generated at once, as one batch, and printed one after another, "
                    "each under a '--- sample i of N ---' line.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by rnnkit train")
    p.add_argument("--length", type=int, default=1000, help="characters to generate (default: 1000)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature: lower is more conservative (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the K most likely characters")
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same text)")
    p.add_argument("--argmax", action="store_true", help="always take the most likely character")
    p.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help="generate N samples at once, as one batch (default: 1, streamed)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="weights to use (default: best)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..train.rundir import load
    from ._common import require_char_lm

    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be a positive integer, got {args.num_samples}")
    require_char_lm(args.run_dir, "sample")
    model = load(args.run_dir, args.checkpoint)
    out = sys.stdout
    if args.num_samples > 1:
        texts = model.sample_many(args.num_samples, args.length, temperature=args.temperature, top_k=args.top_k,
                                  prime=args.prime, seed=args.seed, argmax=args.argmax)
        for i, text in enumerate(texts, 1):
            out.write(f"{'' if i == 1 else chr(10)}--- sample {i} of {len(texts)} ---\n{args.prime}{text}\n")
        out.flush()
        return 0
    chars = model.sample(args.length, temperature=args.temperature, top_k=args.top_k, prime=args.prime,
                         seed=args.seed, argmax=args.argmax)
    out.write(args.prime)
    for i, ch in enumerate(chars):
        out.write(ch)
        if ch == "\n" or i % 64 == 0:
            out.flush()
    out.write("\n")
    out.flush()
    return 0
