"""Forecaster: time-series regression — the next H values of a target column from the
last W rows of the target and any feature columns.

    rows     z_{t-W+1} → ... → z_t            z = standardised [target, features...]
    states   h_{t-W+1}   ...   h_t            any rnnkit cell, one direction
                                  ↓
    forecast ŷ_{t+1..t+H} = W_o h_t + b       direct multi-step: one output per horizon

Standardisation (mean, deviation per column) is fitted on the training part only.
Baselines: naive ŷ_{t+h} = y_t; seasonal naive with period m,
ŷ_{t+h} = y_{t+h-m·⌈h/m⌉} (the value one season before).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .._config import option
from ..errors import DataError
from . import _common
from .metrics import mae, rmse


@dataclass
class ForecasterConfig:
    """Settings of a :class:`Forecaster` (column names and scaling come from the data)."""

    cell: str = option("lstm", "recurrent cell: any registered name (e.g. lstm, gru, irnn, mlstm, lru, s6)")
    hidden_size: int = option(64, "hidden units per layer")
    num_layers: int = option(1, "stacked recurrent layers")
    window: int = option(24, "W, the past rows read per forecast")
    horizon: int = option(1, "H, the future values predicted per forecast")
    dropout: float = option(0.0, "dropout on the recurrent output and between layers")

    def __post_init__(self) -> None:
        _common.check_config(self, positive=("hidden_size", "num_layers"))
        if self.window < 1 or self.horizon < 1:
            raise ValueError(f"window and horizon must be positive, got {self.window} and {self.horizon}")


@dataclass
class ForecastScores:
    """MAE/RMSE of the model and of the baselines over every (origin, horizon) pair,
    and the model's MAE per horizon step."""

    count: int
    mae: float
    rmse: float
    naive_mae: float
    naive_rmse: float
    seasonal_mae: float | None
    seasonal_rmse: float | None
    mae_per_step: list[float]


