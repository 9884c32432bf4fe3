"""The selective state space model S6 (Gu & Dao 2023, "Mamba: Linear-Time Sequence
Modeling with Selective State Spaces", §3), without the convolution and gating of the
Mamba block around it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import accumulate
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

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, _, (_, _, _, _, dt, _, _, _), _ = cache
        return {"dt": dt}

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, state_size={self.state_size}, dt_rank={self.dt_rank}"
