"""Independently recurrent neural network (IndRNN; Li, Li, Cook, Zhu & Gao, CVPR 2018)."""

from __future__ import annotations

from torch import Tensor

from .activations import get_activation
from .base import Cell, NativeBinding, Params, State


class IndRNNCell(Cell):
    """IndRNN: every unit sees only its own previous value, through a scalar weight.

        a  = xw + u ⊙ h              xw = W_ih x + b,  u ∈ R^H (``weight_hh``)
        h' = φ(a)                    φ = relu (the paper's choice) or tanh

    The recurrent weight is a vector, so the gradient through time of unit n is a
    product of scalars, ∂h_{n,T}/∂h_{n,t} = ∏_{k=t+1..T} φ'(a_{n,k}) u_n, which the paper
    keeps bounded by constraining |u_n| (see :class:`rnnkit.IndRNN`).

    BPTT, with dh' the gradient reaching h':

        da = dh' ⊙ φ'(a)             (φ' written through h')
        dh = da ⊙ u,   dxw = da,   du += Σ_batch da ⊙ h
    """

    gates = 1

    def __init__(self, hidden_size: int, bias: bool = True, nonlinearity: str = "relu"):
        super().__init__(hidden_size, bias)
        if nonlinearity not in ("relu", "tanh"):
            raise ValueError(f"nonlinearity must be 'relu' or 'tanh', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.phi = get_activation(nonlinearity)

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (H, input_size), "weight_hh": (H,)}
        if self.bias:
            shapes["bias_ih"] = (H,)  # the paper's single bias b
        return shapes

    def input_bias(self, p: Params) -> Tensor | None:
        return p["bias_ih"] if self.bias else None

    def bias_grads(self, dxw_sum: Tensor, drec_sum: Tensor, grads: Params) -> None:
        if self.bias:
            grads["bias_ih"] = dxw_sum

    def weight_hh_grad(self, drec: Tensor, rec_in: Tensor) -> Tensor:
        """du = Σ over steps and batch of da ⊙ h: drec, rec_in (N, H) → (H,)."""
        return (drec * rec_in).sum(0)

    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        (h,) = state
        hr = h if rmask is None else h * rmask
        a = xw.addcmul(p["weight_hh"], hr)  # (B, H)
        h_new = self.phi.forward(a)
        return (h_new,), (hr, h_new)

    def step_backward(self, dstate, cache, p, grads, rmask):
        (dh_new,) = dstate
        hr, h_new = cache
        da = self.phi.backward(dh_new, h_new)  # (B, H)
        dh = da * p["weight_hh"]
        if rmask is not None:
            dh = dh * rmask
        return da, (dh,), da

    def native_binding(self) -> NativeBinding | None:
        """The C++ loop (``rnnkit/cells/native/indrnn.cpp``) runs both nonlinearities."""
        return _NativeIndRNN(self)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, nonlinearity={self.nonlinearity!r}"


class _NativeIndRNN(NativeBinding):
    """:class:`IndRNNCell` on ``indrnn_forward`` / ``indrnn_backward``
    (``rnnkit/cells/native/indrnn.cpp``; arguments and named results in ``common.h``). The
    loop is element-wise; the input projection of all T·B rows is the engine's one GEMM.

        du = Σ_t Σ_batch da ⊙ hr      db = Σ_t Σ_batch da      (hr = h_{t-1} ⊙ rmask)
    """

    cell: IndRNNCell

    def forward(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool,
                keep: bool) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        res = ext.indrnn_forward(xw, state0[0].contiguous(), p["weight_hh"].contiguous(), masks.rmask, masks.valid,
                                 masks.zoneout[0], self.cell.phi.name, reverse, keep)
        out, h_n = res.pop("out"), res.pop("h")
        return out, (h_n,), ({"h": xw, **res} if keep else {})  # xw holds h' = φ(a)

    def backward(self, ext, saved: dict[str, Tensor | None], dout: Tensor | None, dstate: State, p: Params,
                 masks, reverse: bool) -> tuple[Tensor, State, Params]:
        cell = self.cell
        res = ext.indrnn_backward(dout, dstate[0], saved, p["weight_hh"].contiguous(), masks.rmask, masks.valid,
                                  masks.zoneout[0], cell.phi.name, reverse)
        da = res["da"]  # (T, B, H)
        H = cell.hidden_size
        grads: Params = {"weight_hh": cell.weight_hh_grad(da.view(-1, H), saved["hr"].view(-1, H))}
        cell.bias_grads(da.sum((0, 1)), da.sum((0, 1)), grads)
        return da, (res["dh0"],), grads
