"""Deprecated alias of :mod:`rnnkit.layers.elementwise` (IndRNN, minGRU, minLSTM). Goes in the
next release."""

from . import _moved
from .layers import elementwise as _new

__getattr__, __dir__ = _moved.alias(__name__, _new)
