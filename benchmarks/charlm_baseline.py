"""The plain-PyTorch character LM baseline that ``rnnkit train``'s defaults are measured against.

A 2-layer ``torch.nn.LSTM`` with 256 units, an embedding, Adam (lr 2e-3), gradient-norm
clipping at 5, batch 32, sequences of 128, truncated BPTT with the state carried, trained
for a fixed time (or number of steps) on the same corpus, vocabulary and held-out
validation tail as ``rnnkit train`` (the last ``TrainConfig.val_fraction`` of the corpus).

    python benchmarks/charlm_baseline.py --max-time 5m          # default corpus (stdlib)
    python benchmarks/charlm_baseline.py --max-steps 300 --eval-every 100 --data my.txt
    OMP_NUM_THREADS=1 python benchmarks/charlm_baseline.py --max-time 5m --clock cpu   # on a busy machine
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from rnnkit.cli._common import duration
from rnnkit.data.text import Vocabulary, encode_corpus, read_corpus, split_train_val, truncated_bptt_streams
from rnnkit.train.config import TrainConfig
from rnnkit.train.trainer import evaluate_bpc


class BaselineLSTM(nn.Module):
    def __init__(self, vocab_size: int, embed_size: int = 64, hidden_size: int = 256, num_layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.rnn = nn.LSTM(embed_size, hidden_size, num_layers)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx, state=None):  # idx: (T, B)
        out, state = self.rnn(self.embed(idx), state)  # (T, B, H)
        return self.head(out), state  # (T, B, V)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", help="corpus (default: the Python standard library sources)")
    p.add_argument("--glob", help="file-name pattern inside directories")
    p.add_argument("--max-time", type=duration, default=300.0, help="training time (default 5m)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    p.add_argument("--eval-every", type=int, default=0, help="also report val bpc every N steps")
    p.add_argument("--val-fraction", type=float, default=TrainConfig.val_fraction)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what --max-time counts (as rnnkit train --clock): wall or this process's CPU seconds")
    args = p.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.monotonic

    corpus = read_corpus(args.data, args.glob)
    vocab = Vocabulary.build(corpus.text)
    train_ids, val_ids = split_train_val(encode_corpus(corpus, vocab), args.val_fraction)
    torch.manual_seed(args.seed)
    B, T = 32, 128
    model = BaselineLSTM(len(vocab))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    step, start, state = 0, time.monotonic(), None
    train_time = 0.0

    def done() -> bool:
        return (args.max_steps and step >= args.max_steps) or (args.max_time and train_time >= args.max_time)

    while not done():
        state = None
        for x, y in truncated_bptt_streams(train_ids, B, T):
            t0 = clock()
            logits, state = model(x, state)
            state = tuple(s.detach() for s in state)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            train_time += clock() - t0
            if args.eval_every and step % args.eval_every == 0:
                print(f"step {step}  time {train_time:.0f}s  train {loss.item() / math.log(2):.4f}  "
                      f"val {evaluate_bpc(model, val_ids, B, T):.4f} bpc", flush=True)
            if done():
                break
    bpc = evaluate_bpc(model, val_ids, B, T)
    print(f"baseline torch.nn.LSTM 2x256: {step} steps, {train_time:.0f}s training "
          f"({step * B * T / max(train_time, 1e-9):,.0f} chars/s), {time.monotonic() - start:.0f}s total; "
          f"val {bpc:.4f} bpc on {len(val_ids)} held-out characters")


if __name__ == "__main__":
    main()
