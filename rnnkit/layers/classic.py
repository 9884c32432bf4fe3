"""The classic layers, drop-in for torch.nn.RNN, LSTM and GRU, and the Jordan network.

``rnnkit.LSTM(...)`` accepts what ``torch.nn.LSTM`` accepts (positional and keyword
arguments, ``h0``/``(h0, c0)``, ``PackedSequence``, unbatched input) and has the same
parameter names and shapes, so a ``torch.nn`` state_dict loads as it is. Each builds its cell
and hands it to :class:`~rnnkit.layers.recurrent.Recurrent`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ..cells import ElmanCell, GRUCell, JordanCell, LSTMCell
from .recurrent import Recurrent, _check_arguments, _no_proj_size


class RNN(Recurrent):
    """Elman RNN, drop-in for ``torch.nn.RNN`` (see :class:`~rnnkit.cells.ElmanCell`)."""

    proj_size = 0  # torch.nn.RNN has it, always 0

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        **options,
    ):
        _no_proj_size(options)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.")
        _check_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        cell = ElmanCell(hidden_size, bias, nonlinearity)
        super().__init__(cell, input_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, **options)
        self.nonlinearity = nonlinearity

    @property
    def mode(self) -> str:
        """torch.nn.RNN's ``mode``: ``"RNN_TANH"`` or ``"RNN_RELU"``."""
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"


class LSTM(Recurrent):
    """LSTM, drop-in for ``torch.nn.LSTM`` (see :class:`~rnnkit.cells.LSTMCell`), plus
    ``peephole``, ``layer_norm``, ``activation`` and ``recurrent_activation``; with
    ``batch_norm=True`` recurrent batch normalization (:class:`rnnkit.layers.BatchNormLSTM`)."""

    mode = "LSTM"  # torch.nn.LSTM's

    def __new__(cls, *args, batch_norm: bool = False, **kwargs):
        if batch_norm and cls is LSTM:  # recurrent batch normalization: its own layer (layers/bnlstm.py)
            from .bnlstm import BatchNormLSTM

            cls = BatchNormLSTM
        return super().__new__(cls)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        peephole: bool = False,
        layer_norm: bool = False,
        activation: str = "tanh",
        recurrent_activation: str = "sigmoid",
        batch_norm: bool = False,
        **options,
    ):
        if batch_norm:
            raise ValueError(f"batch_norm=True builds rnnkit.LSTM's BatchNormLSTM, not a {type(self).__name__}")
        _check_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, proj_size)
        cell = LSTMCell(hidden_size, bias, proj_size, peephole, layer_norm, activation, recurrent_activation)
        super().__init__(cell, input_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, **options)
        self.proj_size = proj_size


class GRU(Recurrent):
    """GRU, drop-in for ``torch.nn.GRU`` (see :class:`~rnnkit.cells.GRUCell`), plus
    ``reset_after=False`` (Cho et al. 2014) and ``layer_norm``."""

    mode = "GRU"  # torch.nn.GRU's
    proj_size = 0  # torch.nn.GRU has it, always 0

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        reset_after: bool = True,
        layer_norm: bool = False,
        **options,
    ):
        _no_proj_size(options)
        _check_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        cell = GRUCell(hidden_size, bias, reset_after, layer_norm)
        super().__init__(cell, input_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, **options)


class Jordan(Recurrent):
    """Jordan network: hidden units driven by the previous output (see
    :class:`~rnnkit.cells.JordanCell`). The output and the state have ``output_size``
    features; stacked layers feed each other their outputs.

    ``forward(input, y0=None, lengths=None, teacher=None)``: with ``teacher`` (T, B, O),
    the given targets replace the network's own previous outputs (teacher forcing):
    step t sees teacher[t-1] (y0 at t = 0), so all steps run in parallel.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        output_activation: str = "identity",
        **options,
    ):
        cell = JordanCell(hidden_size, output_size, bias, nonlinearity, output_activation)
        super().__init__(cell, input_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, **options)

    def forward(self, input, y0=None, lengths=None, teacher: Tensor | None = None):
        if teacher is None:
            return super().forward(input, y0, lengths)
        if self.num_layers != 1 or self.bidirectional:
            raise ValueError("teacher forcing needs a single unidirectional Jordan layer")
        if isinstance(input, PackedSequence):
            raise ValueError("teacher forcing takes a padded tensor with lengths=, not a PackedSequence")
        x = input.transpose(0, 1) if self.batch_first and input.dim() == 3 else input
        unbatched = x.dim() == 2
        if unbatched:
            x, teacher = x.unsqueeze(1), teacher.unsqueeze(1)
            y0 = None if y0 is None else y0.unsqueeze(1)
        elif self.batch_first:
            teacher = teacher.transpose(0, 1)
        self._check_input(x)
        T, B, _ = x.shape
        if tuple(teacher.shape) != (T, B, self.cell.output_size):
            raise ValueError(f"teacher must have shape {(T, B, self.cell.output_size)} (time-major), "
                             f"got {tuple(teacher.shape)}")
        (y_init,) = self._initial_state(y0, B, x)
        p = self._params(0, 0)
        prev = torch.cat((y_init, teacher[:-1]), 0)  # (T, B, O): step t sees teacher[t-1]
        a = x @ p["weight_ih"].t() + prev @ p["weight_hh"].t()  # (T, B, H)
        if self.bias:
            a = a + p["bias_ih"] + p["bias_hh"]
        y = self.cell.output(self.cell.phi.forward(a), p)  # (T, B, O)
        if lengths is not None:
            lengths = self._check_lengths(lengths, T, B)
            valid = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2).to(y.device)
            y = y * valid
            y_n = y[(lengths - 1).to(y.device), torch.arange(B, device=y.device)].unsqueeze(0)
        else:
            y_n = y[-1:]
        if unbatched:
            return y.squeeze(1), y_n.squeeze(1)
        return (y.transpose(0, 1) if self.batch_first else y), y_n
