"""The command line: ``rnnkit <command> ...``, a thin shell over the library.

Every module in this package whose name does not start with ``_`` is a command: it
defines ``register(subparsers)`` that adds its parser with :func:`add_command` and sets
``run=`` as the parser default. Errors of the documented types print as one line and
exit with status 2 (1 for anything unexpected); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..errors import RnnkitError

EXPECTED_ERRORS = (RnnkitError, ValueError, TypeError, OSError)


def add_command(subparsers, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add a subcommand with the options every command shares (``--debug``)."""
    parser = subparsers.add_parser(name, help=help, description=description or help)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="rnnkit", description="Recurrent neural networks, done right.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"rnnkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except EXPECTED_ERRORS as e:
        if args.debug:
            raise
        print(f"rnnkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - last line of defence: one line unless --debug
        if args.debug:
            raise
        print(f"rnnkit {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug)",
              file=sys.stderr)
        return 1


def entry() -> NoReturn:
    """The ``rnnkit`` executable and ``python -m rnnkit``: :func:`main`, then exit.

    A process that joined a torchrun process group leaves through ``os._exit`` once its
    output is flushed. With the gloo backend, a collective's worker thread can still be
    releasing its last tensors while the interpreter finalizes; the release then needs the
    GIL, which a finalizing interpreter no longer hands out, and the process aborts
    ("terminate called without an active exception") after a successful run. Skipping the
    finalization of a finished rank avoids that PyTorch race; nothing of rnnkit's is lost,
    since checkpoints are written and closed before :func:`main` returns.
    """
    from ..train import distributed

    code = main()
    if distributed.joined_process_group():
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
                pass
        os._exit(code)
    sys.exit(code)
