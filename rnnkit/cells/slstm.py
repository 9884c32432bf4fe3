"""The scalar-memory LSTM of xLSTM (sLSTM; Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp,
Klambauer, Brandstetter & Hochreiter, NeurIPS 2024, §2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Cell, Params, State

FORGET_GATES = ("sigmoid", "exp")


class SLSTMCell(Cell):
    """sLSTM: exponential gating with a normaliser and a stabiliser, and recurrent weights
    that mix memory only within each of ``num_heads`` heads (block-diagonal R).

        (ĩ, f̃, z̃, õ) = xw + R h_{t-1}       xw = W_ih x + b;  R block-diagonal, heads of d = H/heads
        log f = f̃ (exp gate) or log σ(f̃) (sigmoid gate)
        m_t = max(log f + m_{t-1}, ĩ)            stabiliser (m_t = ĩ where n_{t-1} = 0: empty memory)
        i' = exp(ĩ - m_t)    f' = exp(log f + m_{t-1} - m_t)
        z = tanh(z̃)          o = σ(õ)
        c_t = f' ⊙ c_{t-1} + i' ⊙ z              cell state
        n_t = f' ⊙ n_{t-1} + i'                  normaliser state
        h_t = o ⊙ c_t / n_t

    These are the paper's c, n with i = exp(ĩ), f written relative to e^{m_t}: the stored
    (c, n) are e^{-m_t} times the unstabilised ones, so their ratio h is the same for every
    choice of m, and m only keeps exp from overflowing. Where n_{t-1} = 0 (the zero
    initial state) m_t = ĩ, which makes n_t = 1: the stored n is ≥ 1 from the first step
    on (by induction: m_t is the larger of the two exponents, so n_t ≥ n_{t-1} or i' = 1),
    and h never divides by a vanishing n. State: (h, c, n, m).

    BPTT of one step, from (dh, dc, dn, dm) reaching the new state. m_t is a max: its
    gradient goes to the larger branch (as autograd's max does); this is exact, and for
    losses of h alone the m-paths cancel (h does not depend on m), as the paper notes.

        h̃ = c/n:   do = dh ⊙ h̃     dh̃ = dh ⊙ o     dc += dh̃ / n     dn -= dh̃ ⊙ h̃ / n
        df' = dc ⊙ c_{t-1} + dn ⊙ n_{t-1}          di' = dc ⊙ z + dn      dz = dc ⊙ i'
        dc_{t-1} = dc ⊙ f'    dn_{t-1} = dn ⊙ f'
        dlog f = df' ⊙ f'     dm_{t-1} = df' ⊙ f'  dĩ = di' ⊙ i'     dm -= df' ⊙ f' + di' ⊙ i'
        max:  dlog f += dm, dm_{t-1} += dm  where log f + m_{t-1} won;  dĩ += dm  elsewhere
        df̃ = dlog f (exp gate) or dlog f ⊙ σ(-f̃)       dz̃ = dz (1 - z²)    dõ = do o (1 - o)
        dh_{t-1} = Rᵀ (dĩ, df̃, dz̃, dõ)    dR = Σ_t (dĩ, df̃, dz̃, dõ) h_{t-1}ᵀ within each head
    """

    gates = 4
    state_names = ("h", "c", "n", "m")

    def __init__(self, hidden_size: int, num_heads: int = 4, bias: bool = True, forget_gate: str = "sigmoid"):
        super().__init__(hidden_size, bias)
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"num_heads must divide hidden_size={hidden_size}, got {num_heads}")
        if forget_gate not in FORGET_GATES:
            raise ValueError(f"forget_gate must be one of {FORGET_GATES}, got {forget_gate!r}")
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.forget_gate = forget_gate

    def state_sizes(self) -> tuple[int, ...]:
        H = self.hidden_size
        return (H, H, H, H)

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        G = 4 * self.hidden_size
        # weight_hh: the diagonal blocks of R, row (gate, head, j) holds R[gate, head][j, :]
        shapes = {"weight_ih": (G, input_size), "weight_hh": (G, self.head_size)}
        if self.bias:
            shapes["bias_ih"] = (G,)
        return shapes

    def input_bias(self, p: Params) -> Tensor | None:
        return p["bias_ih"] if self.bias else None

    def bias_grads(self, dxw_sum: Tensor, drec_sum: Tensor, grads: Params) -> None:
        if self.bias:
            grads["bias_ih"] = dxw_sum

    def project(self, x: Tensor, p: Params) -> Tensor:
        """xw = x W_ihᵀ + b for all steps at once: (..., I) → (..., 4H)."""
        return F.linear(x, p["weight_ih"], self.input_bias(p))

    def _blocks(self, w_hh: Tensor) -> Tensor:
        """(4H, d) → (4, heads, d, d): R[g, k] maps head k of h to head k of gate g."""
        return w_hh.view(4, self.num_heads, self.head_size, self.head_size)

    def recurrent(self, h: Tensor, w_hh: Tensor) -> Tensor:
        """R h for block-diagonal R: (B, H) → (B, 4H)."""
        hk = h.view(h.shape[0], self.num_heads, self.head_size)  # (B, heads, d)
        return torch.einsum("bkm,gkjm->bgkj", hk, self._blocks(w_hh)).reshape(h.shape[0], -1)

    def weight_hh_grad(self, drec: Tensor, rec_in: Tensor) -> Tensor:
        """dR from all steps at once: drec (N, 4H), rec_in (N, H) → (4H, d), the blocks only."""
        N = drec.shape[0]
        dg = drec.view(N, 4, self.num_heads, self.head_size)
        hk = rec_in.view(N, self.num_heads, self.head_size)
        return torch.einsum("ngkj,nkm->gkjm", dg, hk).reshape(4 * self.hidden_size, self.head_size)

    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        h, c, n, m = state
        H = self.hidden_size
        hr = h if rmask is None else h * rmask
        pre = xw + self.recurrent(hr, p["weight_hh"])  # (B, 4H)
        i_t, f_t, z_t, o_t = pre[:, :H], pre[:, H : 2 * H], pre[:, 2 * H : 3 * H], pre[:, 3 * H :]
        log_f = f_t if self.forget_gate == "exp" else F.logsigmoid(f_t)
        from_state = (log_f + m >= i_t) & (n != 0)  # which branch of the max is m_t
        m_new = torch.where(from_state, log_f + m, i_t)
        i_s = torch.exp(i_t - m_new)  # i'
        f_s = torch.exp(log_f + m - m_new)  # f'
        z, o = torch.tanh(z_t), torch.sigmoid(o_t)
        c_new = f_s * c + i_s * z
        n_new = f_s * n + i_s
        h_tilde = c_new / n_new
        h_new = o * h_tilde
        return (h_new, c_new, n_new, m_new), (hr, f_t, c, n, from_state, i_s, f_s, z, o, n_new, h_tilde)

    def step_backward(self, dstate, cache, p, grads, rmask):
        dh, dc, dn, dm = dstate
        hr, f_t, c, n, from_state, i_s, f_s, z, o, n_new, h_tilde = cache
        do = dh * h_tilde  # h = o ⊙ h̃
        dh_tilde = dh * o
        dc = dc + dh_tilde / n_new  # h̃ = c/n
        dn = dn - dh_tilde * h_tilde / n_new
        df_s = dc * c + dn * n  # c' = f' c + i' z,  n' = f' n + i'
        di_s = dc * z + dn
        dz = dc * i_s
        dc_prev, dn_prev = dc * f_s, dn * f_s
        g_f, g_i = df_s * f_s, di_s * i_s  # through f' = exp(log f + m - m'), i' = exp(ĩ - m')
        dm = dm - g_f - g_i
        dlog_f = g_f + torch.where(from_state, dm, 0.0)  # m' = max(log f + m, ĩ)
        dm_prev = g_f + torch.where(from_state, dm, 0.0)
        di_t = g_i + torch.where(from_state, 0.0, dm)
        df_t = dlog_f if self.forget_gate == "exp" else dlog_f * torch.sigmoid(-f_t)
        dz_t = dz * (1 - z * z)
        do_t = do * o * (1 - o)
        dpre = torch.cat((di_t, df_t, dz_t, do_t), 1)  # (B, 4H)
        B = dpre.shape[0]
        dg = dpre.view(B, 4, self.num_heads, self.head_size)
        dh_prev = torch.einsum("bgkj,gkjm->bkm", dg, self._blocks(p["weight_hh"])).reshape(B, -1)  # Rᵀ dpre
        if rmask is not None:
            dh_prev = dh_prev * rmask
        return dpre, (dh_prev, dc_prev, dn_prev, dm_prev), dpre

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        """o, the stabilised i' and f' (in (0, 1]: the weights of the new input and of the
        memory) and the cell input z (named g as the LSTM's: a tanh, not a sigmoid gate)."""
        _, _, _, _, _, i_s, f_s, z, o, _, _ = cache
        return {"i'": i_s, "f'": f_s, "g": z, "o": o}

    def extra_repr(self) -> str:
        s = f"hidden_size={self.hidden_size}, num_heads={self.num_heads}"
        return s if self.forget_gate == "sigmoid" else s + f", forget_gate={self.forget_gate!r}"
