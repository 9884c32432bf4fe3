"""Gated recurrent unit in both published forms, with optional layer normalization."""

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


class GRUCell(Cell):
    """GRU (Cho et al. 2014); gate order r, z, n as in torch.nn.GRU. φ is tanh.

    ``reset_after=True`` (torch.nn.GRU / cuDNN form: the reset gate scales the
    recurrent projection, so one GEMM per step serves all three gates):

        r = σ(xr + W_hr h + b_hr)      z = σ(xz + W_hz h + b_hz)
        n = φ(xn + r ⊙ (W_hn h + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h

    ``reset_after=False`` (the original form of Cho et al. 2014: the reset gate scales
    the state before its projection, a second GEMM per step):

        n = φ(xn + W_hn (r ⊙ h) + b_hn)

    With ``layer_norm`` each GEMM output is normalized (gain only; the biases follow):
    LN(W_ih x; γ_x), LN(W_h· h; γ_h) (for reset_after=False, the r,z block and the n
    block separately).

    BPTT, with dh' reaching the new state:

        dn = dh' ⊙ (1 - z)    dz = dh' ⊙ (h - n)    dh = dh' ⊙ z
        dn_a = dn ⊙ φ'
        after:  dr = dn_a ⊙ (W_hn h + b_hn),       drec_n = dn_a ⊙ r
        before: d(r⊙h) = W_hnᵀ dn_a,  dr = d(r⊙h) ⊙ h,  dh += d(r⊙h) ⊙ r,  drec_n = dn_a
        d(r, z)_a = (dr, dz) ⊙ σ'
        dh += W_hhᵀ drec,   dxw = (d(r,z)_a, dn_a)
    """

    gates = 3

    def __init__(
        self, hidden_size: int, bias: bool = True, reset_after: bool = True, layer_norm: bool = False
    ):
        super().__init__(hidden_size, bias)
        self.reset_after = reset_after
        self.layer_norm = layer_norm
        self.sig = get_activation("sigmoid")
        self.act = get_activation("tanh")

    @property
    def fold_bias_hh(self) -> bool:  # type: ignore[override]
        return not self.reset_after

    @property
    def drec_is_dxw(self) -> bool:  # type: ignore[override]
        return False

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        shapes = super().param_shapes(input_size)
        if self.layer_norm:
            shapes.update(ln_ih_weight=(3 * self.hidden_size,), ln_hh_weight=(3 * self.hidden_size,))
        return shapes

    # -- layer norm of the input projection ---------------------------------------------------
    def input_bias(self, p: Params) -> Tensor | None:
        return None if self.layer_norm else super().input_bias(p)

    def prepare_input(self, xw: Tensor, p: Params) -> tuple[Tensor, object]:
        if not self.layer_norm:
            return xw, None
        xn, cache = layer_norm(xw, p["ln_ih_weight"], None)  # (T, B, 3H)
        if self.bias:
            xn = xn + (p["bias_ih"] if self.reset_after else p["bias_ih"] + p["bias_hh"])
        return xn, cache

    def prepare_input_backward(self, dxw: Tensor, ctx: object, p: Params, grads: Params) -> Tensor:
        if not self.layer_norm:
            return dxw
        if self.bias:
            grads["bias_ih"] = dxw.sum((0, 1))
            if not self.reset_after:
                grads["bias_hh"] = grads["bias_ih"].clone()
        dxw, dgamma, _ = layer_norm_backward(dxw, ctx, p["ln_ih_weight"], None)
        grads["ln_ih_weight"] = dgamma
        return dxw

    def bias_grads(self, dxw_sum: Tensor, drec_sum: Tensor, grads: Params) -> None:
        if not self.layer_norm:
            super().bias_grads(dxw_sum, drec_sum, grads)

    def weight_hh_grad(self, drec: Tensor, rec_in: Tensor) -> Tensor:
        if self.reset_after:
            return drec.t() @ rec_in
        H = self.hidden_size
        # rec_in = (h, r ⊙ h): the r,z rows multiply h, the n rows multiply r ⊙ h
        return torch.cat((drec[:, : 2 * H].t() @ rec_in[:, :H], drec[:, 2 * H :].t() @ rec_in[:, H:]))

    # -- the step -----------------------------------------------------------------------------
    def _rec(self, inp: Tensor, w: Tensor, gamma: Tensor | None, b: Tensor | None):
        """One recurrent GEMM, layer-normalized if configured: (output, ln cache)."""
        a = inp @ w.t()
        if gamma is not None:
            a, cache = layer_norm(a, gamma, None)
        else:
            cache = None
        return (a if b is None else a + b), cache

    def _rec_backward(self, da: Tensor, cache, gamma: Tensor | None, grads: Params, sl: slice) -> Tensor:
        if cache is None:
            return da
        draw, dgamma, _ = layer_norm_backward(da, cache, gamma[sl], None)
        if "ln_hh_weight" not in grads:
            grads["ln_hh_weight"] = torch.zeros(3 * self.hidden_size, dtype=da.dtype, device=da.device)
        grads["ln_hh_weight"][sl] += dgamma
        return draw

    # with a workspace (cells/base.py) r, z, n are formed in place over the step's input
    # projection, so that one (T, B, 3H) buffer holds x W_ihᵀ + b, then the gates
    uses_workspace = True

    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None,
             ws: Workspace = NO_WORKSPACE) -> tuple[State, tuple]:
        (h,) = state
        H = self.hidden_size
        hr = h if rmask is None else torch.mul(h, rmask, out=ws.view("hr", h))
        w = p["weight_hh"]
        gamma = p.get("ln_hh_weight")
        x_rz, x_n = xw[:, : 2 * H], xw[:, 2 * H :]
        if self.reset_after:
            b = p["bias_hh"] if self.bias else None
            if gamma is None:
                out = ws.view("rec", xw)
                rec = torch.mm(hr, w.t(), out=out) if b is None else torch.addmm(b, hr, w.t(), out=out)  # (B, 3H)
                ln = None
            else:
                rec, ln = self._rec(hr, w, gamma, b)
            rz = self.sig.forward(torch.add(x_rz, rec[:, : 2 * H], out=ws.reuse(x_rz)), out=ws.reuse(x_rz))  # (B, 2H)
            r, z = rz[:, :H], rz[:, H:]
            rec_n = rec[:, 2 * H :]
            n = self.act.forward(torch.addcmul(x_n, r, rec_n, out=ws.reuse(x_n)), out=ws.reuse(x_n))
            rec_in, extra = hr, (rec_n, ln)
        else:
            if gamma is None:  # the r, z GEMM accumulates straight onto the input projection
                a_rz = torch.addmm(x_rz, hr, w[: 2 * H].t(), out=ws.reuse(x_rz))
                ln_rz = None
            else:
                a_rz, ln_rz = self._rec(hr, w[: 2 * H], gamma[: 2 * H], None)
                a_rz = torch.add(x_rz, a_rz, out=ws.reuse(x_rz))
            rz = self.sig.forward(a_rz, out=ws.reuse(a_rz))
            r, z = rz[:, :H], rz[:, H:]
            rh = r * hr
            if gamma is None:
                a_n = torch.addmm(x_n, rh, w[2 * H :].t(), out=ws.reuse(x_n))
                ln_n = None
            else:
                a_n, ln_n = self._rec(rh, w[2 * H :], gamma[2 * H :], None)
                a_n = torch.add(x_n, a_n, out=ws.reuse(x_n))
            n = self.act.forward(a_n, out=ws.reuse(a_n))
            rec_in = torch.cat((hr, rh), 1, out=ws.view("rec_in", hr, (hr.shape[0], 2 * H)))
            extra = (ln_rz, ln_n)
        h_new = torch.addcmul(n, z, h - n, out=ws.view("out", h))  # (1 - z) ⊙ n + z ⊙ h
        return (h_new,), (rec_in, h, rz, n, extra)

    def step_backward(self, dstate, cache, p, grads, rmask, ws: Workspace = NO_WORKSPACE):
        (dh_new,) = dstate
        rec_in, h, rz, n, extra = cache
        B, H = h.shape
        r, z = rz[:, :H], rz[:, H:]
        w = p["weight_hh"]
        gamma = p.get("ln_hh_weight")
        dxw = ws.out("dxw", h, (B, 3 * H))  # (B, 3H), written gate by gate below
        dr_a, dz_a, dn_a = dxw.unflatten(1, (3, H)).unbind(1)
        self.act.backward(dh_new - dh_new * z, n, out=dn_a)  # dn = dh' ⊙ (1 - z)
        dz = dh_new * (h - n)
        dh = dh_new * z
        if self.reset_after:
            rec_n, ln = extra
            self.sig.backward(dn_a * rec_n, r, out=dr_a)
            self.sig.backward(dz, z, out=dz_a)
            drec = ws.out("drec", h, (B, 3 * H))  # (B, 3H) gradient of W_hh h + b_hh
            drec[:, : 2 * H].copy_(dxw[:, : 2 * H])
            torch.mul(dn_a, r, out=drec[:, 2 * H :])
            if self.layer_norm and self.bias:
                accumulate(grads, "bias_hh", drec.sum(0))
            drec = self._rec_backward(drec, ln, gamma, grads, slice(None))
            dhr = drec @ w
        else:
            ln_rz, ln_n = extra
            hr = rec_in[:, :H]
            dn_raw = self._rec_backward(dn_a, ln_n, gamma, grads, slice(2 * H, None))
            drh = dn_raw @ w[2 * H :]  # (B, H) gradient of r ⊙ h
            self.sig.backward(drh * hr, r, out=dr_a)
            self.sig.backward(dz, z, out=dz_a)
            drz_a = dxw[:, : 2 * H]
            drz_raw = self._rec_backward(drz_a, ln_rz, gamma, grads, slice(0, 2 * H))
            dhr = torch.addcmul(drz_raw @ w[: 2 * H], drh, r)
            drec = torch.cat((drz_raw, dn_raw), 1, out=ws.view("drec", h, (B, 3 * H)))
        if rmask is not None:
            dhr.mul_(rmask)
        return dxw, (dh.add_(dhr),), drec

    def native_binding(self) -> NativeBinding | None:
        """The C++ loop (``rnnkit/cells/native/gru.cpp``, with layer norm ``gru_ln.cpp``) runs
        both forms, with or without layer norm."""
        return _NativeGRU(self)

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        rz, n = cache[2], cache[3]
        H = self.hidden_size
        return {"r": rz[:, :H], "z": rz[:, H:], "n": n}

    def extra_repr(self) -> str:
        parts = [f"hidden_size={self.hidden_size}"]
        if not self.reset_after:
            parts.append("reset_after=False")
        if self.layer_norm:
            parts.append("layer_norm=True")
        return ", ".join(parts)


