"""Long short-term memory, with peepholes, projection and layer normalization."""

from __future__ import annotations

import torch
from torch import Tensor

from .activations import get_activation
from .base import (
    NO_WORKSPACE,
    Cell,
    NativeBinding,
    Params,
    State,
    Workspace,
    accumulate,
    layer_norm,
    layer_norm_backward,
)


class LSTMCell(Cell):
    """LSTM (Hochreiter & Schmidhuber 1997) with the forget gate (Gers et al. 2000);
    gate order i, f, g, o as in torch.nn.LSTM. σ is ``recurrent_activation`` (sigmoid),
    φ is ``activation`` (tanh).

        i = σ(xi + W_hi h [+ w_ci ⊙ c])      f = σ(xf + W_hf h [+ w_cf ⊙ c])
        g = φ(xg + W_hg h)
        c' = f ⊙ c + i ⊙ g
        o = σ(xo + W_ho h [+ w_co ⊙ c'])
        h' = o ⊙ φ(c')                        [h' = W_hr h'  with proj_size]

    Peepholes (Gers & Schmidhuber 2000) are the bracketed diagonal terms. With
    ``layer_norm`` (Ba et al. 2016) the two projections and the cell are normalized:
    gates = LN(W_ih x; γ_x) + LN(W_hh h; γ_h) + b and h' = o ⊙ φ(LN(c'; γ_c, β_c)).

    BPTT, with dh', dc' the gradients reaching the new state:

        [dh' ← W_hrᵀ dh',  dW_hr += dh' (o ⊙ φ(c'))ᵀ]
        do  = dh' ⊙ φ(c')                     do_a = do ⊙ σ'
        dc  = dc' + dh' ⊙ o ⊙ φ'(c') [+ w_co ⊙ do_a]
        di  = dc ⊙ g     df = dc ⊙ c     dg = dc ⊙ i
        dc_prev = dc ⊙ f [+ w_ci ⊙ di_a + w_cf ⊙ df_a]
        dgates = (di ⊙ σ', df ⊙ σ', dg ⊙ φ', do_a)
        dh_prev = W_hhᵀ dgates,   dxw = dgates
    """

    gates = 4
    state_names = ("h", "c")

    def __init__(
        self,
        hidden_size: int,
        bias: bool = True,
        proj_size: int = 0,
        peephole: bool = False,
        layer_norm: bool = False,
        activation: str = "tanh",
        recurrent_activation: str = "sigmoid",
    ):
        super().__init__(hidden_size, bias)
        if proj_size < 0 or proj_size >= hidden_size and proj_size != 0:
            raise ValueError(f"proj_size must be in 0..{hidden_size - 1}, got {proj_size}")
        self.proj_size = proj_size
        self.peephole = peephole
        self.layer_norm = layer_norm
        self.act = get_activation(activation)
        self.sig = get_activation(recurrent_activation)

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def state_sizes(self) -> tuple[int, ...]:
        return (self.output_size, self.hidden_size)

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        H = self.hidden_size
        shapes = super().param_shapes(input_size)
        if self.proj_size:
            shapes["weight_hr"] = (self.proj_size, H)
        if self.peephole:
            shapes.update(weight_ci=(H,), weight_cf=(H,), weight_co=(H,))
        if self.layer_norm:
            shapes.update(ln_ih_weight=(4 * H,), ln_hh_weight=(4 * H,), ln_c_weight=(H,), ln_c_bias=(H,))
        return shapes

    # -- layer norm of the input projection, for all steps at once --------------------------
    def input_bias(self, p: Params) -> Tensor | None:
        return None if self.layer_norm else super().input_bias(p)

    def prepare_input(self, xw: Tensor, p: Params) -> tuple[Tensor, object]:
        if not self.layer_norm:
            return xw, None
        # LN(x W_ihᵀ; γ_x) + b as one layer norm whose bias is b_ih + b_hh (one pass, one tensor)
        b = p["bias_ih"] + p["bias_hh"] if self.bias else None
        return layer_norm(xw, p["ln_ih_weight"], b)  # (T, B, 4H)

    def prepare_input_backward(self, dxw: Tensor, ctx: object, p: Params, grads: Params) -> Tensor:
        if not self.layer_norm:
            return dxw
        dxw, dgamma, db = layer_norm_backward(dxw, ctx, p["ln_ih_weight"], p["bias_ih"] if self.bias else None)
        grads["ln_ih_weight"] = dgamma
        if self.bias:
            grads["bias_ih"], grads["bias_hh"] = db, db.clone()
        return dxw

    def bias_grads(self, dxw_sum: Tensor, drec_sum: Tensor, grads: Params) -> None:
        if not self.layer_norm:
            super().bias_grads(dxw_sum, drec_sum, grads)

    @property
    def drec_is_dxw(self) -> bool:  # type: ignore[override]
        return not self.layer_norm

    # -- the step -----------------------------------------------------------------------------
    # With a workspace (see cells/base.py) the gates are computed in place over the step's
    # slice of the input projection, so that one (T, B, 4H) buffer holds x W_ihᵀ + b, then
    # the pre-activations, then i, f, g, o for the backward.
    uses_workspace = True

    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None,
             ws: Workspace = NO_WORKSPACE) -> tuple[State, tuple]:
        h, c = state
        H = self.hidden_size
        hr = h if rmask is None else torch.mul(h, rmask, out=ws.view("hr", h))
        if self.layer_norm:
            rec_n, ln_h = layer_norm(hr @ p["weight_hh"].t(), p["ln_hh_weight"], None)
            gates = torch.add(xw, rec_n, out=ws.reuse(xw))  # (B, 4H)
        else:
            gates, ln_h = torch.addmm(xw, hr, p["weight_hh"].t(), out=ws.reuse(xw)), None  # (B, 4H)
        a_if, a_g, a_o = gates[:, : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
        if self.peephole:  # (xi, xf) += (w_ci, w_cf) ⊙ c
            w_cif = torch.stack((p["weight_ci"], p["weight_cf"]))  # (2, H)
            a_if = torch.addcmul(a_if.unflatten(1, (2, H)), w_cif, c.unsqueeze(1),
                                 out=ws.reuse(a_if.unflatten(1, (2, H)))).flatten(1)
        i_f = self.sig.forward(a_if, out=ws.reuse(a_if))  # (B, 2H)
        i, f = i_f[:, :H], i_f[:, H:]
        g = self.act.forward(a_g, out=ws.reuse(a_g))
        c_new = torch.mul(f, c, out=ws.view("c", c)).addcmul_(i, g)  # (B, H) f ⊙ c + i ⊙ g
        if self.peephole:
            a_o = torch.addcmul(a_o, p["weight_co"], c_new, out=ws.reuse(a_o))
        o = self.sig.forward(a_o, out=ws.reuse(a_o))
        if self.layer_norm:
            cn, ln_c = layer_norm(c_new, p["ln_c_weight"], p["ln_c_bias"])
        else:
            cn, ln_c = c_new, None
        tc = self.act.forward(cn, out=ws.view("tc", cn))
        if self.proj_size:
            h_full = torch.mul(o, tc, out=ws.view("h_full", tc))  # (B, H)
            h_new = torch.mm(h_full, p["weight_hr"].t(), out=ws.view("out", h, (h.shape[0], self.proj_size)))
        else:
            h_full = h_new = torch.mul(o, tc, out=ws.view("out", tc))  # (B, H)
        return (h_new, c_new), (hr, i_f, g, o, c, c_new, tc, h_full, ln_h, ln_c)

    def step_backward(self, dstate, cache, p, grads, rmask, ws: Workspace = NO_WORKSPACE):
        dh, dc_next = dstate
        hr, i_f, g, o, c, c_new, tc, h_full, ln_h, ln_c = cache
        B, H = c.shape
        dgates = ws.out("dxw", c, (B, 4 * H))  # (B, 4H), written gate by gate below
        di_a, df_a, dg_a, do_a = dgates.unflatten(1, (4, H)).unbind(1)
        if self.proj_size:
            accumulate(grads, "weight_hr", dh.t() @ h_full)
            dh = dh @ p["weight_hr"]  # (B, H)
        self.sig.backward(dh * tc, o, out=do_a)  # do = dh' ⊙ φ(c')
        dcn = self.act.backward(dh * o, tc)
        if self.layer_norm:
            dcn, dgc, dbc = layer_norm_backward(dcn, ln_c, p["ln_c_weight"], p["ln_c_bias"])
            accumulate(grads, "ln_c_weight", dgc)
            accumulate(grads, "ln_c_bias", dbc)
        dc = dcn.add_(dc_next)
        if self.peephole:
            dc.addcmul_(do_a, p["weight_co"])
            accumulate(grads, "weight_co", (do_a * c_new).sum(0))
        i, f = i_f[:, :H], i_f[:, H:]
        self.sig.backward(dc * g, i, out=di_a)
        self.sig.backward(dc * c, f, out=df_a)
        self.act.backward(dc * i, g, out=dg_a)
        dc_prev = dc * f
        if self.peephole:
            dc_prev.addcmul_(di_a, p["weight_ci"]).addcmul_(df_a, p["weight_cf"])
            accumulate(grads, "weight_ci", (di_a * c).sum(0))
            accumulate(grads, "weight_cf", (df_a * c).sum(0))
        if self.layer_norm:
            drec, dgh, _ = layer_norm_backward(dgates, ln_h, p["ln_hh_weight"], None)
            accumulate(grads, "ln_hh_weight", dgh)
        else:
            drec = dgates
        dh_prev = drec @ p["weight_hh"]  # (B, R)
        if rmask is not None:
            dh_prev.mul_(rmask)
        return dgates, (dh_prev, dc_prev), drec

    def native_binding(self) -> NativeBinding | None:
        """The C++ loop (``rnnkit/cells/native/lstm.cpp``, with layer norm ``lstm_ln.cpp``) runs
        σ = sigmoid and φ = tanh, with any of peepholes, projection and layer norm."""
        if self.sig.name == "sigmoid" and self.act.name == "tanh":
            return _NativeLSTM(self)
        return None

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        _, i_f, g, o = cache[:4]
        H = self.hidden_size
        return {"i": i_f[:, :H], "f": i_f[:, H:], "g": g, "o": o}

    def extra_repr(self) -> str:
        parts = [f"hidden_size={self.hidden_size}"]
        if self.proj_size:
            parts.append(f"proj_size={self.proj_size}")
        if self.peephole:
            parts.append("peephole=True")
        if self.layer_norm:
            parts.append("layer_norm=True")
        if self.act.name != "tanh":
            parts.append(f"activation={self.act.name!r}")
        if self.sig.name != "sigmoid":
            parts.append(f"recurrent_activation={self.sig.name!r}")
        return ", ".join(parts)


class _NativeLSTM(NativeBinding):
    """:class:`LSTMCell` on ``lstm_forward`` / ``lstm_backward`` (``rnnkit/cells/native/lstm.cpp``;
    arguments and named results in ``common.h``) and, with layer norm, on ``lstm_ln_forward`` /
    ``lstm_ln_backward`` (``lstm_ln.cpp``, ``lstm_ln.h``). The C++ backward returns the
    gradients of the pre-activations; the parameter gradients are formed here, one GEMM or
    reduction each:

        dW_hh = Σ_t drecᵀ hr          (drec = dgates without layer norm, hr = h_{t-1} ⊙ rmask)
        dW_hr = Σ_t dhᵀ h_full        (h_full = o ⊙ φ(c') before the projection)
        dw_ci = Σ_t di_a ⊙ c_{t-1}     dw_cf = Σ_t df_a ⊙ c_{t-1}     dw_co = Σ_t do_a ⊙ c_t

    With layer norm the loop normalizes the input projection too (:attr:`prepares_input`): it
    takes the raw x W_ihᵀ and normalizes step t's rows in the gate pass, next to the recurrent
    GEMM's rows, so the engine's :meth:`LSTMCell.prepare_input` (a layer norm over all T·B rows
    before the loop, its backward after it) does not run. The loop sums the norms' parameter
    gradients, the peepholes' and the bias's (db_ih = db_hh = Σ d(pre-activation): b follows
    both norms) in its gate pass. Without layer norm the loop sums the peepholes' gradients in
    its gate pass too ("dpeep").
    """

    cell: LSTMCell

    @property
    def prepares_input(self) -> bool:  # type: ignore[override]
        return self.cell.layer_norm

    def _weights(self, p: Params) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """W_hh, W_hr (or None) and the peepholes as one (3, H) tensor (or None), contiguous."""
        cell = self.cell
        w_hr = p["weight_hr"].contiguous() if cell.proj_size else None
        peep = torch.stack((p["weight_ci"], p["weight_cf"], p["weight_co"])) if cell.peephole else None
        return p["weight_hh"].contiguous(), w_hr, peep

    def _norms(self, p: Params) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The layer norms' parameters: γ_x, γ_h, b = b_ih + b_hh (zeros without bias), γ_c, β_c."""
        gx = p["ln_ih_weight"].contiguous()
        b = p["bias_ih"] + p["bias_hh"] if self.cell.bias else torch.zeros_like(gx)
        return gx, p["ln_hh_weight"].contiguous(), b, p["ln_c_weight"].contiguous(), p["ln_c_bias"].contiguous()

    def forward(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool,
                keep: bool) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        h0, c0 = state0
        w_hh, w_hr, peep = self._weights(p)
        zh, zc = masks.zoneout
        args = (xw, h0.contiguous(), c0.contiguous(), w_hh, w_hr, peep, masks.rmask, masks.valid, zh, zc)
        if self.cell.layer_norm:  # xw: the raw x W_ihᵀ, read again by the backward
            res = ext.lstm_ln_forward(*args, *self._norms(p), reverse, keep)
            saved = {"xw": xw, **res}
        else:  # xw: overwritten with the activated gates
            res = ext.lstm_forward(*args, reverse, keep)
            saved = {"gates": xw, **res}
        out, h_n, c_n = saved.pop("out"), saved.pop("h"), saved.pop("c")
        return out, (h_n, c_n), (saved if keep else {})

    def infer(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool) -> dict[str, Tensor]:
        """``lstm_infer`` (``rnnkit/cells/native/infer.cpp``) with peepholes and projection; with
        layer norm the training loop's forward, keeping nothing."""
        if self.cell.layer_norm:
            return super().infer(ext, xw, state0, p, masks, reverse)
        h0, c0 = state0
        w_hh, w_hr, peep = self._weights(p)
        zh, zc = masks.zoneout
        return ext.lstm_infer(xw, h0, c0, w_hh, w_hr, peep, masks.rmask, masks.valid, zh, zc, reverse)

    def library_infer(self, x: Tensor, state0: State, p: Params, masks,
                      reverse: bool) -> tuple[Tensor, State] | None:
        """torch's own LSTM (``torch._VF.lstm``, what ``torch.nn.LSTM`` calls) for the options it
        computes with the same equations and weight layout (gate order i, f, g, o): no
        peepholes, projection or layer norm, no recurrent dropout, zoneout or lengths. It runs
        where it was measured faster than ``lstm_infer`` (docs/performance.md): float32 on
        oneDNN's fused LSTM (weights packed once for all steps; torch uses it when
        ``torch.backends.mkldnn`` is available and enabled) and float64 (ATen's loop). The
        reverse direction runs it on the time-reversed input. With projection or lengths
        torch's own loop is the slower one, and ``lstm_infer`` runs. Under a Python dispatch
        mode (``rnnkit bench``'s record of the products) ``lstm_infer`` runs too: its products
        go through the dispatcher there, oneDNN's would be invisible."""
        cell = self.cell
        if (cell.peephole or cell.proj_size or cell.layer_norm or masks.rmask is not None or masks.valid is not None
                or any(z is not None for z in masks.zoneout) or torch._C._len_torch_dispatch_stack()):
            return None
        if x.dtype != torch.float64 and not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
            return None
        h0, c0 = state0
        weights = [p["weight_ih"], p["weight_hh"]] + ([p["bias_ih"], p["bias_hh"]] if cell.bias else [])
        xs = x.flip(0) if reverse else x  # (T, B, I)
        out, h_n, c_n = torch._VF.lstm(xs, (h0.unsqueeze(0), c0.unsqueeze(0)), weights, cell.bias, 1, 0.0,
                                       False, False, False)
        return (out.flip(0) if reverse else out), (h_n[0], c_n[0])

    def step_layer(self, p: Params) -> tuple[str, list[Tensor | None]] | None:
        cell = self.cell
        if cell.layer_norm:
            return None
        _, w_hr, peep = self._weights(p)
        return "lstm", [p["weight_ih"], p["weight_hh"], cell.input_bias(p), w_hr, peep]

    def backward(self, ext, saved: dict[str, Tensor | None], dout: Tensor | None, dstate: State, p: Params,
                 masks, reverse: bool) -> tuple[Tensor, State, Params]:
        cell = self.cell
        w_hh, w_hr, peep = self._weights(p)
        zh, zc = masks.zoneout
        args = (dout, dstate[0], dstate[1], saved, w_hh, w_hr, peep, masks.rmask, masks.valid, zh, zc)
        hr = saved["hr"]  # (T, B, P)
        T, B, P = hr.shape
        H = cell.hidden_size
        grads: Params = {}
        if cell.layer_norm:
            gx, gh, _, gc, bc = self._norms(p)
            res = ext.lstm_ln_backward(*args, gx, gh, gc, bc, reverse)
            dxw, drec = res["dxw"], res["drec"]  # d(x W_ihᵀ), d(hr W_hhᵀ)
            grads.update(ln_ih_weight=res["ln_dgamma_x"], ln_hh_weight=res["ln_dgamma_h"],
                         ln_c_weight=res["ln_dgamma_c"], ln_c_bias=res["ln_dbeta_c"])
            if cell.bias:
                grads["bias_ih"], grads["bias_hh"] = res["dbias"], res["dbias"].clone()
        else:
            res = ext.lstm_backward(*args, reverse)
            dxw = drec = res["dgates"]  # (T, B, 4H)
            dsum = dxw.sum((0, 1))
            cell.bias_grads(dsum, dsum, grads)
        if cell.peephole:  # summed in the C++ backward's gate pass
            grads["weight_ci"], grads["weight_cf"], grads["weight_co"] = res["dpeep"].unbind(0)
        grads["weight_hh"] = drec.view(T * B, 4 * H).t() @ hr.view(T * B, P)
        if cell.proj_size:
            grads["weight_hr"] = res["dh"].view(T * B, P).t() @ saved["h_full"].view(T * B, H)
        return dxw, (res["dh0"], res["dc0"]), grads
