"""The Python time loop: forward and hand-written backward for every cell.

Forward, for one direction of one layer:

    xw = prepare_input(x W_ihᵀ + b)                          # (T, B, G), one GEMM
    for t in order:  s_t = step(xw_t, s_{t-1})                # recurrent GEMM + cell math
    out_t = s_t[0]

Backward runs the same loop in reverse with ``step_backward`` and ends with one GEMM
each for dx, dW_ih and dW_hh over all steps. Per step the engine applies, generically
for every cell:

- ``lengths``: a sequence past its length keeps its state and outputs zeros (the
  semantics of packed sequences); in reverse direction it starts at its own last step;
- zoneout (Krueger et al. 2017): s_t = z ⊙ s_{t-1} + (1 - z) ⊙ step(...), with z a 0/1
  mask per step in training and the keep probability at evaluation;
- variational recurrent dropout (Gal & Ghahramani 2016): one mask per sequence on the
  recurrent input, given to the cell;
- the record of ‖∂L/∂h_t‖ for every step t and sequence, if asked for.

:func:`run_reference` runs the same ``step`` under autograd. It is the oracle of the
tests and the path for cells without ``step_backward``.

Double backward. When autograd asks for a differentiable backward (``create_graph=True``:
gradient penalties, MAML, Hessian-vector products) it runs the backward with grad mode on.
The hand-written backwards (Python and native) are not differentiable, so then every
Function of the engine hands the step to the reference (:func:`_reference_backward`): the
forward runs again under autograd from the saved inputs, with the same options and masks,
and is differentiated with ``create_graph=True``. Ordinary training keeps the hand-written
path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..cells.base import NO_WORKSPACE, Cell, Params, State, Workspace, differentiable_backward


@dataclass
class LoopOptions:
    """Everything about one run of the loop that is not a differentiable tensor."""

    reverse: bool = False
    #: (B,) int64 lengths, or None when every sequence has length T
    lengths: Tensor | None = None
    #: (B, R) variational dropout mask on the recurrent input, already scaled by 1/(1-p)
    rmask: Tensor | None = None
    #: one (T, B, S_k) tensor of keep probabilities / 0-1 masks per state entry, or None
    zoneout: Sequence[Tensor | None] | None = None
    #: called in the backward with ‖∂L/∂h_t‖ as a (T, B) tensor
    record: Callable[[Tensor], None] | None = None
    #: called in the forward after every step t with (t, new state, the cell's cache);
    #: the diagnostics read gate values through ``cell.gate_values(cache)``
    observe: Callable[[int, State, tuple], None] | None = None


class _BufferPool:
    """Per-sequence buffers kept between calls on CPU.

    A fresh multi-megabyte CPU tensor is mapped from the OS page by page on first touch,
    and those page faults cost more than the arithmetic of a small step (measured here:
    a tanh into a 32 KB slice of a fresh buffer took 1.7x as long as into a reused one).
    CUDA has PyTorch's caching allocator; on CPU the engine hands its buffers to this
    pool after a backward and takes them again for the next sequence of the same shape.
    A buffer is taken only when nothing else references its storage any more (the
    autograd graph that used it is gone, no hook kept a view), checked at take time;
    at most ``per_shape`` buffers are kept per shape and dtype.
    """

    def __init__(self, per_shape: int = 4):
        self.per_shape = per_shape
        self._free: dict[tuple, list[Tensor]] = {}
        self._use_count = getattr(torch._C, "_storage_Use_Count", None)
        probe = torch.empty(1)
        self._alone = self._use_count(probe.untyped_storage()._cdata) if self._use_count else None

    def _unused(self, b: Tensor) -> bool:
        return self._use_count(b.untyped_storage()._cdata) == self._alone

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> Tensor:
        free = self._free.get((tuple(shape), dtype, torch.device(device)))
        for k, b in enumerate(free or ()):
            if self._unused(b):
                return free.pop(k)
        return torch.empty(shape, dtype=dtype, device=device)

    def give(self, buffers: Sequence[Tensor]) -> None:
        if self._use_count is None:
            return
        for b in buffers:
            if b.device.type != "cpu" or b.requires_grad or b._base is not None:
                continue
            free = self._free.setdefault((tuple(b.shape), b.dtype, b.device), [])
            if len(free) < self.per_shape and not any(b is f for f in free):
                free.append(b)

    def clear(self) -> None:
        self._free.clear()


_POOL = _BufferPool()


def _valid_masks(lengths: Tensor | None, T: int, like: Tensor) -> Tensor | None:
    """(T, B, 1) boolean: step t of sequence b is inside its length."""
    if lengths is None:
        return None
    steps = torch.arange(T, device=lengths.device).unsqueeze(1)  # (T, 1)
    return (steps < lengths.unsqueeze(0)).unsqueeze(2).to(like.device)  # (T, B, 1)


def _input_projection(cell: Cell, x: Tensor, p: Params, prepare: bool = True) -> tuple[Tensor, object]:
    """x W_ihᵀ + the cell's input bias, (T, B, G), through :meth:`Cell.prepare_input` unless not
    ``prepare`` (for a native binding that prepares its input itself: then the context is None)."""
    b = cell.input_bias(p)
    w = p["weight_ih"]
    T, B, _ = x.shape
    x2 = x.reshape(T * B, -1)
    buf = _POOL.take((T * B, w.shape[0]), x.dtype, x.device) if not torch.is_grad_enabled() else None
    xw = (torch.addmm(b, x2, w.t(), out=buf) if b is not None else torch.mm(x2, w.t(), out=buf))
    return cell.prepare_input(xw.view(T, B, -1), p) if prepare else (xw.view(T, B, -1), None)  # (T, B, G)


def _loop(
    cell: Cell,
    xw: Tensor,
    state: State,
    p: Params,
    opts: LoopOptions,
    keep_caches: bool,
    on_state: Callable[[int, State], None] | None = None,
    ws: Workspace = NO_WORKSPACE,
) -> tuple[Tensor, State, list[tuple]]:
    """The forward time loop; returns the outputs (T, B, R), final state and caches.

    With a workspace the cell writes the kept tensors into per-sequence buffers; the
    engine adopts the output buffer so that state[0] lands in it without a copy when
    neither lengths nor zoneout change the state after the cell's step and no caches are
    kept."""
    T, B = xw.shape[:2]
    valid = _valid_masks(opts.lengths, T, xw)
    caches: list[tuple] = [None] * T  # type: ignore[list-item]
    zo = opts.zoneout
    kw = {"ws": ws} if cell.uses_workspace else {}
    out = torch.empty(T, B, cell.output_size, dtype=xw.dtype, device=xw.device) if ws.active else None
    # Not when the caches are kept for the backward: a cache that views the returned output
    # (the Elman cell keeps h') would make a reference cycle through autograd's graph
    # (output -> grad_fn -> ctx -> cache -> output) that Python's collector cannot see, and
    # every training step would leak its activations.
    if out is not None and valid is None and zo is None and not keep_caches:
        ws.adopt("out", out)
    outs: list[Tensor] = [None] * T if out is None else list(out.unbind(0))  # type: ignore[list-item]
    for t in range(T - 1, -1, -1) if opts.reverse else range(T):
        ws.t = t
        new, cache = cell.step(xw[t], state, p, opts.rmask, **kw)
        if zo is not None:
            new = tuple(n if z is None else torch.lerp(n, s, z[t], out=ws.view(f"zoneout{k}", n))
                        for k, (n, s, z) in enumerate(zip(new, state, zo)))
        if valid is not None:
            v = valid[t]
            new = tuple(torch.where(v, n, s, out=ws.view(f"kept{k}", n)) for k, (n, s) in enumerate(zip(new, state)))
            outs[t] = torch.mul(new[0], v, out=outs[t])
        elif out is None:
            outs[t] = new[0]
        elif new[0].data_ptr() != outs[t].data_ptr():
            outs[t].copy_(new[0])
        if keep_caches:
            caches[t] = cache
        if on_state is not None:
            on_state(t, new)
        if opts.observe is not None:
            opts.observe(t, new, cache)
        state = new
    return (torch.stack(outs) if out is None else out), state, caches


def _input_and_param_grads(ctx, dxw2: Tensor, x: Tensor, p: Params, grads: Params, n_state: int):
    """The end of every backward here: dW_ih = dxwᵀ x into ``grads``, then what autograd
    asks for of ``apply``'s arguments (x at position 4, then ``n_state`` state tensors, then
    the parameters in the order of ``ctx.names``): dx and the parameter gradients.
    dxw2: (T·B, G), the gradient of the input projection."""
    T, B = x.shape[:2]
    grads["weight_ih"] = dxw2.t() @ x.reshape(T * B, -1)
    dx = (dxw2 @ p["weight_ih"]).view(T, B, -1) if ctx.needs_input_grad[4] else None
    first = 5 + n_state
    return dx, [grads.get(n) if ctx.needs_input_grad[first + k] else None for k, n in enumerate(ctx.names)]


#: whether torch.export is tracing (torch >= 2.5; never on older versions, which lack the query)
is_exporting: Callable[[], bool] = getattr(torch.compiler, "is_exporting", lambda: False)


def _saved_inputs(ctx, n_state: int) -> tuple[Tensor, State, Params]:
    """(x, initial state, parameters by name) from the saved tensors of a Function here, which
    saves x first and the parameters (in the order of ``ctx.names``) then the ``n_state``
    initial-state tensors last."""
    saved = ctx.saved_tensors
    end = len(saved) - n_state
    return saved[0], tuple(saved[end:]), dict(zip(ctx.names, saved[end - len(ctx.names):end]))


def _reference_backward(ctx, grad_outputs: Sequence[Tensor | None], first: int) -> tuple[Tensor | None, ...]:
    """The backward of a Function here under ``create_graph=True`` (see the module docstring):
    :func:`run_reference` again from the saved inputs, with the same cell and options (the same
    dropout and zoneout masks), differentiated by autograd (:func:`differentiable_backward`).

    ``grad_outputs``: the gradients reaching (out, *final state); ``first``: the position of x in
    the Function's ``apply`` arguments (x, the initial state, then the parameters follow).
    Returns the gradients of x, the initial state and the parameters (None where not needed)."""
    n_state = len(grad_outputs) - 1
    x, state0, p = _saved_inputs(ctx, n_state)
    opts = replace(ctx.opts, observe=None)

    def forward(x: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        out, state_n = run_reference(ctx.cell, x, tensors[:n_state], dict(zip(p, tensors[n_state:])), opts)
        return (out, *state_n)

    inputs = [x, *state0, *p.values()]
    return differentiable_backward(forward, inputs, ctx.needs_input_grad[first:first + len(inputs)], grad_outputs)


class _BPTT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell: Cell, opts: LoopOptions, names: tuple, n_state: int, x: Tensor, *tensors):
        state0 = tuple(tensors[:n_state])
        p = dict(zip(names, tensors[n_state:]))
        xw, prep_ctx = _input_projection(cell, x, p)
        ws = Workspace(x.shape[0], alloc=_POOL.take)
        keep = any(ctx.needs_input_grad)
        out, state_n, caches = _loop(cell, xw, state0, p, opts, keep_caches=keep, ws=ws)
        state_n = tuple(s.clone() for s in state_n)  # own storage, not a view of a step buffer
        ctx.cell, ctx.opts, ctx.names, ctx.n_state = cell, opts, names, n_state
        ctx.caches, ctx.prep_ctx = caches, prep_ctx
        buffers = ws.release()
        if buffers.get("out") is out:
            del buffers["out"]  # the layer output belongs to the caller
        xw_buffer = xw if xw._base is None else xw._base
        del xw
        ctx.buffers = [xw_buffer, *buffers.values()]
        if not keep:
            del caches
            _POOL.give(ctx.buffers)
        ctx.state_shapes = [s.shape for s in state0]
        ctx.save_for_backward(x, *tensors[n_state:], *state0)
        return (out, *state_n)

    @staticmethod
    def backward(ctx, dout: Tensor | None, *dstate_n: Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
            _POOL.give(ctx.buffers)
            return (None, None, None, None, *_reference_backward(ctx, (dout, *dstate_n), 4))
        cell: Cell = ctx.cell
        opts: LoopOptions = ctx.opts
        x, _, p = _saved_inputs(ctx, ctx.n_state)
        param_list = list(p.values())
        caches = ctx.caches
        T, B, _ = x.shape
        ref = x if x.is_floating_point() else param_list[0]
        dstate = tuple(
            torch.zeros(shape, dtype=ref.dtype, device=ref.device) if d is None else d
            for d, shape in zip(dstate_n, ctx.state_shapes)
        )
        valid = _valid_masks(opts.lengths, T, ref)
        zo = opts.zoneout
        grads: Params = {}
        G = cell.gates * cell.hidden_size
        dxw_all = _POOL.take((T, B, G), ref.dtype, ref.device)
        drec_all = dxw_all if cell.drec_is_dxw else _POOL.take((T, B, G), ref.dtype, ref.device)
        ws = Workspace(T)
        ws.adopt("dxw", dxw_all)
        if not cell.drec_is_dxw:
            ws.adopt("drec", drec_all)
        kw = {"ws": ws} if cell.uses_workspace else {}
        dxw_steps, drec_steps = ws._steps["dxw"], ws._steps.get("drec")
        norms = torch.empty(T, B, dtype=ref.dtype, device=ref.device) if opts.record else None

        for t in range(T) if opts.reverse else range(T - 1, -1, -1):
            ws.t = t
            ds = list(dstate)
            if dout is not None:
                ds[0] = ds[0] + (dout[t] if valid is None else dout[t] * valid[t])
            if norms is not None:
                norms[t] = torch.linalg.vector_norm(ds[0], dim=1)
            if valid is not None:  # past its length a sequence passes its state through
                v = valid[t]
                skip = [d * ~v for d in ds]
                ds = [d * v for d in ds]
            if zo is not None:  # s_t = z ⊙ s_{t-1} + (1 - z) ⊙ new
                carry = [None if z is None else d * z[t] for d, z in zip(ds, zo)]
                ds = [d if c is None else d - c for d, c in zip(ds, carry)]
            dxw, dprev, drec = cell.step_backward(tuple(ds), caches[t], p, grads, opts.rmask, **kw)
            if dxw.data_ptr() != dxw_steps[t].data_ptr():
                dxw_steps[t].copy_(dxw)
            if drec_steps is not None and drec.data_ptr() != drec_steps[t].data_ptr():
                drec_steps[t].copy_(drec)
            dprev = list(dprev)
            if zo is not None:
                dprev = [d if c is None else d + c for d, c in zip(dprev, carry)]
            if valid is not None:
                dprev = [d + s for d, s in zip(dprev, skip)]
            dstate = tuple(dprev)
        if norms is not None:
            opts.record(norms)

        rec_in = torch.stack([c[0] for c in caches]).reshape(T * B, -1)  # (T·B, R)
        drec2 = drec_all.reshape(T * B, -1)
        grads["weight_hh"] = cell.weight_hh_grad(drec2, rec_in)
        cell.bias_grads(dxw_all.sum((0, 1)), drec_all.sum((0, 1)), grads)
        dxw_in = cell.prepare_input_backward(dxw_all, ctx.prep_ctx, p, grads)
        dxw2 = dxw_in.reshape(T * B, -1)  # (T·B, G)
        dx, dparams = _input_and_param_grads(ctx, dxw2, x, p, grads, ctx.n_state)
        # the pool reuses them once nothing refers to them (after the graph is freed)
        _POOL.give([*ctx.buffers, dxw_all, drec_all])
        return (None, None, None, None, dx, *dstate, *dparams)


def run_reference(cell: Cell, x: Tensor, state0: State, p: Params, opts: LoopOptions) -> tuple[Tensor, State]:
    """The same loop under autograd: the oracle for :func:`run`."""
    xw, _ = _input_projection(cell, x, p)
    on_state = None
    if opts.record is not None:  # record ‖∂L/∂h_t‖ by hooking the state tensor of every step
        T, B = xw.shape[:2]
        norms = torch.zeros(T, B, dtype=xw.dtype, device=xw.device)
        fired = [0]

        def on_state(t: int, state: State) -> None:
            def hook(g: Tensor) -> None:
                if fired[0] >= T:  # a later backward through this graph (double backward): not ∂L/∂h_t
                    return
                norms[t] = torch.linalg.vector_norm(g.detach(), dim=1)
                fired[0] += 1
                if fired[0] == T:
                    opts.record(norms)

            if state[0].requires_grad:
                state[0].register_hook(hook)

    out, state_n, _ = _loop(cell, xw, state0, p, opts, keep_caches=False, on_state=on_state)
    return out, state_n
