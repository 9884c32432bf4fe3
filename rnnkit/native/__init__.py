"""Native (C++) time loops, built on first use with PyTorch's extension builder.

The Python engine (:mod:`rnnkit.engine`) dispatches a dozen tensor operations per step,
and at small and medium sizes that dispatch, not the arithmetic, sets the speed. For the
LSTM, the GRU and the Jordan network, :mod:`rnnkit.native` runs the same forward and
hand-written BPTT (``rnnkit/native/loops.cpp``, the arithmetic of the cells in
:mod:`rnnkit.cells` line by line) as one C++ loop: per step the recurrent GEMM
and one fused pass over the gates (docs/performance.md).

The extension is compiled the first time a layer needs it (about a minute; it needs a C++
compiler and ``ninja``, e.g. ``pip install ninja``) and cached by PyTorch under
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``). ``RNNKIT_NATIVE``
chooses: ``auto`` (default; use it when it builds, otherwise warn once and run the
Python loop), ``0`` (never), ``1`` (always; a failed build is an error).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name("loops.cpp")]
_lock = threading.Lock()
_module: ModuleType | None = None
_failed: str | None = None


def mode() -> str:
    """The ``RNNKIT_NATIVE`` setting: ``"auto"``, ``"0"`` or ``"1"``."""
    value = os.environ.get("RNNKIT_NATIVE", "auto").strip().lower() or "auto"
    if value not in ("auto", "0", "1"):
        raise ValueError(f"RNNKIT_NATIVE must be auto, 0 or 1, got {value!r}")
    return value


def _machine_tag(flags: list[str]) -> str:
    """Sources, compiler flags and CPU model: the build is for this machine (-march=native),
    so a home directory shared by different machines keeps one build per CPU."""
    h = hashlib.sha256(" ".join(flags).encode())
    for src in SOURCES:
        h.update(src.read_bytes())
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                cpu += line
                if line.startswith("flags"):
                    break
    except OSError:
        pass
    h.update(cpu.encode())
    return h.hexdigest()[:12]


def _is_built(name: str) -> bool:
    """Whether PyTorch's extension cache already holds this build (then loading is quick)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return any(Path(_get_build_directory(name, verbose=False)).glob(f"{name}*.so"))
    except Exception:  # noqa: BLE001 -- a private helper: when in doubt, say that it may compile
        return False


def load() -> ModuleType | None:
    """The compiled extension, building it on first use; None when disabled or unbuildable
    (``RNNKIT_NATIVE=1`` raises instead)."""
    global _module, _failed
    setting = mode()
    if setting == "0":
        return None
    if _module is not None:
        return _module
    if _failed is not None:
        if setting == "1":
            raise RuntimeError(f"RNNKIT_NATIVE=1 but the native loops could not be built: {_failed}")
        return None
    with _lock:
        if _module is None and _failed is None:
            try:
                from torch.utils.cpp_extension import load as build

                # no FP traps lets the gate loops vectorize; OpenMP SIMD pragmas (no runtime) the
                # layer-norm sums
                flags = ["-O3", "-fno-trapping-math", "-fopenmp-simd"]
                if platform.machine() in ("x86_64", "AMD64"):
                    flags.append("-march=native")
                name = f"rnnkit_native_{_machine_tag(flags)}"
                if not _is_built(name):
                    log.info("compiling rnnkit's native LSTM/GRU loops (once per machine and version, "
                             "about a minute)")
                _module = build(name=name, sources=[str(s) for s in SOURCES],
                                extra_cflags=flags, verbose=False)
            except Exception as e:  # noqa: BLE001 -- any build failure means: use the Python loop
                _failed = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                if setting == "1":
                    raise RuntimeError(f"RNNKIT_NATIVE=1 but the native loops could not be built: "
                                       f"{_failed}") from e
                log.warning("rnnkit: the native LSTM/GRU loops could not be built (%s); using the Python loop, "
                            "which is slower. Install a C++ compiler and `pip install ninja`, or set "
                            "RNNKIT_NATIVE=0 to silence this.", _failed)
    return _module


def available() -> bool:
    """Whether the native loops are in use (builds them if needed)."""
    return load() is not None
