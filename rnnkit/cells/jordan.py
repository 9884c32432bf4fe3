"""Jordan network (Jordan 1986): the recurrence runs from the previous *output*."""

from __future__ import annotations

import torch
from torch import Tensor

from .activations import get_activation
from .base import NO_WORKSPACE, Cell, NativeBinding, Params, State, Workspace, accumulate

#: the activations the native Jordan loop has code for: ``activation_names()`` of
#: ``rnnkit/cells/native/common.h`` (a test checks the two agree); the others, e.g.
#: hard_sigmoid_keras2, run the Python loop
NATIVE_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "hard_sigmoid")


class JordanCell(Cell):
    """Jordan recurrence: the hidden units see the layer's previous output y, not h.

        a  = xw + W_hh y + b_hh           xw = W_ih x + b_ih       W_hh: (H, O)
        h  = φ(a)
        y' = ψ(W_ho h + b_ho)             W_ho: (O, H)

    The state is y (size O). With teacher forcing the given previous targets replace y,
    which removes the recurrence altogether (see :class:`rnnkit.Jordan`).

    BPTT, with dy' reaching the new output:

        dz  = dy' ⊙ ψ'(y')               dW_ho += dzᵀ h,  db_ho += Σ dz
        dh  = W_hoᵀ dz
        da  = dh ⊙ φ'(h)
        dy  = W_hhᵀ da,   dxw = da,   dW_hh += daᵀ y
    """

    gates = 1

    def __init__(
        self,
        hidden_size: int,
        output_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        output_activation: str = "identity",
    ):
        super().__init__(hidden_size, bias)
        if output_size <= 0:
            raise ValueError(f"output_size must be positive, got {output_size}")
        self._output_size = output_size
        self.phi = get_activation(nonlinearity)
        self.psi = get_activation(output_activation)

    @property
    def output_size(self) -> int:
        return self._output_size

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        shapes = super().param_shapes(input_size)
        shapes["weight_ho"] = (self._output_size, self.hidden_size)
        if self.bias:
            shapes["bias_ho"] = (self._output_size,)
        return shapes

    def output(self, h: Tensor, p: Params, out: Tensor | None = None) -> Tensor:
        """y = ψ(W_ho h + b_ho) for any leading shape of h."""
        if self.bias and h.dim() == 2:
            z = torch.addmm(p["bias_ho"], h, p["weight_ho"].t(), out=out)
        else:
            z = h @ p["weight_ho"].t()
            if self.bias:
                z = z + p["bias_ho"]
        return self.psi.forward(z, out=None if out is None else z)

    # with a workspace (cells/base.py) h is formed in place over the step's input projection
    uses_workspace = True

    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None,
             ws: Workspace = NO_WORKSPACE) -> tuple[State, tuple]:
        (y,) = state
        yr = y if rmask is None else torch.mul(y, rmask, out=ws.view("yr", y))
        a = torch.addmm(xw, yr, p["weight_hh"].t(), out=ws.reuse(xw))  # (B, H)
        h = self.phi.forward(a, out=ws.reuse(a))
        y_new = self.output(h, p, out=ws.view("out", y))  # (B, O)
        return (y_new,), (yr, h, y_new)

    def step_backward(self, dstate, cache, p, grads, rmask, ws: Workspace = NO_WORKSPACE):
        (dy_new,) = dstate
        yr, h, y_new = cache
        dz = self.psi.backward(dy_new, y_new)  # (B, O)
        accumulate(grads, "weight_ho", dz.t() @ h)
        if self.bias:
            accumulate(grads, "bias_ho", dz.sum(0))
        dh = dz @ p["weight_ho"]  # (B, H)
        da = self.phi.backward(dh, h, out=ws.out("dxw", h))
        dy = da @ p["weight_hh"]  # (B, O)
        if rmask is not None:
            dy.mul_(rmask)
        return da, (dy,), da

    def native_binding(self) -> NativeBinding | None:
        """The C++ loop (``rnnkit/cells/native/jordan.cpp``) runs φ and ψ of
        :data:`NATIVE_ACTIVATIONS`."""
        if self.phi.name in NATIVE_ACTIVATIONS and self.psi.name in NATIVE_ACTIVATIONS:
            return _NativeJordan(self)
        return None

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, output_size={self._output_size}, "
            f"nonlinearity={self.phi.name!r}, output_activation={self.psi.name!r}"
        )


class _NativeJordan(NativeBinding):
    """:class:`JordanCell` on ``jordan_forward`` / ``jordan_backward``
    (``rnnkit/cells/native/jordan.cpp``; arguments and named results in ``common.h``):

        dW_hh = Σ_t daᵀ yr     dW_ho = Σ_t dzᵀ h     db_ho = Σ_t dz     (yr = y_{t-1} ⊙ rmask)
    """

    cell: JordanCell

    def forward(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool,
                keep: bool) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        cell = self.cell
        b_ho = p["bias_ho"].contiguous() if cell.bias else None
        res = ext.jordan_forward(xw, state0[0].contiguous(), p["weight_hh"].contiguous(), p["weight_ho"].contiguous(),
                                 b_ho, masks.rmask, masks.valid, masks.zoneout[0], cell.phi.name, cell.psi.name,
                                 reverse, keep)
        out, y_n = res.pop("out"), res.pop("y")
        return out, (y_n,), ({"h": xw, **res} if keep else {})  # xw holds h

    def backward(self, ext, saved: dict[str, Tensor | None], dout: Tensor | None, dstate: State, p: Params,
                 masks, reverse: bool) -> tuple[Tensor, State, Params]:
        cell = self.cell
        res = ext.jordan_backward(dout, dstate[0], saved, p["weight_hh"].contiguous(), p["weight_ho"].contiguous(),
                                  masks.rmask, masks.valid, masks.zoneout[0], cell.phi.name, cell.psi.name, reverse)
        da, dz = res["da"], res["dz"]  # (T, B, H), (T, B, O)
        T, B = da.shape[:2]
        H, O = cell.hidden_size, cell.output_size
        grads: Params = {}
        grads["weight_hh"] = da.view(T * B, H).t() @ saved["yr"].view(T * B, O)
        grads["weight_ho"] = dz.view(T * B, O).t() @ saved["h"].view(T * B, H)
        dsum = da.sum((0, 1))
        cell.bias_grads(dsum, dsum, grads)
        if cell.bias:
            grads["bias_ho"] = dz.sum((0, 1))
        return da, (res["dy0"],), grads
