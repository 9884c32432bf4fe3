"""Elman network (simple recurrent network; Elman 1990), as torch.nn.RNN."""

from __future__ import annotations

import torch
from torch import Tensor

from .activations import get_activation
from .base import NO_WORKSPACE, Cell, NativeBinding, Params, State, Workspace


class ElmanCell(Cell):
    """Elman recurrence with a configurable nonlinearity φ (tanh or relu; relu + identity
    init is the IRNN of Le, Jaitly & Hinton 2015).

        a  = xw + W_hh h + b_hh          xw = W_ih x + b_ih
        h' = φ(a)

    BPTT, with dh' the gradient reaching h' (from the output and from step t+1):

        da = dh' ⊙ φ'(a)                 (φ' written through h')
        dh = W_hhᵀ da,   dxw = da,   dW_hh += da hᵀ
    """

    gates = 1

    def __init__(self, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"):
        super().__init__(hidden_size, bias)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.phi = get_activation(nonlinearity)

    # with a workspace (cells/base.py) a is formed in place over the step's input projection
    uses_workspace = True

    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None,
             ws: Workspace = NO_WORKSPACE) -> tuple[State, tuple]:
        (h,) = state
        hr = h if rmask is None else torch.mul(h, rmask, out=ws.view("hr", h))
        a = torch.addmm(xw, hr, p["weight_hh"].t(), out=ws.reuse(xw))  # (B, H)
        h_new = self.phi.forward(a, out=ws.view("out", a))
        return (h_new,), (hr, h_new)

    def step_backward(self, dstate, cache, p, grads, rmask, ws: Workspace = NO_WORKSPACE):
        (dh_new,) = dstate
        hr, h_new = cache
        da = self.phi.backward(dh_new, h_new, out=ws.out("dxw", h_new))  # (B, H)
        dh = da @ p["weight_hh"]
        if rmask is not None:
            dh.mul_(rmask)
        return da, (dh,), da

    def native_binding(self) -> NativeBinding | None:
        """A forward-only C++ loop (``elman_infer`` in ``rnnkit/cells/native/infer.cpp``) for
        inference and generation; training runs the Python loop."""
        return _NativeElman(self)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, nonlinearity={self.nonlinearity!r}"


class _NativeElman(NativeBinding):
    """:class:`ElmanCell` on ``elman_infer`` (``rnnkit/cells/native/infer.cpp``; arguments and
    named results in ``infer.h``): forward only, no training loop."""

    cell: ElmanCell
    trains = False

    def infer(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool) -> dict[str, Tensor]:
        return ext.elman_infer(xw, state0[0], p["weight_hh"].contiguous(), masks.rmask, masks.valid,
                               masks.zoneout[0], self.cell.nonlinearity, reverse)

    def step_layer(self, p: Params) -> tuple[str, list[Tensor | None]] | None:
        return f"elman_{self.cell.nonlinearity}", [p["weight_ih"], p["weight_hh"], self.cell.input_bias(p)]
