"""The trainer's task for models trained on a list of examples (a tagger's sentences, a
classifier's texts, a forecaster's windows, a generator's pairs): mini-batches of the
examples, reshuffled each epoch, a loss and a validation score per model.

The order of epoch e is a permutation drawn from a generator seeded with (seed, e), so a
resumed run (the trainer restores the epoch and the position in it) reads exactly the
batches the uninterrupted run would have read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn


class ExampleTask:
    """``collate(examples) -> batch`` builds a batch; ``loss_fn(model, batch)`` is its
    scalar loss (the model in train mode); ``eval_fn(model)`` a validation score where lower
    is better (called in eval mode under ``no_grad``; None: no validation, the latest
    weights are the result)."""

    loss_scale = 1.0  # the metrics record the loss as it is (not in bits)
    metric_keys = {"train": "train_loss", "val": "val_score", "rate": "examples_per_sec"}

    def __init__(self, examples: Sequence, batch_size: int, collate: Callable[[list], Any],
                 loss_fn: Callable[[nn.Module, Any], Tensor], eval_fn: Callable[[nn.Module], float] | None = None,
                 seed: int = 0):
        if not examples:
            raise ValueError("no training examples")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.examples, self.batch_size, self.collate = list(examples), batch_size, collate
        self.loss_fn, self.eval_fn, self.seed = loss_fn, eval_fn, seed
        self.batches_per_epoch = math.ceil(len(self.examples) / batch_size)

    def order(self, epoch: int) -> list[int]:
        """The example order of ``epoch``: a permutation seeded by (seed, epoch)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.examples), generator=g).tolist()

    def batches(self, start: int, epoch: int = 0) -> Iterator[tuple[int, Any]]:
        """(examples in the batch, batch) from batch ``start`` of ``epoch`` on."""
        order, B = self.order(epoch), self.batch_size
        for i in range(start * B, len(order), B):
            chosen = [self.examples[j] for j in order[i : i + B]]
            yield len(chosen), self.collate(chosen)

    def loss(self, model: nn.Module, batch, carry):
        n, data = batch
        return self.loss_fn(model, data), None, n

    def evaluate(self, model: nn.Module) -> float | None:
        if self.eval_fn is None:
            return None
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                return float(self.eval_fn(model))
        finally:
            model.train(was)
