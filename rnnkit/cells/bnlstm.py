"""Recurrent batch normalization (Cooijmans et al. 2017): the LSTM with batch-normalized
input and recurrent projections and cell, statistics per time step; its time loop.

Batch normalization needs what the generic engine does not give a step: the time index
(the statistics belong to a step), the training mode, the valid rows of the batch, and
running statistics updated as the loop runs. So this family brings its own small
sequential loop (:func:`run_batch_norm_lstm`) with a hand-written backward, an
``autograd.Function``; the native loops never run it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from .base import Params, State, accumulate, differentiable_backward
from .lstm import LSTMCell

Stats = tuple[Tensor, Tensor]  # (mean, var), each (F,)


class StepNorm(NamedTuple):
    """How one step normalizes. valid: (B, 1) 0/1 in the data dtype, or None when every row
    is valid; n: the number of valid rows; stats: None for batch statistics over the valid
    rows, else the (mean, var) pairs of the input projection, the recurrent projection and
    the cell (running statistics); eps: added to the variance."""

    valid: Tensor | None
    n: int
    stats: tuple[Stats, Stats, Stats] | None
    eps: float


# -- batch normalization over the valid rows ----------------------------------------------------
# y = γ ⊙ â + β,  â = (a - μ) / σ,  σ = sqrt(var + ε); μ, var over the n valid rows (biased
# variance), or given (running statistics). Its backward, with ĝ = γ ⊙ dy on the valid rows:
#   batch statistics:   da = (ĝ - Σĝ/n - â ⊙ Σ(ĝ ⊙ â)/n) / σ   (valid rows; 0 elsewhere)
#   given statistics:   da = ĝ / σ
#   dγ = Σ dy ⊙ â,  dβ = Σ dy
def batch_norm(a: Tensor, weight: Tensor, bias: Tensor | None, stats: Stats | None,
               norm: StepNorm) -> tuple[Tensor, tuple]:
    """Batch norm of a (B, F) over its valid rows; returns (y, cache). The cache ends with the
    batch (mean, biased var) for the running statistics."""
    if stats is None:
        v, n = norm.valid, norm.n
        if v is None:
            var, mean = torch.var_mean(a, 0, correction=0)  # (F,) each
        else:
            mean = (a * v).sum(0) / n
            var = ((a - mean).square() * v).sum(0) / n
    else:
        mean, var = stats
    rstd = (var + norm.eps).rsqrt()  # (F,)
    xhat = (a - mean) * rstd  # (B, F)
    y = xhat * weight if bias is None else torch.addcmul(bias, xhat, weight)
    return y, (xhat, rstd, stats is None, mean, var)


def batch_norm_backward(dy: Tensor, cache: tuple, weight: Tensor, norm: StepNorm) -> tuple[Tensor, Tensor, Tensor]:
    """(da, dγ, dβ) for :func:`batch_norm`."""
    xhat, rstd, batch = cache[:3]
    if norm.valid is not None:
        dy = dy * norm.valid
    dweight = (dy * xhat).sum(0)
    dbias = dy.sum(0)
    g = dy * weight  # ĝ
    if not batch:
        return g * rstd, dweight, dbias
    n = norm.n
    da = (g - g.sum(0) / n - xhat * ((g * xhat).sum(0) / n)) * rstd
    if norm.valid is not None:
        da = da * norm.valid
    return da, dweight, dbias


class BatchNormLSTMCell(LSTMCell):
    """LSTM with recurrent batch normalization (Cooijmans et al. 2017); gate order i, f, g, o
    as in torch.nn.LSTM. BN(a; γ, β) normalizes each feature over the batch (the valid rows)
    with the statistics of this time step:

        (i, f, g, o) = BN(W_hh h; γ_h, 0) + BN(W_ih x; γ_x, 0) + b      b = b_ih + b_hh
        i, f, o = σ(i, f, o)      g = tanh(g)
        c' = f ⊙ c + i ⊙ g
        h' = o ⊙ tanh(BN(c'; γ_c, β_c))

    The two projections have no β of their own: b is there (the paper's β_h = β_x = 0).
    The recurrence of c is left unnormalized, so the gradient flows through c as in the LSTM.

    BPTT, with dh', dc' the gradients reaching the new state and ĉ' = BN(c'):

        do = dh' ⊙ tanh(ĉ')       dĉ' = dh' ⊙ o ⊙ (1 - tanh²(ĉ'))
        dc = dc' + BN_c backward of dĉ'
        di = dc ⊙ g     df = dc ⊙ c     dg = dc ⊙ i     dc_prev = dc ⊙ f
        dgates = (di ⊙ σ', df ⊙ σ', dg ⊙ (1 - g²), do ⊙ σ')        db = Σ dgates
        drec = BN_h backward of dgates    dxw = BN_x backward of dgates
        dh_prev = W_hhᵀ drec

    ``step`` takes a :class:`StepNorm` (which statistics, which rows), so this cell runs only
    in :func:`run_batch_norm_lstm`, the loop of ``rnnkit.LSTM(..., batch_norm=True)``.
    """

    def __init__(self, hidden_size: int, bias: bool = True):
        super().__init__(hidden_size, bias)

    def native_binding(self) -> None:
        """None: the statistics of each time step are outside the native LSTM loop, which
        the LSTM cell this one extends would otherwise offer."""
        return None

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        shapes = super().param_shapes(input_size)
        shapes.update(bn_ih_weight=(4 * H,), bn_hh_weight=(4 * H,), bn_c_weight=(H,), bn_c_bias=(H,))
        return shapes

    uses_workspace = False

    def step(self, xw: Tensor, state: State, p: Params, norm: StepNorm | None = None) -> tuple[State, tuple]:
        """One step: xw (B, 4H) = W_ih x_t (no bias); state (h, c), each (B, H)."""
        if not isinstance(norm, StepNorm):
            raise TypeError("BatchNormLSTMCell needs the statistics of its time step: it runs in "
                            "rnnkit.LSTM(..., batch_norm=True), not in the generic engine")
        h, c = state
        stats = norm.stats or (None, None, None)
        xn, bn_x = batch_norm(xw, p["bn_ih_weight"], None, stats[0], norm)  # (B, 4H)
        hn, bn_h = batch_norm(h @ p["weight_hh"].t(), p["bn_hh_weight"], None, stats[1], norm)  # (B, 4H)
        gates = xn + hn
        if self.bias:
            gates = gates + (p["bias_ih"] + p["bias_hh"])
        i, f, g, o = gates.chunk(4, 1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c_new = f * c + i * g  # (B, H)
        cn, bn_c = batch_norm(c_new, p["bn_c_weight"], p["bn_c_bias"], stats[2], norm)
        tc = cn.tanh()
        h_new = o * tc  # (B, H)
        return (h_new, c_new), (h, c, i, f, g, o, tc, bn_x, bn_h, bn_c)

    def step_backward(self, dstate: State, cache: tuple, p: Params, grads: Params,  # type: ignore[override]
                      norm: StepNorm) -> tuple[Tensor, State, Tensor]:
        dh, dc_next = dstate
        h, c, i, f, g, o, tc, bn_x, bn_h, bn_c = cache
        do = dh * tc  # h' = o ⊙ tanh(ĉ')
        dcn = dh * o * (1 - tc * tc)
        dc, dgc, dbc = batch_norm_backward(dcn, bn_c, p["bn_c_weight"], norm)  # ĉ' = BN(c')
        accumulate(grads, "bn_c_weight", dgc)
        accumulate(grads, "bn_c_bias", dbc)
        dc = dc + dc_next
        di, df, dg, dc_prev = dc * g, dc * c, dc * i, dc * f  # c' = f ⊙ c + i ⊙ g
        dgates = torch.cat((di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)), 1)  # (B, 4H)
        if self.bias:
            db = dgates.sum(0)
            accumulate(grads, "bias_ih", db)
            accumulate(grads, "bias_hh", db)
        drec, dgh, _ = batch_norm_backward(dgates, bn_h, p["bn_hh_weight"], norm)  # BN(W_hh h)
        dxw, dgx, _ = batch_norm_backward(dgates, bn_x, p["bn_ih_weight"], norm)  # BN(W_ih x)
        accumulate(grads, "bn_hh_weight", dgh)
        accumulate(grads, "bn_ih_weight", dgx)
        dh_prev = drec @ p["weight_hh"]  # (B, H)
        return dxw, (dh_prev, dc_prev), drec

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, _, i, f, g, o = cache[:6]
        return {"i": i, "f": f, "g": g, "o": o}

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, batch_norm=True"


# -- the loop -----------------------------------------------------------------------------------
STAT_NAMES = ("ih", "hh", "c")  # the three normalizations, in StepNorm.stats order


@dataclass
class BatchNormRun:
    """Everything about one run of the batch-normalized loop that is not a differentiable tensor.

    Statistics belong to the position t of a step in the input (in both directions); the
    running statistics have T_max rows, and every t >= T_max uses row T_max - 1. In training a
    step normalizes with the statistics of its batch over the valid rows (``lengths``: a
    sequence past its end does not count) and updates its running row; a step with a single
    valid row (possible only with ``lengths``) normalizes with its running row instead and does
    not update it. In evaluation every step uses its running row."""

    reverse: bool
    #: (T, B, 1) boolean: step t of sequence b is inside its length; None when all are
    valid: Tensor | None
    #: the number of valid sequences at each step
    counts: list[int]
    training: bool
    eps: float
    #: of the running statistics; None: a cumulative average (1 / the row's count)
    momentum: float | None
    #: the running statistics by name ("ih_mean", "ih_var", "hh_mean", ...), each (T_max, F),
    #: and "count", (T_max,) int64: the batches each row has averaged
    running: dict[str, Tensor]
    #: per step, the statistics the step normalized with (None: its batch's); set after a
    #: forward, so that the double backward runs the same function again
    used: list | None = None
    #: called in the backward with ‖∂L/∂h_t‖ as a (T, B) tensor
    record: Callable[[Tensor], None] | None = None
    #: called in the forward after every step t with (t, new state, the cell's cache)
    observe: Callable[[int, State, tuple], None] | None = None


def _step_norms(run: BatchNormRun, dtype: torch.dtype) -> list[StepNorm | None]:
    """The StepNorm of every step (None for a step with no valid sequence), running statistics
    taken as they are now; steps that normalize with their batch's are marked stats=None."""
    T = len(run.counts)
    T_max = run.running["ih_mean"].shape[0]
    snapshot = None
    norms: list[StepNorm | None] = []
    for t in range(T):
        n = run.counts[t]
        if n == 0:
            norms.append(None)
            continue
        B = run.valid.shape[1] if run.valid is not None else n
        valid = None if n == B else run.valid[t].to(dtype)
        if run.used is not None:
            stats = run.used[t]
        elif run.training and n > 1:
            stats = None
        else:
            if snapshot is None:
                snapshot = {k: v.detach().clone().to(dtype) for k, v in run.running.items() if k != "count"}
            k = min(t, T_max - 1)
            stats = tuple((snapshot[f"{s}_mean"][k], snapshot[f"{s}_var"][k]) for s in STAT_NAMES)
        norms.append(StepNorm(valid, n, stats, run.eps))
    return norms


@torch.no_grad()
def _update_running(run: BatchNormRun, batches: list[tuple[int, int, tuple]]) -> None:
    """running ← (1 - m) running + m · batch, the variance unbiased (n / (n - 1)), m the momentum
    or 1 / the row's count when it is None, as torch.nn.BatchNorm1d, for every step that
    normalized with its batch: ``batches`` holds (t, n, the step's cache) in the order the steps
    ran. Rows below T_max - 1 are updated once each, all at once; the shared row T_max - 1 once
    per step, in order."""
    if not batches:
        return
    T_max = run.running["ih_mean"].shape[0]
    once = [b for b in batches if b[0] < T_max - 1]
    shared = [b for b in batches if b[0] >= T_max - 1]
    count = run.running["count"]
    like = run.running["ih_mean"]
    if once:
        rows = torch.tensor([t for t, _, _ in once], device=count.device)
        count[rows] += 1
        m_once = (torch.full((len(once), 1), run.momentum, dtype=like.dtype, device=like.device)
                  if run.momentum is not None else 1.0 / count[rows].to(like.dtype).unsqueeze(1))  # (steps, 1)
    m_shared = []
    for _ in shared:
        count[T_max - 1] += 1
        m_shared.append(run.momentum if run.momentum is not None else 1.0 / float(count[T_max - 1]))
    for j, s in enumerate(STAT_NAMES):
        mean_buf, var_buf = run.running[f"{s}_mean"], run.running[f"{s}_var"]

        def batch_stats(group: list, j: int = j, like: Tensor = mean_buf) -> tuple[Tensor, Tensor]:
            bn = [cache[7 + j] for _, _, cache in group]  # a step's cache ends with its BN caches (ih, hh, c)
            factor = torch.tensor([n / (n - 1) for _, n, _ in group], dtype=like.dtype, device=like.device)
            mean = torch.stack([b[3] for b in bn]).to(like.dtype)  # (steps, F)
            var = torch.stack([b[4] for b in bn]).to(like.dtype) * factor.unsqueeze(1)
            return mean, var

        if once:
            mean, var = batch_stats(once)
            mean_buf[rows] = mean_buf[rows].lerp_(mean, m_once)
            var_buf[rows] = var_buf[rows].lerp_(var, m_once)
        if shared:
            mean, var = batch_stats(shared)
            for k, m in enumerate(m_shared):
                mean_buf[T_max - 1].lerp_(mean[k], m)
                var_buf[T_max - 1].lerp_(var[k], m)


def _loop(cell: BatchNormLSTMCell, xw: Tensor, state: State, p: Params, run: BatchNormRun,
          norms: list[StepNorm | None], update: bool, keep_caches: bool) -> tuple[Tensor, State, list]:
    """The forward time loop; returns the outputs (T, B, H), the final state and the caches.
    A step with valid rows updates only those (a sequence past its length keeps its state and
    outputs zeros)."""
    T = xw.shape[0]
    outs: list[Tensor] = [None] * T  # type: ignore[list-item]
    caches: list = [None] * T
    batches: list[tuple[int, int, tuple]] = []  # the steps that normalized with their batch's statistics
    for t in range(T - 1, -1, -1) if run.reverse else range(T):
        norm = norms[t]
        if norm is None:  # no sequence reaches step t
            outs[t] = torch.zeros_like(state[0])
            continue
        new, cache = cell.step(xw[t], state, p, norm)
        if update and norm.stats is None:
            batches.append((t, norm.n, cache))
        if norm.valid is not None:
            v = run.valid[t]  # (B, 1) boolean
            new = tuple(torch.where(v, a, s) for a, s in zip(new, state))
            outs[t] = new[0] * norm.valid
        else:
            outs[t] = new[0]
        if keep_caches:
            caches[t] = cache
        if run.observe is not None:
            run.observe(t, new, cache)
        state = new
    _update_running(run, batches)
    return torch.stack(outs), state, caches


def _reference(cell: BatchNormLSTMCell, x: Tensor, state0: State, p: Params, run: BatchNormRun) -> tuple[Tensor, State]:
    """The same loop under autograd: the path of ``backend="autograd"`` and torch.export, and
    the function the double backward differentiates (with ``run.used`` set: no update)."""
    T, B, _ = x.shape
    xw = (x.reshape(T * B, -1) @ p["weight_ih"].t()).view(T, B, -1)  # (T, B, 4H)
    norms = _step_norms(run, x.dtype)
    update = run.training and run.used is None
    out, state, _ = _loop(cell, xw, state0, p, run, norms, update, keep_caches=False)
    return out, state


class _BatchNormLSTMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell: BatchNormLSTMCell, run: BatchNormRun, names: tuple, x: Tensor, h0: Tensor, c0: Tensor,
                *params: Tensor):
        p = dict(zip(names, params))
        T, B, _ = x.shape
        xw = (x.reshape(T * B, -1) @ p["weight_ih"].t()).view(T, B, -1)  # (T, B, 4H)
        norms = _step_norms(run, x.dtype)
        keep = any(ctx.needs_input_grad)
        out, (hT, cT), caches = _loop(cell, xw, (h0, c0), p, run, norms, run.training, keep_caches=keep)
        ctx.cell, ctx.names, ctx.norms, ctx.caches = cell, names, norms, caches
        ctx.run = replace(run, used=[None if n is None else n.stats for n in norms], observe=None)
        ctx.save_for_backward(x, h0, c0, *params)
        return out, hT, cT

    @staticmethod
    def backward(ctx, dout: Tensor | None, dhT: Tensor | None, dcT: Tensor | None):
        x, h0, c0, *params = ctx.saved_tensors
        names, cell, run = ctx.names, ctx.cell, ctx.run
        if torch.is_grad_enabled():  # create_graph=True: differentiate the same function under autograd

            def forward(x: Tensor, h0: Tensor, c0: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
                out, state = _reference(cell, x, (h0, c0), dict(zip(names, tensors)), run)
                return (out, *state)

            inputs = [x, h0, c0, *params]
            return (None, None, None,
                    *differentiable_backward(forward, inputs, ctx.needs_input_grad[3:], (dout, dhT, dcT)))
        p = dict(zip(names, params))
        T, B, _ = x.shape
        G = 4 * cell.hidden_size
        dstate = (torch.zeros_like(h0) if dhT is None else dhT, torch.zeros_like(c0) if dcT is None else dcT)
        dxw_all = x.new_zeros(T, B, G)  # (T, B, 4H)
        drec_all = x.new_zeros(T, B, G)
        h_all = x.new_zeros(T, B, cell.hidden_size)  # the recurrent input of each step
        norms_dh = x.new_zeros(T, B) if run.record is not None else None
        grads: Params = {}
        for t in range(T) if run.reverse else range(T - 1, -1, -1):
            norm = ctx.norms[t]
            ds = list(dstate)
            if dout is not None:
                ds[0] = ds[0] + (dout[t] if run.valid is None else dout[t] * run.valid[t])
            if norms_dh is not None:
                norms_dh[t] = torch.linalg.vector_norm(ds[0], dim=1)
            if norm is None:  # no sequence reaches step t: the state passes through
                dstate = tuple(ds)
                continue
            if norm.valid is not None:  # past its length a sequence passes its state through
                skip = [d * (1 - norm.valid) for d in ds]
                ds = [d * norm.valid for d in ds]
            dxw, dprev, drec = cell.step_backward(tuple(ds), ctx.caches[t], p, grads, norm)
            dxw_all[t], drec_all[t], h_all[t] = dxw, drec, ctx.caches[t][0]
            if norm.valid is not None:
                dprev = tuple(d + s for d, s in zip(dprev, skip))
            dstate = tuple(dprev)
        if norms_dh is not None:
            run.record(norms_dh)
        dxw2 = dxw_all.view(T * B, G)
        grads["weight_ih"] = dxw2.t() @ x.reshape(T * B, -1)
        grads["weight_hh"] = drec_all.view(T * B, G).t() @ h_all.view(T * B, -1)
        need = ctx.needs_input_grad
        dx = (dxw2 @ p["weight_ih"]).view(T, B, -1) if need[3] else None
        dparams = [grads.get(n) if need[6 + k] else None for k, n in enumerate(names)]
        return (None, None, None, dx, dstate[0] if need[4] else None, dstate[1] if need[5] else None, *dparams)


def run_batch_norm_lstm(cell: BatchNormLSTMCell, x: Tensor, state0: State, p: Params, run: BatchNormRun,
                        reference: bool = False) -> tuple[Tensor, State]:
    """Run one direction of one batch-normalized LSTM layer.

    x: (T, B, I); state0: (h0, c0), each (B, H); p: the cell's parameters by name. Returns out
    (T, B, H) and (h_T, c_T). In training the running statistics in ``run.running`` are updated
    in place. ``reference``: the loop under autograd instead of the hand-written backward."""
    if reference:
        return _reference(cell, x, state0, p, run)
    out, hT, cT = _BatchNormLSTMFunction.apply(cell, run, tuple(p), x, *state0, *p.values())
    return out, (hT, cT)
