"""``rnnkit native build | status``: build the native LSTM/GRU/Jordan loops ahead of time
(a Docker image, CI, a shared machine), and say whether they are built and in use."""

from __future__ import annotations

import argparse
import sys
import time

from . import add_command
from ._common import NativeBuildProgress


def register(subparsers) -> None:
    p = add_command(subparsers, "native", "build the native loops ahead of time, or show their status",
                    "The native (C++) LSTM, GRU and Jordan loops are compiled once per machine and cached. "
                    "`build` compiles them now (otherwise the first layer that needs them does); `status` says "
                    "whether they are built and in use, where, for which key, with which compiler, and why not.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="compile the native loops into the cache now (or load the existing build)")
    b.add_argument("--force", action="store_true", help="compile again even when the cache holds a complete build")
    b.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    b.set_defaults(run=run_build)
    s = sub.add_parser("status", help="built? in use? the cache, the key, the compiler, and why not")
    s.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    s.set_defaults(run=run_status)


def run_build(args: argparse.Namespace) -> int:
    from ..engine import native

    progress = NativeBuildProgress(sys.stderr)
    t0 = time.monotonic()
    try:
        loaded = native.build(force=args.force, progress=progress)
    finally:
        progress.close()
    if loaded.compiled:
        print(f"built in {loaded.seconds:.0f}s: {loaded.path}")
    else:
        print(f"already built (loaded in {time.monotonic() - t0:.1f}s): {loaded.path}")
    if native.mode() == "0":
        print("note: RNNKIT_NATIVE=0, so rnnkit does not use it until that is unset", file=sys.stderr)
    return 0


def run_status(args: argparse.Namespace) -> int:
    from ..engine import native

    st = native.status()
    print(f"native loops: {'in use' if st.in_use else 'not in use: ' + str(st.reason)}")
    print(f"built: {'yes, ' + st.built['built'] + ' in ' + str(st.built['seconds']) + 's' if st.built else 'no'}")
    print(f"setting: RNNKIT_NATIVE={st.setting}")
    print(f"cache: {st.cache}")
    print(f"build directory: {st.path}")
    print(f"compiler: {st.compiler or 'none found (CXX, or c++ on PATH)'}")
    print("key: " + ", ".join(f"{k} {v}" for k, v in st.key.items() if not k.startswith("compiler")))
    return 0
