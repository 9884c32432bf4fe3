"""Quasi-recurrent neural network (QRNN; Bradbury, Merity, Xiong & Socher, ICLR 2017) with
fo-pooling, and the fo-pooling core it shares with the SRU (:mod:`rnnkit.cells.sru`)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import NativeBinding, Params, State
from .scancell import ScanCell


def fo_pool_coefficients(z: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
    """(a, b) of the pooling c_t = f_t ⊙ c_{t-1} + (1 - f_t) ⊙ z_t."""
    return f, (1 - f) * z


def fo_pool_coefficients_backward(da: Tensor, db: Tensor, z: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
    """(dz, df) from (da, db):  df = da - db ⊙ z,  dz = db ⊙ (1 - f)."""
    return db * (1 - f), da - db * z


class QRNNCell(ScanCell):
    """QRNN with fo-pooling: a causal convolution of width k over time, then an element-wise
    linear recurrence.

        (z̃, f̃, õ)_t = Σ_{j=0..k-1} W_j x_{t-j} + b      masked convolution: no future input
        z = tanh(z̃)   f = σ(f̃)   o = σ(õ)
        c_t = f_t ⊙ c_{t-1} + (1 - f_t) ⊙ z_t          fo-pooling
        h_t = o_t ⊙ c_t

    The input projection holds the k taps, u_t = (W_0 x_t, ..., W_{k-1} x_t) (k·3H wide,
    b added to the first), so the convolution is a sum of shifted slices of u
    (:func:`causal_conv`). Step by step, the inputs before the current step enter through
    the state ``carry`` (k-1 rows of 3H): carry[j-1] = the part of the pre-activation of
    step t+j already known at step t, so that

        pre_t = u_t[0] + carry[0]        carry'[j-1] = u_t[j] + carry[j]   (carry[k-1] = 0)

    and chunks of a sequence fed one after the other give the whole sequence's result.
    State: (h, c) and, for k > 1, carry.

    Backward of the pooling, from (da, db) and dy:
        dz, df = db ⊙ (1 - f), da - db ⊙ z      dz̃ = dz ⊙ (1 - z²)    df̃ = df ⊙ f (1 - f)
        do = dy ⊙ c    dc += dy ⊙ o             dõ = do ⊙ o (1 - o)
    """

    state_names = ("h", "c")

    def __init__(self, hidden_size: int, bias: bool = True, window: int = 2):
        super().__init__(hidden_size, bias)
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        if window > 1:
            self.state_names = ("h", "c", "carry")
        self.memory_state = 1

    def state_sizes(self) -> tuple[int, ...]:
        H = self.hidden_size
        return (H, H) if self.window == 1 else (H, H, (self.window - 1) * 3 * H)

    def input_width(self, input_size: int) -> int:
        return self.window * 3 * self.hidden_size

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        shapes = super().param_shapes(input_size)
        if self.bias:
            shapes["bias_ih"] = (3 * self.hidden_size,)  # one bias for the convolution
        return shapes

    def input_bias(self, p: Params) -> Tensor | None:
        if not self.bias:
            return None
        b = p["bias_ih"]
        return b if self.window == 1 else torch.cat((b, b.new_zeros((self.window - 1) * b.shape[0])))

    # -- the pooling, on the convolution's output pre = (z̃, f̃, õ): (..., 3H) -------------------
    def coefficients(self, u, p):
        H = self.hidden_size
        z, f = torch.tanh(u[..., :H]), torch.sigmoid(u[..., H : 2 * H])
        a, b = fo_pool_coefficients(z, f)
        return a, b, (z, f)

    def coefficients_backward(self, da, db, cache, p, grads):
        z, f = cache
        dz, df = fo_pool_coefficients_backward(da, db, z, f)
        return torch.cat((dz * (1 - z * z), df * f * (1 - f), torch.zeros_like(dz)), -1)

    def readout(self, s, u, cache, p):
        o = torch.sigmoid(u[..., 2 * self.hidden_size :])
        return o * s, (s, o)

    def readout_backward(self, dy, cache, p, grads):
        c, o = cache
        do = dy * c
        du = torch.cat((torch.zeros_like(do), torch.zeros_like(do), do * o * (1 - o)), -1)
        return dy * o, du

    # -- one step with the convolution's carry -----------------------------------------------
    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        G = 3 * self.hidden_size
        pre = xw[:, :G]
        if self.window == 1:
            new, cache = super().step(pre, state, p, rmask)
            return new, cache
        h, c, carry = state
        pre = pre + carry[:, :G]  # the earlier inputs' part of this step's pre-activation
        later = xw[:, G:]  # (B, (k-1)·3H): this input's part of the next k-1 steps
        carry_new = later + torch.cat((carry[:, G:], carry.new_zeros(carry.shape[0], G)), 1)
        (h_new, c_new), cache = super().step(pre, (h, c), p, rmask)
        return (h_new, c_new, carry_new), cache

    def step_backward(self, dstate, cache, p, grads, rmask, memory_grad: list | None = None):
        G = 3 * self.hidden_size
        if self.window == 1:
            return super().step_backward(dstate, cache, p, grads, rmask, memory_grad)
        dh, dc, dcarry_new = dstate
        dpre, (dh_prev, dc_prev), _ = super().step_backward((dh, dc), cache, p, grads, rmask, memory_grad)
        # carry' = later + shift(carry): dlater = dcarry',  dcarry[G:] = dcarry'[:-G]
        dcarry = torch.cat((dpre, dcarry_new[:, : dcarry_new.shape[1] - G]), 1)  # pre += carry[:G]
        dxw = torch.cat((dpre, dcarry_new), 1)
        return dxw, (dh_prev, dc_prev, dcarry), dxw

    # -- the native loop (rnnkit/cells/native/qrnn.cpp) ---------------------------------------
    def native_binding(self) -> NativeBinding | None:
        """The C++ fo-pooling and readout over the convolution's output, which is u itself
        only for window 1; a wider window runs it through :meth:`pooling`."""
        return _NativeFoPool(self, "qrnn") if self.window == 1 else None

    def pooling(self) -> QRNNCell:
        """This cell's pooling and readout alone (window 1), the steps over the convolution's
        output pre (T, B, 3H) with state (h, c)."""
        return self if self.window == 1 else QRNNCell(self.hidden_size, self.bias, 1)

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, _, (z, f), (_, o) = cache
        return {"g": z, "f": f, "o": o}  # z of the paper, named g as the LSTM's candidate (a tanh)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, window={self.window}"


class _NativeFoPool(NativeBinding):
    """The fo-pooling of :class:`QRNNCell` (window 1, or its :meth:`~QRNNCell.pooling`) and of
    :class:`rnnkit.cells.sru.SRUCell` on ``fopool_forward`` / ``fopool_backward``
    (``rnnkit/cells/native/qrnn.cpp``; arguments and named results in ``elementwise.h``),
    run by :func:`rnnkit.engine.scan.run_native_steps` over the input projection u
    (T, B, 3H or 4H). The only parameters it differentiates are the SRU's gate recurrence
    v_f, v_r: dv = Σ_t Σ_batch d(gate pre-activation) ⊙ c_{t-1}."""

    def __init__(self, cell, kind: str, alpha: float = 1.0, gate_recurrence: bool = False):
        super().__init__(cell)
        self.kind, self.alpha, self.gate_recurrence = kind, alpha, gate_recurrence

    def _v(self, p: Params) -> tuple[Tensor | None, Tensor | None]:
        if not self.gate_recurrence:
            return None, None
        return p["weight_cf"].contiguous(), p["weight_cr"].contiguous()

    def forward(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool,
                keep: bool) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        res = ext.fopool_forward(xw, state0[0], state0[1], *self._v(p), masks.valid, self.kind, self.alpha,
                                 reverse, keep)
        return res["out"], (res["h"], res["c"]), ({"u": xw, "c_in": res["c_in"]} if keep else {})

    def backward(self, ext, saved: dict[str, Tensor | None], dout: Tensor | None, dstate: State, p: Params,
                 masks, reverse: bool) -> tuple[Tensor, State, Params]:
        res = ext.fopool_backward(dout, dstate[0], dstate[1], saved, *self._v(p), masks.valid, self.kind,
                                  self.alpha, reverse)
        grads: Params = {}
        if self.gate_recurrence:
            grads["weight_cf"], grads["weight_cr"] = res["dv_f"].sum(0), res["dv_r"].sum(0)
        return res["du"], (res["dh0"], res["dc0"]), grads


def causal_conv(u: Tensor, carry0: Tensor | None, window: int, lengths: Tensor | None,
                reverse: bool) -> tuple[Tensor, Tensor | None]:
    """The masked convolution of :class:`QRNNCell` for all steps at once, in the order the
    steps are processed (backwards in time with ``reverse``, each sequence from its own
    last step when ``lengths`` are given), with the carried state of the step form.

    u: (T, B, k·G) the taps W_j x_t (bias in tap 0); carry0: (B, (k-1)·G) or None (k = 1).
    Returns pre (T, B, G), pre_t = Σ_j W_j x_{t∓j} (+ the carry for the first k-1 steps),
    and the carry after each sequence's last step (B, (k-1)·G), or None for k = 1.

    Written with tensor operations (gathers and shifted sums) and differentiated by
    autograd: the taps before the sequence enter as one extra row at position -1 of tap j
    holding carry0[j-1] (its only use: pre_{j-1} gets it through tap j), so that
    pre_s = Σ_j P_j[s - j] and carry'[j-1] = Σ_{i ≥ j} P_i[e + j - i] (e: the last step)
    hold with P_j taken from the extended sequence.
    """
    T, B, kG = u.shape
    G = kG // window
    if window == 1:
        return u, None
    P = u.view(T, B, window, G)
    order = None
    if reverse:  # processing position s ↦ time step: len-1-s inside the length
        lens = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths.cpu()
        s = torch.arange(T).unsqueeze(1)  # (T, 1)
        order = torch.where(s < lens.unsqueeze(0), lens.unsqueeze(0) - 1 - s, s).to(u.device)  # (T, B), an involution
        P = P.gather(0, order.view(T, B, 1, 1).expand(T, B, window, G))
    # positions -(k-1) .. T-1: k-2 rows of zeros, the row at -1 (carry0[j-1] in tap j), then P
    head = torch.cat((torch.zeros(B, 1, G, dtype=u.dtype, device=u.device), carry0.reshape(B, window - 1, G)), 1)
    ext = torch.cat((u.new_zeros(window - 2, B, window, G), head.unsqueeze(0), P))  # (T + k - 1, B, k, G)
    off = window - 1  # index of position 0 in ext
    pre = sum(ext[off - j : off - j + T, :, j] for j in range(window))  # (T, B, G)
    last = (torch.full((B,), T - 1, dtype=torch.long) if lengths is None
            else lengths.cpu() - 1).to(u.device)  # processing position of each sequence's last step
    batch = torch.arange(B, device=u.device)
    carry = torch.stack([sum(ext[off + last + j - i, batch, i] for i in range(j, window))
                         for j in range(1, window)], 1)  # (B, k-1, G)
    if reverse:
        pre = pre.gather(0, order.unsqueeze(2).expand(T, B, G))
    return pre, carry.reshape(B, (window - 1) * G)
