"""Jordan network (Jordan 1986): the recurrence runs from the previous *output*."""

from __future__ import annotations

import torch
from torch import Tensor

from .activations import get_activation
from .base import NO_WORKSPACE, Cell, Params, State, Workspace, accumulate


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

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, output_size={self._output_size}, "
            f"nonlinearity={self.phi.name!r}, output_activation={self.psi.name!r}"
        )
