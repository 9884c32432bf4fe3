"""rnnkit: every classic recurrent network with hand-written BPTT, drop-in for torch.nn."""

from . import diagnostics
from .bnlstm import BatchNormLSTM
from .cells import Cell, ElmanCell, GRUCell, JordanCell, LSTMCell
from .deploy import safe_globals, to_torch
from .engine import LoopOptions
from .layers import (
    GRU,
    LAYER_TYPES,
    LSTM,
    RNN,
    GradientRecord,
    Jordan,
    Recurrent,
    make_layer,
    record_gradient_norms,
)
from .models import Classifier, Forecaster, Generator, Seq2Seq, Tagger
from .units import IndRNN, MinGRU, MinLSTM
from .units_modern import LRU, MLSTM, QRNN, RGLRU, S6, SLSTM, SRU

__version__ = "0.1.0"

from . import data, models, train  # noqa: E402  (rnnkit.train is a callable package: rnnkit.train(...))
from .models import CharLM, CharLMConfig  # noqa: E402
from .train import TrainConfig, load  # noqa: E402

__all__ = [
    "data",
    "models",
    "CharLM",
    "CharLMConfig",
    "TrainConfig",
    "load",
    "train",
    "GRU",
    "LAYER_TYPES",
    "LSTM",
    "RNN",
    "BatchNormLSTM",
    "Cell",
    "ElmanCell",
    "GRUCell",
    "GradientRecord",
    "IndRNN",
    "Jordan",
    "JordanCell",
    "LSTMCell",
    "LoopOptions",
    "MinGRU",
    "MinLSTM",
    "Recurrent",
    "RGLRU",
    "LRU",
    "MLSTM",
    "QRNN",
    "S6",
    "SLSTM",
    "SRU",
    "make_layer",
    "record_gradient_norms",
    "safe_globals",
    "to_torch",
    "Classifier",
    "Forecaster",
    "Generator",
    "Seq2Seq",
    "Tagger",
    "diagnostics",
]
