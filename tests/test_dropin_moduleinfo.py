"""PyTorch's own ModuleInfo cases for nn.RNN, nn.GRU and nn.LSTM against rnnkit, on every
engine path (see tests/moduleinfo_harness.py: forward inputs in float32 and float64, with and
without requires_grad, packed inputs, pickling, second-order gradients, gradgradcheck and the
error inputs). The harness runs in a subprocess: importing PyTorch's test modules changes
global state that the rest of the suite should not see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .cases import ENGINE_PATHS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results() -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "tests.moduleinfo_harness", *ENGINE_PATHS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", list(ENGINE_PATHS))
def test_pytorch_moduleinfo_cases_pass(results, path):
    result = results[path]
    assert result["failures"] == []
    counts = result["counts"]
    # every generated case ran and passed; with torch 2.13: 64 RNN + 32 GRU + 32 LSTM samples
    # (packed ones for RNN/GRU) x 2 dtypes x requires_grad x training = 1024 forward and pickle
    # cases, 128 second-order comparisons, 168 error inputs
    for kind in ("forward", "pickle", "gradgrad vs torch.nn", "gradgradcheck", "errors"):
        assert counts[kind]["run"] > 0 and counts[kind]["passed"] == counts[kind]["run"], kind
    assert counts["pickle"]["run"] == counts["forward"]["run"]
