"""Minimal RNNs (Feng et al. 2024, "Were RNNs All We Needed?"): minGRU and minLSTM.

Their gates read only the input x_t, never h_{t-1}, so the state update is an affine
map of the previous state with coefficients known for every step in advance:

    h_t = a_t ⊙ h_{t-1} + b_t            a_t, b_t functions of xw_t = W_ih x_t + b_ih

A linear recurrence can be run by a parallel scan over time (rnnkit.engine.scan), by the
sequential engine (on the CPU its native loop, ``rnnkit/cells/native/minrnn.cpp``, through
:meth:`LinearRecurrenceCell.native_binding`) and one step at a time
(:meth:`LinearRecurrenceCell.step`) for generation; all use the coefficients computed here
(the native loop restates them in C++, tested equal), the one place the units' math lives.

BPTT of one step, with dh' the gradient reaching h_t:

    da = dh' ⊙ h_{t-1}      db = dh'      dh_{t-1} = dh' ⊙ a_t

and :meth:`LinearRecurrenceCell.coefficients_backward` carries (da, db) to dxw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Cell, NativeBinding, Params, State

CANDIDATE_ACTIVATIONS = ("identity", "g", "tanh")


def _candidate(pre: Tensor, activation: str) -> Tensor:
    """h̃ = act(pre). ``"g"`` is the positive map of the paper's log-space form:
    g(x) = x + 0.5 for x ≥ 0, σ(x) for x < 0 (continuous at 0, g' = 1 / σ(x)(1-σ(x)))."""
    if activation == "identity":
        return pre
    if activation == "tanh":
        return pre.tanh()
    return torch.where(pre >= 0, pre + 0.5, pre.sigmoid())


def _candidate_backward(dh_tilde: Tensor, pre: Tensor, h_tilde: Tensor, activation: str) -> Tensor:
    if activation == "identity":
        return dh_tilde
    if activation == "tanh":
        return dh_tilde * (1 - h_tilde * h_tilde)
    # for x < 0, h̃ = σ(x) and σ' = h̃ (1 - h̃)
    return torch.where(pre >= 0, dh_tilde, dh_tilde * h_tilde * (1 - h_tilde))


class LinearRecurrenceCell(Cell):
    """A cell whose update is h' = a ⊙ h + b with (a, b) computed from the input alone.

    Subclasses define :meth:`coefficients` and :meth:`coefficients_backward`; ``step``
    and ``step_backward`` (the sequential engine's contract) follow from them. There is
    no recurrent weight: the parameters are ``weight_ih`` (G·H, I) and ``bias_ih`` (G·H,).
    """

    def __init__(self, hidden_size: int, bias: bool = True, candidate_activation: str = "identity"):
        super().__init__(hidden_size, bias)
        if candidate_activation not in CANDIDATE_ACTIVATIONS:
            raise ValueError(f"candidate_activation must be one of {CANDIDATE_ACTIVATIONS}, "
                             f"got {candidate_activation!r}")
        self.candidate_activation = candidate_activation

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        G = self.gates * self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (G, input_size)}
        if self.bias:
            shapes["bias_ih"] = (G,)
        return shapes

    def input_bias(self, p: Params) -> Tensor | None:
        return p["bias_ih"] if self.bias else None

    def bias_grads(self, dxw_sum: Tensor, drec_sum: Tensor, grads: Params) -> None:
        if self.bias:
            grads["bias_ih"] = dxw_sum

    def weight_hh_grad(self, drec: Tensor, rec_in: Tensor) -> Tensor:
        return drec.new_zeros(0)  # no recurrent weight

    # -- the coefficients, for any leading shape (..., G·H) → (..., H) ----------------------------
    def coefficients(self, xw: Tensor) -> tuple[Tensor, Tensor, tuple]:
        """(a, b, cache) of h' = a ⊙ h + b from the input projection xw."""
        raise NotImplementedError

    def coefficients_backward(self, da: Tensor, db: Tensor, cache: tuple) -> Tensor:
        """dxw from the gradients of a and b."""
        raise NotImplementedError

    # -- one step, for generation and the sequential engine ---------------------------------------
    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        (h,) = state
        hr = h if rmask is None else h * rmask
        a, b, cache = self.coefficients(xw)  # (B, H) each
        h_new = torch.addcmul(b, a, hr)
        return (h_new,), (hr, a, cache)

    def step_backward(self, dstate, cache, p, grads, rmask):
        (dh_new,) = dstate
        hr, a, coeff_cache = cache
        da = dh_new * hr  # h' = a ⊙ h + b
        dh = dh_new * a
        if rmask is not None:
            dh = dh * rmask
        dxw = self.coefficients_backward(da, dh_new, coeff_cache)
        return dxw, (dh,), dxw

    #: the name of this cell's coefficients in the native loop (``minrnn.cpp``), None: no loop
    native_kind: str | None = None

    def native_binding(self) -> NativeBinding | None:
        """The C++ loop (``rnnkit/cells/native/minrnn.cpp``) runs every candidate activation,
        recurrent dropout, zoneout and lengths."""
        return _NativeMinRNN(self) if self.native_kind is not None else None

    def extra_repr(self) -> str:
        s = f"hidden_size={self.hidden_size}"
        if self.candidate_activation != "identity":
            s += f", candidate_activation={self.candidate_activation!r}"
        return s


