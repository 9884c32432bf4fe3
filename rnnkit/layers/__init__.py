"""Recurrent layers on the BPTT engine, and the registry of them by name.

- :mod:`~rnnkit.layers.recurrent`: :class:`Recurrent`, a stack of any cell (``lengths=``,
  PackedSequence, bidirectional, learnable initial state, recurrent dropout, zoneout,
  initialisation schemes), and the gradient record;
- :mod:`~rnnkit.layers.classic`: RNN, LSTM, GRU (drop-in for torch.nn) and the Jordan network;
- :mod:`~rnnkit.layers.bnlstm`: the LSTM with recurrent batch normalization (``LSTM(batch_norm=True)``);
- :mod:`~rnnkit.layers.elementwise`: IndRNN, minGRU, minLSTM (element-wise recurrences);
- :mod:`~rnnkit.layers.modern`: sLSTM, mLSTM, LRU, RG-LRU, S6, QRNN, SRU;
- :mod:`~rnnkit.layers.registry`: :func:`register`, :func:`names`, :func:`build`.

The registrations, one line a family, are at the bottom of this file.
"""

from __future__ import annotations

from ..cells.cifg import CIFGCell
from .bnlstm import BatchNormLSTM
from .classic import GRU, LSTM, RNN, Jordan
from .elementwise import IndRNN, MinGRU, MinLSTM
from .modern import LRU, MLSTM, QRNN, RGLRU, S6, SLSTM, SRU
from .recurrent import INIT_SCHEMES, GradientRecord, Recurrent, record_gradient_norms
from .registry import LAYER_TYPES, build, make_layer, names, register

# Pickles name a class by its module: the layers keep the path they have always had
# (``rnnkit.layers.LSTM``), wherever in the package they are defined.
for _cls in (Recurrent, GradientRecord, RNN, LSTM, BatchNormLSTM, GRU, Jordan, IndRNN, MinGRU, MinLSTM, SLSTM, MLSTM,
             LRU, RGLRU, S6, QRNN, SRU):
    _cls.__module__ = __name__
del _cls


def irnn(input_size: int, hidden_size: int, **options) -> RNN:
    """The IRNN (Le et al. 2015): the ReLU Elman RNN with the identity as its initial
    recurrent weight (``init="identity"`` unless given)."""
    options.setdefault("init", "identity")
    return RNN(input_size, hidden_size, nonlinearity="relu", **options)


def jordan(input_size: int, hidden_size: int, output_size: int | None = None, **options) -> Jordan:
    """The Jordan network with ``output_size`` (the features of its output and state)
    defaulting to ``hidden_size``, so that it can be built by name with a hidden size alone."""
    return Jordan(input_size, hidden_size, hidden_size if output_size is None else output_size, **options)


register("rnn", RNN)
register("irnn", irnn)
register("lstm", LSTM)
register("gru", GRU)
register("jordan", jordan, layer_type=Jordan)
register("indrnn", IndRNN)
register("mingru", MinGRU)
register("minlstm", MinLSTM)
register("slstm", SLSTM)
register("mlstm", MLSTM)
register("lru", LRU)
register("rglru", RGLRU)
register("s6", S6)
register("qrnn", QRNN)
register("sru", SRU)
register("cifg", CIFGCell)

__all__ = ["BatchNormLSTM", "GRU", "INIT_SCHEMES", "LAYER_TYPES", "LRU", "LSTM", "MLSTM", "QRNN", "RGLRU", "RNN", "S6",
           "SLSTM", "SRU",
           "GradientRecord", "IndRNN", "Jordan", "MinGRU", "MinLSTM", "Recurrent", "build", "irnn", "jordan",
           "make_layer", "names", "record_gradient_norms", "register"]
