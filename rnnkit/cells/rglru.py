"""Real-Gated Linear Recurrent Unit (RG-LRU; De et al. 2024, "Griffin", §2.4), the
recurrence of the Hawk and Griffin language models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import accumulate
from .scancell import ScanCell


class RGLRUCell(ScanCell):
    """RG-LRU: a diagonal real linear recurrence whose decay is gated by the input.

        u = (x_a, x_i, x_c) = W_ih x + b_ih      (W_a x + b_a, W_x x + b_x, and the
                                                  recurrence's input, here a projection)
        r_t = σ(x_a)                             recurrence gate
        i_t = σ(x_i)                             input gate
        log a_t = c r_t log a,   a = σ(Λ)        i.e. a_t = a^{c r_t},  c = 8
        h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ x_c)

    log a = -softplus(-Λ) and sqrt(1 - a_t²) = sqrt(-expm1(2 log a_t)) are computed in log
    space, so a_t close to 1 keeps its precision. The output is h_t (``readout_is_state``).

    Backward, from (da, db) of h' = a ⊙ h + b, with β = sqrt(1 - a_t²) and w = i ⊙ x_c:

        dβ = db ⊙ w        dw = db ⊙ β        di = dw ⊙ x_c        dx_c = dw ⊙ i
        dlog a_t = da ⊙ a_t - dβ ⊙ a_t² / β                  (dβ/dlog a_t = -a_t²/β)
        dr = dlog a_t ⊙ c log a        dx_a = dr ⊙ r (1 - r)        dx_i = di ⊙ i (1 - i)
        dΛ = Σ_{t,b} dlog a_t ⊙ c r_t ⊙ σ(-Λ)                   (dlog a/dΛ = σ(-Λ))

    a_t²/β grows without bound as r_t → 0 or a → 1, but the gradients of x_a and Λ carry a
    factor r_t resp. σ(-Λ) ≈ -log a that makes them go to 0 like sqrt(r_t) resp.
    sqrt(-log a): the term is formed as κ = a_t² r_t / β, which is finite, and taken as
    its limit 0 where β underflows to 0.
    """

    gates = 3
    state_names = ("h",)
    readout_is_state = True

    def __init__(self, hidden_size: int, bias: bool = True, c: float = 8.0):
        super().__init__(hidden_size, bias)
        if not c > 0:
            raise ValueError(f"c must be positive, got {c}")
        self.c = float(c)

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        shapes = super().param_shapes(input_size)
        shapes["a_logit"] = (self.hidden_size,)  # Λ: a = σ(Λ)
        return shapes

    def coefficients(self, u, p):
        H = self.hidden_size
        x_a, x_i, x_c = u[..., :H], u[..., H : 2 * H], u[..., 2 * H :]
        r, i = torch.sigmoid(x_a), torch.sigmoid(x_i)
        log_a = -F.softplus(-p["a_logit"])  # (H,) log σ(Λ)
        log_at = self.c * r * log_a  # (..., H)
        a_t = log_at.exp()
        beta = torch.sqrt(-torch.expm1(2 * log_at))  # sqrt(1 - a_t²)
        w = i * x_c
        return a_t, beta * w, (x_c, r, i, a_t, beta, w, log_a)

    def coefficients_backward(self, da, db, cache, p, grads):
        x_c, r, i, a_t, beta, w, log_a = cache
        dbeta = db * w  # b = β ⊙ w
        dw = db * beta
        di, dx_c = dw * x_c, dw * i  # w = i ⊙ x_c
        # κ = a_t² r / β (→ 0 where β → 0, see the class docstring)
        kappa = torch.where(beta > 0, a_t * a_t * r / beta, torch.zeros((), dtype=beta.dtype))
        da_r = da * a_t  # the part of dlog a_t through a_t itself
        # dlog a_t = da_r - dβ a_t²/β; times dlog a_t/dr = c log a and dr/dx_a = r (1 - r)
        dx_a = (da_r * r - dbeta * kappa) * self.c * log_a * (1 - r)
        # dΛ = Σ dlog a_t c r σ(-Λ)
        dlog_a = ((da_r * r - dbeta * kappa) * self.c).reshape(-1, self.hidden_size).sum(0)
        accumulate(grads, "a_logit", dlog_a * torch.sigmoid(-p["a_logit"]))
        dx_i = di * i * (1 - i)
        return torch.cat((dx_a, dx_i, dx_c), -1)

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, _, (_, r, i, a_t, _, _, _), _ = cache
        return {"r": r, "i": i, "a": a_t}

    def extra_repr(self) -> str:
        s = f"hidden_size={self.hidden_size}"
        return s if self.c == 8.0 else s + f", c={self.c}"
