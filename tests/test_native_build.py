"""Building and caching the native extension (rnnkit/engine/_build.py), for real: a second
ninja first on PATH, a build killed mid-compile, two processes racing on an empty cache,
a read-only cache; the cache key; the build before the training clock; ``rnnkit native``.

The build-machinery tests compile a tiny extension (one pybind11 source and a header, a few
seconds) through the same code path as the native loops, with a C++ compiler wrapper that
records every compile and link command and can hold a compile until the test lets it go.
One test builds the real loops, cold, through ``rnnkit train`` and ``rnnkit native``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit import engine
from rnnkit.engine import _build, native
from rnnkit.models.charlm import CharLMConfig
from rnnkit.train.config import TrainConfig

from . import needs

REPO = Path(rnnkit.__file__).resolve().parents[1]
REAL_CXX = shutil.which(os.environ.get("CXX") or "c++")


@pytest.fixture(autouse=True)
def _a_compiler():
    if REAL_CXX is None:
        needs.missing("no C++ compiler here (CXX, or c++ on PATH)")

TINY_SOURCE = """
#include <pybind11/pybind11.h>
#include "tiny.h"
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", [] { return TINY_ANSWER; }); }
"""
# loads the tiny extension through _build.ensure; prints what happened as JSON
LOADER = """
import json, sys
from pathlib import Path
from rnnkit.engine import _build
src = Path(sys.argv[1])
spec = _build.Spec("tiny", (src / "tiny.cpp",), (src / "tiny.h",), ("-O0",))
progress = (lambda e: print(json.dumps(e), file=sys.stderr, flush=True)) if "--progress" in sys.argv else None
loaded = _build.ensure(spec, progress)
print(json.dumps({"answer": loaded.module.answer(), "compiled": loaded.compiled, "path": str(loaded.path)}))
"""
# a C++ compiler that records its compile and link commands, and holds them while $CXX_GO
# (when set) does not exist, after touching $CXX_STARTED
CXX_WRAPPER = """#!/bin/sh
case "$*" in
  *" -c "*|*"-shared"*)
    echo "$*" >> "$CXX_LOG"
    if [ -n "$CXX_STARTED" ]; then touch "$CXX_STARTED"; fi
    if [ -n "$CXX_GO" ]; then while [ ! -e "$CXX_GO" ]; do sleep 0.1; done; fi ;;
