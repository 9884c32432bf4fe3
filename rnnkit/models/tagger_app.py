"""The tagger's application: :func:`train_tagger` fits a :class:`Tagger` with
:func:`rnnkit.train.fit.fit` (the model module knows no trainer)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..data.conll import TaggedSentence
from ..train.fit import FitConfig, FitResult, Shuffled, fit
from .tagger import Tagger, TaggerConfig


def train_tagger(
    train: Sequence[TaggedSentence],
    valid: Sequence[TaggedSentence] | None = None,
    config: TaggerConfig | None = None,
    fit_config: FitConfig | None = None,
    log: Callable[[dict], None] | None = None,
) -> tuple[Tagger, FitResult]:
    """Build a tagger from ``train`` and fit it; with ``valid``, the weights with the
    best validation micro-F1 are kept."""
    fc = fit_config or FitConfig()
    torch.manual_seed(fc.seed)
    model = Tagger.from_data(train, config)
    batches = Shuffled(list(train), fc.batch_size, lambda ss: model.batch([s.tokens for s in ss], [s.tags for s in ss]),
                       seed=fc.seed)
    eval_fn = (lambda m: 1.0 - m.evaluate(valid).micro.f1) if valid else None
    result = fit(model, lambda m, b: m.loss(b), batches, fc, eval_fn=eval_fn, log=log)
    return model, result
