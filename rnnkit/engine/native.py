"""Native (C++) time loops: the build of the extension and the engine's one native path.

The Python loop (:mod:`rnnkit.engine.bptt`) dispatches a dozen tensor operations per step,
and at small and medium sizes that dispatch, not the arithmetic, sets the speed. A cell
family with a native loop runs the same forward and hand-written BPTT as one C++ loop (its
file in ``rnnkit/cells/native/``, ``lstm.cpp``, ``gru.cpp``, ``jordan.cpp``, over
``common.h``, which states every entry point's arguments and shapes and its named results;
``module.cpp`` binds them): per step the recurrent GEMM and one fused pass over the gates
(docs/performance.md).

The engine knows no family. It asks the cell (:meth:`rnnkit.cells.base.Cell.native_binding`)
and, when the cell has a binding for its options, runs :class:`_Native`, the one autograd
Function of every native loop: the input projection, the masks of the loop options, the
saved tensors by name, the double backward by the reference and the input and parameter
gradients are the engine's; calling the family's entry points and assembling its
parameter gradients are the binding's (:class:`rnnkit.cells.base.NativeBinding`).

The extension is compiled the first time it is needed (under a minute on two cores;
it needs a C++ compiler and ``ninja``) or ahead of time with ``rnnkit native build``, and
cached in ``RNNKIT_NATIVE_CACHE`` (default: ``TORCH_EXTENSIONS_DIR``, else
``~/.cache/torch_extensions``) under a key of the sources, flags, torch and Python
versions, compiler and CPU (:mod:`rnnkit.engine._build`: the key, the lock, what happens
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
from typing import NamedTuple

import torch
from torch import Tensor

from ..cells.base import Cell, NativeBinding, Params, State
from . import _build
from ._build import BuildError, Progress
from .bptt import _POOL, LoopOptions, _input_and_param_grads, _input_projection, _reference_backward, _saved_inputs

log = logging.getLogger("rnnkit.native")

_SRC = Path(__file__).parent.parent / "cells" / "native"
#: the C++ sources, compiled in parallel: one per cell family, then the Python module. This
#: list is all that names them: a new family's file gets its line here.
SOURCES = [_SRC / "lstm.cpp", _SRC / "gru.cpp", _SRC / "jordan.cpp", _SRC / "indrnn.cpp", _SRC / "infer.cpp",
           _SRC / "lstm_ln.cpp", _SRC / "gru_ln.cpp", _SRC / "minrnn.cpp", _SRC / "qrnn.cpp", _SRC / "s6.cpp",
           _SRC / "module.cpp"]
#: the headers they include (``#include "common.h"``: its folder is on the include path)
HEADERS = [_SRC / "common.h", _SRC / "infer.h", _SRC / "lstm_ln.h", _SRC / "elementwise.h", _SRC / "gemm.h",
           _SRC / "s6.h", _SRC / "gru_ln.h", _SRC / "pool.h", _SRC / "lstm_gates.h",
           _SRC / "lstm_step.h"]

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
    :func:`rnnkit.engine._build.ensure`); without it, a wait for another process is logged."""
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


def clear_pool() -> None:
    """Drop the buffers the native loops keep between calls (``pool.h``), if they are loaded:
    ``rnnkit bench``'s activation memory, which must see a step allocate what it holds."""
    if _module is not None:
        _module.pool_clear()


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



class NativeMasks(NamedTuple):
    """The loop options as the native loops take them (common.h), contiguous in x's dtype."""

    #: (B, S_0) the recurrent dropout mask, or None
    rmask: Tensor | None
    #: (T, B) 1 where step t of sequence b is inside its length, else 0; None without lengths
    valid: Tensor | None
    #: one (T, B, S_k) zoneout mask per state entry (None where off)
    zoneout: list[Tensor | None]


def _step_mask(t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype).expand(shape).contiguous()


def native_masks(opts: LoopOptions, x: Tensor, sizes: tuple[int, ...]) -> NativeMasks:
    """``opts`` as :class:`NativeMasks` for x (T, B, I) and state entries of ``sizes``."""
    T, B = x.shape[:2]
    valid = None
    if opts.lengths is not None:
        steps = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
        valid = (steps < opts.lengths.to(x.device).unsqueeze(0)).to(x.dtype).contiguous()
    zoneout = opts.zoneout if opts.zoneout is not None else [None] * len(sizes)
    return NativeMasks(_step_mask(opts.rmask, (B, sizes[0]), x.dtype), valid,
                       [_step_mask(z, (T, B, n), x.dtype) for z, n in zip(zoneout, sizes)])


