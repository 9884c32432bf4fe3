"""Simple Recurrent Unit (SRU; Lei, Zhang, Wang, Dai & Artzi, EMNLP 2018, "Simple Recurrent
Units for Highly Parallelizable Recurrence")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import NativeBinding, Params, State, accumulate
from .qrnn import _NativeFoPool, fo_pool_coefficients, fo_pool_coefficients_backward
from .scancell import ScanCell


class SRUCell(ScanCell):
    """SRU: an element-wise recurrence on a light state c, with a highway connection.

        u = (x̃, f̃, r̃, x̂)         x̃ = W x, f̃ = W_f x + b_f, r̃ = W_r x + b_r (one GEMM for all
                                  steps), x̂ = x (I = H) or W_s x (I ≠ H: the paper's projection)
        f_t = σ(f̃_t + v_f ⊙ c_{t-1})
        c_t = f_t ⊙ c_{t-1} + (1 - f_t) ⊙ x̃_t
        r_t = σ(r̃_t + v_r ⊙ c_{t-1})
        h_t = r_t ⊙ c_t + (1 - r_t) ⊙ α x̂_t         α = √3 (the paper's scaling correction, §3.2)

    The v ⊙ c_{t-1} terms of the 2018 paper (``gate_recurrence=True``, v = ``weight_cf``,
    ``weight_cr``) make the gates, and so the recurrence, nonlinear in c: it runs step by
    step (an element-wise loop, :func:`rnnkit.engine.scan.run_steps`). Without them
    (``gate_recurrence=False``, the 2017 preprint's gates) c_t is a linear recurrence —
    the fo-pooling of the QRNN with z = x̃ — and runs as a parallel scan; then
    a = f, b = (1 - f) ⊙ x̃ and y = h is the readout.

    BPTT of one step, from dh and dc (the gradient reaching c_t from step t+1):

        dr = dh ⊙ (c_t - α x̂)    dc = dc + dh ⊙ r    dx̂ = dh ⊙ (1 - r) α
        dr̃ = dr ⊙ r (1 - r)       dv_r += Σ_b dr̃ ⊙ c_{t-1}     dc_{t-1} = dr̃ ⊙ v_r
        df = dc ⊙ (c_{t-1} - x̃)   dx̃ = dc ⊙ (1 - f)            dc_{t-1} += dc ⊙ f
        df̃ = df ⊙ f (1 - f)       dv_f += Σ_b df̃ ⊙ c_{t-1}     dc_{t-1} += df̃ ⊙ v_f
    """

    state_names = ("h", "c")
    memory_state = 1

    def __init__(self, hidden_size: int, bias: bool = True, gate_recurrence: bool = True,
                 highway_scale: float = math.sqrt(3.0)):
        super().__init__(hidden_size, bias)
        self.gate_recurrence = gate_recurrence
        self.parallel = not gate_recurrence
        self.highway_scale = float(highway_scale)

    def input_width(self, input_size: int) -> int:
        """3H rows (W, W_f, W_r), plus W_s when the input width differs from H."""
        return (3 if input_size == self.hidden_size else 4) * self.hidden_size

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (self.input_width(input_size), input_size)}
        if self.bias:
            shapes["bias_ih"] = (2 * H,)  # b_f, b_r
        if self.gate_recurrence:
            shapes.update(weight_cf=(H,), weight_cr=(H,))
        return shapes

    def project(self, x: Tensor, p: Params) -> Tensor:
        """u = (x̃, f̃, r̃, x̂): (..., 4H)."""
        H = self.hidden_size
        xw = F.linear(x, p["weight_ih"])
        if self.bias:
            zeros = xw.new_zeros(H)
            xw = xw + torch.cat((zeros, p["bias_ih"], zeros[: xw.shape[-1] - 3 * H]))
        return torch.cat((xw, x), -1) if xw.shape[-1] == 3 * H else xw

    def _split(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        H = self.hidden_size
        return u[..., :H], u[..., H : 2 * H], u[..., 2 * H : 3 * H], u[..., 3 * H :]

    # -- the linear form (gate_recurrence=False), for the scan -----------------------------------
    def coefficients(self, u, p):
        x_t, f_t, _, _ = self._split(u)
        f = torch.sigmoid(f_t)
        a, b = fo_pool_coefficients(x_t, f)
        return a, b, (x_t, f)

    def coefficients_backward(self, da, db, cache, p, grads):
        x_t, f = cache
        dx_t, df = fo_pool_coefficients_backward(da, db, x_t, f)
        zeros = torch.zeros_like(dx_t)
        return torch.cat((dx_t, df * f * (1 - f), zeros, zeros), -1)

    def readout(self, s, u, cache, p):
        _, _, r_t, x_hat = self._split(u)
        r = torch.sigmoid(r_t)
        return r * s + (1 - r) * (self.highway_scale * x_hat), (s, r, x_hat)

    def readout_backward(self, dy, cache, p, grads):
        c, r, x_hat = cache
        alpha = self.highway_scale
        dr = dy * (c - alpha * x_hat)
        zeros = torch.zeros_like(dy)
        return dy * r, torch.cat((zeros, zeros, dr * r * (1 - r), dy * (1 - r) * alpha), -1)

    # -- one step (both forms) ----------------------------------------------------------------
    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        _, c = state
        x_t, f_t, r_t, x_hat = self._split(xw)
        if self.gate_recurrence:
            f_t = f_t + p["weight_cf"] * c
            r_t = r_t + p["weight_cr"] * c
        f = torch.sigmoid(f_t)
        c_new = f * c + (1 - f) * x_t
        r = torch.sigmoid(r_t)
        h_new = r * c_new + (1 - r) * (self.highway_scale * x_hat)
        return (h_new, c_new), (c, x_t, x_hat, f, r, c_new)

    def step_backward(self, dstate, cache, p, grads, rmask, memory_grad: list | None = None):
        dh, dc = dstate
        c, x_t, x_hat, f, r, c_new = cache
        alpha = self.highway_scale
        dr = dh * (c_new - alpha * x_hat)  # h' = r ⊙ c' + (1 - r) ⊙ α x̂
        dc = dc + dh * r
        if memory_grad is not None:
            memory_grad.append(dc)
        dx_hat = dh * (1 - r) * alpha
        dr_t = dr * r * (1 - r)
        dx_t = dc * (1 - f)  # c' = f ⊙ c + (1 - f) ⊙ x̃
        df = dc * (c - x_t)
        dc_prev = dc * f
        df_t = df * f * (1 - f)
        if self.gate_recurrence:  # f̃ += v_f ⊙ c,  r̃ += v_r ⊙ c
            accumulate(grads, "weight_cf", (df_t * c).sum(0))
            accumulate(grads, "weight_cr", (dr_t * c).sum(0))
            dc_prev = dc_prev + df_t * p["weight_cf"] + dr_t * p["weight_cr"]
        dxw = torch.cat((dx_t, df_t, dr_t, dx_hat), -1)
        return dxw, (torch.zeros_like(dh), dc_prev), dxw

    def native_binding(self) -> NativeBinding | None:
        """The C++ loop (``rnnkit/cells/native/qrnn.cpp``, the fo-pooling it shares with the
        QRNN) runs both forms over u, step by step (:func:`rnnkit.engine.scan.run_steps`)."""
        return _NativeFoPool(self, "sru", self.highway_scale, self.gate_recurrence)

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, _, _, f, r, _ = cache
        return {"f": f, "r": r}

    def extra_repr(self) -> str:
        s = f"hidden_size={self.hidden_size}"
        if not self.gate_recurrence:
            s += ", gate_recurrence=False"
        return s if self.highway_scale == math.sqrt(3.0) else s + f", highway_scale={self.highway_scale:g}"
