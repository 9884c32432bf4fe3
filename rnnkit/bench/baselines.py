"""What users write today: each variant as a plain PyTorch loop over time under autograd.

These are the "Python loop" column of ``rnnkit bench``. They are written the way a
user writes a custom RNN cell (a ``for t in range(T)`` loop, one ``torch.cat``/slice
per gate, autograd for the backward), not tuned. Their parameters have the names and
shapes of the matching rnnkit layer, so ``baseline.load_state_dict(layer.state_dict())``
gives the same function (the tests check that outputs agree). Random masks (recurrent
dropout, zoneout) are drawn in the same order as rnnkit draws them, so with the same
seed the training-mode outputs agree too.

Input (T, B, I), single layer, unidirectional, zero initial state; returns (output
(T, B, R), final hidden state).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.recurrent import zoneout_masks


class _LoopBase(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, gates: int, rec_size: int | None = None):
        super().__init__()
        H, R = hidden_size, rec_size or hidden_size
        self.hidden_size = H
        self.weight_ih_l0 = nn.Parameter(torch.empty(gates * H, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(gates * H, R))
        self.bias_ih_l0 = nn.Parameter(torch.empty(gates * H))
        self.bias_hh_l0 = nn.Parameter(torch.empty(gates * H))

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _dropout_mask(self, B: int, R: int, rate: float, like: Tensor) -> Tensor | None:
        if not (self.training and rate):
            return None
        keep = 1.0 - rate
        return torch.bernoulli(torch.full((B, R), keep, dtype=like.dtype, device=like.device)) / keep

    def _zoneout_masks(self, T: int, sizes: tuple[int, ...], rate: float, like: Tensor) -> list[Tensor] | list[float]:
        if self.training:  # drawn as rnnkit draws them (the same masks from the same seed)
            return zoneout_masks([(T, like.shape[1], size) for size in sizes], rate, like.dtype, like.device)
        return [rate] * len(sizes)


class LoopRNN(_LoopBase):
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)"""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size, 1)
        self.reset_parameters()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        T, B, _ = x.shape
        h = x.new_zeros(B, self.hidden_size)
        outputs = []
        for t in range(T):
            h = torch.tanh(F.linear(x[t], self.weight_ih_l0, self.bias_ih_l0)
                           + F.linear(h, self.weight_hh_l0, self.bias_hh_l0))
            outputs.append(h)
        return torch.stack(outputs), h


class LoopLSTM(_LoopBase):
    """The LSTM of torch.nn.LSTM plus the variants rnnkit offers: peepholes on c, layer
    normalization of both projections and of the cell, a projection of h, recurrent
    (variational) dropout on h in the recurrent product, zoneout of h and c."""

    def __init__(self, input_size: int, hidden_size: int, peephole: bool = False, layer_norm: bool = False,
                 proj_size: int = 0, recurrent_dropout: float = 0.0, zoneout: float = 0.0):
        super().__init__(input_size, hidden_size, 4, proj_size or hidden_size)
        H = hidden_size
        self.peephole, self.layer_norm, self.proj_size = peephole, layer_norm, proj_size
        self.recurrent_dropout, self.zoneout = recurrent_dropout, zoneout
        if proj_size:
            self.weight_hr_l0 = nn.Parameter(torch.empty(proj_size, H))
        if peephole:
            self.weight_ci_l0 = nn.Parameter(torch.empty(H))
            self.weight_cf_l0 = nn.Parameter(torch.empty(H))
            self.weight_co_l0 = nn.Parameter(torch.empty(H))
        if layer_norm:
            self.ln_ih_weight_l0 = nn.Parameter(torch.ones(4 * H))
            self.ln_hh_weight_l0 = nn.Parameter(torch.ones(4 * H))
            self.ln_c_weight_l0 = nn.Parameter(torch.ones(H))
            self.ln_c_bias_l0 = nn.Parameter(torch.zeros(H))
        self.reset_parameters()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        T, B, _ = x.shape
        H, R = self.hidden_size, self.proj_size or self.hidden_size
        h, c = x.new_zeros(B, R), x.new_zeros(B, H)
        mask = self._dropout_mask(B, R, self.recurrent_dropout, x)
        if self.zoneout:
            zh, zc = self._zoneout_masks(T, (R, H), self.zoneout, x)
        outputs = []
        for t in range(T):
            h_in = h if mask is None else h * mask
            if self.layer_norm:
                gates = (F.layer_norm(x[t] @ self.weight_ih_l0.t(), (4 * H,), self.ln_ih_weight_l0)
                         + F.layer_norm(h_in @ self.weight_hh_l0.t(), (4 * H,), self.ln_hh_weight_l0)
                         + self.bias_ih_l0 + self.bias_hh_l0)
            else:
                gates = (F.linear(x[t], self.weight_ih_l0, self.bias_ih_l0)
                         + F.linear(h_in, self.weight_hh_l0, self.bias_hh_l0))
            i, f, g, o = gates.chunk(4, 1)
            if self.peephole:
                i = i + self.weight_ci_l0 * c
                f = f + self.weight_cf_l0 * c
            i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
            c_new = f * c + i * g
            if self.peephole:
                o = o + self.weight_co_l0 * c_new
            o = torch.sigmoid(o)
            c_out = F.layer_norm(c_new, (H,), self.ln_c_weight_l0, self.ln_c_bias_l0) if self.layer_norm else c_new
            h_new = o * torch.tanh(c_out)
            if self.proj_size:
                h_new = h_new @ self.weight_hr_l0.t()
            if self.zoneout:
                zh_t = zh[t] if self.training else zh
                zc_t = zc[t] if self.training else zc
                h_new = zh_t * h + (1 - zh_t) * h_new
                c_new = zc_t * c + (1 - zc_t) * c_new
            h, c = h_new, c_new
            outputs.append(h)
        return torch.stack(outputs), h


