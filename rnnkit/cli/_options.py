"""The one options vocabulary of the commands: durations, and ``--flags`` generated from the
fields of a config dataclass (help text in the field's metadata, the default only in the
dataclass).

    @dataclass
    class FitConfig:
        lr: float = field(default=3e-3, metadata={"help": "peak learning rate"})
        max_time: float = field(default=0.0, metadata={"help": "...", "type": "duration"})

    add_dataclass_options(parser, FitConfig)           # --lr X, --max-time DURATION
    FitConfig(**given(args, FitConfig))                # only what the user gave
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s?)?")


def parse_duration(text: str) -> float:
    """Seconds from a duration: plain seconds (``90``, ``2.5``) or units ``h``, ``m``, ``s``
    in that order, each at most once (``90s``, ``5m``, ``1.5h``, ``1h30m``, ``2m30s``).
    ValueError (one line) for an empty, negative or unreadable text."""
    t = str(text).strip().lower().replace(" ", "")
    if not t or not any(ch.isdigit() for ch in t) or not _DURATION.fullmatch(t):
        hint = "; a duration cannot be negative" if t.startswith("-") else ""
        raise ValueError(f"expected a duration like 90, 90s, 5m, 1h30m or 1.5h, got {text!r}{hint}")
    seconds = 0.0
    for number, unit in re.findall(rf"({_NUMBER})([hms]?)", t):
        seconds += float(number) * _UNIT_SECONDS.get(unit, 1.0)
    return seconds


def duration(text: str) -> float:
    """argparse type: a duration in seconds, 0 allowed (0 = no limit where a command says so)."""
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_duration(text: str) -> float:
    """argparse type: a duration of more than 0 seconds."""
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration like 90s, 2m or 1h, got {text!r}")
    return seconds


#: argparse types named in field metadata (``metadata={"type": "duration"}``)
NAMED_TYPES: dict[str, Callable[[str], object]] = {"duration": duration, "positive_duration": positive_duration}
_METAVARS = {int: "N", float: "X", str: "NAME"}


def _base_type(annotation) -> type:
    """int / float / str / bool of a field's resolved annotation, also for ``int | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = tuple(a for a in typing.get_args(annotation) if a is not type(None))
        if len(args) == 1:
            return args[0]
    return annotation


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_options(parser, cls, *, only: Iterable[str] | None = None, exclude: Iterable[str] = (),
                          flags: Mapping[str, list[str]] | None = None, title: str | None = None,
                          choices: Mapping[str, Iterable[str]] | None = None,
                          help: Mapping[str, str] | None = None, none_means: str = "none") -> None:
    """Add one ``--flag`` per field of the dataclass ``cls`` to ``parser`` (in a group named
    ``title`` when given).

    The flag is the field name with dashes (``flags`` adds or replaces spellings); the type
    comes from the annotation (``bool`` → ``--x/--no-x``; ``int | None`` → int) or the
    metadata's ``"type"`` (a name of :data:`NAMED_TYPES`); the help text from the metadata's
    ``"help"`` and the default shown is the dataclass's. Nothing is given a default here: an
    option not on the command line is absent from the namespace (:func:`given`), so the
    dataclass default applies. ``none_means``: how the help shows a default of None (e.g.
    "the task's")."""
    target = parser.add_argument_group(title) if title else parser
    wanted = list(only) if only is not None else None
    chosen = [f for f in dataclasses.fields(cls) if f.name not in set(exclude)
              and (wanted is None or f.name in wanted)]
    if wanted is not None:
        missing = sorted(set(wanted) - {f.name for f in chosen})
        if missing:
            raise ValueError(f"{cls.__name__} has no field(s) {missing}")
        chosen.sort(key=lambda f: wanted.index(f.name))
    hints = typing.get_type_hints(cls)
    for f in chosen:
        spellings = (flags or {}).get(f.name) or [option_flag(f.name)]
        text = (help or {}).get(f.name) or f.metadata.get("help") or f.name.replace("_", " ")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        kind = _base_type(hints[f.name])
        if default is None:
            shown = none_means
        elif isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = default
        text = f"{text} (default: {shown})"
        if kind is bool:
            target.add_argument(*spellings, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text)
            continue
        if kind not in _METAVARS:
            raise TypeError(f"{cls.__name__}.{f.name}: cannot make a command-line option of type {f.type!r}")
        named = f.metadata.get("type")
        parse = NAMED_TYPES[named] if named else kind
        metavar = "DURATION" if named else _METAVARS[kind]
        field_choices = (choices or {}).get(f.name) or f.metadata.get("choices")
        target.add_argument(*spellings, dest=f.name, type=parse, default=argparse.SUPPRESS, help=text,
                            metavar=metavar if field_choices is None else None,
                            choices=list(field_choices) if field_choices is not None else None)


def given(args: argparse.Namespace, cls) -> dict:
    """The fields of the dataclass ``cls`` the user gave on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def add_quiet(parser, help: str = "no progress bar (the per-evaluation lines stay)") -> None:
    """``--quiet``: the flag of the training commands that turns their progress bar off
    (:class:`rnnkit.cli._common.TrainingBar`)."""
    parser.add_argument("--quiet", action="store_true", help=help)
