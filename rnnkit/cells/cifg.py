"""The LSTM with coupled input and forget gates (CIFG)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Cell, Params, State


class CIFGCell(Cell):
    """LSTM with coupled input and forget gates, i = 1 - f (the CIFG variant of Greff et al.
    2017, "LSTM: A Search Space Odyssey", §3; the GRU's coupling in an LSTM): one gate fewer
    than the LSTM at about the same accuracy in their study. Gate order f, g, o; no
    peepholes.

        f = σ(xf + W_hf h)        g = tanh(xg + W_hg h)        o = σ(xo + W_ho h)
        c' = f ⊙ c + (1 - f) ⊙ g
        h' = o ⊙ tanh(c')

    BPTT, with dh', dc' the gradients reaching the new state:

        do_a = dh' ⊙ tanh(c') ⊙ o ⊙ (1 - o)
        dc   = dc' + dh' ⊙ o ⊙ (1 - tanh²(c'))
        df_a = dc ⊙ (c - g) ⊙ f ⊙ (1 - f)          dg_a = dc ⊙ (1 - f) ⊙ (1 - g²)
        dc_prev = dc ⊙ f
        dgates = (df_a, dg_a, do_a),  dh_prev = W_hhᵀ dgates,  dxw = drec = dgates
    """

    gates = 3
    state_names = ("h", "c")

    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size, self.hidden_size)

    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        h, c = state  # (B, H) each
        H = self.hidden_size
        hr = h if rmask is None else h * rmask
        a = torch.addmm(xw, hr, p["weight_hh"].t())  # (B, 3H)
        f = torch.sigmoid(a[:, :H])
        g = torch.tanh(a[:, H:2 * H])
        o = torch.sigmoid(a[:, 2 * H:])
        c_new = torch.lerp(g, c, f)  # f ⊙ c + (1 - f) ⊙ g
        tc = torch.tanh(c_new)
        return (o * tc, c_new), (hr, f, g, o, c, tc)

    def step_backward(
        self, dstate: State, cache: tuple, p: Params, grads: Params, rmask: Tensor | None
    ) -> tuple[Tensor, State, Tensor]:
        dh, dc_new = dstate
        _, f, g, o, c, tc = cache
        do_a = dh * tc * o * (1 - o)
        dc = dc_new + dh * o * (1 - tc * tc)
        df_a = dc * (c - g) * f * (1 - f)
        dg_a = dc * (1 - f) * (1 - g * g)
        dgates = torch.cat((df_a, dg_a, do_a), 1)  # (B, 3H)
        dh_prev = dgates @ p["weight_hh"]  # (B, H)
        if rmask is not None:
            dh_prev = dh_prev * rmask
        return dgates, (dh_prev, dc * f), dgates

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, f, g, o = cache[:4]
        return {"i": 1 - f, "f": f, "g": g, "o": o}
