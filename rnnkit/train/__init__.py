"""Training: the trainer, its configuration, the run directory and data-parallel runs.

This package knows no model: an application (e.g. :mod:`rnnkit.models.charlm_app`, whose
:func:`~rnnkit.models.charlm_app.train` is ``rnnkit.train(...)``) registers its model type
with :func:`rnnkit.train.rundir.register_model_type` and runs its task on the
:class:`Trainer`; :mod:`rnnkit.train.fit` is the small loop of the ready models.
"""

from __future__ import annotations

from . import distributed, rundir
from .config import TrainConfig
from .rundir import load, read_metrics
from .trainer import LanguageModelTask, Trainer, TrainResult, evaluate_bpc

__all__ = [
    "LanguageModelTask",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "distributed",
    "evaluate_bpc",
    "load",
    "read_metrics",
    "rundir",
]