class _NativeGRU(NativeBinding):
    """:class:`GRUCell` on ``gru_forward`` / ``gru_backward`` (``rnnkit/cells/native/gru.cpp``;
    arguments and named results in ``common.h``) and, with layer norm, on ``gru_ln_forward`` /
    ``gru_ln_backward`` (``gru_ln.cpp``, ``gru_ln.h``). dW_hh from the C++ backward's drec:

        after:  dW_hh = Σ_t drecᵀ hr
        before: dW_h(r,z) = Σ_t drec_(r,z)ᵀ hr,   dW_hn = Σ_t drec_nᵀ (r ⊙ hr)   (aux = r ⊙ hr)

    With layer norm the loop normalizes the input projection too (:attr:`prepares_input`): it
    takes the raw x W_ihᵀ and normalizes step t's rows in the gate pass, next to the recurrent
    GEMM's rows, so the engine's :meth:`GRUCell.prepare_input` (a layer norm over all T·B rows
    before the loop, its backward after it) does not run. drec is then the gradient of the raw
    GEMM outputs (through the norms), and the loop sums dγ_x, dγ_h and the biases' gradients
    (b_ih, and b_hh: reset_after its own sum, as it follows the recurrent norm; reset_before
    b_ih's, as it is folded into the input's bias) in its gate passes.
    """

    cell: GRUCell

    @property
    def prepares_input(self) -> bool:  # type: ignore[override]
        return self.cell.layer_norm

    def _norms(self, p: Params) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """γ_x, γ_h, the input's bias b_x (b_ih, reset_before + b_hh; zeros without bias) and
        b_hh where it follows the recurrent norm (reset_after with bias, else None)."""
        cell = self.cell
        gx = p["ln_ih_weight"].contiguous()
        if not cell.bias:
            return gx, p["ln_hh_weight"].contiguous(), torch.zeros_like(gx), None
        if cell.reset_after:
            return gx, p["ln_hh_weight"].contiguous(), p["bias_ih"].contiguous(), p["bias_hh"].contiguous()
        return gx, p["ln_hh_weight"].contiguous(), p["bias_ih"] + p["bias_hh"], None

    def forward(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool,
                keep: bool) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        cell = self.cell
        if cell.layer_norm:  # xw: the raw x W_ihᵀ, read again by the backward
            res = ext.gru_ln_forward(xw, state0[0].contiguous(), p["weight_hh"].contiguous(), masks.rmask,
                                     masks.valid, masks.zoneout[0], *self._norms(p), cell.reset_after, reverse, keep)
            saved = {"xw": xw, **res}
        else:  # xw: overwritten with r, z, n
            b_hh = p["bias_hh"].contiguous() if cell.bias and cell.reset_after else None
            res = ext.gru_forward(xw, state0[0].contiguous(), p["weight_hh"].contiguous(), b_hh, masks.rmask,
                                  masks.valid, masks.zoneout[0], cell.reset_after, reverse, keep)
            saved = {"gates": xw, **res}
        out, h_n = saved.pop("out"), saved.pop("h")
        return out, (h_n,), (saved if keep else {})

    def infer(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool) -> dict[str, Tensor]:
        """``gru_infer`` (``rnnkit/cells/native/infer.cpp``), both forms; with layer norm the
        training loop's forward, keeping nothing (``gru_infer`` has no layer norm)."""
        cell = self.cell
        if cell.layer_norm:
            return super().infer(ext, xw, state0, p, masks, reverse)
        b_hh = p["bias_hh"].contiguous() if cell.bias and cell.reset_after else None
        return ext.gru_infer(xw, state0[0], p["weight_hh"].contiguous(), b_hh, masks.rmask, masks.valid,
                             masks.zoneout[0], cell.reset_after, reverse)

    def step_layer(self, p: Params) -> tuple[str, list[Tensor | None]] | None:
        cell = self.cell
        if cell.layer_norm:  # StackStep has no layer norm
            return None
        if cell.reset_after:  # b_hh inside the step (n = tanh(x_n + r ⊙ (h W_hnᵀ + b_hn)))
            return "gru", [p["weight_ih"], p["weight_hh"], cell.input_bias(p), p["bias_hh"] if cell.bias else None]
        return "gru_before", [p["weight_ih"], p["weight_hh"], cell.input_bias(p)]

    def backward(self, ext, saved: dict[str, Tensor | None], dout: Tensor | None, dstate: State, p: Params,
                 masks, reverse: bool) -> tuple[Tensor, State, Params]:
        cell = self.cell
        w_hh = p["weight_hh"].contiguous()
        grads: Params = {}
        if cell.layer_norm:
            gx, gh, _, b_hh = self._norms(p)
            res = ext.gru_ln_backward(dout, dstate[0], saved, w_hh, masks.rmask, masks.valid, masks.zoneout[0],
                                      gx, gh, b_hh, cell.reset_after, reverse)
            grads.update(ln_ih_weight=res["ln_dgamma_x"], ln_hh_weight=res["ln_dgamma_h"])
            if cell.bias:
                grads["bias_ih"] = res["dbias_x"]
                grads["bias_hh"] = res["dbias_h"] if cell.reset_after else res["dbias_x"].clone()
        else:
            res = ext.gru_backward(dout, dstate[0], saved, w_hh, masks.rmask, masks.valid, masks.zoneout[0],
                                   cell.reset_after, reverse)
        dxw, drec = res["dxw"], res["drec"]  # (T, B, 3H) each: d(xw), d of the recurrent GEMM outputs
        T, B = dxw.shape[:2]
        H = cell.hidden_size
        dr2 = drec.view(T * B, 3 * H)
        hr2 = saved["hr"].view(T * B, H)
        if cell.reset_after:
            grads["weight_hh"] = dr2.t() @ hr2
        else:  # the r,z rows multiply hr, the n rows r ⊙ hr
            grads["weight_hh"] = torch.cat((dr2[:, :2 * H].t() @ hr2, dr2[:, 2 * H:].t() @ saved["aux"].view(T * B, H)))
        if not cell.layer_norm:
            cell.bias_grads(dxw.sum((0, 1)), drec.sum((0, 1)), grads)
        return dxw, (res["dh0"],), grads
