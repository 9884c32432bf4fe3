"""Linear Recurrent Unit (LRU; Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De,
ICML 2023, "Resurrecting Recurrent Neural Networks for Long Sequences")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import accumulate
from .scancell import ScanCell

OUTPUT_ACTIVATIONS = ("identity", "gelu")


class LRUCell(ScanCell):
    """LRU: a diagonal complex linear recurrence with a real readout.

        u = (u_re, u_im, u_D) = W_ih x + b_ih     W_ih = (B_re; B_im; D): (2N + H, I)
        λ = exp(-exp(ν) + i exp(θ))               (N,), |λ| = exp(-exp(ν)) < 1 always
        γ = exp(γ_log)                            (N,), starts at sqrt(1 - |λ|²)
        s_t = λ ⊙ s_{t-1} + γ ⊙ (u_re + i u_im)   s ∈ C^N
        y_t = φ(Re(C s_t) + u_D)                  C = C_re + i C_im: (H, N),  φ = identity or GELU

    Re(C s) = s_re C_reᵀ - s_im C_imᵀ. The paper's D is an element-wise skip (its LRU blocks
    map H features to H); with I input and H output features it is the matrix D of its
    eq. (1), held as the last H rows of W_ih. φ = GELU is the nonlinearity the paper puts
    after every LRU in its blocks (the LRU itself is linear in x).

    Backward (complex gradients as in :mod:`rnnkit.cells.scancell`), from (da, db) of
    s' = a ⊙ s + b with a = λ, b = γ ⊙ z, z = u_re + i u_im:

        dλ = Σ_{t,b} da        w = log λ = -e^ν + i e^θ:   dw = conj(λ) dλ
        dν = -e^ν Re(dw)       dθ = e^θ Im(dw)
        dγ = Σ Re(conj(z) ⊙ db)      dγ_log = γ dγ       dz = γ db:  du_re = Re dz, du_im = Im dz

    and from dy of the readout, with dp = dy ⊙ φ'(p), p = Re(C s) + u_D:

        ds = dp C_re - i dp C_im     dC_re = Σ dpᵀ s_re     dC_im = -Σ dpᵀ s_im     du_D = dp
    """

    complex_state = True

    def __init__(self, hidden_size: int, state_size: int | None = None, bias: bool = True,
                 activation: str = "gelu"):
        super().__init__(hidden_size, bias)
        state_size = hidden_size if state_size is None else state_size
        if state_size <= 0:
            raise ValueError(f"state_size must be positive, got {state_size}")
        if activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"activation must be one of {OUTPUT_ACTIVATIONS}, got {activation!r}")
        self.state_size = state_size
        self.activation = activation

    def scan_shape(self) -> tuple[int, ...]:
        return (self.state_size,)

    def input_width(self, input_size: int) -> int:
        return 2 * self.state_size + self.hidden_size

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        N, H = self.state_size, self.hidden_size
        shapes = super().param_shapes(input_size)
        shapes.update(nu_log=(N,), theta_log=(N,), gamma_log=(N,), c_re=(H, N), c_im=(H, N))
        return shapes

    def coefficients(self, u, p):
        N = self.state_size
        e_nu, e_theta = p["nu_log"].exp(), p["theta_log"].exp()
        lam = torch.polar(torch.exp(-e_nu), e_theta)  # exp(-e^ν + i e^θ): (N,)
        gamma = p["gamma_log"].exp()
        z = torch.complex(u[..., :N], u[..., N : 2 * N])  # B x, (..., N)
        return lam.expand(z.shape), gamma * z, (z, lam, gamma, e_nu, e_theta)

    def coefficients_backward(self, da, db, cache, p, grads):
        z, lam, gamma, e_nu, e_theta = cache
        N = self.state_size
        dlam = da.reshape(-1, N).sum(0)  # a = λ for every step
        dw = lam.conj() * dlam  # λ = exp(w)
        accumulate(grads, "nu_log", -e_nu * dw.real)
        accumulate(grads, "theta_log", e_theta * dw.imag)
        dgamma = (z.conj() * db).real.reshape(-1, N).sum(0)  # b = γ ⊙ z
        accumulate(grads, "gamma_log", gamma * dgamma)
        dz = gamma * db
        du_d = torch.zeros((*dz.shape[:-1], self.hidden_size), dtype=dz.real.dtype, device=dz.device)
        return torch.cat((dz.real, dz.imag, du_d), -1)

    def readout(self, s, u, cache, p):
        N = self.state_size
        pre = torch.addmm(u[..., 2 * N :].reshape(-1, self.hidden_size), s.real.reshape(-1, N), p["c_re"].t())
        pre = pre.sub_(s.imag.reshape(-1, N) @ p["c_im"].t()).view(*s.shape[:-1], self.hidden_size)
        y = F.gelu(pre) if self.activation == "gelu" else pre  # (..., H)
        return y, (s, pre)

    def readout_backward(self, dy, cache, p, grads):
        s, pre = cache
        N = self.state_size
        dp = torch.ops.aten.gelu_backward(dy, pre) if self.activation == "gelu" else dy
        dp2 = dp.reshape(-1, self.hidden_size)
        accumulate(grads, "c_re", dp2.t() @ s.real.reshape(-1, N))
        accumulate(grads, "c_im", -(dp2.t() @ s.imag.reshape(-1, N)))
        ds = torch.complex(dp @ p["c_re"], -(dp @ p["c_im"]))  # (..., N)
        du = torch.cat((torch.zeros((*dp.shape[:-1], 2 * N), dtype=dp.dtype, device=dp.device), dp), -1)
        return ds, du

    def extra_repr(self) -> str:
        s = f"hidden_size={self.hidden_size}"
        if self.state_size != self.hidden_size:
            s += f", state_size={self.state_size}"
        return s if self.activation == "gelu" else s + f", activation={self.activation!r}"
