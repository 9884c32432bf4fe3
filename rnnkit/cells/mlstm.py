"""The matrix-memory LSTM of xLSTM (mLSTM; Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp,
Klambauer, Brandstetter & Hochreiter, NeurIPS 2024, §2.3), in its recurrent form (one
step, for generation and the sequential loop) and its chunkwise-parallel form (training),
each with a hand-written backward."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Cell, Params, State, differentiable_backward
from .slstm import FORGET_GATES


class MLSTMCell(Cell):
    """mLSTM: per head a d×d matrix memory written with a covariance (outer-product) rule,
    read by a query; scalar exponential gates per head; no memory mixing (the gates read
    x_t only), so all steps can be computed in parallel.

        u = (q, k, v, ĩ, f̃, õ) = W_ih x + b_ih       q, k, v, õ: (H,) = heads × d;  ĩ, f̃: (heads,)
        k ← k / √d                                   (the paper's 1/√d W_k x)
        log f = log σ(f̃) (or f̃ with forget_gate="exp")
        m_t = max(log f + m_{t-1}, ĩ)                  stabiliser
        i' = exp(ĩ - m_t)      f' = exp(log f + m_{t-1} - m_t)
        C_t = f' C_{t-1} + i' v_t k_tᵀ                (d, d) per head
        n_t = f' n_{t-1} + i' k_t                     (d,) per head
        h̃_t = C_t q_t / max(|n_tᵀ q_t|, exp(-m_t))
        h_t = σ(õ) ⊙ h̃_t

    (C, n) are e^{-m_t} times the paper's C_t, n_t (with i = exp(ĩ)), so the paper's
    h̃ = C q / max(|nᵀq|, 1) becomes the form above: numerator and denominator scale
    alike, h̃ does not depend on the choice of m. State: (h, C, n, m), with C flattened to
    heads·d·d (C[v-index, k-index]), n to H and m (heads,).

    BPTT of one step, from (dh, dC, dn, dm), with κ = max(|nᵀq|, e^{-m}):

        do = dh ⊙ h̃    dh̃ = dh ⊙ o    dr = dh̃ / κ  (r = C q)    dκ = -Σ dh̃ ⊙ h̃ / κ
        |nᵀq| ≥ e^{-m}:  d(nᵀq) = dκ sign(nᵀq)      else  dm -= dκ e^{-m}
        dC += dr qᵀ    dq = Cᵀ dr + d(nᵀq) n    dn += d(nᵀq) q
        df' = Σ dC ⊙ C_{t-1} + dnᵀ n_{t-1}       di' = vᵀ dC k + dnᵀ k
        dv = i' dC k    dk = i' (dCᵀ v + dn)    dC_{t-1} = f' dC    dn_{t-1} = f' dn
        exponents and the max as in :class:`~rnnkit.cells.slstm.SLSTMCell`

    The chunkwise form (:func:`mlstm_chunkwise`) computes the same function.
    """

    state_names = ("h", "C", "n", "m")
    memory_state = 1

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
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        return (H, NH * d * d, H, NH)

    def input_width(self, input_size: int) -> int:
        return 4 * self.hidden_size + 2 * self.num_heads

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        G = self.input_width(input_size)
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (G, input_size)}
        if self.bias:
            shapes["bias_ih"] = (G,)
        return shapes

    def input_bias(self, p: Params) -> Tensor | None:
        return p["bias_ih"] if self.bias else None

    def project(self, x: Tensor, p: Params) -> Tensor:
        return F.linear(x, p["weight_ih"], self.input_bias(p))

    def split(self, u: Tensor) -> tuple[Tensor, ...]:
        """u (..., G) → q, k (scaled), v: (..., heads, d);  ĩ, f̃: (..., heads);  õ: (..., H)."""
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        q, k, v = (u[..., j * H : (j + 1) * H].unflatten(-1, (NH, d)) for j in range(3))
        i_t, f_t, o_t = u[..., 3 * H : 3 * H + NH], u[..., 3 * H + NH : 3 * H + 2 * NH], u[..., 3 * H + 2 * NH :]
        return q, k / math.sqrt(d), v, i_t, f_t, o_t

    def log_forget(self, f_t: Tensor) -> Tensor:
        return f_t if self.forget_gate == "exp" else F.logsigmoid(f_t)

    def log_forget_backward(self, dlog_f: Tensor, f_t: Tensor) -> Tensor:
        return dlog_f if self.forget_gate == "exp" else dlog_f * torch.sigmoid(-f_t)

    # -- the recurrent form ---------------------------------------------------------------------
    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        h, C, n, m = state
        B, NH, d = xw.shape[0], self.num_heads, self.head_size
        C, n = C.view(B, NH, d, d), n.view(B, NH, d)
        q, k, v, i_t, f_t, o_t = self.split(xw)
        log_f = self.log_forget(f_t)  # (B, NH)
        from_state = log_f + m >= i_t  # which branch of the max is m_t
        m_new = torch.where(from_state, log_f + m, i_t)
        i_s, f_s = torch.exp(i_t - m_new), torch.exp(log_f + m - m_new)  # i', f'
        C_new = f_s[..., None, None] * C + i_s[..., None, None] * v.unsqueeze(-1) * k.unsqueeze(-2)
        n_new = f_s[..., None] * n + i_s[..., None] * k
        r = (C_new @ q.unsqueeze(-1)).squeeze(-1)  # C q: (B, NH, d)
        nq = (n_new * q).sum(-1)  # (B, NH)
        floor = torch.exp(-m_new)
        kappa = torch.maximum(nq.abs(), floor)
        h_tilde = r / kappa[..., None]
        o = torch.sigmoid(o_t)
        h_new = o * h_tilde.flatten(-2)  # (B, H)
        state_new = (h_new, C_new.flatten(-3), n_new.flatten(-2), m_new)
        return state_new, (C, n, q, k, v, f_t, from_state, i_s, f_s, C_new, n_new, nq, floor, kappa, h_tilde, o)

    def step_backward(self, dstate, cache, p, grads, rmask, memory_grad: list | None = None):
        dh, dC, dn, dm = dstate
        C, n, q, k, v, f_t, from_state, i_s, f_s, C_new, n_new, nq, floor, kappa, h_tilde, o = cache
        B, NH, d = C.shape[0], self.num_heads, self.head_size
        dC, dn = dC.view(B, NH, d, d), dn.view(B, NH, d)
        do = dh * h_tilde.flatten(-2)  # h = o ⊙ h̃
        dh_tilde = (dh * o).view(B, NH, d)
        dr = dh_tilde / kappa[..., None]  # h̃ = r / κ
        dkappa = -(dh_tilde * h_tilde).sum(-1) / kappa
        above = nq.abs() >= floor  # κ = max(|nᵀq|, e^{-m})
        dnq = torch.where(above, dkappa * torch.sign(nq), 0.0)
        dm = dm - torch.where(above, 0.0, dkappa * floor)
        dC = dC + dr.unsqueeze(-1) * q.unsqueeze(-2)  # r = C q
        if memory_grad is not None:
            memory_grad.append(dC.flatten(-3))
        dq = (C_new.transpose(-1, -2) @ dr.unsqueeze(-1)).squeeze(-1) + dnq[..., None] * n_new
        dn = dn + dnq[..., None] * q  # nᵀq
        df_s = (dC * C).sum((-1, -2)) + (dn * n).sum(-1)  # C' = f' C + i' v kᵀ,  n' = f' n + i' k
        dCk = (dC @ k.unsqueeze(-1)).squeeze(-1)  # dC k: (B, NH, d)
        di_s = (v * dCk).sum(-1) + (dn * k).sum(-1)
        dv = i_s[..., None] * dCk
        dk = i_s[..., None] * ((dC.transpose(-1, -2) @ v.unsqueeze(-1)).squeeze(-1) + dn)
        dC_prev, dn_prev = f_s[..., None, None] * dC, f_s[..., None] * dn
        g_f, g_i = df_s * f_s, di_s * i_s  # exponents of f' and i'
        dm = dm - g_f - g_i
        dlog_f = g_f + torch.where(from_state, dm, 0.0)  # m' = max(log f + m, ĩ)
        dm_prev = g_f + torch.where(from_state, dm, 0.0)
        di_t = g_i + torch.where(from_state, 0.0, dm)
        df_t = self.log_forget_backward(dlog_f, f_t)
        do_t = do * o * (1 - o)
        dxw = torch.cat((dq.flatten(-2), dk.flatten(-2) / math.sqrt(d), dv.flatten(-2), di_t, df_t, do_t), -1)
        dprev = (torch.zeros_like(dh), dC_prev.flatten(-3), dn_prev.flatten(-2), dm_prev)
        return dxw, dprev, dxw

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        i_s, f_s, o = cache[7], cache[8], cache[15]
        return {"i'": i_s, "f'": f_s, "o": o}  # i', f': the stabilised gates, per head

    def extra_repr(self) -> str:
        s = f"hidden_size={self.hidden_size}, num_heads={self.num_heads}"
        return s if self.forget_gate == "sigmoid" else s + f", forget_gate={self.forget_gate!r}"


# -- the chunkwise-parallel form ----------------------------------------------------------------
#
# The sequence is cut into chunks of L steps. Within chunk j, with b_τ = Σ_{ρ ≤ τ} log f_ρ
# (cumulative inside the chunk) and the state (C_j, n_j, M_j) entering it:
#
#     D̃_τσ = b_τ - b_σ + ĩ_σ  (σ ≤ τ; -∞ above the diagonal)    g_τ = b_τ + M_j
#     m_τ = max(g_τ, max_σ D̃_τσ)            the recurrent form's m_t, unrolled
#     P = exp(D̃ - m_τ)    w_τ = exp(g_τ - m_τ)    A = P ⊙ (Q Kᵀ)
#     h̃_τ = (w_τ C_j q_τ + Σ_σ A_τσ v_σ) / max(|w_τ n_jᵀ q_τ + Σ_σ A_τσ|, exp(-m_τ))
#
# all chunks at once; the states between chunks are a recurrence over the T/L chunks:
#
#     M_{j+1} = max(b_L + M_j, max_σ (b_L - b_σ + ĩ_σ))        e_σ = exp(b_L - b_σ + ĩ_σ - M_{j+1})
#     C_{j+1} = exp(b_L + M_j - M_{j+1}) C_j + Σ_σ e_σ v_σ k_σᵀ   (n likewise with k_σ)
#
# With L = T (one chunk) this is the parallel form of the paper (its D matrix), with L = 1
# the recurrent form. Work O(T L d + T d²), memory O(T L) for the intra-chunk matrices.
#
# Backward. h̃_τ does not depend on m_τ (numerator and denominator scale by e^{-m_τ}), so
# m_τ is held fixed: dD̃ = dP ⊙ P, dg = dw ⊙ w. The chunk states are outputs too (the final
# state), and their m is not a free choice there: M_{j+1}'s gradient (its own plus the
# -C_{j+1}, -n_{j+1} of e^{-M_{j+1}} in C and n) goes to the larger branch of its max.
# The state gradients flow back over the chunks with C_j's factor exp(b_L + M_j - M_{j+1}).


def _chunk_states(k, v, i_t, b, C0, n0, m0):
    """The states entering every chunk and after the last. k, v: (N, c, L, d); i_t, b:
    (N, c, L). Returns C_in (N, c, d, d), n_in (N, c, d), M_in (N, c), the final
    (C, n, M), and per chunk the max branch and argmax (N, c) for the backward."""
    c = k.shape[1]
    b_end = b[..., -1]  # (N, c): Σ log f over the chunk
    e_log = b_end.unsqueeze(-1) - b + i_t  # (N, c, L): log-weight of step σ at the chunk end
    C, n, M = C0, n0, m0
    C_in, n_in, M_in, from_state, argmax = [], [], [], [], []
    for j in range(c):
        C_in.append(C)
        n_in.append(n)
        M_in.append(M)
        cand_state = b_end[:, j] + M
        cand_in, arg = e_log[:, j].max(-1)
        keep = cand_state >= cand_in
        M_new = torch.where(keep, cand_state, cand_in)
        w_end = torch.exp(cand_state - M_new)  # (N,)
        e = torch.exp(e_log[:, j] - M_new.unsqueeze(-1))  # (N, L)
        C = w_end[:, None, None] * C + torch.einsum("nl,nli,nlj->nij", e, v[:, j], k[:, j])
        n = w_end[:, None] * n + torch.einsum("nl,nlj->nj", e, k[:, j])
        M = M_new
        from_state.append(keep)
        argmax.append(arg)
    return (torch.stack(C_in, 1), torch.stack(n_in, 1), torch.stack(M_in, 1), (C, n, M),
            torch.stack(from_state, 1), torch.stack(argmax, 1))


def mlstm_chunkwise(q: Tensor, k: Tensor, v: Tensor, i_t: Tensor, log_f: Tensor, C0: Tensor, n0: Tensor,
                    m0: Tensor, chunk: int) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor], tuple]:
    """h̃ of every step and the final state by the chunkwise form (see the comment above).

    q, k, v: (N, T, d) with N = batch × heads, k already scaled; i_t, log_f: (N, T);
    C0 (N, d, d), n0 (N, d), m0 (N,). T must be a multiple of ``chunk``; a step that is
    not part of the sequence has ĩ = -∞ and log f = 0 (it changes nothing).
    Returns h̃ (N, T, d), (C_T, n_T, m_T) and the cache of :func:`mlstm_chunkwise_backward`.
    """
    N, T, d = q.shape
    c, L = T // chunk, chunk
    qc, kc, vc = (t.view(N, c, L, d) for t in (q, k, v))
    ic = i_t.view(N, c, L)
    b = log_f.view(N, c, L).cumsum(-1)
    C_in, n_in, M_in, final, from_state, argmax = _chunk_states(kc, vc, ic, b, C0, n0, m0)
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    D = (b.unsqueeze(-1) - b.unsqueeze(-2) + ic.unsqueeze(-2)).masked_fill(~causal, -math.inf)  # (N, c, L, L)
    g = b + M_in.unsqueeze(-1)  # (N, c, L)
    m = torch.maximum(g, D.amax(-1))
    P = torch.exp(D - m.unsqueeze(-1))
    w = torch.exp(g - m)
    S = qc @ kc.transpose(-1, -2)  # (N, c, L, L)
    A = P * S
    qC = qc @ C_in.transpose(-1, -2)  # rows (C_j q_τ)ᵀ: (N, c, L, d)
    qn = (qc * n_in.unsqueeze(-2)).sum(-1)  # n_jᵀ q_τ: (N, c, L)
    num = w.unsqueeze(-1) * qC + A @ vc
    den = w * qn + A.sum(-1)
    floor = torch.exp(-m)
    kappa = torch.maximum(den.abs(), floor)
    h_tilde = num / kappa.unsqueeze(-1)
    cache = (qc, kc, vc, ic, b, C_in, n_in, M_in, final, from_state, argmax, P, w, S, A, qC, qn, den, floor,
             kappa, h_tilde)
    return h_tilde.view(N, T, d), final, cache


def mlstm_chunkwise_backward(dh_tilde: Tensor, dC_n: Tensor, dn_n: Tensor, dm_n: Tensor, cache: tuple):
    """Gradients of q, k, v, ĩ, log f (each like its input) and of C0, n0, m0."""
    (qc, kc, vc, ic, b, C_in, n_in, M_in, final, from_state, argmax, P, w, S, A, qC, qn, den, floor,
     kappa, h_tilde) = cache
    N, c, L, d = qc.shape
    dh = dh_tilde.view(N, c, L, d)
    # 1. the outputs, all chunks at once
    dnum = dh / kappa.unsqueeze(-1)  # h̃ = num / κ
    dkappa = -(dh * h_tilde).sum(-1) / kappa
    dden = torch.where(den.abs() >= floor, dkappa * torch.sign(den), 0.0)  # the floor's m: held fixed
    dw = (dnum * qC).sum(-1) + dden * qn  # num = w C q + A v,  den = w nᵀq + Σ A
    dA = dnum @ vc.transpose(-1, -2) + dden.unsqueeze(-1)
    dv = A.transpose(-1, -2) @ dnum
    dq = w.unsqueeze(-1) * (dnum @ C_in + dden.unsqueeze(-1) * n_in.unsqueeze(-2))
    dC_out = (w.unsqueeze(-1) * dnum).transpose(-1, -2) @ qc  # Σ_τ w dnum_τ q_τᵀ: (N, c, d, d)
    dn_out = ((w * dden).unsqueeze(-1) * qc).sum(-2)  # (N, c, d)
    dS, dP = dA * P, dA * S  # A = P ⊙ S
    dq = dq + dS @ kc  # S = Q Kᵀ
    dk = dS.transpose(-1, -2) @ qc
    dD = dP * P  # P = exp(D̃ - m), m fixed
    dg = dw * w
    db = dD.sum(-1) - dD.sum(-2) + dg  # D̃ = b_τ - b_σ + ĩ_σ,  g = b + M
    di = dD.sum(-2)
    dM_out = dg.sum(-1)  # (N, c)
    # 2. the chunk states, from the last chunk back
    b_end = b[..., -1]
    db_end = torch.zeros_like(b_end)
    C_next, n_next, M_next = final
    dC, dn, dM = dC_n, dn_n, dm_n
    rows = torch.arange(N, device=qc.device)
    for j in range(c - 1, -1, -1):
        C_prev, n_prev, M_prev = C_in[:, j], n_in[:, j], M_in[:, j]
        # the state after the chunk is e^{-M_next} times what it represents
        dM_tot = dM - (dC * C_next).sum((-1, -2)) - (dn * n_next).sum(-1)
        w_end = torch.exp(b_end[:, j] + M_prev - M_next)
        e = torch.exp(b_end[:, j].unsqueeze(-1) - b[:, j] + ic[:, j] - M_next.unsqueeze(-1))  # (N, L)
        dw_end = (dC * C_prev).sum((-1, -2)) + (dn * n_prev).sum(-1)
        dCk = torch.einsum("nij,nlj->nli", dC, kc[:, j])  # dC k_σ: (N, L, d)
        de = (vc[:, j] * dCk).sum(-1) + (kc[:, j] * dn.unsqueeze(1)).sum(-1)
        dv[:, j] += e.unsqueeze(-1) * dCk
        dk[:, j] += e.unsqueeze(-1) * (torch.einsum("nij,nli->nlj", dC, vc[:, j]) + dn.unsqueeze(1))
        x_end, x_e = dw_end * w_end, de * e  # gradients of the exponents
        db_end[:, j] += x_end + x_e.sum(-1)
        db[:, j] -= x_e
        di[:, j] += x_e
        keep = from_state[:, j]  # M_next = max(b_L + M_prev, max_σ(b_L - b_σ + ĩ_σ))
        db_end[:, j] += dM_tot
        dM_prev = x_end + torch.where(keep, dM_tot, 0.0)
        arg = argmax[:, j]
        moved = torch.where(keep, 0.0, dM_tot)
        db[rows, j, arg] -= moved
        di[rows, j, arg] += moved
        dC = w_end[:, None, None] * dC + dC_out[:, j]
        dn = w_end[:, None] * dn + dn_out[:, j]
        dM = dM_prev + dM_out[:, j]
        C_next, n_next, M_next = C_prev, n_prev, M_prev
    db[..., -1] += db_end
    dlog_f = db.flip(-1).cumsum(-1).flip(-1)  # b = cumsum(log f) inside the chunk
    T = c * L
    return (dq.reshape(N, T, d), dk.reshape(N, T, d), dv.reshape(N, T, d), di.reshape(N, T),
            dlog_f.reshape(N, T), dC, dn, dM)


def _to_heads(t: Tensor, reverse: bool) -> Tensor:
    """(T, B, NH, ...) → (B·NH, T, ...) in the order the steps are processed."""
    t = t.movedim(0, 2).flatten(0, 1)
    return t.flip(1) if reverse else t


def _from_heads(t: Tensor, B: int, reverse: bool) -> Tensor:
    """The inverse of :func:`_to_heads`."""
    t = t.flip(1) if reverse else t
    return t.unflatten(0, (B, -1)).movedim(2, 0)


def _chunkwise_layer(cell: MLSTMCell, lengths: Tensor | None, reverse: bool, chunk: int | None, u: Tensor,
                     C0: Tensor, n0: Tensor, m0: Tensor):
    """The forward of :class:`MLSTMChunkwise`: (out, h_n, C_n, n_n, m_n) and what its backward
    reads. Differentiable operations only, so that it is also the reference its backward hands
    over to under ``create_graph=True``."""
    T, B, _ = u.shape
    NH, d = cell.num_heads, cell.head_size
    q, k, v, i_t, f_t, o_t = cell.split(u)
    log_f = cell.log_forget(f_t)  # (T, B, NH)
    valid = None
    if lengths is not None:
        valid = torch.arange(T, device=u.device).unsqueeze(1) < lengths.to(u.device).unsqueeze(0)  # (T, B)
        i_t = i_t.masked_fill(~valid.unsqueeze(-1), -math.inf)  # a step past the length adds nothing
        log_f = log_f.masked_fill(~valid.unsqueeze(-1), 0.0)  # and forgets nothing
    L = T if chunk is None else min(chunk, T)
    pad = -T % L
    seq = [_to_heads(t, reverse) for t in (q, k, v, i_t, log_f)]  # (N, T, ...)
    if pad:
        fills = (0.0, 0.0, 0.0, -math.inf, 0.0)
        seq = [torch.cat((t, t.new_full((t.shape[0], pad, *t.shape[2:]), f)), 1) for t, f in zip(seq, fills)]
    h_tilde, (C_n, n_n, m_n), cache = mlstm_chunkwise(
        *seq, C0.reshape(B * NH, d, d), n0.reshape(B * NH, d), m0.reshape(B * NH), L)
    h_tilde = _from_heads(h_tilde[:, :T], B, reverse).flatten(-2)  # (T, B, H)
    o = torch.sigmoid(o_t)
    y = o * h_tilde
    out = y if valid is None else y * valid.unsqueeze(-1)
    if lengths is None or reverse:
        h_n = y[0] if reverse else y[-1]
    else:
        h_n = y[(lengths - 1).to(u.device), torch.arange(B, device=u.device)]
    outputs = (out, h_n.clone(), C_n.reshape(B, -1), n_n.reshape(B, -1), m_n.reshape(B, NH))
    return outputs, (pad, cache, valid, f_t, o, h_tilde)


class MLSTMChunkwise(torch.autograd.Function):
    """One direction of one mLSTM layer by the chunkwise form, from the input projection u
    (T, B, G) and the state (h0, C0, n0, m0), with the hand-written backward of
    :func:`mlstm_chunkwise_backward`. ``lengths`` (B,) or None; ``reverse``: process from
    the last step (each sequence from its own last step); ``chunk``: L, None for one chunk.
    Returns the output (T, B, H) (0 past a sequence's length) and the final state.

    Under ``create_graph=True`` (double backward) the backward is the chunkwise forward again
    under autograd, differentiated by :func:`~rnnkit.cells.base.differentiable_backward`."""

    @staticmethod
    def forward(ctx, cell: MLSTMCell, lengths: Tensor | None, reverse: bool, chunk: int | None, u: Tensor,
                h0: Tensor, C0: Tensor, n0: Tensor, m0: Tensor):
        outputs, (pad, cache, valid, f_t, o, h_tilde) = _chunkwise_layer(cell, lengths, reverse, chunk, u, C0, n0, m0)
        ctx.cell, ctx.lengths, ctx.reverse, ctx.chunk, ctx.pad = cell, lengths, reverse, chunk, pad
        ctx.cache, ctx.valid = cache, valid
        ctx.save_for_backward(u, h0, C0, n0, m0, f_t, o, h_tilde)
        return outputs

    @staticmethod
    def backward(ctx, dout, dh_n, dC_n, dn_n, dm_n):
        if torch.is_grad_enabled():  # create_graph=True: differentiate the forward under autograd
            def forward(u, h0, C0, n0, m0):
                return _chunkwise_layer(ctx.cell, ctx.lengths, ctx.reverse, ctx.chunk, u, C0, n0, m0)[0]

            return (None, None, None, None, *differentiable_backward(
                forward, ctx.saved_tensors[:5], ctx.needs_input_grad[4:], (dout, dh_n, dC_n, dn_n, dm_n)))
        cell: MLSTMCell = ctx.cell
        f_t, o, h_tilde = ctx.saved_tensors[5:]
        T, B, H = h_tilde.shape
        NH, d = cell.num_heads, cell.head_size
        valid = ctx.valid
        g = torch.zeros_like(h_tilde) if dout is None else dout.clone()
        if valid is not None:
            g = g * valid.unsqueeze(-1)
        if dh_n is not None:  # h_n is the output at the last processed step
            if ctx.lengths is None or ctx.reverse:
                g[0 if ctx.reverse else -1] += dh_n
            else:
                g[(ctx.lengths - 1).to(g.device), torch.arange(B, device=g.device)] += dh_n
        do = g * h_tilde  # y = o ⊙ h̃
        dh_tilde = _to_heads((g * o).unflatten(-1, (NH, d)), ctx.reverse)  # (N, T, d)
        if ctx.pad:
            dh_tilde = torch.cat((dh_tilde, dh_tilde.new_zeros(dh_tilde.shape[0], ctx.pad, d)), 1)
        zero = h_tilde.new_zeros(())
        dq, dk, dv, di, dlog_f, dC0, dn0, dm0 = mlstm_chunkwise_backward(
            dh_tilde, zero.expand(B * NH, d, d) if dC_n is None else dC_n.reshape(B * NH, d, d),
            zero.expand(B * NH, d) if dn_n is None else dn_n.reshape(B * NH, d),
            zero.expand(B * NH) if dm_n is None else dm_n.reshape(B * NH), ctx.cache)
        dq, dk, dv, di, dlog_f = (_from_heads(t[:, :T], B, ctx.reverse) for t in (dq, dk, dv, di, dlog_f))
        if valid is not None:  # the masked ĩ and log f were constants
            di = di * valid.unsqueeze(-1)
            dlog_f = dlog_f * valid.unsqueeze(-1)
        df_t = cell.log_forget_backward(dlog_f, f_t)
        du = torch.cat((dq.flatten(-2), dk.flatten(-2) / math.sqrt(d), dv.flatten(-2), di, df_t,
                        do * o * (1 - o)), -1)
        return (None, None, None, None, du, None, dC0.reshape(B, -1), dn0.reshape(B, -1), dm0.reshape(B, NH))
