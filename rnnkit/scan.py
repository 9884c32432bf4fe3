"""Deprecated alias of :mod:`rnnkit.engine.scan` (the parallel scan). Goes in the next release."""

from . import _moved
from .engine import scan as _new

__getattr__, __dir__ = _moved.alias(__name__, _new)
