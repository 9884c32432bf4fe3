"""The generic training loop."""

import pytest
import torch
from torch import nn

from rnnkit.errors import TrainingError
from rnnkit.train.fit import FitConfig, Shuffled, fit


def _problem():
    x = torch.randn(64, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    return nn.Linear(3, 1), [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]


def _mse(m, batch):
    x, y = batch
    return nn.functional.mse_loss(m(x).squeeze(1), y)


def test_fit_runs_max_steps_and_reduces_the_loss():
    model, batches = _problem()
    logs = []
    result = fit(model, _mse, batches, FitConfig(max_steps=300, lr=0.05, eval_every=100), log=logs.append)
    assert result.steps == 300 and [e["step"] for e in logs] == [100, 200, 300]
    assert result.train_loss[-1] < 0.01 * result.train_loss[0]
    assert not model.training


def test_fit_restores_the_best_weights():
    model, batches = _problem()
    scores = iter([3.0, 1.0, 2.0])
    seen = {}

    def eval_fn(m):
        s = next(scores)
        seen[s] = m.weight.detach().clone()
        return s

    result = fit(model, _mse, batches, FitConfig(max_steps=30, lr=0.05, eval_every=10), eval_fn=eval_fn)
    assert result.best_score == 1.0 and result.best_step == 20
    torch.testing.assert_close(model.weight, seen[1.0])


def test_fit_stops_on_time_and_on_nan():
    model, batches = _problem()
    result = fit(model, _mse, batches, FitConfig(max_steps=10**9, max_time=0.2, eval_every=10**6))
    assert result.stopped_by == "max_time" and result.steps < 10**9
    with pytest.raises(TrainingError, match="loss is nan at step 1"):
        fit(model, lambda m, b: _mse(m, b) * float("nan"), batches)
    with pytest.raises(ValueError, match="lr must be positive"):
        FitConfig(lr=0)


def test_shuffled_covers_every_example_once_per_pass():
    batches = Shuffled(list(range(10)), 3, list, seed=0)
    first, second = list(batches), list(batches)
    assert sorted(sum(first, [])) == list(range(10)) and len(first) == len(batches) == 4
    assert first != second
