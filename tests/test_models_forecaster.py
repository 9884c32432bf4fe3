"""The forecaster: beats the naive baseline on a noisy sine, windows line up, the
scaling sees only the training part, baselines follow their formulas."""

import math
import random

import pytest
import torch

from rnnkit.errors import DataError
from rnnkit.models.forecaster import Forecaster, ForecasterConfig, sunspots_csv
from rnnkit.models.forecaster_app import train_forecaster
from rnnkit.train.fit import FitConfig

from . import needs


def _sine(n=500, period=25, noise=0.1, seed=0):
    r = random.Random(seed)
    return {"y": [math.sin(2 * math.pi * t / period) + noise * r.gauss(0, 1) for t in range(n)],
            "phase": [math.cos(2 * math.pi * t / period) for t in range(n)]}


def test_forecaster_beats_naive_on_noisy_sine():
    series = _sine()
    model, result, first_test = train_forecaster(
        series, "y", config=ForecasterConfig(hidden_size=24, window=20, horizon=4),
        fit_config=FitConfig(max_steps=200, lr=1e-2, eval_every=50))
    assert first_test == 400
    s = model.evaluate(series, first_test, season=25)
    assert s.count == 100 - 4
    assert s.mae < 0.5 * s.naive_mae
    assert s.rmse < 0.5 * s.naive_rmse
    assert s.mae < 0.2  # noise is 0.1: MAE of a perfect model ≈ 0.08
    assert len(s.mae_per_step) == 4


def test_forecaster_with_feature_column_and_forecast():
    series = _sine(300)
    model, _, first_test = train_forecaster(series, "y", ["phase"], ForecasterConfig(hidden_size=12, window=10),
                                            FitConfig(max_steps=60, lr=1e-2, eval_every=30))
    assert model.columns == ["y", "phase"]
    out = model.forecast(series)
    assert len(out) == 1
    assert model.evaluate(series, first_test).mae < 0.3


def test_windows_line_up_with_targets():
    series = {"y": [float(t) for t in range(30)]}
    model = Forecaster.from_series(series, "y", config=ForecasterConfig(window=4, horizon=3), train_end=20)
    table = model.table(series)
    x, y = model.windows(table, [3, 10])
    raw_x = model.unscale(x[:, :, 0].t())  # (B, W)
    raw_y = model.unscale(y)  # (B, H)
    torch.testing.assert_close(raw_x, torch.tensor([[0.0, 1, 2, 3], [7, 8, 9, 10]], dtype=torch.float64),
                               atol=1e-5, rtol=0)  # float32 table
    torch.testing.assert_close(raw_y, torch.tensor([[4.0, 5, 6], [11, 12, 13]], dtype=torch.float64),
                               atol=1e-5, rtol=0)
    # every origin has a full window behind it and its last target inside the range
    assert model.origins(30, 0, 20) == list(range(3, 17))


def test_scaling_is_fitted_on_the_training_part_only():
    series = {"y": [1.0, 2.0, 3.0, 4.0, 1000.0, -1000.0]}
    model = Forecaster.from_series(series, "y", config=ForecasterConfig(window=2), train_end=4)
    assert model.mean == [2.5]
    assert model.std[0] == pytest.approx(torch.tensor([1.0, 2, 3, 4]).std().item())


def test_naive_and_seasonal_baselines_follow_their_formulas():
    y = [float((t % 4) * 10 + t) for t in range(40)]  # a season of 4 plus a trend
    series = {"y": y}
    model = Forecaster.from_series(series, "y", config=ForecasterConfig(window=5, horizon=2), train_end=30)
    s = model.evaluate(series, first_origin=30, season=4)
    origins = range(30, 38)
    naive = [abs(y[t + h] - y[t]) for t in origins for h in (1, 2)]
    seasonal = [abs(y[t + h] - y[t + h - 4]) for t in origins for h in (1, 2)]
    assert s.count == 8
    assert s.naive_mae == pytest.approx(sum(naive) / len(naive))
    assert s.seasonal_mae == pytest.approx(sum(seasonal) / len(seasonal)) == pytest.approx(4.0)


def test_forecaster_bad_input():
    with pytest.raises(DataError, match="no column 'z'"):
        Forecaster.from_series({"y": [1.0, 2.0]}, "y", ["z"])
    with pytest.raises(DataError, match="leave no training windows"):
        train_forecaster({"y": [float(t) for t in range(10)]}, "y", config=ForecasterConfig(window=8))
    with pytest.raises(ValueError, match="target 'y' is always an input"):
        Forecaster(ForecasterConfig(), "y", ["y"], [0, 0], [1, 1])


def test_sunspot_series_ships_with_statsmodels():
    needs.module("statsmodels", "pip install statsmodels; the dev extra has it")
    from rnnkit.data.tabular import read_columns

    series = read_columns(sunspots_csv(), ["YEAR", "SUNACTIVITY"])
    assert len(series["YEAR"]) == 309 and series["YEAR"][0] == 1700.0 and series["YEAR"][-1] == 2008.0
