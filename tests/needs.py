"""Skips that cannot hide a failure in CI.

A test that needs a tool or package this machine lacks skips on a developer's machine, with
the reason and how to install it; where ``CI=true`` (CI installs everything the tests use:
the ``dev`` extra, Chromium and chromedriver) the same test fails instead, so a broken CI
image cannot turn a red suite green by skipping it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def in_ci() -> bool:
    """Whether the tests run under CI (``CI`` set to true/1/yes, as CI services do)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> None:
    """Skip the test because ``reason`` (something it needs is missing); fail it under CI."""
    if in_ci():
        pytest.fail(f"{reason}; CI=true, where this is a failure and not a skip", pytrace=False)
    pytest.skip(reason)


def module(name: str, install: str) -> ModuleType:
    """``import name``, or :func:`missing` saying to ``install`` it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"{name} is not installed ({install})")
        raise  # not reached: missing() skips or fails