class LoopGRU(_LoopBase):
    """The GRU of torch.nn.GRU (reset gate after the recurrent product) or the original
    form of Cho et al. 2014 (``reset_after=False``: reset gate before it); with
    ``layer_norm`` rnnkit's layer-norm GRU (gain-only norms of the input and the recurrent
    projections, the biases after them; reset-before normalizes the r, z block and the n
    block separately and adds b_hh to the input's bias)."""

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = True, layer_norm: bool = False):
        super().__init__(input_size, hidden_size, 3)
        self.reset_after, self.layer_norm = reset_after, layer_norm
        if layer_norm:
            self.ln_ih_weight_l0 = nn.Parameter(torch.ones(3 * hidden_size))
            self.ln_hh_weight_l0 = nn.Parameter(torch.ones(3 * hidden_size))
        self.reset_parameters()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.layer_norm:
            return self._forward_layer_norm(x)
        T, B, _ = x.shape
        H = self.hidden_size
        h = x.new_zeros(B, H)
        w_ir, w_iz, w_in = self.weight_ih_l0.chunk(3)
        b_ir, b_iz, b_in = self.bias_ih_l0.chunk(3)
        w_hr, w_hz, w_hn = self.weight_hh_l0.chunk(3)
        b_hr, b_hz, b_hn = self.bias_hh_l0.chunk(3)
        outputs = []
        for t in range(T):
            r = torch.sigmoid(F.linear(x[t], w_ir, b_ir) + F.linear(h, w_hr, b_hr))
            z = torch.sigmoid(F.linear(x[t], w_iz, b_iz) + F.linear(h, w_hz, b_hz))
            if self.reset_after:
                n = torch.tanh(F.linear(x[t], w_in, b_in) + r * F.linear(h, w_hn, b_hn))
            else:
                n = torch.tanh(F.linear(x[t], w_in, b_in) + F.linear(r * h, w_hn, b_hn))
            h = (1 - z) * n + z * h
            outputs.append(h)
        return torch.stack(outputs), h

    def _forward_layer_norm(self, x: Tensor) -> tuple[Tensor, Tensor]:
        T, B, _ = x.shape
        H = self.hidden_size
        h = x.new_zeros(B, H)
        w_hh, g_hh = self.weight_hh_l0, self.ln_hh_weight_l0
        b_x = self.bias_ih_l0 if self.reset_after else self.bias_ih_l0 + self.bias_hh_l0
        outputs = []
        for t in range(T):
            a_x = F.layer_norm(F.linear(x[t], self.weight_ih_l0), (3 * H,), self.ln_ih_weight_l0) + b_x
            if self.reset_after:
                rec = F.layer_norm(F.linear(h, w_hh), (3 * H,), g_hh) + self.bias_hh_l0
                r, z = torch.sigmoid(a_x[:, : 2 * H] + rec[:, : 2 * H]).chunk(2, 1)
                n = torch.tanh(a_x[:, 2 * H :] + r * rec[:, 2 * H :])
            else:
                rz = F.layer_norm(F.linear(h, w_hh[: 2 * H]), (2 * H,), g_hh[: 2 * H])
                r, z = torch.sigmoid(a_x[:, : 2 * H] + rz).chunk(2, 1)
                n = torch.tanh(a_x[:, 2 * H :] + F.layer_norm(F.linear(r * h, w_hh[2 * H :]), (H,), g_hh[2 * H :]))
            h = (1 - z) * n + z * h
            outputs.append(h)
        return torch.stack(outputs), h


class LoopJordan(_LoopBase):
    """h_t = tanh(W_ih x_t + b_ih + W_hh y_{t-1} + b_hh),  y_t = W_ho h_t + b_ho"""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__(input_size, hidden_size, 1, output_size)
        self.output_size = output_size
        self.weight_ho_l0 = nn.Parameter(torch.empty(output_size, hidden_size))
        self.bias_ho_l0 = nn.Parameter(torch.empty(output_size))
        self.reset_parameters()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        T, B, _ = x.shape
        y = x.new_zeros(B, self.output_size)
        outputs = []
        for t in range(T):
            h = torch.tanh(F.linear(x[t], self.weight_ih_l0, self.bias_ih_l0)
                           + F.linear(y, self.weight_hh_l0, self.bias_hh_l0))
            y = F.linear(h, self.weight_ho_l0, self.bias_ho_l0)
            outputs.append(y)
        return torch.stack(outputs), y
