"""The tagger's application: :func:`train_tagger` trains a :class:`Tagger` on the one
trainer, into a run directory (model type ``tagger``); the model module knows no trainer."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ..data.conll import TaggedSentence
from ..train.fit import FitConfig, FitResult
from . import _app
from .tagger import Tagger, TaggerBatch, TaggerConfig


def report_probe(model: Tagger, tensors: dict, source: str):
    """``rnnkit report`` measures a tagger on the sentences stored with its run: the tagging loss."""
    from ..diagnostics.report import Probe

    batch = TaggerBatch(tensors["words"], tensors.get("chars"), tensors["lengths"], tensors["tags"])
    return Probe(model, loss=lambda m: m.loss(batch),
                 what=f"the tagging loss (cross-entropy of every token) of the first {len(batch.lengths)} "
                      f"{source} sentences, stored with the run")


_app.register("tagger", Tagger, TaggerConfig, report_probe)


def train_tagger(
    train: Sequence[TaggedSentence],
    valid: Sequence[TaggedSentence] | None = None,
    config: TaggerConfig | None = None,
    fit_config: FitConfig | None = None,
    log: Callable[[dict], None] | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> tuple[Tagger, FitResult]:
    """Build a tagger from ``train`` and fit it; with ``valid``, the weights with the
    best validation micro-F1 are kept. ``out``: the run directory (``rnnkit fit tagger
    --out``), which ``resume`` continues exactly; see :func:`rnnkit.models._app.fit_run`."""
    return _app.fit_run(
        "tagger", lambda: Tagger.from_data(train, config), list(train),
        lambda model, ss: model.batch([s.tokens for s in ss], [s.tags for s in ss]), lambda m, b: m.loss(b),
        (lambda m: 1.0 - m.evaluate(valid).micro.f1) if valid else None, fit_config,
        log=log, out=out, resume=resume, overwrite=overwrite, callback=callback,
        probe=("validation", valid) if valid else ("training", train))