class Forecaster(nn.Module):
    """Forecasts ``target`` from the columns ``[target, *features]``."""

    def __init__(self, config: ForecasterConfig, target: str, features: Sequence[str],
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if target in features:
            raise ValueError(f"target {target!r} is always an input; do not list it among the features")
        self.config, self.target, self.features = config, target, list(features)
        self.columns = [target, *self.features]
        if len(mean) != len(self.columns) or len(std) != len(self.columns):
            raise ValueError(f"need one mean and std per column {self.columns}")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        c = config
        self.rnn = _common.recurrent_layer(c.cell, len(self.columns), c.hidden_size, c.num_layers, False, c.dropout)
        self.output = nn.Linear(_common.output_size(self.rnn), c.horizon)

    @classmethod
    def from_series(cls, series: dict[str, Sequence[float]], target: str, features: Sequence[str] = (),
                    config: ForecasterConfig | None = None, train_end: int | None = None) -> Forecaster:
        """A new forecaster whose standardisation is fitted on rows ``[0, train_end)``."""
        columns = [target, *features]
        for name in columns:
            if name not in series:
                raise DataError(f"no column {name!r}; have {sorted(series)}")
        n = len(series[target]) if train_end is None else train_end
        mean, std = [], []
        for name in columns:
            v = torch.tensor(series[name][:n], dtype=torch.float64)
            if v.numel() < 2:
                raise DataError(f"column {name!r} has fewer than 2 training rows")
            s = float(v.std())
            mean.append(float(v.mean()))
            std.append(s if s > 0 else 1.0)
        return cls(config or ForecasterConfig(), target, features, mean, std)

    # -- data -------------------------------------------------------------------------------
    def table(self, series: dict[str, Sequence[float]]) -> Tensor:
        """The standardised columns as (N, F) float32."""
        rows = None
        for name in self.columns:
            if name not in series:
                raise DataError(f"no column {name!r}; have {sorted(series)}")
            if rows is not None and len(series[name]) != rows:
                raise DataError(f"column {name!r} has {len(series[name])} rows, expected {rows}")
            rows = len(series[name])
        raw = torch.tensor([list(series[c]) for c in self.columns], dtype=torch.float64).t()  # (N, F)
        mean, std = torch.tensor(self.mean, dtype=torch.float64), torch.tensor(self.std, dtype=torch.float64)
        return ((raw - mean) / std).float()

    def windows(self, table: Tensor, origins: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Inputs (W, B, F) of rows (t-W, t] and standardised targets (B, H) of rows
        (t, t+H], for forecast origins t (the index of the last row read)."""
        W, H = self.config.window, self.config.horizon
        x = torch.stack([table[t - W + 1 : t + 1] for t in origins], dim=1)  # (W, B, F)
        y = torch.stack([table[t + 1 : t + 1 + H, 0] for t in origins])  # (B, H)
        return x, y

    def origins(self, n_rows: int, first: int, last_target: int) -> list[int]:
        """Every origin t ≥ ``first`` with a full window behind it and all H targets
        before row ``last_target`` (exclusive)."""
        W, H = self.config.window, self.config.horizon
        return list(range(max(first, W - 1), last_target - H))

    # -- model --------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """x (W, B, F) standardised rows → standardised forecasts (B, H)."""
        out, _ = self.rnn(x)  # (W, B, R)
        return self.output(out[-1])  # (B, H)

    def unscale(self, y: Tensor) -> Tensor:
        return y.double() * self.std[0] + self.mean[0]

    @torch.no_grad()
    def forecast(self, series: dict[str, Sequence[float]]) -> list[float]:
        """The next H target values after the last row of ``series`` (raw units)."""
        table = self.table(series)
        if table.shape[0] < self.config.window:
            raise DataError(f"need at least window={self.config.window} rows, got {table.shape[0]}")
        was = self.training
        self.eval()
        y = self(table[-self.config.window :].unsqueeze(1))  # (1, H)
        self.train(was)
        return self.unscale(y[0]).tolist()

    @torch.no_grad()
    def evaluate(self, series: dict[str, Sequence[float]], first_origin: int, season: int = 0) -> ForecastScores:
        """Scores of forecasts from every origin t ≥ ``first_origin`` (the test part)."""
        table = self.table(series)
        origins = self.origins(table.shape[0], first_origin, table.shape[0])
        if not origins:
            raise DataError(f"no forecast origins in the test part: {table.shape[0]} rows, first origin "
                            f"{first_origin}, window {self.config.window}, horizon {self.config.horizon}")
        was = self.training
        self.eval()
        x, _ = self.windows(table, origins)
        pred = self.unscale(self(x))  # (B, H)
        self.train(was)
        y = [float(v) for v in series[self.target]]
        H = self.config.horizon
        true = [[y[t + h] for h in range(1, H + 1)] for t in origins]
        naive = [[y[t]] * H for t in origins]
        flat = [v for row in true for v in row]
        model_flat = pred.flatten().tolist()
        naive_flat = [v for row in naive for v in row]
        s_mae = s_rmse = None
        if season:
            if any(t + 1 - season < 0 for t in origins):
                raise DataError(f"season={season} needs {season} rows before the first forecast origin")
            seasonal = [y[t + h - season * math.ceil(h / season)] for t in origins for h in range(1, H + 1)]
            s_mae, s_rmse = mae(flat, seasonal), rmse(flat, seasonal)
        per_step = [mae([r[h] for r in true], pred[:, h].tolist()) for h in range(H)]
        return ForecastScores(len(origins), mae(flat, model_flat), rmse(flat, model_flat), mae(flat, naive_flat),
                              rmse(flat, naive_flat), s_mae, s_rmse, per_step)

    # -- files --------------------------------------------------------------------------------
    def saved_fields(self) -> dict:
        """What config.json holds beside the config: the columns and their scaling."""
        return {"target": self.target, "features": self.features, "mean": self.mean, "std": self.std}

    @classmethod
    def from_saved(cls, config: ForecasterConfig, saved: _common.SavedFields) -> Forecaster:
        """An untrained forecaster with the config, columns and scaling of a saved one."""
        return cls(config, saved.string("target"), saved.strings("features"), saved.numbers("mean"),
                   saved.numbers("std", positive=True))

    def save(self, directory: str | Path) -> Path:
        return _common.save_model(directory, "forecaster", self.config, self, self.saved_fields())

    @classmethod
    def load(cls, directory: str | Path) -> Forecaster:
        """A forecaster saved by :meth:`save` or trained into a run directory (its best
        weights); CheckpointError (one line) for anything wrong."""
        return _common.load_model(directory, "forecaster", ForecasterConfig, cls.from_saved)


def sunspots_csv() -> Path:
    """The yearly sunspot numbers 1700–2008 shipped inside statsmodels (columns YEAR,
    SUNACTIVITY); DataError with the install command if statsmodels is missing."""
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or spec.origin is None:
        raise DataError("the sunspot demo needs statsmodels: pip install 'rnnkit[timeseries]' "
                        "(or pip install statsmodels)")
    path = Path(spec.origin).parent / "datasets" / "sunspots" / "sunspots.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found in the installed statsmodels")
    return path
