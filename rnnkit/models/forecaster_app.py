"""The forecaster's application: :func:`train_forecaster` fits a :class:`Forecaster` with
:func:`rnnkit.train.fit.fit` (the model module knows no trainer)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import DataError
from ..train.fit import FitConfig, FitResult, Shuffled, fit
from .forecaster import Forecaster, ForecasterConfig


def train_forecaster(
    series: dict[str, Sequence[float]],
    target: str,
    features: Sequence[str] = (),
    config: ForecasterConfig | None = None,
    fit_config: FitConfig | None = None,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.15,
    log: Callable[[dict], None] | None = None,
) -> tuple[Forecaster, FitResult, int]:
    """Split the rows in time: the first ``1 - test_fraction`` are the training part
    (its last ``valid_fraction`` of forecast origins pick the best weights), the rest
    the test part. Returns the model, the fit result and the index of the first test
    origin (for :meth:`Forecaster.evaluate`)."""
    if not 0 < test_fraction < 1 or not 0 <= valid_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1) and valid_fraction in [0, 1), "
                         f"got {test_fraction} and {valid_fraction}")
    fc = fit_config or FitConfig()
    torch.manual_seed(fc.seed)
    n = len(series[target]) if target in series else 0
    train_end = int(round(n * (1 - test_fraction)))
    model = Forecaster.from_series(series, target, features, config, train_end)
    table = model.table(series)
    origins = model.origins(n, 0, train_end)
    n_valid = int(len(origins) * valid_fraction)
    if len(origins) - n_valid < 1:
        raise DataError(f"{n} rows leave no training windows (window {model.config.window}, "
                        f"horizon {model.config.horizon}, test fraction {test_fraction})")
    train_origins, valid_origins = origins[: len(origins) - n_valid], origins[len(origins) - n_valid :]
    batches = Shuffled(train_origins, fc.batch_size, lambda ts: model.windows(table, ts), seed=fc.seed)

    def loss_fn(m: Forecaster, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return nn.functional.mse_loss(m(x), y)

    eval_fn = None
    if valid_origins:
        vx, vy = model.windows(table, valid_origins)
        eval_fn = lambda m: nn.functional.mse_loss(m(vx), vy).item()  # noqa: E731
    result = fit(model, loss_fn, batches, fc, eval_fn=eval_fn, log=log)
    return model, result, train_end