class MinGRUCell(LinearRecurrenceCell):
    """minGRU (Feng et al. 2024, §3.1): the GRU with gates of x_t only and no reset gate.

        z  = σ(xz)            h̃ = act(xh)          xw = (xz, xh) = W_ih x + b_ih
        h' = (1 - z) ⊙ h + z ⊙ h̃                 i.e. a = 1 - z = σ(-xz),  b = z ⊙ h̃

    ``candidate_activation`` is ``"identity"`` (the paper's minGRU), ``"g"`` (its
    log-space form, h̃ > 0) or ``"tanh"``.

    Backward, from (da, db):

        dz = db ⊙ h̃ - da      dxz = dz ⊙ z (1 - z)      dh̃ = db ⊙ z      dxh = dh̃ ⊙ act'
    """

    gates = 2
    native_kind = "mingru"

    def coefficients(self, xw):
        H = self.hidden_size
        xz, xh = xw[..., :H], xw[..., H:]
        a = torch.sigmoid(-xz)  # 1 - z, without the cancellation of 1 - σ(xz)
        z = 1 - a
        h_tilde = _candidate(xh, self.candidate_activation)
        return a, z * h_tilde, (xh, z, h_tilde)

    def coefficients_backward(self, da, db, cache):
        xh, z, h_tilde = cache
        dz = db * h_tilde - da
        dxz = dz * z * (1 - z)
        dxh = _candidate_backward(db * z, xh, h_tilde, self.candidate_activation)
        return torch.cat((dxz, dxh), -1)

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, _, (_, z, h_tilde) = cache
        return {"z": z, "h_tilde": h_tilde}


