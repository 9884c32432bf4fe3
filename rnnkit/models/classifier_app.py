"""The classifier's application: :func:`train_classifier` fits a :class:`Classifier` with
:func:`rnnkit.train.fit.fit` (the model module knows no trainer)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..train.fit import FitConfig, FitResult, Shuffled, fit
from .classifier import Classifier, ClassifierConfig


def train_classifier(
    examples: Sequence,
    labels: Sequence[str],
    valid: tuple[Sequence, Sequence[str]] | None = None,
    config: ClassifierConfig | None = None,
    fit_config: FitConfig | None = None,
    log: Callable[[dict], None] | None = None,
) -> tuple[Classifier, FitResult]:
    """Build a classifier from the training data and fit it; with ``valid`` = (examples,
    labels), the weights with the best validation accuracy are kept."""
    if len(examples) != len(labels):
        raise ValueError(f"{len(examples)} examples but {len(labels)} labels")
    fc = fit_config or FitConfig()
    torch.manual_seed(fc.seed)
    model = Classifier.from_data(examples, labels, config)
    pairs = list(zip(examples, labels))
    batches = Shuffled(pairs, fc.batch_size, lambda ps: model.batch([p[0] for p in ps], [p[1] for p in ps]),
                       seed=fc.seed)
    eval_fn = (lambda m: 1.0 - m.evaluate(*valid).accuracy) if valid else None
    result = fit(model, lambda m, b: m.loss(b), batches, fc, eval_fn=eval_fn, log=log)
    return model, result
