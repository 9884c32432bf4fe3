"""The generator's application: :func:`train_generator` trains a :class:`Generator` on the
one trainer, into a run directory (model type ``generator``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ..train.fit import FitConfig, FitResult
from . import _app
from .generator import Generator, GeneratorConfig

_app.register("generator", Generator, GeneratorConfig)



def train_generator(
    texts: Sequence[str],
    conditions: Sequence[str],
    valid: tuple[Sequence[str], Sequence[str]] | None = None,
    config: GeneratorConfig | None = None,
    fit_config: FitConfig | None = None,
    log: Callable[[dict], None] | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> tuple[Generator, FitResult]:
    """Build a generator from (text, condition) pairs and fit it; with ``valid``, the
    weights with the lowest validation bits per symbol are kept. ``out``, ``resume``: the
    run directory (see :func:`rnnkit.models._app.fit_run`)."""
    return _app.fit_run(
        "generator", lambda: Generator.from_data(texts, conditions, config), list(zip(texts, conditions)),
        lambda model, ps: model.batch([p[0] for p in ps], [p[1] for p in ps]), lambda m, b: m.loss(b),
        (lambda m: m.bits_per_symbol(*valid)) if valid else None, fit_config,
        log=log, out=out, resume=resume, overwrite=overwrite, callback=callback)
