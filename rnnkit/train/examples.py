"""The trainer's task for models trained on a list of examples (a tagger's sentences, a
classifier's texts, a forecaster's windows, a generator's pairs): mini-batches of the
examples, reshuffled each epoch, a loss and a validation score per model.

The order of epoch e is a permutation drawn from a generator seeded with (seed, e), so a
resumed run (the trainer restores the epoch and the position in it) reads exactly the
batches the uninterrupted run would have read.

Under torchrun rank r of N takes the contiguous share [⌊r·b/N⌋, ⌊(r+1)·b/N⌋) of each batch
of b examples (the global batch is the single process's), and its loss ℓ_r, the mean over
its n_r examples, is weighted by n_r·N/b: DistributedDataParallel averages the gradients of
the N weighted losses, Σ_r (n_r/b)·∇ℓ_r, which is the gradient of the whole batch's mean
loss, so the run follows the single-process one up to rounding (exactly so for losses that
are means over examples; a loss averaged over tokens weighs each rank's tokens by its share
of the examples instead). A rank whose share of a short last batch is empty contributes a
zero loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import distributed


class _Loss(nn.Module):
    """The module DistributedDataParallel wraps for an :class:`ExampleTask`: its forward is
    the task's loss of the model on a batch (a model's ``loss`` method is no forward)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, data) -> Tensor:
        if data is None:  # this rank's share of a short last batch is empty: a zero loss on every weight
            return sum(p.sum() for p in self.model.parameters()) * 0.0
        return self.loss_fn(self.model, data)


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

    def batches(self, start: int, epoch: int = 0) -> Iterator[tuple[int, int, Any]]:
        """(examples of this rank, examples of the whole batch, this rank's batch or None when
        it has none) from batch ``start`` of ``epoch`` on."""
        order, B, env = self.order(epoch), self.batch_size, distributed.current()
        for i in range(start * B, len(order), B):
            chosen = order[i : i + B]
            mine = [self.examples[j] for j in chosen[env.shard(len(chosen))]]
            yield len(mine), len(chosen), (self.collate(mine) if mine else None)

    def ddp_module(self, model: nn.Module) -> nn.Module:
        return _Loss(model, self.loss_fn)

    def loss(self, model: nn.Module, batch, carry):
        n, total, data = batch
        if not isinstance(model, nn.parallel.DistributedDataParallel):
            return self.loss_fn(model, data), None, n
        # weighted by this rank's share of the batch: the mean of the ranks' losses (DDP's) is the batch's
        return model(data) * (n * distributed.current().world_size / total), None, n

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
