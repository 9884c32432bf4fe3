"""Helpers shared by the commands (not a command itself)."""

from __future__ import annotations

import argparse
import re
import sys
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


class NativeBuildProgress:
    """Shows the native build's progress events (``{"kind": "native", ...}``, see
    :func:`rnnkit.engine.native.load`) on ``stream``: one line rewritten in place on a terminal,
    otherwise a line every ``every`` seconds."""

    def __init__(self, stream=None, every: float = 10.0):
        self.stream = stream or sys.stderr
        self.every = every
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.shown: tuple[str, float] | None = None  # the state and elapsed time last shown
        self.open_line = False

    def __call__(self, event: dict) -> None:
        state, elapsed = event["state"], event["elapsed"]
        if state == "compiling":
            text = f"compiling rnnkit's native loops (once per machine and version): {elapsed:.0f}s"
        elif state == "waiting":
            text = (f"waiting for {event.get('holder') or 'another process'} to finish building rnnkit's native "
                    f"loops (lock {event['lock']}): {elapsed:.0f}s")
        elif state == "built":
            self._show(f"built rnnkit's native loops in {elapsed:.0f}s ({event['path']})", final=True)
            return
        else:  # loaded: another process built them while this one waited
            self._show(f"loaded rnnkit's native loops, built by another process ({event['path']})", final=True)
            return
        if self.tty or self.shown is None or self.shown[0] != state or elapsed - self.shown[1] >= self.every:
            self.shown = (state, elapsed)
            self._show(text)

    def _show(self, text: str, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r" + text + "\033[K" + ("\n" if final else ""))
            self.open_line = not final
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End a line left open on a terminal (a wait that ended without a build of our own)."""
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False
