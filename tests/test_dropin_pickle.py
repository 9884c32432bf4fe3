"""Every layer and every model pickles, deep-copies and survives ``torch.save(module)`` /
``torch.load(..., weights_only=False)`` with the same outputs and gradients afterwards, on
every engine path; activations pickle by name, and a pickle written before ``hard_sigmoid``
changed meaning keeps the Keras 2 form it was trained with."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import io
import pickle

import pytest
import torch

import rnnkit
from rnnkit.cells.activations import get_activation
from rnnkit.cells.lru import LRUCell
from rnnkit.cells.mlstm import MLSTMCell
from rnnkit.cells.qrnn import QRNNCell
from rnnkit.cells.rglru import RGLRUCell
from rnnkit.cells.s6 import S6Cell
from rnnkit.cells.slstm import SLSTMCell
from rnnkit.cells.sru import SRUCell
from rnnkit.data.slots import slot_filling_data
from rnnkit.data.text import Vocabulary
from rnnkit.models import CharLM, CharLMConfig, Classifier, Forecaster, Generator, Seq2Seq, Seq2SeqConfig, Tagger
from rnnkit.models.classifier import ClassifierConfig
from rnnkit.models.forecaster import ForecasterConfig
from rnnkit.models.generator import GeneratorConfig
from rnnkit.models.tagger import TaggerConfig

from .cases import ALL_CELLS, graph_nodes, make, use_path


def _torch_save_load(module):
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _weights_only_load(module):
    """torch.load with weights_only=True (PyTorch's default) and rnnkit's classes allowlisted."""
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(rnnkit.safe_globals()):
        return torch.load(buffer, weights_only=True)


ROUND_TRIPS = {
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "deepcopy": copy.deepcopy,
    "torch.save": _torch_save_load,
}
LAYER_ROUND_TRIPS = {**ROUND_TRIPS, "weights_only": _weights_only_load}



def _unit(cls, **options):
    """A builder for a newer unit: of the options of _build it takes the ones it has (no
    zoneout; recurrent dropout in the sLSTM only)."""
    def build(kw):
        kw = {k: v for k, v in kw.items() if k not in ("recurrent_dropout", "zoneout") or k in cls.OPTIONS}
        return cls(3, 4, **options, **kw)

    return build


# every layer spec: (builder, engine paths); the classic cells of tests/cases.py with every
# option, every registered name with its defaults (the newer units with every backend), and
# the irnn alias
LAYERS = {f"cases:{name}": (lambda kw, name=name: make(name, 3, 4, **kw), ["native", "python", "autograd"])
          for name in ALL_CELLS}
LAYERS.update({
    "indrnn": (lambda kw: rnnkit.IndRNN(3, 4, recurrent_max_abs=1.5, **kw), ["native", "python", "autograd"]),
    "irnn": (lambda kw: rnnkit.make_layer("irnn", 3, 4, **kw), ["python", "autograd"]),
    "mingru": (lambda kw: rnnkit.MinGRU(3, 4, candidate_activation="g", **kw), ["scan", "bptt", "autograd"]),
    "minlstm": (lambda kw: rnnkit.MinLSTM(3, 4, normalize=False, **kw), ["scan", "bptt", "autograd"]),
    "slstm": (_unit(rnnkit.SLSTM, num_heads=2), ["bptt", "autograd"]),
    "mlstm": (_unit(rnnkit.MLSTM, num_heads=2, chunk_size=2), ["chunkwise", "bptt", "autograd"]),
    "lru": (_unit(rnnkit.LRU, state_size=3), ["scan", "bptt", "autograd"]),
    "rglru": (_unit(rnnkit.RGLRU), ["scan", "bptt", "autograd"]),
    "s6": (_unit(rnnkit.S6, state_size=3), ["scan", "bptt", "autograd"]),
    "qrnn": (_unit(rnnkit.QRNN, window=3), ["scan", "bptt", "autograd"]),
    "sru": (_unit(rnnkit.SRU), ["bptt", "autograd"]),
    "sru-linear": (_unit(rnnkit.SRU, gate_recurrence=False), ["scan", "bptt", "autograd"]),
})
READOUT_UNITS = (rnnkit.MLSTM, rnnkit.LRU, rnnkit.S6, rnnkit.QRNN, rnnkit.SRU)
NATIVE_NODES = {"_NativeLSTMBackward", "_NativeGRUBackward", "_NativeJordanBackward", "_NativeIndRNNBackward"}
#: the specs with a native loop (not: Elman, LSTM with other activations)
NATIVE_SPECS = {f"cases:{name}" for name in ["jordan", "lstm", "lstm-peephole", "lstm-proj", "lstm-layernorm", "gru",
                                             "gru-reset-before", "gru-layernorm", "gru-reset-before-layernorm"]} | {
    "indrnn"}


def test_every_registered_layer_is_covered():
    covered = {n.split(":")[1] for n in LAYERS if n.startswith("cases:")} | set(LAYERS)
    families = {"rnn": "cases:rnn-tanh", "lstm": "cases:lstm", "gru": "cases:gru", "jordan": "cases:jordan"}
    assert all(families.get(name, name) in covered for name in rnnkit.LAYER_TYPES)


def _build(spec: str, path: str, monkeypatch):
    builder, _ = LAYERS[spec]
    if path in ("scan", "bptt", "chunkwise"):
        kw = {"backend": path}
        monkeypatch.setenv("RNNKIT_NATIVE", "0")
    else:
        kw = use_path(monkeypatch, path)
    kw.update(num_layers=2, bidirectional=True, recurrent_dropout=0.2, zoneout=0.1, learn_initial_state=True,
              dtype=torch.float64)
    return builder(kw)


def _run(layer, x):
    """Outputs and every gradient, with the dropout/zoneout masks fixed by the seed."""
    torch.manual_seed(3)
    out, state = layer(x, lengths=torch.tensor([5, 2, 4]))
    states = state if isinstance(state, tuple) else (state,)
    loss = out.pow(2).sum() + sum(s.sum() for s in states)
    # a learned initial output (y of the scan cells, h of the mLSTM) is not in the recurrence:
    # the parallel forms do not read it
    grads = torch.autograd.grad(loss, [x, *layer.parameters()], allow_unused=isinstance(layer, READOUT_UNITS))
    return [out, *states, *grads], graph_nodes(out)


@pytest.mark.parametrize("trip", list(LAYER_ROUND_TRIPS))
@pytest.mark.parametrize("spec,path", [(s, p) for s, (_, paths) in LAYERS.items() for p in paths])
def test_layer_round_trip_keeps_outputs_and_gradients(monkeypatch, spec, path, trip):
    layer = _build(spec, path, monkeypatch)
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    want, nodes = _run(layer, x)
    loaded = LAYER_ROUND_TRIPS[trip](layer)
    assert loaded is not layer and type(loaded) is type(layer)
    got, loaded_nodes = _run(loaded, x)
    assert loaded_nodes == nodes  # the same engine path after loading
    if path == "native":
        assert bool(nodes & NATIVE_NODES) == (spec in NATIVE_SPECS)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _models():
    torch.manual_seed(0)
    tagger = Tagger.from_data(slot_filling_data(6, seed=5), TaggerConfig(hidden_size=6, embedding_dim=5,
                                                                        char_channels=3, num_layers=2))
    classifier = Classifier.from_data(["ab c", "ba", "c a b"], ["x", "y", "x"],
                                      ClassifierConfig(hidden_size=6, embedding_dim=5, pooling="attention"))
    generator = Generator.from_data(["abc", "cab"], ["x", "y"], GeneratorConfig(cell="gru", hidden_size=6))
    seq2seq = Seq2Seq(Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=8, embedding_size=4, hidden_size=6))
    sentences = [s.tokens for s in slot_filling_data(3, seed=1)]
    texts = ["ab c", "ba"]
    src = torch.tensor([[4, 5, 6], [7, 8, 0]])
    return {
        "charlm": (CharLM(CharLMConfig(cell="lstm", hidden_size=6, embed_size=4, num_layers=2),
                          Vocabulary.build("abcdef")), lambda m: m(torch.tensor([[1, 2], [3, 4], [5, 1]]))[0]),
        "tagger": (tagger, lambda m: m(*_tagger_inputs(m, sentences))),
        "classifier": (classifier, lambda m: m(m.batch(texts).inputs, m.batch(texts).lengths)),
        "forecaster": (Forecaster(ForecasterConfig(cell="gru", hidden_size=4, window=5), "y", [], [0.0], [1.0]),
                       lambda m: m(torch.randn(5, 2, 1, generator=torch.Generator().manual_seed(0)))),
        "generator": (generator, lambda m: m(m.batch(["abc", "ca"], ["x", "y"]).inputs, torch.tensor([0, 1]))[0]),
        "seq2seq": (seq2seq, lambda m: m(src, torch.tensor([[1, 4], [1, 5]]), torch.tensor([3, 2]))[0]),
    }


def _tagger_inputs(model, sentences):
    b = model.batch(sentences)
    return b.words, b.lengths, b.chars


@pytest.mark.parametrize("path", ["native", "python", "autograd"])
@pytest.mark.parametrize("name", ["charlm", "tagger", "classifier", "forecaster", "generator", "seq2seq"])
def test_model_round_trips_keep_outputs_and_gradients(monkeypatch, name, path):
    model, run = _models()[name]
    autograd = use_path(monkeypatch, path).get("backend") == "autograd"

    def outputs(m):
        for layer in m.modules():
            if isinstance(layer, rnnkit.Recurrent) and autograd:
                layer.backend = "autograd"
        torch.manual_seed(1)
        out = run(m)
        return [out, *torch.autograd.grad(out.pow(2).sum(), list(m.parameters()), allow_unused=True)]

    want = outputs(model)
    for trip in ROUND_TRIPS.values():
        got = outputs(trip(model))
        for a, b in zip(got, want):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_weights_only_load_needs_rnnkit_allowlisted():
    buffer = io.BytesIO()
    torch.save(rnnkit.LSTM(3, 4), buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="rnnkit.layers.LSTM"):
        torch.load(buffer, weights_only=True)


def test_safe_globals_lists_every_layer_cell_and_get_activation():
    allowed = rnnkit.safe_globals()
    assert {*rnnkit.LAYER_TYPES.values(), rnnkit.Recurrent, get_activation} <= set(allowed)
    assert {rnnkit.LSTMCell, rnnkit.GRUCell, rnnkit.ElmanCell, rnnkit.JordanCell} <= set(allowed)
    assert {SLSTMCell, MLSTMCell, LRUCell, RGLRUCell, S6Cell, QRNNCell, SRUCell} <= set(allowed)
    assert all(isinstance(c, type) and c.__module__.startswith("rnnkit") for c in allowed if c is not get_activation)


# -- activations -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "hard_sigmoid", "hard_sigmoid_keras2", "identity"])
def test_activation_pickles_as_its_name(name):
    act = get_activation(name)
    assert pickle.loads(pickle.dumps(act)) is act
    assert copy.deepcopy(act) is act


# Pickles written by rnnkit before activations pickled by name and before hard_sigmoid became
# torch's relu6(x + 3) / 6: LSTMCell(3, activation="relu", recurrent_activation="hard_sigmoid")
# and JordanCell(3, 2, nonlinearity="relu", output_activation="hard_sigmoid"), protocol 2.
OLD_LSTM_CELL = (
    b"\x80\x02crnnkit.cells.lstm\nLSTMCell\nq\x00)\x81q\x01}q\x02(X\x0b\x00\x00\x00hidden_sizeq\x03K\x03X\x04"
    b"\x00\x00\x00biasq\x04\x88X\t\x00\x00\x00proj_sizeq\x05K\x00X\x08\x00\x00\x00peepholeq\x06\x89X\n\x00\x00"
    b"\x00layer_normq\x07\x89X\x03\x00\x00\x00actq\x08crnnkit.cells.activations\nActivation\nq\t)\x81q\n}q\x0b"
    b"(X\x04\x00\x00\x00nameq\x0cX\x04\x00\x00\x00reluq\rX\x07\x00\x00\x00forwardq\x0ecrnnkit.cells.activations"
    b"\n_relu\nq\x0fX\x08\x00\x00\x00backwardq\x10crnnkit.cells.activations\n_relu_backward\nq\x11ubX\x03\x00"
    b"\x00\x00sigq\x12h\t)\x81q\x13}q\x14(h\x0cX\x0c\x00\x00\x00hard_sigmoidq\x15h\x0ecrnnkit.cells.activations"
    b"\n_hard_sigmoid\nq\x16h\x10crnnkit.cells.activations\n_hard_sigmoid_backward\nq\x17ubub."
)
OLD_JORDAN_CELL = (
    b"\x80\x02crnnkit.cells.jordan\nJordanCell\nq\x00)\x81q\x01}q\x02(X\x0b\x00\x00\x00hidden_sizeq\x03K\x03X"
    b"\x04\x00\x00\x00biasq\x04\x88X\x0c\x00\x00\x00_output_sizeq\x05K\x02X\x03\x00\x00\x00phiq\x06crnnkit.cells."
    b"activations\nActivation\nq\x07)\x81q\x08}q\t(X\x04\x00\x00\x00nameq\nX\x04\x00\x00\x00reluq\x0bX\x07\x00"
    b"\x00\x00forwardq\x0ccrnnkit.cells.activations\n_relu\nq\rX\x08\x00\x00\x00backwardq\x0ecrnnkit.cells."
    b"activations\n_relu_backward\nq\x0fubX\x03\x00\x00\x00psiq\x10h\x07)\x81q\x11}q\x12(h\nX\x0c\x00\x00\x00"
    b"hard_sigmoidq\x13h\x0ccrnnkit.cells.activations\n_hard_sigmoid\nq\x14h\x0ecrnnkit.cells.activations\n"
    b"_hard_sigmoid_backward\nq\x15ubub."
)


def test_old_pickles_keep_the_keras2_hard_sigmoid_they_were_trained_with():
    lstm_cell, jordan_cell = pickle.loads(OLD_LSTM_CELL), pickle.loads(OLD_JORDAN_CELL)
    assert lstm_cell.act == get_activation("relu") and jordan_cell.phi == get_activation("relu")
    a = torch.linspace(-4, 4, 81, dtype=torch.float64)
    for act in (lstm_cell.sig, jordan_cell.psi):
        assert act == get_activation("hard_sigmoid_keras2")
        torch.testing.assert_close(act.forward(a), (0.2 * a + 0.5).clamp(0, 1))
    # pickled again now, they stay Keras 2 (by name)
    assert pickle.loads(pickle.dumps(lstm_cell)).sig.name == "hard_sigmoid_keras2"


SAVED_CONFIGS = ["rnnkit.models.charlm.CharLMConfig", "rnnkit.models.classifier.ClassifierConfig",
                 "rnnkit.models.tagger.TaggerConfig", "rnnkit.models.forecaster.ForecasterConfig",
                 "rnnkit.models.generator.GeneratorConfig", "rnnkit.models.seq2seq.Seq2SeqConfig",
                 "rnnkit.tasks.seq2seq_train.Seq2SeqTrainConfig", "rnnkit.train.config.TrainConfig"]


@pytest.mark.parametrize("path", SAVED_CONFIGS)
def test_no_saved_config_names_an_activation(path):
    """Run and model directories (config.json) cannot name an activation, so none written
    before hard_sigmoid changed meaning holds one; a config that adds an activation field
    must record which definition it means (and this test must then check old ones load)."""
    module, name = path.rsplit(".", 1)
    config = getattr(importlib.import_module(module), name)
    assert not [f.name for f in dataclasses.fields(config) if "activation" in f.name]


def test_a_layer_with_an_old_pickled_cell_runs_the_keras2_form(monkeypatch):
    """A Jordan layer whose cell came from an old pickle: the native loop (which knows only the
    new hard_sigmoid) must not run it; the Python loop computes the Keras 2 form."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer = rnnkit.Jordan(3, 3, 2, nonlinearity="relu", output_activation="hard_sigmoid_keras2").double()
    old = rnnkit.Jordan(3, 3, 2, nonlinearity="relu").double()
    old.load_state_dict(layer.state_dict())
    old.cell = pickle.loads(OLD_JORDAN_CELL)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    (want, _), (got, _) = layer(x), old(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert "_NativeJordanBackward" not in graph_nodes(old(x.requires_grad_())[0])