esac
exec {real} "$@"
"""


class Tiny:
    """The tiny extension's sources, a compiler wrapper, and a cache, in ``root`` (the
    compiler wrapper of ``like``, if given: its path is part of the cache key)."""

    def __init__(self, root: Path, like: Tiny | None = None):
        self.root = root
        self.src = root / "src"
        self.src.mkdir(parents=True)
        (self.src / "tiny.cpp").write_text(TINY_SOURCE)
        (self.src / "tiny.h").write_text("#define TINY_ANSWER 42\n")
        bin_dir = root / "bin"
        bin_dir.mkdir()
        self.cxx = like.cxx if like else bin_dir / "g++"
        if not like:
            self.cxx.write_text(CXX_WRAPPER.format(real=os.path.realpath(REAL_CXX)))
            self.cxx.chmod(0o755)
        self.log = root / "cxx.log"
        self.cache = root / "cache"

    def env(self, **extra) -> dict:
        env = {**os.environ, "PYTHONPATH": str(REPO), "RNNKIT_NATIVE_CACHE": str(self.cache), "CXX": str(self.cxx),
               "CXX_LOG": str(self.log)}
        for name in ("CXX_GO", "CXX_STARTED"):
            env.pop(name, None)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def command(self, *flags: str) -> list[str]:
        return [sys.executable, "-c", LOADER, str(self.src), *flags]

    def load(self, *prefix: str, **env) -> dict:
        """Load (building if needed) in a new process; its JSON report."""
        r = subprocess.run([*prefix, *self.command()], env=self.env(**env), capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    def compiles(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def _snapshot(root: Path) -> dict:
    """Every entry under ``root`` with its inode, size, mode and modification time."""
    return {str(p.relative_to(root)): (p.lstat().st_ino, p.lstat().st_size, p.lstat().st_mode, p.lstat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def _wait_for(condition, what: str, timeout: float = 300.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (status {proc.returncode}) before {what}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def built_tiny(tmp_path_factory) -> Tiny:
    """The tiny extension, built once (a cold build: one compile and one link)."""
    tiny = Tiny(tmp_path_factory.mktemp("tiny"))
    report = tiny.load()
    assert report == {"answer": 42, "compiled": True, "path": report["path"]}
    assert len(tiny.compiles()) == 2 and "-shared" in tiny.compiles()[1]
    return tiny


def _other_ninja() -> str:
    """A ninja other than the one first on PATH when the machine has one (pip's versus
    Debian's), else the same one."""
    first = shutil.which("ninja")
    assert first is not None, "ninja is a dependency of rnnkit"

    def version(path):
        return subprocess.run([path, "--version"], capture_output=True, text=True).stdout.strip()

    for candidate in ("/usr/bin/ninja", "/bin/ninja", "/usr/local/bin/ninja"):
        if os.path.exists(candidate) and version(candidate) != version(first):
            return candidate
    return first


def test_a_second_ninja_first_on_path_does_not_rebuild(built_tiny, tmp_path):
    """Loading a complete build runs no ninja and no compiler, whichever ninja PATH finds
    first (the pip and Debian ninjas once recompiled the loops on every switch)."""
    so = Path(built_tiny.load()["path"])
    so = so / f"{so.name}.so"
    before, compiles = so.stat(), len(built_tiny.compiles())
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    ninja_log = tmp_path / "ninja.log"
    (wrappers / "ninja").write_text(f'#!/bin/sh\necho "$*" >> {ninja_log}\nexec {_other_ninja()} "$@"\n')
    (wrappers / "ninja").chmod(0o755)
    path = f"{wrappers}{os.pathsep}{os.environ['PATH']}"
    assert subprocess.run(["sh", "-c", "command -v ninja"], env={**os.environ, "PATH": path}, capture_output=True,
                          text=True).stdout.strip() == str(wrappers / "ninja")
    report = built_tiny.load(PATH=path)
    assert report["answer"] == 42 and not report["compiled"]
    after = so.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(built_tiny.compiles()) == compiles and not ninja_log.exists()


def test_a_build_killed_mid_compile_does_not_block_the_next(tmp_path):
    """kill -9 of a process while its compiler runs (its compiler and ninja live on as
    orphans, PyTorch's lock file stays behind): the next process builds and loads."""
    tiny = Tiny(tmp_path)
    started, go = tmp_path / "started", tmp_path / "go"
    first = subprocess.Popen(tiny.command(), env=tiny.env(CXX_STARTED=started, CXX_GO=go), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(started.exists, "the first compile to start", proc=first)
        (build_dir,) = tiny.cache.iterdir()
        assert (build_dir / _build.LOCK).read_text().startswith(f"pid {first.pid} ")
        assert list(build_dir.glob("tmp-*/lock")), "PyTorch's own lock file, which used to hang every later run"
        os.kill(first.pid, signal.SIGKILL)  # the Python process only: its ninja and compiler keep running
        first.wait(timeout=60)
        report = tiny.load()  # (its compile is not held: no CXX_GO)
        assert report["answer"] == 42 and report["compiled"]
        assert _build.complete(build_dir)["by"].startswith("pid ")
        assert not list(build_dir.glob("tmp-*")), "the killed build's directory is cleared"
    finally:
        go.touch()  # let the orphaned compile finish (into a directory nobody reads) ...
        try:
            os.killpg(first.pid, signal.SIGKILL)  # ... or end it: the process group this test started
        except ProcessLookupError:
            pass


def test_two_processes_racing_on_an_empty_cache_compile_once(tmp_path):
    """As torchrun ranks starting cold: one process compiles, the other waits for it (saying
    for whom) and loads its build. Exactly one compile and one link happen."""
    tiny = Tiny(tmp_path)
    started, go = tmp_path / "started", tmp_path / "go"
    env = tiny.env(CXX_STARTED=started, CXX_GO=go)
    errs = [tmp_path / "err0", tmp_path / "err1"]
    procs = [subprocess.Popen(tiny.command(), env=env, stdout=subprocess.PIPE, stderr=open(err, "w"), text=True)
             for err in errs]
    try:
        _wait_for(started.exists, "one process to start compiling")
        holder = int(re.match(r"pid (\d+) ", (next(tiny.cache.iterdir()) / _build.LOCK).read_text()).group(1))
        waiter = [i for i, p in enumerate(procs) if p.pid != holder]
        assert len(waiter) == 1
        waiting = f"held by pid {holder} on"
        _wait_for(lambda: waiting in errs[waiter[0]].read_text(), "the other process to report its wait")
        go.touch()
        reports = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        go.touch()
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [r["answer"] for r in reports] == [42, 42]
    assert sorted(r["compiled"] for r in reports) == [False, True]
    assert not reports[waiter[0]]["compiled"] and reports[waiter[0]]["path"] == reports[1 - waiter[0]]["path"]
    commands = tiny.compiles()
    assert len(commands) == 2 and sum("-shared" in c for c in commands) == 1, commands
    assert "waiting" in errs[waiter[0]].read_text() and "rnnkit's native loops" in errs[waiter[0]].read_text()


def _read_only(path: Path) -> list[str]:
    """A command prefix under which ``path`` is read-only for real: a read-only bind mount in
    a private mount namespace (as root, where permission bits do not stop writes), else
    permission bits (not root). Empty when neither is possible: then the test relies on its
    snapshot of the directory and the compiler log alone."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
        return []
    prefix = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(path)]
    probe = subprocess.run([*prefix, "sh", "-c", f'touch "{path}/probe"'], capture_output=True)
    if probe.returncode != 0 and not (path / "probe").exists():
        return prefix
    (path / "probe").unlink(missing_ok=True)
    subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
    return []


def _writable_again(path: Path) -> None:
    subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)


def test_a_read_only_cache_with_a_complete_build_loads_it(built_tiny, tmp_path):
    """A shared image or a read-only home holding a complete build: loaded as it is, with no
    compile, no lock file and no write, and no "install a compiler" message."""
    tiny = Tiny(tmp_path, like=built_tiny)
    shutil.copytree(built_tiny.cache, tiny.cache)
    prefix = _read_only(tiny.cache)
    try:
        before = _snapshot(tiny.cache)
        report = tiny.load(*prefix)
        assert report["answer"] == 42 and not report["compiled"]
        assert _snapshot(tiny.cache) == before and not tiny.compiles()
    finally:
        _writable_again(tiny.cache)


def test_a_read_only_cache_without_a_complete_build_says_so(built_tiny, tmp_path, monkeypatch):
    """An incomplete build in a read-only cache cannot be finished: the error names the
    cache and the fixes, not the compiler. (Root without ``unshare``, e.g. in a container:
    the file system's refusal is emulated in this process, on ``os.open`` and ``os.mkdir``.)"""
    tiny = Tiny(tmp_path, like=built_tiny)
    shutil.copytree(built_tiny.cache, tiny.cache)
    (build_dir,) = tiny.cache.iterdir()
    (build_dir / _build.INFO).unlink()  # as a build killed before it finished
    prefix = _read_only(tiny.cache)
    try:
        if prefix or os.geteuid() != 0:
            r = subprocess.run([*prefix, *tiny.command()], env=tiny.env(), capture_output=True, text=True,
                               timeout=600)
            assert r.returncode != 0
            message = r.stderr.strip().splitlines()[-1]
        else:
            message = _build_in_an_emulated_read_only_cache(tiny, monkeypatch)
    finally:
        _writable_again(tiny.cache)
    assert re.search(r"BuildError: cannot write to the native build cache .*RNNKIT_NATIVE_CACHE.*rnnkit native build",
                     message), message
    assert "compiler" not in message and not tiny.compiles()


def _build_in_an_emulated_read_only_cache(tiny: Tiny, monkeypatch) -> str:
    import errno

    def refuse(real, write_flags):
        def call(path, *args, **kwargs):
            flags = args[0] if args else kwargs.get("flags", 0)
            if str(path).startswith(str(tiny.cache)) and (write_flags is None or flags & write_flags):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "open", refuse(os.open, os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    monkeypatch.setattr(os, "mkdir", refuse(os.mkdir, None))
    for name, value in tiny.env().items():
        monkeypatch.setenv(name, value)
    spec = _build.Spec("tiny", (tiny.src / "tiny.cpp",), (tiny.src / "tiny.h",), ("-O0",))
    with pytest.raises(_build.BuildError) as e:
        _build.ensure(spec)
    return f"BuildError: {e.value}"


def test_a_damaged_build_is_compiled_again(built_tiny, tmp_path):
    """A truncated module (a partial copy into an image, a full disk) is not loaded (it
    would crash the process) but compiled again."""
    tiny = Tiny(tmp_path, like=built_tiny)
    shutil.copytree(built_tiny.cache, tiny.cache)
    (build_dir,) = tiny.cache.iterdir()
    so = build_dir / f"{build_dir.name}{_build.SUFFIX}"
    so.write_bytes(so.read_bytes()[:1000])  # truncated: does not load
    report = tiny.load()
    assert report["answer"] == 42 and report["compiled"] and len(tiny.compiles()) == 2


# -- the cache key -----------------------------------------------------------------------------------------------

def _spec(tmp_path, source="int x;", flags=("-O3",)) -> _build.Spec:
    (tmp_path / "a.cpp").write_text(source)
    (tmp_path / "a.h").write_text("#pragma once\n")
    return _build.Spec("k", (tmp_path / "a.cpp",), (tmp_path / "a.h",), flags)


def test_the_key_covers_sources_flags_torch_python_compiler_and_cpu(tmp_path, monkeypatch):
    cc = ("/usr/bin/g++-12", "g++ (Debian 12.2.0-14) 12.2.0")
    base = _build.key(_spec(tmp_path), cc)
    assert _build.key(_spec(tmp_path), cc) == base
    changed = {
        "source": _build.key(_spec(tmp_path, source="int y;"), cc),
        "flags": _build.key(_spec(tmp_path, flags=("-O2",)), cc),
        "compiler version": _build.key(_spec(tmp_path), (cc[0], "g++ (Debian 12.3.0) 12.3.0")),
        "compiler path": _build.key(_spec(tmp_path), ("/usr/bin/clang++", cc[1])),
    }
    (tmp_path / "a.h").write_text("#pragma once\nint z;\n")
    changed["header"] = _build.key(_build.Spec("k", (tmp_path / "a.cpp",), (tmp_path / "a.h",), ("-O3",)), cc)
    (tmp_path / "a.h").write_text("#pragma once\n")
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    changed["torch"] = _build.key(_spec(tmp_path), cc)
    monkeypatch.undo()
    monkeypatch.setattr(_build, "_cpu", lambda: "x86_64|model name : another CPU|flags : sse2")
    changed["cpu"] = _build.key(_spec(tmp_path), cc)
    monkeypatch.undo()
    assert _build.key(_spec(tmp_path), cc) == base
    names = [k.name for k in changed.values()]
    assert base.name not in names and len(set(names)) == len(names), changed
    # the compiler is the last part of the name: a build by any compiler shares the rest
    assert changed["compiler version"].base == base.base != changed["flags"].base


def test_the_key_ignores_what_else_is_on_path(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    base = _build.key(spec, _build.compiler())
    extra = tmp_path / "bin"
    extra.mkdir()
    (extra / "ninja").symlink_to(shutil.which("ninja"))
    monkeypatch.setenv("PATH", f"{extra}{os.pathsep}{os.environ['PATH']}")
    assert _build.key(spec, _build.compiler()) == base


def _fake_build(root: Path, key: _build.Key, name: str | None = None) -> Path:
    d = root / (name or key.name)
    d.mkdir(parents=True)
    (d / f"{d.name}.so").write_bytes(b"")
    (d / _build.INFO).write_text(json.dumps({"key": key.fields, "seconds": 1.0,
                                             "module_sha256": hashlib.sha256(b"").hexdigest()}))
    return d


def test_without_a_compiler_any_compilers_complete_build_of_the_same_key_is_found(tmp_path):
    """A runtime image without a compiler finds the build made ahead of time by another."""
    (tmp_path / "s").mkdir()
    spec = _spec(tmp_path / "s")
    built_by = _build.key(spec, ("/usr/bin/g++", "g++ 12"))
    other = _build.key(_spec(tmp_path / "s", flags=("-O1",)), ("/usr/bin/g++", "g++ 12"))
    root = tmp_path / "cache"
    _fake_build(root, other)
    made = _fake_build(root, built_by)
    assert _build.find(root, _build.key(spec, None)) == made
    assert _build.find(root, _build.key(spec, ("/usr/bin/g++", "g++ 13"))) != made  # a new compiler: rebuild
    (made / f"{made.name}.so").unlink()
    assert _build.complete(made) is None  # no module: incomplete


def test_a_build_record_of_another_key_is_not_complete(tmp_path):
    (tmp_path / "s").mkdir()
    spec = _spec(tmp_path / "s")
    k = _build.key(spec, ("/usr/bin/g++", "g++ 12"))
    stale = _build.key(_spec(tmp_path / "s", source="int old;"), ("/usr/bin/g++", "g++ 12"))
    d = _fake_build(tmp_path / "cache", stale, name=k.name)
    assert _build.complete(d) is not None and _build.complete(d, k) is None


# -- before the clock, progress, status ---------------------------------------------------------------------------

@pytest.mark.parametrize("make,uses", [
    (lambda: rnnkit.LSTM(3, 4, peephole=True), True), (lambda: rnnkit.GRU(3, 4), True),
    (lambda: rnnkit.Jordan(3, 4, 2), True), (lambda: rnnkit.LSTM(3, 4).double(), True),
    (lambda: rnnkit.GRU(3, 4, layer_norm=True), True), (lambda: rnnkit.IndRNN(3, 4), True),
    (lambda: rnnkit.RNN(3, 4), True),  # RNN: inference
    (lambda: rnnkit.LSTM(3, 4, recurrent_activation="hard_sigmoid"), False),
    (lambda: torch.nn.Sequential(torch.nn.Linear(3, 3), rnnkit.GRU(3, 4)), True),
])
def test_uses_native_loops(make, uses, monkeypatch):
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    model = make()
    assert engine.uses_native_loops(model) is uses
    assert not engine.uses_native_loops(model, torch.bfloat16)  # autocast to bf16 runs the Python loop
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    assert not engine.uses_native_loops(model)


@pytest.mark.parametrize("cell,loads", [("lstm", True), ("lru", False)])
def test_train_loads_the_native_loops_before_the_clock_starts(tmp_path, monkeypatch, cell, loads):
    """The build (here a stand-in that reports one progress event) happens before the
    trainer's "start" event, reports through the callback, and only when the model uses it."""
    events = []

    def fake_load(progress=None):
        events.append("load")
        progress({"kind": "native", "state": "compiling", "elapsed": 0.0, "path": "x"})

    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    monkeypatch.setattr(native, "load", fake_load)
    monkeypatch.setattr(native, "dispatch", lambda *args: None)  # the layers run the Python loop
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcdefgh " * 300)
    rnnkit.train(corpus, tmp_path / "run", CharLMConfig(cell=cell, hidden_size=8, embed_size=4, num_layers=1),
                 TrainConfig(batch_size=2, seq_len=8, max_steps=1, max_time=0, eval_every=1, sample_every=0),
                 callback=lambda e: events.append(e["kind"] + ("/" + e["state"] if e["kind"] == "native" else "")))
    expected = ["load", "native/compiling", "start"] if loads else ["start"]
    assert events[:len(expected)] == expected


@pytest.mark.parametrize("layer,loads", [
    (rnnkit.GRU, True), (lambda i, h: rnnkit.LSTM(i, h, recurrent_activation="hard_sigmoid"), False)])
def test_fit_loads_the_native_loops_before_its_clock(monkeypatch, layer, loads):
    events = []
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    monkeypatch.setattr(native, "load", lambda progress=None: events.append("load"))
    from rnnkit.train.fit import FitConfig, fit

    def loss(model, batch):
        events.append("step")
        return model(batch)[0].pow(2).mean()

    fit(layer(3, 4), loss, [torch.randn(5, 2, 3)], FitConfig(max_steps=1, eval_every=1))
    assert events[:2] == (["load", "step"] if loads else ["step"])


def test_the_progress_line(capsys):
    from rnnkit.cli._common import NativeBuildProgress

    progress = NativeBuildProgress(sys.stderr, every=10)
    for t in (0.0, 1.0, 9.0, 10.5, 12.0):
        progress({"kind": "native", "state": "compiling", "elapsed": t, "path": "/c/x"})
    progress({"kind": "native", "state": "built", "elapsed": 31.4, "path": "/c/x"})
    progress({"kind": "native", "state": "waiting", "elapsed": 0.0, "lock": "/c/x/build.lock", "holder": "pid 7 on h"})
    assert capsys.readouterr().err.splitlines() == [
        "compiling rnnkit's native loops (once per machine and version): 0s",
        "compiling rnnkit's native loops (once per machine and version): 10s",
        "built rnnkit's native loops in 31s (/c/x)",
        "waiting for pid 7 on h to finish building rnnkit's native loops (lock /c/x/build.lock): 0s",
    ]


@pytest.mark.slow
def test_cold_cache_rnnkit_train_compiles_before_the_clock_then_native_status_and_build(tmp_path):
    """The real loops, cold (the suite's one full native compile): ``rnnkit train`` compiles
    them with a progress line before its clock starts, so its first step's time is that of
    a step, not of the compile; ``rnnkit native status`` then reports the build in use, and
    ``rnnkit native build`` finds it built."""
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RNNKIT_NATIVE_CACHE": str(cache), "RNNKIT_NATIVE": "1"}
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(200)))

    def rnnkit_cli(*args):
        r = subprocess.run([sys.executable, "-m", "rnnkit", *args], env=env, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stderr
        return r

    r = rnnkit_cli("train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "2",
                   "--hidden-size", "16", "--embed-size", "8", "--batch-size", "2", "--seq-len", "16",
                   "--eval-every", "2", "--sample-every", "0")
    assert "compiling rnnkit's native loops (once per machine and version): 0s" in r.stderr
    built = re.search(r"built rnnkit's native loops in (\d+)s \((.+)\)", r.stderr)
    assert built, r.stderr
    build_dir = Path(built.group(2))
    record = _build.complete(build_dir)
    assert build_dir.parent == cache and record is not None
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and first["time"] < record["seconds"]  # a compile inside the clock would be in it
    status = rnnkit_cli("native", "status").stdout
    assert "native loops: in use" in status and f"build directory: {build_dir}" in status
    assert f"cache: {cache}" in status and "built: yes" in status and "compiler: /" in status
    again = rnnkit_cli("native", "build").stdout
    assert again.startswith("already built") and str(build_dir) in again
