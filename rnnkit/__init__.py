"""rnnkit: every classic recurrent network with hand-written BPTT, drop-in for torch.nn."""

from . import (
    data,
    diagnostics,
    models,
    tasks,  # noqa: F401  (registers the "task" and "seq2seq" run directories for rnnkit.load)
)
from ._version import __version__
from .cells import Cell, ElmanCell, GRUCell, JordanCell, LSTMCell
from .deploy import safe_globals, to_torch
from .engine import LoopOptions
from .layers import (
    GRU,
    LAYER_TYPES,
    LRU,
    LSTM,
    MLSTM,
    QRNN,
    RGLRU,
    RNN,
    S6,
    SLSTM,
    SRU,
    BatchNormLSTM,
    GradientRecord,
    IndRNN,
    Jordan,
    MinGRU,
    MinLSTM,
    Recurrent,
    make_layer,
    record_gradient_norms,
)
from .models import CharLM, CharLMConfig, Classifier, Forecaster, Generator, Seq2Seq, Tagger
from .train import TrainConfig, load

# isort: off
# last, after the subpackage rnnkit.train is loaded: the attribute becomes the function
# rnnkit.train(...), while `from rnnkit.train import TrainConfig` still reads the package
from .models.charlm_app import train
# isort: on

__all__ = [
    "__version__",
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
