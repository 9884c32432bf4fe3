"""Parallel-scan engine for linear recurrences h_t = a_t ⊙ h_{t-1} + b_t.

The cells of :mod:`rnnkit.cells.minrnn` compute (a_t, b_t) from the input alone, so the
whole time loop is a prefix scan of affine maps, composed as

    (a₂, b₂) ∘ (a₁, b₁) = (a₂ a₁, a₂ b₁ + b₂).

:func:`linear_scan` evaluates it block-wise ("reduce then scan"): the sequence is cut
into n = T/C blocks of C steps; (1) every block is reduced to one affine map (the
product of its a, its end state from a zero start), all blocks at once in C
vectorised steps; (2) the states entering the blocks are a linear recurrence of
length n with those maps, scanned recursively; (3) every block is run again from its
entering state, all blocks at once. Work is O(T) (a and b are read twice, h written
once), depth O(C log_C T) vectorised operations. Everything stays in linear space: only products and sums of
the coefficients, no logarithms or divisions, so any sign of b and h_0 is allowed and
the float32 error does not grow with T (the log-space form of Feng et al. 2024 needs
h̃ > 0 and loses absolute precision as Σ log a grows with T).

Backward. The gradient reaching h_t, G_t = ∂L/∂h_t (from the output at t and from
step t+1), obeys the reverse linear recurrence

    G_t = g_t + a_{t+1} ⊙ G_{t+1},    G_{T-1} = g_{T-1} + ∂L/∂h_n

computed by the same scan run backwards in time, and then

    da_t = G_t ⊙ h_{t-1}    db_t = G_t    ∂L/∂h_0 = a_0 ⊙ G_0.

Under ``create_graph=True`` (double backward) every backward here hands over to the
sequential reference under autograd, as the engine's Functions do
(:func:`~rnnkit.cells.base.differentiable_backward`): the same steps, one at a time, from the
saved inputs with the same options.

Lengths, zoneout (Krueger et al. 2017) and variational recurrent dropout keep the
recurrence linear and become changes of the coefficients, with the semantics of the
sequential engine (:mod:`rnnkit.engine`):

    dropout mask m on h_{t-1}:     a ← a ⊙ m
    zoneout mask ζ:                a ← ζ + (1 - ζ) ⊙ a,   b ← (1 - ζ) ⊙ b
    past the length:               a ← 1,  b ← 0,  output 0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from ..cells.base import Cell, Params, State, differentiable_backward
from ..cells.minrnn import LinearRecurrenceCell
from ..cells.scancell import ScanCell
from . import bptt as engine
from . import native
from .bptt import LoopOptions, _reference_backward, is_exporting, run_reference

#: steps per block of :func:`linear_scan`; sequences up to this length run sequentially
BLOCK = 32


def _sequential_scan(a: Tensor, b: Tensor, h0: Tensor, reverse: bool = False) -> Tensor:
    """h_t = a_t ⊙ h_{t∓1} + b_t one step at a time (h_{t+1} with ``reverse``).
    a, b: (T, ...); h0: (...)."""
    h = torch.empty_like(b)
    prev = h0
    for t in range(a.shape[0] - 1, -1, -1) if reverse else range(a.shape[0]):
        prev = torch.addcmul(b[t], a[t], prev, out=h[t])
    return h


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, reverse: bool = False, block: int | None = None) -> Tensor:
    """All states of h_t = a_t ⊙ h_{t-1} + b_t by a block-wise parallel scan
    (h_t = a_t ⊙ h_{t+1} + b_t, starting from h0 after the last step, with ``reverse``).

    a, b: (T, *S); h0: (*S). Returns h: (T, *S) with h[t] = h_t. ``block``: C, default
    :data:`BLOCK`.
    """
    block = BLOCK if block is None else block
    if block < 2:
        raise ValueError(f"block must be at least 2, got {block}")
    T = a.shape[0]
    if T <= block:
        return _sequential_scan(a, b, h0, reverse)
    n = -(-T // block)  # number of blocks
    pad = n * block - T
    if pad:  # identity maps after the last processed step change no earlier state
        ones, zeros = a.new_ones((pad, *a.shape[1:])), b.new_zeros((pad, *b.shape[1:]))
        a = torch.cat((ones, a) if reverse else (a, ones))
        b = torch.cat((zeros, b) if reverse else (b, zeros))
    a = a.reshape(n, block, *a.shape[1:])  # (n, C, *S)
    b = b.reshape(n, block, *b.shape[1:])
    order = range(block - 1, -1, -1) if reverse else range(block)
    first, *rest = order
    # 1. every block as one affine map (prod, end): end = its state from a zero start
    prod = a[:, first].clone()  # (n, *S)
    end = b[:, first].clone()
    for j in rest:
        end = torch.addcmul(b[:, j], a[:, j], end)
        prod.mul_(a[:, j])
    # 2. the states between blocks: the same recurrence, T/C steps long
    ends = linear_scan(prod, end, h0, reverse, block)  # (n, *S): the state each block leaves
    # 3. every block again, all at once, from the state entering it
    h = b.new_empty(b.shape)  # (n, C, *S), contiguous
    h0 = h0.unsqueeze(0)
    prev = torch.cat((ends[1:], h0) if reverse else (h0, ends[:-1]))  # (n, *S)
    for j in order:
        prev = torch.addcmul(b[:, j], a[:, j], prev, out=h[:, j])
    h = h.view(n * block, *h.shape[2:])
    return h[pad:] if reverse else h[:T]


def _valid_mask(lengths: Tensor | None, T: int, like: Tensor) -> Tensor | None:
    if lengths is None:
        return None
    steps = torch.arange(T, device=lengths.device).unsqueeze(1)  # (T, 1)
    return (steps < lengths.unsqueeze(0)).unsqueeze(2).to(device=like.device, dtype=like.dtype)  # (T, B, 1)


class _LinearRecurrence(torch.autograd.Function):
    """One direction of one layer of a linear-recurrence cell, with the scan's backward."""

    @staticmethod
    def forward(ctx, cell: LinearRecurrenceCell, opts: LoopOptions, sequential: bool,
                x: Tensor, h0: Tensor, weight_ih: Tensor, bias_ih: Tensor | None):
        T, B, _ = x.shape
        x2 = x.reshape(T * B, -1)
        xw = (torch.addmm(bias_ih, x2, weight_ih.t()) if bias_ih is not None
              else x2 @ weight_ih.t()).view(T, B, -1)  # (T, B, G·H)
        a, b, coeff_cache = cell.coefficients(xw)  # (T, B, H) each
        a_eff, b_eff = a, b
        if opts.rmask is not None:
            a_eff = a_eff * opts.rmask
        zoneout = opts.zoneout[0] if opts.zoneout is not None else None
        if zoneout is not None:
            a_eff = torch.lerp(a_eff, torch.ones_like(a_eff), zoneout)  # ζ + (1 - ζ) a
            b_eff = b_eff * (1 - zoneout)
        valid = _valid_mask(opts.lengths, T, x)
        if valid is not None:
            a_eff = torch.where(valid.bool(), a_eff, 1.0)
            b_eff = b_eff * valid
        scan = _sequential_scan if sequential else linear_scan
        h = scan(a_eff, b_eff, h0, opts.reverse)  # (T, B, H)
        h_n = (h[0] if opts.reverse else h[-1]).clone()
        out = h if valid is None else h * valid
        if opts.observe is not None:
            for t in range(T - 1, -1, -1) if opts.reverse else range(T):
                h_prev = h0 if t == (T - 1 if opts.reverse else 0) else h[t + 1 if opts.reverse else t - 1]
                cache_t = tuple(None if c is None else c[t] for c in coeff_cache)
                opts.observe(t, (h[t],), (h_prev, a[t], cache_t))
        ctx.cell, ctx.opts, ctx.sequential = cell, opts, sequential
        ctx.coeff_cache, ctx.has_bias = coeff_cache, bias_ih is not None
        # the layout engine._saved_inputs reads: x, ..., the parameters, the initial state
        ctx.names = ("weight_ih", "bias_ih") if bias_ih is not None else ("weight_ih",)
        ctx.save_for_backward(x, a_eff, h, weight_ih, *([bias_ih] if bias_ih is not None else []), h0)
        return out, h_n

    @staticmethod
    def backward(ctx, dout: Tensor | None, dh_n: Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: differentiate the sequential reference
            grads = _reference_backward(ctx, (dout, dh_n), 3)
            return None, None, None, *grads, *([] if ctx.has_bias else [None])
        cell: LinearRecurrenceCell = ctx.cell
        opts: LoopOptions = ctx.opts
        x, a_eff, h = ctx.saved_tensors[:3]
        weight_ih, h0 = ctx.saved_tensors[3], ctx.saved_tensors[-1]
        T, B, _ = x.shape
        valid = _valid_mask(opts.lengths, T, x)
        g = torch.zeros_like(h) if dout is None else (dout if valid is None else dout * valid)  # (T, B, H)
        if dh_n is None:
            dh_n = torch.zeros_like(h0)
        one = a_eff.new_ones((1, *a_eff.shape[1:]))
        h0 = h0.unsqueeze(0)
        scan = _sequential_scan if ctx.sequential else linear_scan
        if opts.reverse:  # h_t = a_t h_{t+1} + b_t:  G_t = g_t + a_{t-1} G_{t-1}
            a_later = torch.cat((one, a_eff[:-1]))  # the coefficient of the step after t, 1 at t = 0
            G = scan(a_later, g, dh_n, False)  # (T, B, H)
            h_prev = torch.cat((h[1:], h0))
            dh0 = a_eff[-1] * G[-1]
        else:  # h_t = a_t h_{t-1} + b_t:  G_t = g_t + a_{t+1} G_{t+1}
            a_later = torch.cat((a_eff[1:], one))
            G = scan(a_later, g, dh_n, True)
            h_prev = torch.cat((h0, h[:-1]))
            dh0 = a_eff[0] * G[0]
        if opts.record is not None:
            opts.record(torch.linalg.vector_norm(G, dim=2))  # ‖∂L/∂h_t‖: (T, B)
        da, db = G * h_prev, G  # gradients of a_eff, b_eff
        # back through lengths, zoneout and dropout to the cell's own (a, b)
        if valid is not None:
            da, db = da * valid, db * valid
        zoneout = opts.zoneout[0] if opts.zoneout is not None else None
        if zoneout is not None:
            da, db = da * (1 - zoneout), db * (1 - zoneout)
        if opts.rmask is not None:
            da = da * opts.rmask
        dxw = cell.coefficients_backward(da, db, ctx.coeff_cache)  # (T, B, G·H)
        dxw2 = dxw.reshape(T * B, -1)
        dweight = dxw2.t() @ x.reshape(T * B, -1) if ctx.needs_input_grad[5] else None
        dbias = dxw2.sum(0) if ctx.has_bias and ctx.needs_input_grad[6] else None
        dx = (dxw2 @ weight_ih).view(T, B, -1) if ctx.needs_input_grad[3] else None
        return None, None, None, dx, dh0, dweight, dbias


def run_scan(cell: LinearRecurrenceCell, x: Tensor, state0: State, p: Params, opts: LoopOptions,
             sequential: bool = False) -> tuple[Tensor, State]:
    """Run one direction of one layer of a linear-recurrence cell: the drop-in
    counterpart of :func:`rnnkit.engine.run` (same arguments, same results).

    x: (T, B, I); state0: ((B, H),). Returns out (T, B, H) and (h_n,).
    ``sequential=True`` replaces the parallel scan by a step-by-step loop (same backward
    formulas), for comparison.
    """
    if not isinstance(cell, LinearRecurrenceCell):
        raise TypeError(f"run_scan needs a LinearRecurrenceCell, got {type(cell).__name__}")
    if opts.zoneout is not None and len(opts.zoneout) != 1:
        raise ValueError(f"a linear-recurrence cell has one state entry, got {len(opts.zoneout)} zoneout masks")
    if is_exporting():  # torch.export traces the sequential reference (unrolled for this T)
        return run_reference(cell, x, state0, p, opts)
    (h0,) = state0
    out, h_n = _LinearRecurrence.apply(cell, opts, sequential, x, h0, p["weight_ih"], p.get("bias_ih"))
    return out, (h_n,)


# -- the generalised scan: cells with a readout, any state shape, complex states ---------------

def _last_valid(y: Tensor, opts: LoopOptions) -> Tensor:
    """y at each sequence's last processed step: (T, B, ...) → (B, ...)."""
    if opts.lengths is None or opts.reverse:
        return y[0] if opts.reverse else y[-1]
    idx = (opts.lengths - 1).to(y.device)
    return y[idx, torch.arange(y.shape[1], device=y.device)]


class _ScanSteps:
    """A :class:`~rnnkit.cells.scancell.ScanCell`'s scan as the cell of :func:`engine._loop`:
    :meth:`ScanCell.step <rnnkit.cells.scancell.ScanCell.step>` (s' = a ⊙ s + b and the readout)
    on the u the scan reads. For most cells that is ``cell.step``; a QRNN's own step also runs
    its convolution, which the scan's input has been through already."""

    uses_workspace = False

    def __init__(self, cell: ScanCell):
        self.cell = cell

    def step(self, u: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        return ScanCell.step(self.cell, u, state, p, rmask)


def _steps_reference(ctx, step_cell, grad_outputs: tuple[Tensor | None, ...],
                     backward: Callable[..., tuple]) -> tuple[Tensor | None, ...]:
    """The backward of the Functions below under ``create_graph=True``: the steps of ``step_cell``
    one at a time under autograd (:func:`engine._loop`), from the saved input projection u,
    initial state and parameters (``ctx.saved_tensors`` starts with them, in the order of the
    Function's ``apply`` arguments from position 4), with the same lengths and direction,
    differentiated by :func:`differentiable_backward`. The gradient record, if asked for, comes
    from the Function's hand-written ``backward`` (the norms an ordinary backward records; the
    memory state the record reads is not a state entry of every step loop).
    Returns the gradients of u, the initial state and the parameters."""
    n_state = len(grad_outputs) - 1
    u, *tensors = ctx.saved_tensors[:1 + n_state + len(ctx.names)]
    opts: LoopOptions = ctx.opts
    if opts.record is not None:
        with torch.no_grad():
            backward(ctx, *grad_outputs)
        opts = replace(opts, record=None)

    def forward(u: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        p = dict(zip(ctx.names, tensors[n_state:]))
        out, state_n, _ = engine._loop(step_cell, u, tuple(tensors[:n_state]), p, opts, keep_caches=False)
        return (out, *state_n)

    return differentiable_backward(forward, [u, *tensors], ctx.needs_input_grad[4:], grad_outputs)


class _ScanCellRecurrence(torch.autograd.Function):
    """One direction of one layer of a :class:`~rnnkit.cells.scancell.ScanCell`, from its input
    projection u: the scan (parallel, or a step-by-step loop with ``sequential``) and the
    readout, with the hand-written backward of the module docstring (complex-aware: the
    reverse scan runs with conj(a))."""

    @staticmethod
    def forward(ctx, cell: ScanCell, opts: LoopOptions, sequential: bool, names: tuple, u: Tensor, *tensors):
        n_state = 1 if cell.readout_is_state else 2  # (s,) or (y, s)
        p = dict(zip(names, tensors[n_state:]))
        T, B = u.shape[:2]
        extra = (1,) * len(cell.scan_shape())
        a, b, coeff_cache = cell.coefficients(u, p)  # (T, B, *S)
        valid = _valid_mask(opts.lengths, T, u)  # (T, B, 1)
        a_eff, b_eff = a, b
        if valid is not None:  # past its length a sequence keeps its state: a = 1, b = 0
            v = valid.view(T, B, *extra)
            a_eff = torch.where(v.bool(), a, torch.ones((), dtype=a.dtype, device=a.device))
            b_eff = b * v
        s0 = cell.to_scan(tensors[n_state - 1])
        scan = _sequential_scan if sequential else linear_scan
        s = scan(a_eff.expand_as(b_eff), b_eff, s0, opts.reverse)  # (T, B, *S)
        s_n = cell.from_scan(s[0] if opts.reverse else s[-1]).clone()
        if cell.readout_is_state:
            y, rcache = cell.from_scan(s), None
        else:
            y, rcache = cell.readout(s, u, coeff_cache, p)  # (T, B, R)
        out = y if valid is None else y * valid
        ctx.cell, ctx.opts, ctx.sequential, ctx.names = cell, opts, sequential, names
        ctx.coeff_cache, ctx.rcache = coeff_cache, rcache
        ctx.save_for_backward(u, *tensors, s0, a_eff, s)
        if cell.readout_is_state:
            return out, s_n
        return out, _last_valid(y, opts).clone(), s_n

    @staticmethod
    def backward(ctx, dout: Tensor | None, *dstate_n: Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: differentiate the sequential reference
            return (None, None, None, None, *_steps_reference(ctx, _ScanSteps(ctx.cell), (dout, *dstate_n),
                                                              _ScanCellRecurrence.backward))
        cell: ScanCell = ctx.cell
        opts: LoopOptions = ctx.opts
        n_state = len(dstate_n)
        _, *tensors, s0, a_eff, s = ctx.saved_tensors
        param_list = tensors[n_state:]
        p = dict(zip(ctx.names, param_list))
        T, B = s.shape[:2]
        extra = (1,) * len(cell.scan_shape())
        ref = param_list[0] if param_list else s.real
        valid = _valid_mask(opts.lengths, T, ref)
        R = cell.output_size
        g_y = (torch.zeros(T, B, R, dtype=ref.dtype, device=ref.device) if dout is None
               else (dout if valid is None else dout * valid))  # (T, B, R)
        grads: Params = {}
        du_readout = None
        if cell.readout_is_state:
            g_s = cell.to_scan(g_y)
            ds_n = dstate_n[0]
        else:
            dy_n, ds_n = dstate_n
            if dy_n is not None:  # the final output is y at the last processed step
                g_y = g_y.clone()
                if opts.lengths is None or opts.reverse:
                    g_y[0 if opts.reverse else -1] += dy_n
                else:
                    idx = (opts.lengths - 1).to(g_y.device)
                    g_y[idx, torch.arange(B, device=g_y.device)] += dy_n
            g_s, du_readout = cell.readout_backward(g_y, ctx.rcache, p, grads)  # (T, B, *S)
        ds_n = torch.zeros_like(s0) if ds_n is None else cell.to_scan(ds_n)
        a_c = a_eff.expand_as(s).conj()
        one = a_c.new_ones((1, *a_c.shape[1:]))
        s0u = s0.unsqueeze(0)
        scan = _sequential_scan if ctx.sequential else linear_scan
        if opts.reverse:  # s_t = a_t s_{t+1} + b_t:  G_t = g_t + conj(a_{t-1}) G_{t-1}
            G = scan(torch.cat((one, a_c[:-1])), g_s, ds_n, False)
            s_prev = torch.cat((s[1:], s0u))
            ds0 = a_c[-1] * G[-1]
        else:  # G_t = g_t + conj(a_{t+1}) G_{t+1}
            G = scan(torch.cat((a_c[1:], one)), g_s, ds_n, True)
            s_prev = torch.cat((s0u, s[:-1]))
            ds0 = a_c[0] * G[0]
        if opts.record is not None:
            opts.record(torch.linalg.vector_norm(G.flatten(2), dim=2))  # ‖∂L/∂s_t‖: (T, B)
        da, db = s_prev.conj_physical_().mul_(G), G  # G ⊙ conj(s_{t-1}), in the buffer of s_prev
        if valid is not None:
            v = valid.view(T, B, *extra)
            da, db = da * v, db * v
        du = cell.coefficients_backward(da, db, ctx.coeff_cache, p, grads)  # (T, B, G)
        if du_readout is not None:
            du = du + du_readout
        dstates = (cell.from_scan(ds0),) if cell.readout_is_state else (None, cell.from_scan(ds0))
        return (None, None, None, None, du, *dstates, *[grads.get(n) for n in ctx.names])


def run_scan_cell(cell: ScanCell, u: Tensor, state0: State, p: Params, opts: LoopOptions,
                  sequential: bool = False) -> tuple[Tensor, State]:
    """Run one direction of one layer of a :class:`~rnnkit.cells.scancell.ScanCell` from its
    input projection u (T, B, G) = ``cell.project(x, p)``: the parallel scan with its
    hand-written backward (``sequential=True``: the same formulas with a step-by-step
    loop). state0: ((B, R), (B, S)) or ((B, S),); p: the cell's parameters (those besides
    ``weight_ih``/``bias_ih`` are used). Returns out (T, B, R) and the final state.
    ``opts.observe`` (the diagnostics' per-step hook) runs :func:`run_steps` instead.
    """
    if not isinstance(cell, ScanCell) or not cell.parallel:
        raise TypeError(f"run_scan_cell needs a ScanCell whose recurrence is linear, got {cell!r}")
    if opts.rmask is not None or opts.zoneout is not None:
        raise ValueError(f"{type(cell).__name__} takes neither recurrent dropout nor zoneout")
    if opts.observe is not None:
        return run_steps(cell, u, state0, p, opts)
    if is_exporting():  # torch.export traces the steps (unrolled for this T); the scan writes with out=
        out, state_n, _ = engine._loop(_ScanSteps(cell), u, state0, p, opts, keep_caches=False)
        return out, state_n
    names = tuple(n for n in p if n not in ("weight_ih", "bias_ih"))
    out, *state_n = _ScanCellRecurrence.apply(cell, opts, sequential, names, u, *state0, *(p[n] for n in names))
    return out, tuple(state_n)


# -- the sequential loop over a precomputed input projection -------------------------------------

class _StepLoop(torch.autograd.Function):
    """The time loop of :mod:`rnnkit.engine` for cells without a recurrent weight matrix
    (element-wise recurrences, matrix memories), from the input projection u: ``cell.step``
    forward, ``cell.step_backward`` in reverse, lengths and direction as the engine has them."""

    @staticmethod
    def forward(ctx, cell: Cell, opts: LoopOptions, names: tuple, n_state: int, u: Tensor, *tensors):
        state0 = tuple(tensors[:n_state])
        p = dict(zip(names, tensors[n_state:]))
        out, state_n, caches = engine._loop(cell, u, state0, p, opts, keep_caches=True)
        ctx.cell, ctx.opts, ctx.names, ctx.caches = cell, opts, names, caches
        ctx.u_shape = u.shape
        ctx.save_for_backward(u, *tensors)
        return (out, *(s.clone() for s in state_n))

    @staticmethod
    def backward(ctx, dout: Tensor | None, *dstate_n: Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: differentiate the same steps under autograd
            return (None, None, None, None, *_steps_reference(ctx, ctx.cell, (dout, *dstate_n), _StepLoop.backward))
        cell: Cell = ctx.cell
        opts: LoopOptions = ctx.opts
        tensors = ctx.saved_tensors[1:]
        n_state = len(dstate_n)
        state0, p = tensors[:n_state], dict(zip(ctx.names, tensors[n_state:]))
        T, B = ctx.u_shape[:2]
        dstate = tuple(torch.zeros_like(s) if d is None else d for d, s in zip(dstate_n, state0))
        valid = engine._valid_masks(opts.lengths, T, state0[0])
        du_all = state0[0].new_empty(ctx.u_shape)  # (T, B, G)
        norms = state0[0].new_empty(T, B) if opts.record is not None else None
        memory = getattr(cell, "memory_state", 0)
        grads: Params = {}
        for t in range(T) if opts.reverse else range(T - 1, -1, -1):
            ds = list(dstate)
            if dout is not None:
                ds[0] = ds[0] + (dout[t] if valid is None else dout[t] * valid[t])
            if valid is not None:  # past its length a sequence passes its state through
                v = valid[t]
                skip = [d * ~v for d in ds]
                ds = [d * v for d in ds]
            # the record: ‖∂L/∂s_t‖ of the memory state, from step t+1 and from the output at t
            kw = {"memory_grad": []} if norms is not None else {}
            du, dprev, _ = cell.step_backward(tuple(ds), ctx.caches[t], p, grads, None, **kw)
            if norms is not None:
                total = kw["memory_grad"][0] if valid is None else kw["memory_grad"][0] + skip[memory]
                norms[t] = torch.linalg.vector_norm(total, dim=1)
            du_all[t] = du
            if valid is not None:
                dprev = [d + s for d, s in zip(dprev, skip)]
            dstate = tuple(dprev)
        if norms is not None:
            opts.record(norms)
        return (None, None, None, None, du_all, *dstate, *[grads.get(n) for n in ctx.names])


def run_steps(cell: Cell, u: Tensor, state0: State, p: Params, opts: LoopOptions) -> tuple[Tensor, State]:
    """Run one direction of one layer step by step from the input projection u (T, B, G),
    with the cell's hand-written ``step_backward``: the sequential counterpart of
    :func:`run_scan_cell`, and the engine of cells whose recurrence is not linear (the SRU
    with its c_{t-1} terms in the gates) or not element-wise (mLSTM's matrix memory).
    A cell with a native loop over u (the SRU's) runs it where it can
    (:func:`run_native_steps`)."""
    if opts.rmask is not None or opts.zoneout is not None:
        raise ValueError(f"{type(cell).__name__} takes neither recurrent dropout nor zoneout")
    fast = run_native_steps(cell, u, state0, p, opts)
    if fast is not None:
        return fast
    names = tuple(n for n in p if n not in ("weight_ih", "bias_ih"))
    out, *state_n = _StepLoop.apply(cell, opts, names, len(state0), u, *state0, *(p[n] for n in names))
    return out, tuple(state_n)


# -- the native loops over a precomputed input projection ----------------------------------------

class _NativeSteps(torch.autograd.Function):
    """:class:`_StepLoop` with the time loop in C++: the cell's :class:`~rnnkit.cells.base.NativeBinding`
    runs forward and backward over u (its ``forward`` gets u as its ``xw``); under
    ``create_graph=True`` the steps of ``step_cell`` run again under autograd
    (:func:`_steps_reference`), as in every Function here.

    ``apply(binding, opts, ext, (names, n_state, step_cell), u, *state0, *params)``."""

    @staticmethod
    def forward(ctx, binding, opts: LoopOptions, ext, meta: tuple, u: Tensor, *tensors: Tensor):
        names, n_state, step_cell = meta
        state0 = tuple(s.contiguous() for s in tensors[:n_state])
        p = dict(zip(names, tensors[n_state:]))
        masks = native.native_masks(opts, u, tuple(s.shape[-1] for s in state0))
        keep = any(ctx.needs_input_grad)
        out, state_n, saved = binding.forward(ext, u.contiguous(), state0, p, masks, opts.reverse, keep)
        ctx.binding, ctx.opts, ctx.ext, ctx.names, ctx.step_cell = binding, opts, ext, names, step_cell
        ctx.masks, ctx.saved_names = masks, tuple(saved)
        if keep:  # u, the initial state and the parameters first: the layout _steps_reference reads
            ctx.save_for_backward(u, *tensors, *saved.values())
        return (out, *state_n)

    @staticmethod
    def backward(ctx, dout: Tensor | None, *dstate_n: Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: differentiate the same steps under autograd
            return (None, None, None, None, *_steps_reference(ctx, ctx.step_cell, (dout, *dstate_n),
                                                              _NativeSteps.backward))
        n_state = len(dstate_n)
        tensors = ctx.saved_tensors[1:1 + n_state + len(ctx.names)]
        saved = dict(zip(ctx.saved_names, ctx.saved_tensors[1 + n_state + len(ctx.names):]))
        state0, p = tensors[:n_state], dict(zip(ctx.names, tensors[n_state:]))
        dstate = tuple(torch.zeros_like(s) if d is None else d.contiguous() for d, s in zip(dstate_n, state0))
        du, dstate0, grads = ctx.binding.backward(ctx.ext, saved, None if dout is None else dout.contiguous(),
                                                  dstate, p, ctx.masks, ctx.opts.reverse)
        return (None, None, None, None, du, *dstate0, *[grads.get(n) for n in ctx.names])


def run_native_steps(cell: Cell, u: Tensor, state0: State, p: Params, opts: LoopOptions,
                     step_cell=None) -> tuple[Tensor, State] | None:
    """One direction of one layer on the cell's native loop over the input projection u
    (T, B, G), or None where it does not run: no binding for the cell's options, device or
    dtype, the native loops off or not built, a diagnostics hook (``record``, ``observe``:
    the Python loops instrument the steps), recurrent dropout or zoneout. ``step_cell``: the
    steps the double backward differentiates (default the cell; a QRNN passes its pooling
    without the convolution, :class:`_ScanSteps`)."""
    chosen = _native_steps_for(cell, u, opts)
    if chosen is None:
        return None
    binding, ext = chosen
    names = tuple(n for n in p if n not in ("weight_ih", "bias_ih"))
    function = _native_function(type(binding))
    out, *state_n = function.apply(binding, opts, ext, (names, len(state0), step_cell or cell), u, *state0,
                                   *(p[n] for n in names))
    return out, tuple(state_n)


def _native_steps_for(cell: Cell, like: Tensor, opts: LoopOptions):
    if opts.rmask is not None or opts.zoneout is not None or is_exporting():
        return None
    return native.dispatch(cell, like, opts)


def native_steps_run(cell: Cell, like: Tensor, opts: LoopOptions) -> bool:
    """Whether :func:`run_native_steps` runs ``cell`` for tensors like ``like`` with ``opts``
    (asked before computing u, which a QRNN computes differently for each path)."""
    return _native_steps_for(cell, like, opts) is not None


_NATIVE_FUNCTIONS: dict[type, type[_NativeSteps]] = {}


def _native_function(binding_type: type) -> type[_NativeSteps]:
    """:class:`_NativeSteps` under the binding's name (``_NativeFoPool``: its autograd node is
    ``_NativeFoPoolBackward``, so a graph says which loop ran); the same code."""
    function = _NATIVE_FUNCTIONS.get(binding_type)
    if function is None:
        function = _NATIVE_FUNCTIONS[binding_type] = type(binding_type.__name__, (_NativeSteps,),
                                                          {"__doc__": _NativeSteps.__doc__})
    return function
