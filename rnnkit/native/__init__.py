"""Native (C++) time loops, built once per machine with PyTorch's extension builder.

The Python engine (:mod:`rnnkit.engine`) dispatches a dozen tensor operations per step,
and at small and medium sizes that dispatch, not the arithmetic, sets the speed. For the
LSTM, the GRU and the Jordan network, :mod:`rnnkit.native` runs the same forward and
hand-written BPTT as one C++ loop (one file per family, ``lstm.cpp``, ``gru.cpp``,
``jordan.cpp``, over ``common.h``, which states every entry point's arguments and shapes;
``module.cpp`` binds them): per step the recurrent GEMM and one fused pass over the gates
(docs/performance.md).

The extension is compiled the first time it is needed (under a minute on two cores;
it needs a C++ compiler and ``ninja``) or ahead of time with ``rnnkit native build``, and
cached in ``RNNKIT_NATIVE_CACHE`` (default: ``TORCH_EXTENSIONS_DIR``, else
``~/.cache/torch_extensions``) under a key of the sources, flags, torch and Python
versions, compiler and CPU (:mod:`rnnkit.native._build`: the key, the lock, what happens
to a killed build or a read-only cache). ``RNNKIT_NATIVE`` chooses: ``auto`` (default; use
it when it builds, otherwise warn once and run the Python loop), ``0`` (never), ``1``
(always; a failed build is an error).
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from . import _build
from ._build import BuildError, Progress

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
#: the C++ sources, compiled in parallel: one per cell family, then the Python module. A
#: family's file may live anywhere (e.g. next to its cell): its line here is all that names it.
SOURCES = [_HERE / "lstm.cpp", _HERE / "gru.cpp", _HERE / "jordan.cpp", _HERE / "module.cpp"]
#: the headers they include (``#include "common.h"``: its folder is on the include path)
HEADERS = [_HERE / "common.h"]

_lock = threading.Lock()
_module: ModuleType | None = None
_path: Path | None = None
_failed: str | None = None


def mode() -> str:
    """The ``RNNKIT_NATIVE`` setting: ``"auto"``, ``"0"`` or ``"1"``."""
    value = os.environ.get("RNNKIT_NATIVE", "auto").strip().lower() or "auto"
    if value not in ("auto", "0", "1"):
        raise ValueError(f"RNNKIT_NATIVE must be auto, 0 or 1, got {value!r}")
    return value


def spec() -> _build.Spec:
    """What is built: the sources, headers and compiler flags."""
    # no FP traps lets the gate loops vectorize; OpenMP SIMD pragmas (no runtime) the
    # layer-norm sums
    flags = ["-O3", "-fno-trapping-math", "-fopenmp-simd"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    return _build.Spec("rnnkit_native", tuple(SOURCES), tuple(HEADERS), tuple(flags))


def load(progress: Progress | None = None) -> ModuleType | None:
    """The compiled extension, building it on first use; None when disabled or unbuildable
    (``RNNKIT_NATIVE=1`` raises instead). ``progress`` receives the build's events (see
    :func:`rnnkit.native._build.ensure`); without it, a wait for another process is logged."""
    global _module, _path, _failed
    setting = mode()
    if setting == "0":
        return None
    if _module is not None:
        return _module
    if _failed is None:
        with _lock:
            if _module is None and _failed is None:
                try:
                    loaded = _build.ensure(spec(), progress)
                    _module, _path = loaded.module, loaded.path
                except Exception as e:  # noqa: BLE001 -- any build failure means: use the Python loop
                    _failed = str(e) if isinstance(e, BuildError) else f"{type(e).__name__}: {e}"
                    if setting == "auto":
                        log.warning("rnnkit: the native LSTM/GRU/Jordan loops are not available (%s); using the "
                                    "Python loop, which is slower. Set RNNKIT_NATIVE=0 to silence this.", _failed)
    if _failed is not None and setting == "1":
        raise RuntimeError(f"RNNKIT_NATIVE=1 but the native loops could not be built: {_failed}")
    return _module


def available() -> bool:
    """Whether the native loops are in use (builds them if needed)."""
    return load() is not None


def build(force: bool = False, progress: Progress | None = None) -> _build.Loaded:
    """Build the native loops now (``rnnkit native build``), whatever ``RNNKIT_NATIVE`` says;
    a complete build in the cache is loaded instead unless ``force``. Raises
    :class:`BuildError` naming the cause."""
    global _module, _path, _failed
    with _lock:
        loaded = _build.ensure(spec(), progress, force=force)
        _module, _path, _failed = loaded.module, loaded.path, None
    return loaded


@dataclass
class Status:
    """Where the native loops stand on this machine (``rnnkit native status``)."""

    setting: str  # RNNKIT_NATIVE
    cache: Path  # the cache folder
    path: Path  # this machine's build directory in it
    key: dict  # what the build's key covers (sources, flags, torch, Python, CPU, compiler)
    compiler: str | None  # "path (version)", None when there is none
    built: dict | None  # the record of the complete build, None when there is none
    in_use: bool  # whether rnnkit runs the native loops (now, in this process)
    reason: str | None  # why not, when not


def status() -> Status:
    """The state of the native loops, without building anything (a complete build is
    imported to check that it loads)."""
    setting = os.environ.get("RNNKIT_NATIVE", "auto")
    root = _build.cache_root()
    cc = _build.compiler()
    key = _build.key(spec(), cc)
    path = _build.find(root, key)
    built = _build.complete(path, key)
    reason = None
    try:
        setting = mode()
    except ValueError as e:
        reason = str(e)
    if reason is None and setting == "0":
        reason = "RNNKIT_NATIVE=0 turns them off"
    elif reason is None and _failed is not None:
        reason = _failed
    elif reason is None and _module is None and built is None:
        reason = ("not built yet: the first layer that needs them compiles them, or run `rnnkit native build`"
                  if cc else "no C++ compiler found and no build in the cache: install one (e.g. apt-get install "
                  "g++), or build ahead of time where there is one (`rnnkit native build`)")
    elif reason is None and _module is None:
        try:
            _build.import_module(path)
        except ImportError as e:
            reason = f"the build does not load: {e}"
    return Status(setting, root, _path or path, key.fields, f"{cc[0]} ({cc[1]})" if cc else None, built,
                  reason is None, reason)


__all__ = ["BuildError", "HEADERS", "SOURCES", "Status", "available", "build", "load", "mode", "spec", "status"]
