"""Cells: the mathematics of one step forward and its hand-written BPTT, one family per file."""

from .activations import ACTIVATIONS, Activation, get_activation
from .base import Cell
from .bnlstm import BatchNormLSTMCell
from .elman import ElmanCell
from .gru import GRUCell
from .jordan import JordanCell
from .lstm import LSTMCell

__all__ = ["ACTIVATIONS", "Activation", "BatchNormLSTMCell", "Cell", "ElmanCell", "GRUCell", "JordanCell", "LSTMCell",
           "get_activation"]
