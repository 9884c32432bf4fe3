"""Helpers shared by the commands (not a command itself)."""

from __future__ import annotations

import argparse
import re
from dataclasses import MISSING, fields

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1.5h`` (argparse type)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 5m, 1h or plain seconds, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def field_defaults(cls) -> dict:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def add_field_options(parser: argparse.ArgumentParser, cls, options: list[tuple[str, str, object, str]]) -> None:
    """Add ``--flag`` options for dataclass fields; each default is None (meaning "the
    dataclass default", shown in the help) so that explicitly given options can be told apart."""
    defaults = field_defaults(cls)
    for flag, name, type_, help_ in options:
        default = defaults[name]
        if type_ is bool:
            parser.add_argument(flag, dest=name, action="store_const", const=True, default=None,
                                help=f"{help_} (default: off)")
        else:
            shown = "none" if default in (None, 0, 0.0) and name.startswith("max_") else default
            parser.add_argument(flag, dest=name, type=type_, default=None, metavar=name.split("_")[-1].upper(),
                                help=f"{help_} (default: {shown})")


def given(args: argparse.Namespace, cls) -> dict:
    """The dataclass fields the user gave on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(cls)
            if getattr(args, f.name, None) is not None}
