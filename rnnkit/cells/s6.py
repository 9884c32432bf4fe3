"""The selective state space model S6 (Gu & Dao 2023, "Mamba: Linear-Time Sequence
Modeling with Selective State Spaces", §3), without the convolution and gating of the
Mamba block around it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import NativeBinding, Params, State, accumulate
from .scancell import ScanCell


class S6Cell(ScanCell):
    """S6: H independent single-input single-output state space models of N states each,
    whose step Δ and matrices B, C are functions of the input ("selective").

        u = (x, δ, B, C) = W_ih x_in + b_ih      x: (H,) channels, δ: (R,) the low-rank
                                                 projection for Δ, B, C: (N,) each
        Δ = softplus(W_Δ δ + b_Δ)                (H,)     W_Δ: (H, R)
        A = -exp(A_log)                          (H, N)   diagonal per channel, A < 0
        Ā = exp(Δ A)                             zero-order hold:  a_t[h, n] = exp(Δ_h A_hn)
        B̄ x ≈ Δ B x                              Euler (Mamba's simplification for B):
                                                 b_t[h, n] = Δ_h x_h B_n
        s_t = Ā ⊙ s_{t-1} + B̄ x                  s: (H, N)
        y_t = Σ_n C_n s_t[:, n] + D ⊙ x          (H,)

    The exact zero-order hold of B would be (Ā - 1)/A ⊙ B, which equals Δ B to first
    order in Δ A; Mamba (§3.5 and its code) uses Δ B, and so does rnnkit.

    Backward, from (da, db), with e = Δ ⊙ x:

        dΔA = da ⊙ a:   dΔ = Σ_n dΔA ⊙ A,   dA = Σ_{t,b} dΔA ⊙ Δ,   dA_log = dA ⊙ A
        de = Σ_n db ⊙ B     dB = Σ_h db ⊙ e     dΔ += de ⊙ x     dx = de ⊙ Δ
        dz = dΔ ⊙ σ(z) for z = W_Δ δ + b_Δ:  dW_Δ = Σ dzᵀ δ,  db_Δ = Σ dz,  dδ = dz W_Δ

    and from dy of the readout:  ds = dy ⊗ C,  dC = Σ_h dy_h s[h, :],  dD = Σ dy ⊙ x,
    dx += dy ⊙ D.
    """

    def __init__(self, hidden_size: int, state_size: int = 16, dt_rank: int | None = None, bias: bool = True):
        super().__init__(hidden_size, bias)
        dt_rank = -(-hidden_size // 16) if dt_rank is None else dt_rank  # ⌈H/16⌉, Mamba's "auto"
        if state_size <= 0:
            raise ValueError(f"state_size must be positive, got {state_size}")
        if dt_rank <= 0:
            raise ValueError(f"dt_rank must be positive, got {dt_rank}")
        self.state_size = state_size
        self.dt_rank = dt_rank

    def scan_shape(self) -> tuple[int, ...]:
        return (self.hidden_size, self.state_size)

    def input_width(self, input_size: int) -> int:
        return self.hidden_size + self.dt_rank + 2 * self.state_size

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        H, N, R = self.hidden_size, self.state_size, self.dt_rank
        shapes = super().param_shapes(input_size)
        shapes.update(weight_dt=(H, R), bias_dt=(H,), A_log=(H, N), D=(H,))
        return shapes

    def _split(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        H, R, N = self.hidden_size, self.dt_rank, self.state_size
        return u[..., :H], u[..., H : H + R], u[..., H + R : H + R + N], u[..., H + R + N :]

    def coefficients(self, u, p):
        x, delta_in, B, _ = self._split(u)
        z = F.linear(delta_in, p["weight_dt"], p["bias_dt"])  # (..., H)
        dt = F.softplus(z)
        A = -p["A_log"].exp()  # (H, N)
        a = (dt.unsqueeze(-1) * A).exp_()  # (..., H, N)
        e = dt * x
        b = e.unsqueeze(-1) * B.unsqueeze(-2)  # (..., H, N)
        return a, b, (x, delta_in, B, z, dt, A, a, e)

    # The sums over N and H below are matrix products: they make no (..., H, N) temporary,
    # and on CPU a fresh tensor of that size costs more in page faults than its arithmetic.
    def coefficients_backward(self, da, db, cache, p, grads):
        x, delta_in, B, z, dt, A, a, e = cache
        H, N = self.hidden_size, self.state_size
        d_dtA = da * a  # a = exp(Δ A)
        ddt = (d_dtA * A).sum(-1)  # (..., H)
        dA = torch.einsum("mh,mhn->hn", dt.reshape(-1, H), d_dtA.reshape(-1, H, N))  # Σ_{t,b} dΔA ⊙ Δ
        accumulate(grads, "A_log", dA * A)  # A = -exp(A_log)
        de = (db @ B.unsqueeze(-1)).squeeze(-1)  # b = e ⊗ B:  Σ_n db ⊙ B
        dB = (e.unsqueeze(-2) @ db).squeeze(-2)  # Σ_h db ⊙ e: (..., N)
        ddt = ddt + de * x  # e = Δ ⊙ x
        dx = de * dt
        dz = ddt * torch.sigmoid(z)  # Δ = softplus(z)
        dz2 = dz.reshape(-1, H)
        accumulate(grads, "weight_dt", dz2.t() @ delta_in.reshape(-1, self.dt_rank))
        accumulate(grads, "bias_dt", dz2.sum(0))
        ddelta = dz @ p["weight_dt"]
        return torch.cat((dx, ddelta, dB, torch.zeros_like(dB)), -1)

    def readout(self, s, u, cache, p):
        x, _, _, C = self._split(u)
        y = (s @ C.unsqueeze(-1)).squeeze(-1) + p["D"] * x  # Σ_n s ⊙ C + D ⊙ x: (..., H)
        return y, (s, x, C)

    def readout_backward(self, dy, cache, p, grads):
        s, x, C = cache
        H, N = self.hidden_size, self.state_size
        ds = dy.unsqueeze(-1) * C.unsqueeze(-2)  # (..., H, N)
        dC = (dy.unsqueeze(-2) @ s).squeeze(-2)  # Σ_h dy ⊙ s: (..., N)
        accumulate(grads, "D", (dy * x).reshape(-1, H).sum(0))
        dx = dy * p["D"]
        zeros = dx.new_zeros((*dx.shape[:-1], self.dt_rank + N))
        return ds, torch.cat((dx, zeros, dC), -1)

    # -- the native loop (rnnkit/cells/native/s6.cpp) ---------------------------------------------
    def native_binding(self) -> NativeBinding | None:
        """The C++ loop over u: every option of the cell, lengths and both directions."""
        return _NativeS6(self)

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, _, (_, _, _, _, dt, _, _, _), _ = cache
        return {"dt": dt}

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, state_size={self.state_size}, dt_rank={self.dt_rank}"


class _NativeS6(NativeBinding):
    """:class:`S6Cell` on ``s6_forward`` / ``s6_backward`` (``rnnkit/cells/native/s6.cpp``;
    arguments and named results in ``s6.h``), run by :func:`rnnkit.engine.scan.run_native_steps`
    over the input projection u (T, B, H + R + 2N). The matrix work is done here for all steps
    at once: Δ = softplus(W_Δ δ + b_Δ) before the loop, and after it

        dz = dΔ ⊙ σ(z):  dW_Δ = Σ dzᵀ δ,  db_Δ = Σ dz,  dδ = dz W_Δ,
        dA_log = (Σ_batch dA) ⊙ A,  dD = Σ_batch dD;

    the loop keeps the state s_t of every 16th step (the scan keeps all (T, B, H·N)) and
    recomputes the others and exp(Δ A) in its backward."""

    cell: S6Cell

    def _delta(self, u: Tensor, p: Params) -> tuple[Tensor, Tensor]:
        H, R = self.cell.hidden_size, self.cell.dt_rank
        z = F.linear(u[..., H : H + R], p["weight_dt"], p["bias_dt"])  # (T, B, H)
        return z, F.softplus(z)

    def forward(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool,
                keep: bool) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        z, dt = self._delta(xw, p)
        A = -p["A_log"].exp()  # (H, N)
        y0, s0 = state0
        res = ext.s6_forward(xw, dt, A, p["D"].contiguous(), y0, s0, masks.valid, self.cell.dt_rank, reverse, keep)
        saved = {"u": xw, "z": z, "dt": dt, "s_block": res["s_block"]} if keep else {}
        return res["out"], (res["y"], res["s"]), saved

    def backward(self, ext, saved: dict[str, Tensor | None], dout: Tensor | None, dstate: State, p: Params,
                 masks, reverse: bool) -> tuple[Tensor, State, Params]:
        cell = self.cell
        H, R = cell.hidden_size, cell.dt_rank
        A = -p["A_log"].exp()
        res = ext.s6_backward(dout, dstate[0], dstate[1], saved, A, p["D"].contiguous(), masks.valid, R, reverse)
        du = res["du"]  # (T, B, H + R + 2N), its δ columns 0
        dz = res["ddt"] * torch.sigmoid(saved["z"])  # Δ = softplus(z): (T, B, H)
        dz2 = dz.reshape(-1, H)
        du[..., H : H + R] = dz @ p["weight_dt"]
        u = saved["u"]
        grads: Params = {"weight_dt": dz2.t() @ u[..., H : H + R].reshape(-1, R), "bias_dt": dz2.sum(0),
                         "A_log": res["dA"].sum(0) * A, "D": res["dD"].sum(0)}
        return du, (res["dy0"], res["ds0"]), grads