class MinLSTMCell(LinearRecurrenceCell):
    """minLSTM (Feng et al. 2024, §3.2): the LSTM with gates of x_t only, no output gate
    and no cell/hidden distinction; gate order f, i, h as ``xw = (xf, xi, xh)``.

        f = σ(xf)     i = σ(xi)     h̃ = act(xh)
        normalize=True (the paper's time-independent scale):
            f' = f / (f + i)   i' = i / (f + i)
        normalize=False:  f' = f,  i' = i
        h' = f' ⊙ h + i' ⊙ h̃                      a = f',  b = i' ⊙ h̃

    The normalized gates are computed without dividing by a possibly tiny f + i:
    with d = log f - log i = softplus(-xi) - softplus(-xf), f' = σ(d) and i' = σ(-d).

    Backward, from (da, db): df' = da, di' = db ⊙ h̃, dh̃ = db ⊙ i', and

        normalized:  dd = (df' - di') ⊙ f' ⊙ i',  dxf = dd ⊙ (1 - f),  dxi = -dd ⊙ (1 - i)
        plain:       dxf = df' ⊙ f (1 - f),       dxi = di' ⊙ i (1 - i)
    """

    gates = 3

    def __init__(self, hidden_size: int, bias: bool = True, candidate_activation: str = "identity",
                 normalize: bool = True):
        super().__init__(hidden_size, bias, candidate_activation)
        self.normalize = normalize

    @property
    def native_kind(self) -> str:  # type: ignore[override]
        return "minlstm" if self.normalize else "minlstm_plain"

    def coefficients(self, xw):
        H = self.hidden_size
        xf, xi, xh = xw[..., :H], xw[..., H : 2 * H], xw[..., 2 * H :]
        h_tilde = _candidate(xh, self.candidate_activation)
        if self.normalize:
            d = F.softplus(-xi) - F.softplus(-xf)  # log f - log i
            f_n, i_n = torch.sigmoid(d), torch.sigmoid(-d)
            f_c, i_c = torch.sigmoid(-xf), torch.sigmoid(-xi)  # 1 - f, 1 - i
        else:
            f_n, i_n = torch.sigmoid(xf), torch.sigmoid(xi)
            f_c = i_c = None
        return f_n, i_n * h_tilde, (xh, f_n, i_n, f_c, i_c, h_tilde)

    def coefficients_backward(self, da, db, cache):
        xh, f_n, i_n, f_c, i_c, h_tilde = cache
        df_n, di_n = da, db * h_tilde
        if self.normalize:
            dd = (df_n - di_n) * f_n * i_n
            dxf, dxi = dd * f_c, -dd * i_c
        else:
            dxf, dxi = df_n * f_n * (1 - f_n), di_n * i_n * (1 - i_n)
        dxh = _candidate_backward(db * i_n, xh, h_tilde, self.candidate_activation)
        return torch.cat((dxf, dxi, dxh), -1)

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, _, (_, f_n, i_n, _, _, h_tilde) = cache
        return {"f": f_n, "i": i_n, "h_tilde": h_tilde}

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.normalize else s + ", normalize=False"


class _NativeMinRNN(NativeBinding):
    """:class:`MinGRUCell` and :class:`MinLSTMCell` on ``minrnn_forward`` / ``minrnn_backward``
    (``rnnkit/cells/native/minrnn.cpp``; arguments and named results in ``elementwise.h``).
    The input projection of all T·B rows is the engine's one GEMM; the loop computes the
    coefficients (a, b) of every step from it, forward and again backward, and runs each
    sequence's steps in one pass. The only parameter gradient besides dW_ih is the bias's,
    db = Σ_t Σ_batch dxw."""

    cell: LinearRecurrenceCell

    def forward(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool,
                keep: bool) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        cell = self.cell
        res = ext.minrnn_forward(xw, state0[0].contiguous(), masks.rmask, masks.valid, masks.zoneout[0],
                                 cell.native_kind, cell.candidate_activation, reverse, keep)
        out, h_n = res.pop("out"), res.pop("h")
        return out, (h_n,), ({"xw": xw, **res} if keep else {})

    def backward(self, ext, saved: dict[str, Tensor | None], dout: Tensor | None, dstate: State, p: Params,
                 masks, reverse: bool) -> tuple[Tensor, State, Params]:
        cell = self.cell
        res = ext.minrnn_backward(dout, dstate[0], saved, masks.rmask, masks.valid, masks.zoneout[0],
                                  cell.native_kind, cell.candidate_activation, reverse)
        dxw = res["dxw"]  # (T, B, G·H)
        grads: Params = {}
        cell.bias_grads(dxw.sum((0, 1)), dxw.new_zeros(0), grads)
        return dxw, (res["dh0"],), grads
