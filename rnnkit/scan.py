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

Under ``create_graph=True`` (double backward) this backward hands over to the sequential
reference under autograd, as the engine's Functions do (``engine._reference_backward``).

Lengths, zoneout (Krueger et al. 2017) and variational recurrent dropout keep the
recurrence linear and become changes of the coefficients, with the semantics of the
sequential engine (:mod:`rnnkit.engine`):

    dropout mask m on h_{t-1}:     a ← a ⊙ m
    zoneout mask ζ:                a ← ζ + (1 - ζ) ⊙ a,   b ← (1 - ζ) ⊙ b
    past the length:               a ← 1,  b ← 0,  output 0
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cells.base import Params, State
from .cells.minrnn import LinearRecurrenceCell
from .engine import LoopOptions, _reference_backward, is_exporting, run_reference

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
