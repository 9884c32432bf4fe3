"""Deprecated alias of :mod:`rnnkit.layers.modern` (sLSTM, mLSTM, LRU, RG-LRU, S6, QRNN, SRU).
Goes in the next release."""

from . import _moved
from .layers import modern as _new

__getattr__, __dir__ = _moved.alias(__name__, _new)
