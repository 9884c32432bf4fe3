"""The skip policy of tests/needs.py: a test that lacks a tool skips on a developer's machine
and fails under CI=true; checked on the browser test in a real pytest run without Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import needs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
                                         ("", pytest.skip.Exception), ("false", pytest.skip.Exception)])
def test_missing_fails_under_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no such tool"):
        needs.missing("no such tool")
    with pytest.raises(outcome, match="no_such_module_here is not installed"):
        needs.module("no_such_module_here", "pip install it")
    assert needs.module("json", "stdlib").dumps([1]) == "[1]"


@pytest.mark.parametrize("ci", ["true", None])
def test_browser_test_without_chromium_fails_under_ci_and_skips_otherwise(ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=os.devnull, PYTHONPATH=str(ROOT))  # no chromium, no chromedriver on PATH
    if ci is not None:
        env["CI"] = ci
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                          "tests/test_diagnostics_browser.py::test_report_images_decode"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    reasons = ("chromium (not found) and chromedriver (not found) are needed", "selenium.webdriver is not installed")
    assert any(r in out for r in reasons), out[-3000:]
    if ci:
        assert res.returncode == 1 and "1 error" in out and "CI=true" in out, out[-3000:]
    else:
        assert res.returncode == 0 and "1 skipped" in out, out[-3000:]
