"""The classifier's application: :func:`train_classifier` trains a :class:`Classifier` on
the one trainer, into a run directory (model type ``classifier``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ..train.fit import FitConfig, FitResult
from . import _app
from .classifier import Classifier, ClassifierBatch, ClassifierConfig


def report_probe(model: Classifier, tensors: dict, source: str):
    """``rnnkit report`` measures a classifier on the examples stored with its run: its loss."""
    from ..diagnostics.report import Probe

    batch = ClassifierBatch(tensors["inputs"], tensors["lengths"], tensors["labels"])
    return Probe(model, loss=lambda m: m.loss(batch),
                 what=f"the classification loss (cross-entropy of the label) of the first {len(batch.lengths)} "
                      f"{source} examples, stored with the run")


_app.register("classifier", Classifier, ClassifierConfig, report_probe)


def train_classifier(
    examples: Sequence,
    labels: Sequence[str],
    valid: tuple[Sequence, Sequence[str]] | None = None,
    config: ClassifierConfig | None = None,
    fit_config: FitConfig | None = None,
    log: Callable[[dict], None] | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> tuple[Classifier, FitResult]:
    """Build a classifier from the training data and fit it; with ``valid`` = (examples,
    labels), the weights with the best validation accuracy are kept. ``out``, ``resume``:
    the run directory (see :func:`rnnkit.models._app.fit_run`)."""
    if len(examples) != len(labels):
        raise ValueError(f"{len(examples)} examples but {len(labels)} labels")
    return _app.fit_run(
        "classifier", lambda: Classifier.from_data(examples, labels, config), list(zip(examples, labels)),
        lambda model, ps: model.batch([p[0] for p in ps], [p[1] for p in ps]), lambda m, b: m.loss(b),
        (lambda m: 1.0 - m.evaluate(*valid).accuracy) if valid else None, fit_config,
        log=log, out=out, resume=resume, overwrite=overwrite, callback=callback,
        probe=("validation", list(zip(*valid))) if valid and len(valid[0]) else ("training",
                                                                               list(zip(examples, labels))))
