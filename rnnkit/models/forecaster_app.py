"""The forecaster's application: :func:`train_forecaster` trains a :class:`Forecaster` on
the one trainer, into a run directory (model type ``forecaster``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from ..errors import DataError
from ..train.fit import FitConfig, FitResult
from . import _app
from .forecaster import Forecaster, ForecasterConfig


def report_probe(model: Forecaster, tensors: dict, source: str):
    """``rnnkit report`` measures a forecaster on the windows stored with its run: the MSE."""
    from ..diagnostics.report import Probe

    x, y = tensors["0"], tensors["1"]  # (W, B, F), (B, H)
    return Probe(model, loss=lambda m: nn.functional.mse_loss(m(x), y),
                 what=f"the mean squared error of the forecasts from the first {x.shape[1]} {source} windows, "
                      f"stored with the run")


_app.register("forecaster", Forecaster, ForecasterConfig, report_probe)


def train_forecaster(
    series: dict[str, Sequence[float]],
    target: str,
    features: Sequence[str] = (),
    config: ForecasterConfig | None = None,
    fit_config: FitConfig | None = None,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.15,
    log: Callable[[dict], None] | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> tuple[Forecaster, FitResult, int]:
    """Split the rows in time: the first ``1 - test_fraction`` are the training part
    (its last ``valid_fraction`` of forecast origins pick the best weights), the rest
    the test part. Returns the model, the fit result and the index of the first test
    origin (for :meth:`Forecaster.evaluate`). ``out``, ``resume``: the run directory (see
    :func:`rnnkit.models._app.fit_run`)."""
    if not 0 < test_fraction < 1 or not 0 <= valid_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1) and valid_fraction in [0, 1), "
                         f"got {test_fraction} and {valid_fraction}")
    n = len(series[target]) if target in series else 0
    train_end = int(round(n * (1 - test_fraction)))

    def split(model: Forecaster) -> tuple[list[int], list[int]]:
        """(training, validation) forecast origins of the training part."""
        origins = model.origins(n, 0, train_end)
        n_valid = int(len(origins) * valid_fraction)
        if len(origins) - n_valid < 1:
            raise DataError(f"{n} rows leave no training windows (window {model.config.window}, "
                            f"horizon {model.config.horizon}, test fraction {test_fraction})")
        return origins[: len(origins) - n_valid], origins[len(origins) - n_valid :]

    tables: dict[int, Tensor] = {}

    def table(m: Forecaster) -> Tensor:  # (N, F), standardised once per model
        return tables.setdefault(id(m), m.table(series))

    def loss_fn(m: Forecaster, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return nn.functional.mse_loss(m(x), y)

    def validation_mse(m: Forecaster) -> float:
        vx, vy = m.windows(table(m), split(m)[1])
        return nn.functional.mse_loss(m(vx), vy).item()

    make = lambda: Forecaster.from_series(series, target, features, config, train_end)  # noqa: E731
    has_valid = valid_fraction > 0 and bool(split(make())[1])
    model, result = _app.fit_run(
        "forecaster", make, lambda m: split(m)[0], lambda m, ts: m.windows(table(m), ts), loss_fn,
        validation_mse if has_valid else None, fit_config,
        log=log, out=out, resume=resume, overwrite=overwrite, callback=callback,
        probe=("validation", lambda m: split(m)[1]) if has_valid else ("training", lambda m: split(m)[0]))
    return model, result, train_end
