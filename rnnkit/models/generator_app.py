"""The generator's application: :func:`train_generator` fits a :class:`Generator` with
:func:`rnnkit.train.fit.fit` (the model module knows no trainer)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..train.fit import FitConfig, FitResult, Shuffled, fit
from .generator import Generator, GeneratorConfig


def train_generator(
    texts: Sequence[str],
    conditions: Sequence[str],
    valid: tuple[Sequence[str], Sequence[str]] | None = None,
    config: GeneratorConfig | None = None,
    fit_config: FitConfig | None = None,
    log: Callable[[dict], None] | None = None,
) -> tuple[Generator, FitResult]:
    """Build a generator from (text, condition) pairs and fit it; with ``valid``, the
    weights with the lowest validation bits per symbol are kept."""
    fc = fit_config or FitConfig()
    torch.manual_seed(fc.seed)
    model = Generator.from_data(texts, conditions, config)
    pairs = list(zip(texts, conditions))
    batches = Shuffled(pairs, fc.batch_size, lambda ps: model.batch([p[0] for p in ps], [p[1] for p in ps]),
                       seed=fc.seed)
    eval_fn = (lambda m: m.bits_per_symbol(*valid)) if valid else None
    result = fit(model, lambda m, b: m.loss(b), batches, fc, eval_fn=eval_fn, log=log)
    return model, result
