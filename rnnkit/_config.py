"""A config dataclass field with its command-line help: ``x: int = option(3, "what x is")``.
The help text (and, for a duration, ``type="duration"``) goes into the field's metadata,
from which :mod:`rnnkit.cli._options` generates the ``--x`` option; the default lives here
only."""

from __future__ import annotations

import dataclasses


def option(default, help: str, **metadata):
    """A dataclass field with ``default`` and ``metadata={"help": help, **metadata}``."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})
