"""rnnkit.to_torch: the equivalent torch.nn module of a layer or a model (same outputs), a
one-line error naming the option torch.nn lacks, and torch.export (and ONNX, where the onnx
package is installed) of the converted module."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.data.slots import slot_filling_data
from rnnkit.data.text import Vocabulary
from rnnkit.models import CharLM, CharLMConfig, Classifier, Forecaster, Generator, Seq2Seq, Seq2SeqConfig, Tagger
from rnnkit.models.classifier import ClassifierConfig
from rnnkit.models.forecaster import ForecasterConfig
from rnnkit.models.generator import GeneratorConfig
from rnnkit.models.tagger import TaggerConfig

from . import needs

CONVERTIBLE = {
    "rnn-tanh": (lambda **kw: rnnkit.RNN(3, 5, **kw), nn.RNN),
    "rnn-relu": (lambda **kw: rnnkit.RNN(3, 5, nonlinearity="relu", **kw), nn.RNN),
    "lstm": (lambda **kw: rnnkit.LSTM(3, 5, **kw), nn.LSTM),
    "lstm-proj": (lambda **kw: rnnkit.LSTM(3, 5, proj_size=2, **kw), nn.LSTM),
    "gru": (lambda **kw: rnnkit.GRU(3, 5, **kw), nn.GRU),
}


@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bidirectional": True, "batch_first": True, "bias": False},
                                     {"num_layers": 3, "dropout": 0.25, "init": "orthogonal"}])
@pytest.mark.parametrize("name", list(CONVERTIBLE))
def test_layer_converts_to_the_same_torch_nn_computation(name, options):
    build, torch_cls = CONVERTIBLE[name]
    layer = build(**options).double().eval()
    converted = rnnkit.to_torch(layer)
    assert type(converted) is torch_cls and not converted.training
    assert converted.state_dict().keys() == layer.state_dict().keys()
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size", "mode"):
        assert getattr(converted, attr) == getattr(layer, attr), attr
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    (want, want_h), (got, got_h) = layer(x), converted(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    as_tuple = lambda h: h if isinstance(h, tuple) else (h,)  # noqa: E731
    for a, b in zip(as_tuple(got_h), as_tuple(want_h)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert rnnkit.to_torch(layer.train()).training


# torch.nn's RNN forward assigns _flat_weights, which torch.export warns about
@pytest.mark.filterwarnings("ignore:The tensor attributes self._flat_weights")
@pytest.mark.parametrize("name", list(CONVERTIBLE))
def test_torch_export_of_the_converted_layer(name):
    build, _ = CONVERTIBLE[name]
    layer = build(num_layers=2, bidirectional=True, batch_first=True).eval()
    x = torch.randn(2, 7, 3)
    program = torch.export.export(rnnkit.to_torch(layer), (x,))
    (want, _), (got, _) = layer(x), program.module()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


NOT_CONVERTIBLE = [
    (lambda: rnnkit.LSTM(3, 4, peephole=True), "peephole=True"),
    (lambda: rnnkit.LSTM(3, 4, layer_norm=True), "layer_norm=True"),
    (lambda: rnnkit.LSTM(3, 4, activation="relu"), "activation='relu'"),
    (lambda: rnnkit.LSTM(3, 4, recurrent_activation="hard_sigmoid"), "recurrent_activation='hard_sigmoid'"),
    (lambda: rnnkit.GRU(3, 4, reset_after=False), "reset_after=False"),
    (lambda: rnnkit.GRU(3, 4, layer_norm=True), "layer_norm=True"),
    (lambda: rnnkit.RNN(3, 4, zoneout=0.1), "zoneout="),
    (lambda: rnnkit.GRU(3, 4, learn_initial_state=True), "learn_initial_state=True"),
    (lambda: rnnkit.Jordan(3, 4, 2), "Jordan has no torch.nn equivalent"),
    (lambda: rnnkit.IndRNN(3, 4), "IndRNN has no torch.nn equivalent"),
    (lambda: rnnkit.MinGRU(3, 4), "MinGRU has no torch.nn equivalent"),
    (lambda: rnnkit.MinLSTM(3, 4), "MinLSTM has no torch.nn equivalent"),
    (lambda: rnnkit.SLSTM(3, 4), "SLSTM has no torch.nn equivalent"),
    (lambda: rnnkit.MLSTM(3, 4), "MLSTM has no torch.nn equivalent"),
    (lambda: rnnkit.LRU(3, 4), "LRU has no torch.nn equivalent"),
    (lambda: rnnkit.RGLRU(3, 4), "RGLRU has no torch.nn equivalent"),
    (lambda: rnnkit.S6(3, 4), "S6 has no torch.nn equivalent"),
    (lambda: rnnkit.QRNN(3, 4), "QRNN has no torch.nn equivalent"),
    (lambda: rnnkit.SRU(3, 4), "SRU has no torch.nn equivalent"),
    (lambda: rnnkit.Recurrent(rnnkit.LSTMCell(4), 3), "Recurrent has no torch.nn equivalent"),
]


@pytest.mark.parametrize("build,option", NOT_CONVERTIBLE, ids=[o for _, o in NOT_CONVERTIBLE])
def test_what_torch_nn_lacks_is_a_one_line_error_naming_the_option(build, option):
    with pytest.raises(ValueError, match="cannot convert") as info:
        rnnkit.to_torch(build())
    assert option in str(info.value) and "\n" not in str(info.value)
    model = nn.Sequential(nn.Linear(3, 3))
    model.add_module("encoder", build())
    with pytest.raises(ValueError, match=f"cannot convert encoder .*{option[:8]}"):
        rnnkit.to_torch(model)


def test_recurrent_dropout_is_left_out_with_a_warning(caplog):
    layer = rnnkit.LSTM(3, 4, recurrent_dropout=0.3).eval()
    with caplog.at_level(logging.WARNING, logger="rnnkit.deploy"):
        converted = rnnkit.to_torch(layer)
    assert "recurrent_dropout=0.3" in caplog.text
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(converted(x)[0], layer(x)[0])  # equal in eval mode


def test_weight_dropped_and_parametrized_weights_convert_with_their_current_value():
    layer = rnnkit.GRU(3, 4)
    torch.nn.utils.parametrizations.weight_norm(layer, name="weight_hh_l0")
    with torch.no_grad():
        layer.parametrizations.weight_hh_l0.original0.mul_(2.0)
    converted = rnnkit.to_torch(layer)
    torch.testing.assert_close(converted.weight_hh_l0, layer.weight_hh_l0)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(converted(x)[0], layer(x)[0])


def _models():
    torch.manual_seed(0)
    texts, src = ["ab c", "ba", "c a b"], torch.tensor([[4, 5, 6], [7, 8, 0]])
    sentences = [s.tokens for s in slot_filling_data(3, seed=1)]
    tagger = Tagger.from_data(slot_filling_data(6, seed=5), TaggerConfig(cell="gru", hidden_size=6, embedding_dim=5,
                                                                        char_channels=3))
    classifier = Classifier.from_data(texts, ["x", "y", "x"], ClassifierConfig(hidden_size=6, embedding_dim=5))
    generator = Generator.from_data(["abc", "cab"], ["x", "y"], GeneratorConfig(hidden_size=6, num_layers=2))
    return {
        "charlm": (CharLM(CharLMConfig(cell="lstm", hidden_size=6, embed_size=4, num_layers=2),
                          Vocabulary.build("abcdef")), lambda m: m(torch.tensor([[1, 2], [3, 4], [5, 1]]))[0]),
        "tagger": (tagger, lambda m: m(*_tagger_inputs(m, sentences))),
        "classifier": (classifier, lambda m: m(m.batch(texts).inputs, m.batch(texts).lengths)),
        "forecaster": (Forecaster(ForecasterConfig(cell="rnn", hidden_size=4, window=5), "y", [], [0.0], [1.0]),
                       lambda m: m(torch.randn(5, 2, 1, generator=torch.Generator().manual_seed(0)))),
        "generator": (generator, lambda m: m(m.batch(["abc", "ca"], ["x", "y"]).inputs, torch.tensor([0, 1]),
                                             m.batch(["abc", "ca"], ["x", "y"]).lengths)[0]),
        "seq2seq": (Seq2Seq(Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=8, embedding_size=4, hidden_size=6)),
                    lambda m: m(src, torch.tensor([[1, 4], [1, 5]]), torch.tensor([3, 2]))[0]),
    }


def _tagger_inputs(model, sentences):
    b = model.batch(sentences)
    return b.words, b.lengths, b.chars


@pytest.mark.parametrize("name", ["charlm", "tagger", "classifier", "forecaster", "generator", "seq2seq"])
def test_model_converts_with_every_layer_replaced_and_the_same_outputs(name):
    model, run = _models()[name]
    model.eval()
    converted = rnnkit.to_torch(model)
    assert not any(isinstance(m, rnnkit.Recurrent) for m in converted.modules())
    assert any(isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)) for m in converted.modules())
    assert any(isinstance(m, rnnkit.Recurrent) for m in model.modules())  # the original is untouched
    torch.testing.assert_close(run(converted), run(model), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:The tensor attributes self.rnn._flat_weights")
def test_torch_export_of_a_converted_model():
    model = CharLM(CharLMConfig(cell="gru", hidden_size=8, embed_size=4, num_layers=2),
                   Vocabulary.build("abcdef")).eval()
    idx = torch.randint(0, 6, (9, 3))
    program = torch.export.export(rnnkit.to_torch(model), (idx,))
    torch.testing.assert_close(program.module()(idx)[0], model(idx)[0], rtol=1e-5, atol=1e-6)


DIRECT = {
    "lstm": lambda: rnnkit.LSTM(3, 4, num_layers=2),
    "lstm-layernorm-peephole": lambda: rnnkit.LSTM(3, 4, layer_norm=True, peephole=True, proj_size=2),
    "gru-reset-before-zoneout": lambda: rnnkit.GRU(3, 4, reset_after=False, bidirectional=True, zoneout=0.1),
    "jordan": lambda: rnnkit.Jordan(3, 4, 2, output_activation="hard_sigmoid"),
    "indrnn": lambda: rnnkit.IndRNN(3, 4, recurrent_max_abs=1.0),
    "mingru": lambda: rnnkit.MinGRU(3, 4, num_layers=2),
    "slstm": lambda: rnnkit.SLSTM(3, 4),
    "mlstm": lambda: rnnkit.MLSTM(3, 4, chunk_size=2),
    "lru": lambda: rnnkit.LRU(3, 4, bidirectional=True),
    "rglru": lambda: rnnkit.RGLRU(3, 4),
    "s6": lambda: rnnkit.S6(3, 4),
    "qrnn": lambda: rnnkit.QRNN(3, 4, window=3),
    "sru": lambda: rnnkit.SRU(3, 4),
    "sru-linear": lambda: rnnkit.SRU(3, 4, gate_recurrence=False),
}


@pytest.mark.parametrize("name", list(DIRECT))
def test_torch_export_of_an_rnnkit_layer_traces_the_reference_loop(monkeypatch, name):
    """What to_torch cannot convert still exports: under torch.export the engine runs its
    reference (plain PyTorch operations), unrolled for the traced sequence length."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer = DIRECT[name]().eval()
    x = torch.randn(5, 2, 3)
    program = torch.export.export(layer, (x,))
    nodes = {str(n.target) for n in program.graph.nodes}
    assert not any("rnnkit" in t or "Native" in t for t in nodes)
    (want, want_h), (got, got_h) = layer(x), program.module()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_h, want_h, rtol=1e-5, atol=1e-6)


def test_onnx_export_of_the_converted_layer(tmp_path):
    # not dependencies of rnnkit; the dev extra installs them, so under CI a missing one fails
    onnx = needs.module("onnx", 'pip install -e ".[dev]"')
    needs.module("onnxscript", 'pip install -e ".[dev]"')  # torch.onnx.export's exporter (dynamo=True)
    layer = rnnkit.LSTM(3, 5, num_layers=2).eval()
    torch.onnx.export(rnnkit.to_torch(layer), (torch.randn(4, 2, 3),), str(tmp_path / "lstm.onnx"), dynamo=True)
    onnx.checker.check_model(str(tmp_path / "lstm.onnx"))
    ort = needs.module("onnxruntime", 'pip install -e ".[dev]"')
    session = ort.InferenceSession(str(tmp_path / "lstm.onnx"))
    x = torch.randn(4, 2, 3)
    (got, *_) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), layer(x)[0].detach(), rtol=1e-5, atol=1e-6)
