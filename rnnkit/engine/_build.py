"""Build and cache a native extension: the key, the cache directory, the lock, the build.

A build lives in ``<cache>/<prefix>_<key>/``: the compiled module ``<prefix>_<key>.so`` and
``build.json``, written last, which records the key the module was built for and the
module's SHA-256 (a truncated or altered module is not loaded but built again). The key
covers what decides the machine code: the sources and headers, the compiler flags, the
torch and Python versions, the compiler (its resolved path and ``--version``) and the CPU
(model and feature flags: the build uses ``-march=native``). Nothing on ``PATH`` besides
the compiler enters it; ``ninja`` in particular does not.

Loading a complete build imports the ``.so`` directly (``importlib``): no ninja, no lock,
no write, so a read-only cache holding a complete build loads as it is. Only a missing or
incomplete build is compiled, by ``torch.utils.cpp_extension.load`` into a fresh
``tmp-*`` directory, under an exclusive ``fcntl.flock`` on ``<cache>/<prefix>_<key>/build.lock``:
the operating system releases that lock when its holder dies (kill -9, OOM, a closed
terminal), so a killed build never blocks a later one, and compilers orphaned by the kill
write into a directory nobody reads. The finished module is moved into place and
``build.json`` written; a process that waited for the lock finds the build complete and
loads it. So under torchrun one rank compiles and the others wait, saying for whom.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import RnnkitError

try:
    import fcntl
except ImportError:  # Windows: no flock; builds are then not serialised between processes
    fcntl = None

log = logging.getLogger("rnnkit.native")

#: receives progress events: dicts with "kind": "native" and "state" (see :func:`ensure`)
Progress = Callable[[dict], None]
WAIT_REPORT_S = 5.0  # a waiting process reports this often
TICK_S = 1.0  # a compiling process reports its elapsed time this often
INFO = "build.json"
LOCK = "build.lock"
SUFFIX = ".pyd" if os.name == "nt" else ".so"  # the compiled module's, as PyTorch's builder names it


class BuildError(RnnkitError, RuntimeError):
    """The native extension could not be built or loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Spec:
    """What to build: the module name ``prefix``, the ``sources`` compiled (in parallel), the
    ``headers`` they include (part of the key; their folders are on the include path), and
    the compiler ``flags``."""

    prefix: str
    sources: tuple[Path, ...]
    headers: tuple[Path, ...] = ()
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Key:
    """The cache key: ``fields`` (what it covers, readable) and the directory name derived
    from them, ``<prefix>_<12 hex of everything but the compiler>_<8 hex of the compiler>``."""

    fields: dict
    name: str

    @property
    def base(self) -> str:
        """The name without the compiler part: matches a build by any compiler."""
        return self.name.rsplit("_", 1)[0]


