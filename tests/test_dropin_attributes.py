"""The attributes and methods real torch.nn code reads (``mode``, ``proj_size``,
``all_weights``, ``_flat_weights``, ``_flat_weights_names``, ``flatten_parameters``), the
constructor accepting and rejecting what torch.nn does, and the weight patterns that replace
a weight: AWD-LSTM's weight drop, ``torch.nn.utils.parametrize`` and
``parametrizations.weight_norm`` -- they give torch.nn's numbers, train, and use the native
loop where it applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import rnnkit

from .cases import graph_nodes, use_path

TORCH = {"rnn-tanh": (nn.RNN, rnnkit.RNN, {}), "rnn-relu": (nn.RNN, rnnkit.RNN, {"nonlinearity": "relu"}),
         "lstm": (nn.LSTM, rnnkit.LSTM, {}), "lstm-proj": (nn.LSTM, rnnkit.LSTM, {"proj_size": 2}),
         "gru": (nn.GRU, rnnkit.GRU, {})}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", list(TORCH))
def test_torch_nn_attributes(name, bidirectional, bias):
    torch_cls, cls, options = TORCH[name]
    ref = torch_cls(3, 4, num_layers=2, bias=bias, bidirectional=bidirectional, **options)
    layer = cls(3, 4, num_layers=2, bias=bias, bidirectional=bidirectional, **options)
    for attr in ("mode", "proj_size", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "_flat_weights_names", "_all_weights"):
        assert getattr(layer, attr) == getattr(ref, attr), attr
    assert [[w.shape for w in ws] for ws in layer.all_weights] == [[w.shape for w in ws] for ws in ref.all_weights]
    assert all(w is getattr(layer, n) for w, n in zip(layer._flat_weights, layer._flat_weights_names))
    assert layer.flatten_parameters() is None
    layer.double()  # read from the current attributes: they follow .to()
    assert all(w.dtype == torch.float64 for w in layer._flat_weights)
    assert all(w is getattr(layer, n) for w, n in zip(layer._flat_weights, layer._flat_weights_names))


def test_flat_weights_of_the_cell_variants_follow_torch_order_then_the_cells_own():
    layer = rnnkit.LSTM(3, 4, proj_size=2, peephole=True)
    assert layer._flat_weights_names == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0",
                                         "weight_ci_l0", "weight_cf_l0", "weight_co_l0"]


# -- the constructor accepts and rejects what torch.nn does -------------------------------------
GOOD = [dict(dropout=1.0, num_layers=2), dict(dropout=np.float32(0.5), num_layers=2), dict(num_layers=np.int64(2)),
        dict(input_size=True), dict(proj_size=np.int64(2)), dict(proj_size=False), dict(dropout=0)]
BAD = [dict(bias=0), dict(bias=1), dict(bias="True"), dict(batch_first=0), dict(batch_first="False"),
       dict(input_size=3.0), dict(input_size="3"), dict(input_size=0), dict(hidden_size=5.0),
       dict(hidden_size=np.int64(5)), dict(hidden_size=-1), dict(num_layers=0), dict(num_layers=2.0),
       dict(num_layers="2"), dict(dropout=True), dict(dropout=-0.1), dict(dropout=1.5), dict(dropout="0.1"),
       dict(dropout=float("nan")), dict(proj_size=-1), dict(proj_size=5), dict(proj_size=1.5), dict(proj_size=True),
       dict(nonlinearity="sigmoid"), dict(unknown_option=1)]


def _construct(cls, kw):
    kwargs = dict(input_size=3, hidden_size=5)
    kwargs.update(kw)
    if "nonlinearity" in kw and cls not in (nn.RNN, rnnkit.RNN):
        return None
    try:
        cls(**kwargs)
    except Exception as e:  # noqa: BLE001 -- the type is what is compared
        return type(e)
    return "ok"


@pytest.mark.filterwarnings("ignore:dropout option adds dropout")
@pytest.mark.parametrize("kw,good", [(kw, True) for kw in GOOD] + [(kw, False) for kw in BAD], ids=repr)
@pytest.mark.parametrize("name", ["rnn-tanh", "lstm", "gru"])
def test_constructor_accepts_and_rejects_what_torch_nn_does(name, kw, good):
    torch_cls, cls, _ = TORCH[name]
    if "proj_size" in kw and cls is not rnnkit.LSTM:
        assert _construct(torch_cls, kw) is _construct(cls, kw) is ValueError  # RNN/GRU: "only LSTM"
        return
    want = _construct(torch_cls, kw)
    assert (want == "ok") == good or want is None
    assert _construct(cls, kw) == want


@pytest.mark.parametrize("name", ["rnn-tanh", "lstm", "gru"])
@pytest.mark.parametrize("kw", [dict(bidirectional=1), dict(bidirectional="yes"), dict(num_layers=True)], ids=repr)
def test_what_torch_nn_rejects_only_in_forward_is_rejected_at_construction(name, kw):
    torch_cls, cls, _ = TORCH[name]
    module = torch_cls(3, 5, **kw)
    with pytest.raises(TypeError):
        module(torch.randn(4, 2, 3))
    with pytest.raises(TypeError, match="should be of type"):
        cls(3, 5, **kw)


def test_dropout_on_one_layer_warns_as_torch_nn():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        rnnkit.GRU(3, 4, dropout=0.5)


# -- AWD-LSTM's weight drop ---------------------------------------------------------------------
class WeightDrop(nn.Module):
    """DropConnect on recurrent weights the way the AWD-LSTM code does it (Merity et al. 2018):
    the weight is deleted from the module's parameters, kept as ``<name>_raw``, and a dropped
    copy is set as a plain attribute before every forward."""

    def __init__(self, module: nn.Module, names: list[str], p: float):
        super().__init__()
        self.module, self.names, self.p = module, names, p
        for name in names:
            w = getattr(module, name)
            del module._parameters[name]
            module.register_parameter(name + "_raw", nn.Parameter(w.data))

    def forward(self, *args):
        for name in self.names:
            raw = getattr(self.module, name + "_raw")
            setattr(self.module, name, nn.functional.dropout(raw, p=self.p, training=self.training))
        return self.module(*args)


@pytest.mark.parametrize("path", ["native", "python", "autograd"])
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn-tanh"])
def test_weight_drop_gives_torch_nn_numbers_and_trains(monkeypatch, name, path):
    torch_cls, cls, options = TORCH[name]
    kw = use_path(monkeypatch, path)
    ref = torch_cls(3, 6, num_layers=2, **options)
    layer = cls(3, 6, num_layers=2, **options, **kw)
    layer.load_state_dict(ref.state_dict())
    names = ["weight_hh_l0", "weight_hh_l1"]
    dropped_ref, dropped = WeightDrop(ref, names, 0.3), WeightDrop(layer, names, 0.3)
    x = torch.randn(7, 4, 3)
    target = 0.5 * torch.tanh(x.cumsum(0).sum(2, keepdim=True)).expand(7, 4, 6)  # needs the recurrence

    def step(model, opt):
        torch.manual_seed(5)  # the same DropConnect masks for both
        out, _ = model(x)
        loss = (out - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach(), out

    opt_ref = torch.optim.Adam(dropped_ref.parameters(), lr=0.02)
    opt = torch.optim.Adam(dropped.parameters(), lr=0.02)
    losses = []
    for _ in range(20):
        (want, _), (got, out) = step(dropped_ref, opt_ref), step(dropped, opt)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        losses.append(got.item())
    assert losses[-1] < 0.5 * losses[0]
    raw = layer.weight_hh_l0_raw
    assert raw.grad is not None and raw.grad.abs().sum() > 0
    torch.testing.assert_close(raw, ref.weight_hh_l0_raw, rtol=1e-4, atol=1e-5)
    assert layer._flat_weights[1] is layer.weight_hh_l0 and not isinstance(layer.weight_hh_l0, nn.Parameter)
    native = {"lstm": "_NativeLSTMBackward", "gru": "_NativeGRUBackward"}.get(name)
    assert (native in graph_nodes(out)) == (path == "native" and native is not None)


# -- torch.nn.utils.parametrize and weight_norm --------------------------------------------------
class Tanh(nn.Module):
    def forward(self, w):
        return w.tanh()


def _parametrize(module, how):
    if how == "parametrize":
        parametrize.register_parametrization(module, "weight_hh_l0", Tanh())
    else:
        nn.utils.parametrizations.weight_norm(module, name="weight_hh_l0")
    return module


@pytest.mark.parametrize("path", ["native", "python", "autograd"])
@pytest.mark.parametrize("how", ["parametrize", "weight_norm"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_parametrized_weight_gives_torch_nn_numbers_and_trains(monkeypatch, name, how, path):
    torch_cls, cls, _ = TORCH[name]
    kw = use_path(monkeypatch, path)
    ref = torch_cls(3, 6, bidirectional=True)
    layer = cls(3, 6, bidirectional=True, **kw)
    layer.load_state_dict(ref.state_dict())
    ref, layer = _parametrize(ref, how), _parametrize(layer, how)
    assert [n for n, _ in layer.named_parameters()] == [n for n, _ in ref.named_parameters()]
    x = torch.randn(5, 3, 3)
    target = 0.5 * torch.tanh(x.cumsum(0).sum(2, keepdim=True)).expand(5, 3, 12)
    opt_ref, opt = torch.optim.Adam(ref.parameters(), lr=0.05), torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        for model, o in ((ref, opt_ref), (layer, opt)):
            out, _ = model(x)
            loss = (out - target).pow(2).mean()
            o.zero_grad()
            loss.backward()
            o.step()
            losses.append(loss.item())
        torch.testing.assert_close(losses[-1], losses[-2], rtol=1e-5, atol=1e-6)
    assert losses[-1] < 0.5 * losses[1]
    originals = [p for n, p in layer.named_parameters() if n.startswith("parametrizations.weight_hh_l0")]
    assert originals and all(p.grad is not None and p.grad.abs().sum() > 0 for p in originals)
    native = {"lstm": "_NativeLSTMBackward", "gru": "_NativeGRUBackward"}[name]
    assert (native in graph_nodes(out)) == (path == "native")
