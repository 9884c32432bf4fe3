"""``rnnkit sample``: stream text from a trained character language model."""

from __future__ import annotations

import argparse
import logging
import secrets
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


def sample_many(model, num_samples: int, length: int, temperature: float = 1.0, top_k: int | None = None,
                prime: str = "", seed: int | None = None, argmax: bool = False) -> list[str]:
    """``num_samples`` texts of ``length`` characters after ``prime`` from a
    :class:`rnnkit.models.CharLM`, generated together as one batch (one step of the whole
    batch per character, state carried): the batched form of :meth:`CharLM.sample`, with the
    same options and the same draw. With one sample and the same seed it returns exactly
    what ``CharLM.sample`` yields; with more, the draws of the samples interleave, so sample
    1 of N differs from the single sample of that seed.
    """
    import torch

    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    if length < 0:
        raise ValueError(f"length must be non-negative, got {length}")
    if not argmax and not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    N = num_samples
    device = model.head.weight.device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) if seed is not None else secrets.randbits(63))  # leaves the global RNG alone
    if prime:
        ids, n_unknown = model.vocab.encode(prime)
        if n_unknown:
            log.warning("%d character(s) of the prime are not in the vocabulary; using the unknown symbol",
                        n_unknown)
    else:
        ids = torch.tensor([model.vocab.id("\n")])
    drawn = torch.empty(length, N, dtype=torch.long)  # (length, N) character ids
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            prime_ids = ids.long().to(device).unsqueeze(1).expand(-1, N).contiguous()  # (T, N)
            logits, state = model(prime_ids)  # (T, N, V)
            last = logits[-1]  # (N, V)
            for t in range(length):
                if argmax:
                    nxt = last.argmax(1)  # (N,)
                else:
                    scaled = last / temperature
                    if top_k is not None and top_k < scaled.shape[1]:
                        kth = scaled.topk(top_k, dim=1).values[:, -1:]  # (N, 1)
                        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                    nxt = torch.multinomial(scaled.softmax(1), 1, generator=gen).view(N)
                drawn[t] = nxt
                if t + 1 < length:
                    logits, state = model(nxt.view(1, N), state)
                    last = logits[0]
    finally:
        model.train(was_training)
    chars = model.vocab.chars
    return ["".join(chars[i] for i in row) for row in drawn.t().tolist()]


def run(args: argparse.Namespace) -> int:
    from ..train.rundir import load
    from ._common import require_char_lm

    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be a positive integer, got {args.num_samples}")
    require_char_lm(args.run_dir, "sample")
    model = load(args.run_dir, args.checkpoint)
    out = sys.stdout
    if args.num_samples > 1:
        texts = sample_many(model, args.num_samples, args.length, temperature=args.temperature, top_k=args.top_k,
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