def cache_root() -> Path:
    """Where builds are cached: ``RNNKIT_NATIVE_CACHE``, else ``TORCH_EXTENSIONS_DIR``, else
    PyTorch's extension cache (``~/.cache/torch_extensions``)."""
    for var in ("RNNKIT_NATIVE_CACHE", "TORCH_EXTENSIONS_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def compiler() -> tuple[str, str] | None:
    """The C++ compiler PyTorch's builder will run (``CXX``, default ``c++``) as (resolved
    path, first line of ``--version``), or None when there is none."""
    path = shutil.which(os.environ.get("CXX") or "c++")
    if path is None:
        return None
    path = os.path.realpath(path)
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (out.stdout or out.stderr).strip().splitlines()
    return path, lines[0] if lines else "unknown version"


def _cpu() -> str:
    """CPU architecture, model and feature flags (the build is for this CPU: -march=native)."""
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags", "Features", "CPU part")):
                cpu += "|" + " ".join(line.split())
                if line.startswith(("flags", "Features")):
                    break
    return cpu


def key(spec: Spec, cc: tuple[str, str] | None) -> Key:
    """The cache key of ``spec`` built by compiler ``cc`` (None: no compiler here)."""
    import torch

    sources = hashlib.sha256()
    for path in (*spec.sources, *spec.headers):
        sources.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    fields = {
        "sources": sources.hexdigest()[:16],
        "flags": " ".join(spec.flags),
        "torch": f"{torch.__version__} ({torch.version.git_version})",
        "python": f"{sys.implementation.cache_tag} {sysconfig.get_config_var('EXT_SUFFIX')}",
        "cpu": hashlib.sha256(_cpu().encode()).hexdigest()[:16],
        "compiler": cc[0] if cc else None,
        "compiler_version": cc[1] if cc else None,
    }
    base = {k: v for k, v in fields.items() if not k.startswith("compiler")}
    digest = hashlib.sha256(json.dumps(base, sort_keys=True).encode()).hexdigest()[:12]
    cc_digest = hashlib.sha256(json.dumps(cc).encode()).hexdigest()[:8]
    return Key(fields, f"{spec.prefix}_{digest}_{cc_digest}")


def complete(build_dir: Path, key: Key | None = None) -> dict | None:
    """The build record of a complete build in ``build_dir`` (for ``key``, if given; any
    compiler when the key has none, and the module file the build wrote), or None. Reads only."""
    try:
        info = json.loads((build_dir / INFO).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("key"), dict):
        return None
    if key is not None:
        wanted = key.fields if key.fields["compiler"] else {k: v for k, v in key.fields.items()
                                                            if not k.startswith("compiler")}
        if any(info["key"].get(k) != v for k, v in wanted.items()):
            return None
    try:  # the module as written (a truncated copy would crash the process that loads it)
        if _sha256(build_dir / f"{build_dir.name}{SUFFIX}") != info.get("module_sha256"):
            return None
    except OSError:
        return None
    return info


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find(root: Path, key: Key) -> Path:
    """The build directory for ``key``: its own, or without a compiler on this machine any
    complete build of the same sources, flags, torch, Python and CPU (e.g. made ahead of
    time in a Docker build stage that had the compiler)."""
    own = root / key.name
    if key.fields["compiler"] is None and not complete(own, key):
        for other in sorted(root.glob(f"{key.base}_*")):
            if complete(other, key):
                return other
    return own


def import_module(build_dir: Path) -> ModuleType:
    """Import the compiled module of ``build_dir`` (no compiler, no ninja, no write)."""
    import torch  # noqa: F401 -- the module links against libtorch, which must be loaded first

    name = build_dir.name
    spec = importlib.util.spec_from_file_location(name, build_dir / f"{name}{SUFFIX}")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {build_dir / f'{name}{SUFFIX}'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _holder(lock: Path) -> str | None:
    with contextlib.suppress(OSError):
        text = lock.read_text().strip()
        return text or None
    return None


@contextlib.contextmanager
def build_lock(path: Path, progress: Progress | None):
    """Hold the exclusive build lock ``path`` (an ``flock``, released by the OS when this
    process dies). While another process holds it, report every ``WAIT_REPORT_S`` seconds
    whom this one waits for."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            t0, reported = time.monotonic(), None
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    now = time.monotonic()
                    if reported is None or now - reported >= WAIT_REPORT_S:
                        reported = now
                        holder = _holder(path)
                        event = {"kind": "native", "state": "waiting", "elapsed": now - t0, "lock": str(path),
                                 "holder": holder}
                        if progress is not None:
                            progress(event)
                        else:
                            log.warning("waiting %.0fs for another process to finish building rnnkit's native "
                                        "loops (lock %s, held by %s)", now - t0, path, holder or "an unknown process")
                    time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)  # (releases the flock)


def _write_json(path: Path, record: dict) -> None:
    """Write ``record`` to ``path`` atomically (a reader sees the old file or the whole new one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _compile(spec: Spec, key: Key, build_dir: Path, progress: Progress | None) -> ModuleType:
    """Compile ``spec`` into a fresh ``tmp-*`` directory, move the module into ``build_dir``
    and write ``build.json``. The caller holds the build lock."""
    from torch.utils.cpp_extension import load as torch_load

    for stale in build_dir.glob("tmp-*"):  # left by a killed build (its compilers may still run)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = build_dir / f"tmp-{os.getpid()}-{secrets.token_hex(3)}"
    tmp.mkdir()
    name = build_dir.name
    t0 = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(TICK_S):
            progress({"kind": "native", "state": "compiling", "elapsed": time.monotonic() - t0,
                      "path": str(build_dir)})

    ticker = None
    if progress is None:
        log.info("compiling rnnkit's native loops into %s (once per machine and version)", build_dir)
    else:
        progress({"kind": "native", "state": "compiling", "elapsed": 0.0, "path": str(build_dir)})
        ticker = threading.Thread(target=tick, name="rnnkit-native-build-progress", daemon=True)
        ticker.start()
    try:
        module = torch_load(name=name, sources=[str(s) for s in spec.sources], extra_cflags=list(spec.flags),
                            extra_include_paths=sorted({str(h.parent) for h in spec.headers}),
                            build_directory=str(tmp), verbose=False)
    finally:
        done.set()
        if ticker is not None:
            ticker.join()
    built = Path(module.__file__)
    if built.name != f"{name}{SUFFIX}":  # PyTorch renames a second build of one name in one process
        raise BuildError(f"{name} was already built in this process; build again in a new process")
    os.replace(built, build_dir / built.name)
    seconds = time.monotonic() - t0
    _write_json(build_dir / INFO, {"key": key.fields, "module_sha256": _sha256(build_dir / built.name),
                                   "seconds": round(seconds, 1),
                                   "built": time.strftime("%Y-%m-%d %H:%M:%S"),
                                   "by": f"pid {os.getpid()} on {socket.gethostname()}"})
    shutil.rmtree(tmp, ignore_errors=True)
    if progress is None:
        log.info("built rnnkit's native loops in %.0fs", seconds)
    else:
        progress({"kind": "native", "state": "built", "elapsed": seconds, "path": str(build_dir)})
    return module


@dataclass
class Loaded:
    """A loaded build: the module, its directory, and whether this call compiled it (with
    the seconds it took)."""

    module: ModuleType
    path: Path
    compiled: bool
    seconds: float


def ensure(spec: Spec, progress: Progress | None = None, force: bool = False) -> Loaded:
    """Load the build of ``spec`` for this machine, compiling it first when the cache has
    no complete one (or ``force``). ``progress`` receives ``{"kind": "native", "state": ...}``
    with state "compiling" (every ``TICK_S`` s: "elapsed", "path"), "waiting" (every
    ``WAIT_REPORT_S`` s: "elapsed", "lock", "holder"), "built" ("elapsed", "path") and
    "loaded" ("path": another process built it while this one waited);
    without it, the same is logged (waiting as a warning: under torchrun the ranks that
    wait show it even when they log only warnings). Raises :class:`BuildError` naming the
    cause."""
    root = cache_root()
    cc = compiler()
    k = key(spec, cc)
    build_dir = find(root, k)
    if not force and complete(build_dir, k):
        try:
            return Loaded(import_module(build_dir), build_dir, False, 0.0)
        except ImportError as e:  # e.g. a library it links against changed: compile it again below
            log.warning("the native build in %s does not load (%s); compiling it again", build_dir, e)
            force = True
    if cc is None:
        raise BuildError(f"no C++ compiler found ({os.environ.get('CXX') or 'c++'} is not on PATH) and {root} "
                         f"holds no build for this machine: install one (e.g. apt-get install g++), or set "
                         f"RNNKIT_NATIVE=0 to use the Python loop")
    with contextlib.ExitStack() as stack:
        try:
            build_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(build_lock(build_dir / LOCK, progress))
            if not force and complete(build_dir, k):  # another process built it while this one waited
                module = import_module(build_dir)
                if progress is None:
                    log.info("loaded rnnkit's native loops, built by another process (%s)", build_dir)
                else:
                    progress({"kind": "native", "state": "loaded", "elapsed": 0.0, "path": str(build_dir)})
                return Loaded(module, build_dir, False, 0.0)
            t0 = time.monotonic()
            module = _compile(spec, k, build_dir, progress)
        except BuildError:
            raise
        except ImportError as e:
            raise BuildError(f"the native build in {build_dir} does not load: {e}") from e
        except OSError as e:
            raise BuildError(f"cannot write to the native build cache {build_dir} ({e.strerror or e}): set "
                             f"RNNKIT_NATIVE_CACHE to a writable directory, or build there ahead of time with "
                             f"`rnnkit native build`") from e
        except Exception as e:  # noqa: BLE001 -- say why in one line, with the fix
            raise BuildError(_explain(e, cc)) from e
        return Loaded(module, build_dir, True, time.monotonic() - t0)


def _explain(e: Exception, cc: tuple[str, str]) -> str:
    """One line on why a build failed: the compiler's first error, or a missing ninja."""
    text = str(e).strip()
    if "Ninja is required" in text:
        return "ninja is not installed: pip install ninja (or apt-get install ninja-build)"
    lines = text.splitlines()
    first_error = next((line.strip() for line in lines if "error:" in line.lower()), None)
    detail = first_error or (lines[-1].strip() if lines else type(e).__name__)
    return f"the C++ compiler ({cc[0]}) failed: {detail}"
