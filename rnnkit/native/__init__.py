"""Deprecated alias of :mod:`rnnkit.engine.native` (the build of the native loops); the C++
sources are in ``rnnkit/cells/native/``. Goes in the next release."""

from .. import _moved
from ..engine import native as _new

__getattr__, __dir__ = _moved.alias(__name__, _new)
