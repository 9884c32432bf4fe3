"""The BPTT engine: one time loop for every cell, forward and hand-written backward.

- :mod:`rnnkit.engine.bptt`: the Python loop (forward, hand-written backward, the buffer
  pool, the double backward by the reference) and :func:`run_reference`, the loop under
  autograd that the tests use as the oracle;
- :mod:`rnnkit.engine.native`: the build of the C++ extension and the one native path,
  which asks the cell for its binding (:meth:`rnnkit.cells.base.Cell.native_binding`);
- :mod:`rnnkit.engine.scan`: the parallel scan of the linear recurrences.

:func:`run` chooses: the native loop when the cell has one for its options, the tensors'
device and dtype and no diagnostics hook (``record``, ``observe``) asks for the Python
loop — its forward-only form when no gradient is needed (``torch.no_grad()``, or nothing
requires one) —; else the Python loop; the reference for a cell without ``step_backward``
and under ``torch.export``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..cells.base import Cell, Params, State
from ..cells.base import differentiable_backward as differentiable_backward
from . import native
from .bptt import _BPTT, LoopOptions, is_exporting, run_reference

# the engine's internals that the layers, the scan, the diagnostics and the tests reach here
from .bptt import _POOL as _POOL
from .bptt import _input_and_param_grads as _input_and_param_grads
from .bptt import _input_projection as _input_projection
from .bptt import _loop as _loop
from .bptt import _reference_backward as _reference_backward
from .bptt import _saved_inputs as _saved_inputs
from .bptt import _valid_masks as _valid_masks


def uses_native_loops(model: torch.nn.Module, dtype: torch.dtype | None = None) -> bool:
    """Whether training or running ``model`` will call the native loops: some recurrent
    layer in it (a module with a ``cell``) has a cell with a native loop for its parameters'
    device and dtype (``dtype`` instead, e.g. an autocast dtype), and ``RNNKIT_NATIVE`` is
    not 0. Used to build the loops before a training clock starts."""
    if native.mode() == "0":
        return False
    for module in model.modules():
        cell = getattr(module, "cell", None)
        weight = next(module.parameters(recurse=False), None)
        if isinstance(cell, Cell) and weight is not None and native.binding_for(
                cell, weight.device, dtype or weight.dtype) is not None:
            return True
    return False


def run(cell: Cell, x: Tensor, state0: State, p: Params, opts: LoopOptions) -> tuple[Tensor, State]:
    """Run one direction of one layer with the hand-written BPTT.

    x: (T, B, I); state0: tuple of (B, S_k); p: the cell's parameters by name.
    Returns out (T, B, R) and the final state. Falls back to :func:`run_reference`
    for a cell without ``step_backward``, and under ``torch.export`` (which traces the
    reference's operations, the loop unrolled for this T).
    """
    if not cell.has_backward or is_exporting():
        return run_reference(cell, x, state0, p, opts)
    device = x.device.type
    if torch.is_autocast_enabled(device):
        # autocast does not reach inside an autograd.Function's hand-written loop: run the
        # whole loop in the autocast dtype instead (the casts are differentiable)
        dtype = torch.get_autocast_dtype(device)
        cast_opts = replace(
            opts,
            rmask=None if opts.rmask is None else opts.rmask.to(dtype),
            zoneout=None if opts.zoneout is None else [None if z is None else z.to(dtype) for z in opts.zoneout],
        )
        with torch.autocast(device, enabled=False):
            return run(cell, x.to(dtype), tuple(s.to(dtype) for s in state0),
                       {k: v.to(dtype) for k, v in p.items()}, cast_opts)
    grad = torch.is_grad_enabled() and (x.requires_grad or any(s.requires_grad for s in state0)
                                        or any(t.requires_grad for t in p.values()))
    chosen = native.dispatch(cell, x, opts, grad)
    if chosen is not None:
        return (native.run if grad else native.infer)(*chosen, x, state0, p, opts)
    out, *state_n = _BPTT.apply(cell, opts, tuple(p), len(state0), x, *state0, *p.values())
    return out, tuple(state_n)


__all__ = ["LoopOptions", "is_exporting", "run", "run_reference", "uses_native_loops"]

