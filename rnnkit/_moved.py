"""Deprecated module aliases: an old import path that still works for one release."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType


def alias(old: str, new: ModuleType) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of the deprecated module ``old``, which
    forward every name to ``new`` (so that what is patched or set there is seen here too),
    after one DeprecationWarning naming the new place (a module is imported once)."""
    warnings.warn(f"{old} has moved to {new.__name__}: import it from there ({old} is deprecated and goes in "
                  "the next release)", DeprecationWarning, stacklevel=3)

    def __getattr__(name: str) -> object:
        return getattr(new, name)

    def __dir__() -> list[str]:
        return dir(new)

    return __getattr__, __dir__
