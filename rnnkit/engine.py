"""The BPTT engine: one time loop for every cell, forward and hand-written backward.

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
Function here hands the step to the reference (:func:`_reference_backward`): the forward runs
again under autograd from the saved inputs, with the same options and masks, and is
differentiated with ``create_graph=True``. Ordinary training keeps the hand-written path.

For the LSTM, the GRU and the Jordan network on the CPU, :func:`run` hands the same loop,
with the same options, to the C++ implementation of :mod:`rnnkit.native` when it is
available (``_native_function`` says when); the diagnostics hooks (``record``,
``observe``) always run the Python loop they instrument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .cells.base import NO_WORKSPACE, Cell, Params, State, Workspace, differentiable_backward


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


def _input_projection(cell: Cell, x: Tensor, p: Params) -> tuple[Tensor, object]:
    b = cell.input_bias(p)
    w = p["weight_ih"]
    T, B, _ = x.shape
    x2 = x.reshape(T * B, -1)
    buf = _POOL.take((T * B, w.shape[0]), x.dtype, x.device) if not torch.is_grad_enabled() else None
    xw = (torch.addmm(b, x2, w.t(), out=buf) if b is not None else torch.mm(x2, w.t(), out=buf))
    return cell.prepare_input(xw.view(T, B, -1), p)  # (T, B, G)


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


def _step_mask(t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype).expand(shape).contiguous()


def _native_masks(opts: LoopOptions, x: Tensor, sizes: tuple[int, ...]):
    """The loop options as the native loops take them, contiguous in x's dtype: the
    recurrent dropout mask (B, sizes[0]), the lengths as (T, B) 1/0 (step t of sequence b is
    inside its length), and one zoneout mask (T, B, size) per state entry (None where off)."""
    T, B = x.shape[:2]
    valid = None
    if opts.lengths is not None:
        steps = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
        valid = (steps < opts.lengths.to(x.device).unsqueeze(0)).to(x.dtype).contiguous()
    zoneout = opts.zoneout if opts.zoneout is not None else [None] * len(sizes)
    return (_step_mask(opts.rmask, (B, sizes[0]), x.dtype), valid,
            [_step_mask(z, (T, B, n), x.dtype) for z, n in zip(zoneout, sizes)])


def _keep_for_backward(ctx, keep: bool, xw: Tensor, *saved: Tensor) -> None:
    """Save what the backward reads; the input-projection buffer goes back to the pool after
    the backward, or at once when there will be none."""
    ctx.buffer = xw if xw._base is None else xw._base
    if keep:
        ctx.save_for_backward(*saved)
    else:
        _POOL.give([ctx.buffer])


class _NativeLSTM(torch.autograd.Function):
    """:class:`_BPTT` for the LSTM with the time loop in C++ (``rnnkit/native/lstm.cpp``)."""

    @staticmethod
    def forward(ctx, cell: Cell, opts: LoopOptions, ext, names: tuple, x: Tensor, h0: Tensor, c0: Tensor, *tensors):
        p = dict(zip(names, tensors))
        T, B, _ = x.shape
        H = cell.hidden_size
        xw, prep_ctx = _input_projection(cell, x, p)
        xw = xw.contiguous()
        ln = ([p["ln_hh_weight"].contiguous(), p["ln_c_weight"].contiguous(), p["ln_c_bias"].contiguous()]
              if cell.layer_norm else [])
        peep = (torch.stack((p["weight_ci"], p["weight_cf"], p["weight_co"])).contiguous()
                if cell.peephole else None)  # (3, H)
        rmask, valid, (zh, zc) = _native_masks(opts, x, (h0.shape[-1], H))  # h: the projected size
        keep = any(ctx.needs_input_grad)
        w_hh = p["weight_hh"].contiguous()
        w_hr = p["weight_hr"].contiguous() if cell.proj_size else None
        res = ext.lstm_forward(xw, h0.contiguous(), c0.contiguous(), w_hh, w_hr, peep, rmask, valid, zh, zc, ln,
                               opts.reverse, keep)
        out, hT, cT = res[:3]
        ctx.cell, ctx.opts, ctx.names, ctx.ext, ctx.reverse = cell, opts, names, ext, opts.reverse
        ctx.masks = (peep, rmask, valid, zh, zc)
        ctx.ln, ctx.prep_ctx, ctx.w_hr = ln, prep_ctx, w_hr
        _keep_for_backward(ctx, keep, xw, x, xw, *res[3:], *tensors, h0, c0)
        return out, hT, cT

    @staticmethod
    def backward(ctx, dout: Tensor | None, dhT: Tensor | None, dcT: Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
            _POOL.give([ctx.buffer])
            return (None, None, None, None, *_reference_backward(ctx, (dout, dhT, dcT), 4))
        cell: Cell = ctx.cell
        saved = ctx.saved_tensors
        x, gates, hr_all, cin_all, cnew_all, tc_all = saved[:6]
        n_ln = 4 if cell.layer_norm else 0
        ln_saved = list(saved[6:6 + n_ln])  # LN: â and 1/σ of the recurrent output and of c'
        h_full = saved[6 + n_ln] if cell.proj_size else None  # o ⊙ tanh(...) before the projection
        _, _, p = _saved_inputs(ctx, 2)
        P = hr_all.shape[-1]
        T, B, _ = x.shape
        H = cell.hidden_size
        peep, rmask, valid, zh, zc = ctx.masks
        dgates, dh0, dc0, *more = ctx.ext.lstm_backward(
            None if dout is None else dout.contiguous(), gates.new_zeros(B, P) if dhT is None else dhT.contiguous(),
            gates.new_zeros(B, H) if dcT is None else dcT.contiguous(), [gates, cin_all, cnew_all, tc_all, *ln_saved],
            p["weight_hh"].contiguous(), ctx.w_hr, peep, rmask, valid, zh, zc, ctx.ln, ctx.reverse)
        ln_grads = more[:2] if cell.layer_norm else []
        grads: Params = {}
        drec = ln_grads[0] if cell.layer_norm else dgates  # d(h W_hhᵀ)
        grads["weight_hh"] = drec.view(T * B, 4 * H).t() @ hr_all.view(T * B, P)
        if cell.proj_size:  # dW_hr = Σ dhᵀ h_full
            grads["weight_hr"] = more[-1].view(T * B, P).t() @ h_full.view(T * B, H)
        dsum = dgates.sum((0, 1))
        cell.bias_grads(dsum, dsum, grads)
        if cell.peephole:
            if cin_all.shape[0] != T:  # only c_0 kept: c_{t-1} is the previous step's c_new
                prev = (cnew_all[1:], cin_all) if ctx.reverse else (cin_all, cnew_all[:-1])
                cin_all = torch.cat(prev)
            grads["weight_ci"] = (dgates[..., :H] * cin_all).sum((0, 1))
            grads["weight_cf"] = (dgates[..., H:2 * H] * cin_all).sum((0, 1))
            grads["weight_co"] = (dgates[..., 3 * H:] * cnew_all).sum((0, 1))
        if cell.layer_norm:
            xhat_h, _, xhat_c, _ = ln_saved
            dcln = ln_grads[1]
            grads["ln_hh_weight"] = (dgates * xhat_h).sum((0, 1))
            grads["ln_c_weight"] = (dcln * xhat_c).sum((0, 1))
            grads["ln_c_bias"] = dcln.sum((0, 1))
        dxw = cell.prepare_input_backward(dgates, ctx.prep_ctx, p, grads)  # (LN of x W_ihᵀ, its bias)
        dg2 = dxw.reshape(T * B, 4 * H)
        dx, dparams = _input_and_param_grads(ctx, dg2, x, p, grads, 2)
        _POOL.give([ctx.buffer])
        return (None, None, None, None, dx, dh0 if ctx.needs_input_grad[5] else None,
                dc0 if ctx.needs_input_grad[6] else None, *dparams)


class _NativeGRU(torch.autograd.Function):
    """:class:`_BPTT` for the GRU with the time loop in C++ (``rnnkit/native/gru.cpp``)."""

    @staticmethod
    def forward(ctx, cell: Cell, opts: LoopOptions, ext, names: tuple, x: Tensor, h0: Tensor, *tensors):
        p = dict(zip(names, tensors))
        T, B, _ = x.shape
        H = cell.hidden_size
        xw, _ = _input_projection(cell, x, p)
        xw = xw.contiguous()
        rmask, valid, (zh,) = _native_masks(opts, x, (H,))
        b_hh = p["bias_hh"].contiguous() if cell.bias and cell.reset_after else None
        keep = any(ctx.needs_input_grad)
        res = ext.gru_forward(xw, h0.contiguous(), p["weight_hh"].contiguous(), b_hh, rmask, valid, zh,
                              cell.reset_after, opts.reverse, keep)
        ctx.cell, ctx.opts, ctx.names, ctx.ext, ctx.reverse = cell, opts, names, ext, opts.reverse
        ctx.masks = (rmask, valid, zh)
        _keep_for_backward(ctx, keep, xw, x, xw, *res[2:], *tensors, h0)
        return res[0], res[1]

    @staticmethod
    def backward(ctx, dout: Tensor | None, dhT: Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
            _POOL.give([ctx.buffer])
            return (None, None, None, None, *_reference_backward(ctx, (dout, dhT), 4))
        cell: Cell = ctx.cell
        x, gates, hin_all, hr_all, aux_all = ctx.saved_tensors[:5]
        _, _, p = _saved_inputs(ctx, 1)
        T, B, _ = x.shape
        H = cell.hidden_size
        rmask, valid, zh = ctx.masks
        dxw, drec, dh0 = ctx.ext.gru_backward(
            None if dout is None else dout.contiguous(), gates.new_zeros(B, H) if dhT is None else dhT.contiguous(),
            gates, hin_all, hr_all, aux_all, p["weight_hh"].contiguous(), rmask, valid, zh, cell.reset_after,
            ctx.reverse)
        grads: Params = {}
        dr2 = drec.view(T * B, 3 * H)
        hr2 = hr_all.view(T * B, H)
        if cell.reset_after:
            grads["weight_hh"] = dr2.t() @ hr2
        else:  # the r,z rows multiply hr, the n rows r ⊙ hr
            grads["weight_hh"] = torch.cat((dr2[:, :2 * H].t() @ hr2, dr2[:, 2 * H:].t() @ aux_all.view(T * B, H)))
        cell.bias_grads(dxw.sum((0, 1)), drec.sum((0, 1)), grads)
        dx2 = dxw.view(T * B, 3 * H)
        dx, dparams = _input_and_param_grads(ctx, dx2, x, p, grads, 1)
        _POOL.give([ctx.buffer])
        return (None, None, None, None, dx, dh0 if ctx.needs_input_grad[5] else None, *dparams)


# Act in rnnkit/native/common.h; hard_sigmoid_keras2 has no native code and runs the Python loop
_ACT_CODES = {"identity": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "hard_sigmoid": 4}


class _NativeJordan(torch.autograd.Function):
    """:class:`_BPTT` for the Jordan network with the time loop in C++ (``rnnkit/native/jordan.cpp``)."""

    @staticmethod
    def forward(ctx, cell: Cell, opts: LoopOptions, ext, names: tuple, x: Tensor, y0: Tensor, *tensors):
        p = dict(zip(names, tensors))
        T, B, _ = x.shape
        O = cell.output_size
        xw, _ = _input_projection(cell, x, p)
        xw = xw.contiguous()
        rmask, valid, (zh,) = _native_masks(opts, x, (O,))
        keep = any(ctx.needs_input_grad)
        codes = (_ACT_CODES[cell.phi.name], _ACT_CODES[cell.psi.name])
        res = ext.jordan_forward(xw, y0.contiguous(), p["weight_hh"].contiguous(), p["weight_ho"].contiguous(),
                                 p["bias_ho"].contiguous() if cell.bias else None, rmask, valid, zh, *codes,
                                 opts.reverse, keep)
        ctx.cell, ctx.opts, ctx.names, ctx.ext, ctx.reverse, ctx.codes = cell, opts, names, ext, opts.reverse, codes
        ctx.masks = (rmask, valid, zh)
        _keep_for_backward(ctx, keep, xw, x, xw, *res[2:], *tensors, y0)
        return res[0], res[1]

    @staticmethod
    def backward(ctx, dout: Tensor | None, dyT: Tensor | None):
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
            _POOL.give([ctx.buffer])
            return (None, None, None, None, *_reference_backward(ctx, (dout, dyT), 4))
        cell: Cell = ctx.cell
        x, h_all, yr_all, yn_all = ctx.saved_tensors[:4]
        _, _, p = _saved_inputs(ctx, 1)
        T, B, _ = x.shape
        H, O = cell.hidden_size, cell.output_size
        rmask, valid, zh = ctx.masks
        da, dz, dy0 = ctx.ext.jordan_backward(
            None if dout is None else dout.contiguous(), h_all.new_zeros(B, O) if dyT is None else dyT.contiguous(),
            h_all, yn_all, p["weight_hh"].contiguous(), p["weight_ho"].contiguous(), rmask, valid, zh, *ctx.codes,
            ctx.reverse)
        grads: Params = {}
        da2, dz2 = da.view(T * B, H), dz.view(T * B, O)
        grads["weight_hh"] = da2.t() @ yr_all.view(T * B, O)
        grads["weight_ho"] = dz2.t() @ h_all.view(T * B, H)
        dsum = da.sum((0, 1))
        cell.bias_grads(dsum, dsum, grads)
        if cell.bias:
            grads["bias_ho"] = dz.sum((0, 1))
        dx, dparams = _input_and_param_grads(ctx, da2, x, p, grads, 1)
        _POOL.give([ctx.buffer])
        return (None, None, None, None, dx, dy0 if ctx.needs_input_grad[5] else None, *dparams)


def _native_loop(cell: Cell, device: torch.device, dtype: torch.dtype):
    """The native loop's autograd Function for ``cell`` on tensors of this device and dtype,
    or None: float32 or float64 on the CPU, and an LSTM with sigmoid/tanh (any of
    peepholes, layer norm, projection), a GRU without layer norm, or a Jordan network."""
    from .cells.gru import GRUCell
    from .cells.jordan import JordanCell
    from .cells.lstm import LSTMCell

    if device.type != "cpu" or dtype not in (torch.float32, torch.float64) or not cell.has_backward:
        return None
    kind = type(cell)
    if kind is LSTMCell and cell.sig.name == "sigmoid" and cell.act.name == "tanh":
        return _NativeLSTM
    if kind is GRUCell and not cell.layer_norm:
        return _NativeGRU
    if kind is JordanCell and cell.phi.name in _ACT_CODES and cell.psi.name in _ACT_CODES:
        return _NativeJordan
    return None


def _native_function(cell: Cell, x: Tensor, opts: LoopOptions):
    """The native loop for this call as (autograd Function, loaded extension), or None:
    :func:`_native_loop` says which cells, dtypes and devices; the diagnostics hooks
    (``record``/``observe``) instrument the Python loop; recurrent dropout, zoneout and
    lengths run natively in all."""
    if opts.record is not None or opts.observe is not None:
        return None
    function = _native_loop(cell, x.device, x.dtype)
    if function is None:
        return None
    from . import native

    ext = native.load()
    return None if ext is None else (function, ext)


def uses_native_loops(model: torch.nn.Module, dtype: torch.dtype | None = None) -> bool:
    """Whether training or running ``model`` will call the native loops: some recurrent
    layer in it (a module with a ``cell``) has a cell with a native loop for its parameters'
    device and dtype (``dtype`` instead, e.g. an autocast dtype), and ``RNNKIT_NATIVE`` is
    not 0. Used to build the loops before a training clock starts."""
    from . import native

    if native.mode() == "0":
        return False
    for module in model.modules():
        cell = getattr(module, "cell", None)
        weight = next(module.parameters(recurse=False), None)
        if isinstance(cell, Cell) and weight is not None and _native_loop(cell, weight.device, dtype or weight.dtype):
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
    names = tuple(p)
    chosen = _native_function(cell, x, opts)
    if chosen is not None:
        function, ext = chosen
        out, *state_n = function.apply(cell, opts, ext, names, x, *state0, *p.values())
        return out, tuple(state_n)
    out, *state_n = _BPTT.apply(cell, opts, names, len(state0), x, *state0, *p.values())
    return out, tuple(state_n)


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