class _Native(torch.autograd.Function):
    """The Python loop's Function (:class:`rnnkit.engine.bptt._BPTT`) with the time loop in
    C++: ``binding`` (the cell's :class:`NativeBinding`) runs the family's entry points.

    ``apply(binding, opts, ext, (names, n_state), x, *state0, *params)``. Saved for the
    backward: x, the binding's named tensors, the parameters, the initial state (the layout
    :func:`rnnkit.engine.bptt._saved_inputs` reads)."""

    @staticmethod
    def forward(ctx, binding: NativeBinding, opts: LoopOptions, ext, meta: tuple, x: Tensor, *tensors: Tensor):
        names, n_state = meta
        state0 = tuple(tensors[:n_state])
        p = dict(zip(names, tensors[n_state:]))
        cell = binding.cell
        xw, prep_ctx = _input_projection(cell, x, p, prepare=not binding.prepares_input)
        xw = xw.contiguous()
        masks = native_masks(opts, x, tuple(s.shape[-1] for s in state0))
        keep = any(ctx.needs_input_grad)
        out, state_n, saved = binding.forward(ext, xw, state0, p, masks, opts.reverse, keep)
        ctx.cell, ctx.binding, ctx.opts, ctx.ext, ctx.names, ctx.n_state = cell, binding, opts, ext, names, n_state
        ctx.masks, ctx.prep_ctx, ctx.saved_names = masks, prep_ctx, tuple(saved)
        # the input-projection buffer goes back to the pool after the backward, or at once
        ctx.buffer = xw if xw._base is None else xw._base
        if keep:
            ctx.save_for_backward(x, *saved.values(), *tensors[n_state:], *state0)
        else:
            _POOL.give([ctx.buffer])
        return (out, *state_n)

    @staticmethod
    def backward(ctx, dout: Tensor | None, *dstate_n: Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
            _POOL.give([ctx.buffer])
            return (None, None, None, None, *_reference_backward(ctx, (dout, *dstate_n), 4))
        n = ctx.n_state
        x, state0, p = _saved_inputs(ctx, n)
        saved = dict(zip(ctx.saved_names, ctx.saved_tensors[1:1 + len(ctx.saved_names)]))
        dstate = tuple(torch.zeros_like(s) if d is None else d.contiguous() for d, s in zip(dstate_n, state0))
        dxw, dstate0, grads = ctx.binding.backward(ctx.ext, saved, None if dout is None else dout.contiguous(),
                                                   dstate, p, ctx.masks, ctx.opts.reverse)
        if not ctx.binding.prepares_input:
            dxw = ctx.cell.prepare_input_backward(dxw, ctx.prep_ctx, p, grads)  # e.g. LN of x W_ihᵀ, its bias
        T, B = x.shape[:2]
        dx, dparams = _input_and_param_grads(ctx, dxw.reshape(T * B, -1), x, p, grads, n)
        _POOL.give([ctx.buffer])
        dstate0 = [d if ctx.needs_input_grad[5 + k] else None for k, d in enumerate(dstate0)]
        return (None, None, None, None, dx, *dstate0, *dparams)


def binding_for(cell: Cell, device: torch.device, dtype: torch.dtype) -> NativeBinding | None:
    """The cell's native binding for tensors of this device and dtype, or None: the
    extension runs float32 and float64 on the CPU; the cell says for which of its options
    (:meth:`~rnnkit.cells.base.Cell.native_binding`)."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.float64) or not cell.has_backward:
        return None
    return cell.native_binding()


def dispatch(cell: Cell, x: Tensor, opts: LoopOptions, grad: bool = True) -> tuple[NativeBinding, ModuleType] | None:
    """The native loop for this call as (binding, loaded extension), or None: the diagnostics
    hooks (``record``/``observe``) instrument the Python loop; recurrent dropout, zoneout and
    lengths run natively in every family. ``grad``: whether a gradient is needed (then the
    family needs a training loop, :attr:`NativeBinding.trains`; else :func:`infer` runs)."""
    if opts.record is not None or opts.observe is not None:
        return None
    chosen = binding_for(cell, x.device, x.dtype)
    if chosen is None or (grad and not chosen.trains):
        return None
    ext = load()
    return None if ext is None else (chosen, ext)


_FUNCTIONS: dict[type, type[_Native]] = {}


def _function(binding_type: type) -> type[_Native]:
    """:class:`_Native` under the binding's name (``_NativeLSTM``: its autograd node is
    ``_NativeLSTMBackward``, so a graph says which family's loop ran); the same code."""
    function = _FUNCTIONS.get(binding_type)
    if function is None:
        function = _FUNCTIONS[binding_type] = type(binding_type.__name__, (_Native,), {"__doc__": _Native.__doc__})
    return function


def run(binding: NativeBinding, ext: ModuleType, x: Tensor, state0: State, p: Params,
        opts: LoopOptions) -> tuple[Tensor, State]:
    """One direction of one layer on the native loop (what :func:`dispatch` chose)."""
    function = _function(type(binding))
    out, *state_n = function.apply(binding, opts, ext, (tuple(p), len(state0)), x, *state0, *p.values())
    return out, tuple(state_n)


def infer(binding: NativeBinding, ext: ModuleType, x: Tensor, state0: State, p: Params,
          opts: LoopOptions) -> tuple[Tensor, State]:
    """One direction of one layer on the forward-only loop (:meth:`NativeBinding.infer`), for
    a call that needs no gradient: no autograd Function, nothing kept for a backward; the
    input projection (one GEMM over all T·B rows) goes into a pooled buffer that the loop
    overwrites with its gates and that goes back to the pool at the end. The binding is asked
    first whether a library kernel computes the call (:meth:`NativeBinding.library_infer`)."""
    with torch.no_grad():
        masks = native_masks(opts, x, tuple(s.shape[-1] for s in state0))
        handed = binding.library_infer(x, state0, p, masks, opts.reverse)
        if handed is not None:
            return handed
        xw, _ = _input_projection(binding.cell, x, p, prepare=not binding.prepares_input)  # (T, B, G)
        xw = xw.contiguous()
        res = binding.infer(ext, xw, tuple(s.contiguous() for s in state0), p, masks, opts.reverse)
    _POOL.give([xw if xw._base is None else xw._base])
    return res["out"], tuple(res[name] for name in binding.cell.state_names)


def stack_step(cell: Cell, params: list[Params], state: list[State], embedding: Tensor,
               head_weight: Tensor | None = None, head_bias: Tensor | None = None):
    """The extension's ``StackStep`` (``rnnkit/cells/native/infer.h``) for a stack of layers of
    ``cell`` (``params`` and ``state`` bottom up, one direction each) between an embedding
    (V, E) and an optional linear head (V, R): ``.step(ids (B,))`` runs one generation step of
    the whole stack in one call and returns the logits (B, V), the state advanced in place.
    None where it cannot run: the native loops off or not built, not a float32/float64 CPU
    tensor, or a cell option without a native step (:meth:`NativeBinding.step_layer`)."""
    binding = binding_for(cell, embedding.device, embedding.dtype)
    if binding is None:
        return None
    layers = [binding.step_layer(p) for p in params]
    if any(layer is None for layer in layers):
        return None
    ext = load()
    if ext is None:
        return None
    tensors = [embedding, *(t for s in state for t in s), *(t for _, w in layers for t in w if t is not None)]
    if head_weight is not None:
        tensors.append(head_weight)
    if any(t.device != embedding.device or t.dtype != embedding.dtype for t in tensors):
        return None
    return ext.StackStep(embedding.detach(), [kind for kind, _ in layers],
                         [[None if t is None else t.detach().contiguous() for t in w] for _, w in layers],
                         [[t.detach() for t in s] for s in state],
                         None if head_weight is None else head_weight.detach(),
                         None if head_bias is None else head_bias.detach())


__all__ = ["BuildError", "HEADERS", "NativeMasks", "SOURCES", "Status", "available", "binding_for", "build",
           "dispatch", "infer", "load", "mode", "native_masks", "spec", "stack_step", "status"]
