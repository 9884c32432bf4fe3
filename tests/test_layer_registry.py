"""The layer registry (rnnkit/layers/registry.py): every name builds, every layer states its
sizes without running, presets and cell classes register like layer classes."""

import pytest
import torch

import rnnkit
from rnnkit.cells import ElmanCell
from rnnkit.layers import registry


@pytest.mark.parametrize("name", rnnkit.layers.names())
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_and_state_sizes_agree_with_a_forward(name, bidirectional):
    """``output_size`` and ``state_sizes``, which models read instead of probing, are what a
    forward returns: (T, B, output_size) and one (L·D, B, S_k) per entry of state_sizes."""
    layer = rnnkit.layers.build(name, 5, 6, num_layers=2, bidirectional=bidirectional)
    out, state = layer(torch.randn(3, 2, 5))
    states = (state,) if isinstance(state, torch.Tensor) else tuple(state)
    D = 2 if bidirectional else 1
    assert out.shape == (3, 2, layer.output_size)
    assert layer.output_size == 6 * D
    assert tuple(s.shape[-1] for s in states) == layer.state_sizes
    assert all(s.shape[:2] == (2 * D, 2) for s in states)


@pytest.mark.parametrize("name, kwargs, output_size, state_sizes", [
    ("lstm", {"proj_size": 2}, 2, (2, 6)),
    ("jordan", {"output_size": 3}, 3, (3,)),
    ("jordan", {}, 6, (6,)),  # the registered factory: output_size defaults to hidden_size
    ("cifg", {}, 6, (6, 6)),
])
def test_sizes_follow_the_options(name, kwargs, output_size, state_sizes):
    layer = rnnkit.make_layer(name, 4, 6, **kwargs)
    assert (layer.output_size, layer.state_sizes) == (output_size, state_sizes)
    out, _ = layer(torch.randn(2, 1, 4))
    assert out.shape[-1] == output_size


def test_irnn_is_a_registered_preset_not_a_layer_type():
    """``irnn`` builds the ReLU Elman RNN with identity recurrent weights, through its
    registered factory; LAYER_TYPES lists layer classes only."""
    assert "irnn" in rnnkit.layers.names() and "irnn" not in rnnkit.LAYER_TYPES
    layer = rnnkit.make_layer("irnn", 3, 4)
    assert isinstance(layer, rnnkit.RNN) and layer.nonlinearity == "relu"
    torch.testing.assert_close(layer.weight_hh_l0, torch.eye(4))
    assert rnnkit.make_layer("irnn", 3, 4, init="orthogonal").init == "orthogonal"


def test_layer_types_are_classes_for_every_class_registered_name():
    assert set(rnnkit.LAYER_TYPES) == set(rnnkit.layers.names()) - {"irnn"}
    assert all(isinstance(cls, type) for cls in rnnkit.LAYER_TYPES.values())
    assert rnnkit.LAYER_TYPES["jordan"] is rnnkit.Jordan and rnnkit.LAYER_TYPES["cifg"] is rnnkit.Recurrent


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown cell 'nope'; expected one of \['cifg', 'gru', "):
        rnnkit.layers.build("nope", 3, 4)


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "LAYER_TYPES", dict(registry.LAYER_TYPES))
    return registry


def test_a_cell_class_registers_with_one_line(scratch_registry):
    """The layer options go to Recurrent, the rest to the cell; an alias builds the same."""
    scratch_registry.register("elman", ElmanCell, aliases=("srn",))
    layer = scratch_registry.build("srn", 3, 5, num_layers=2, bidirectional=True, nonlinearity="relu",
                                   zoneout=0.1, bias=False)
    assert type(layer) is rnnkit.Recurrent and isinstance(layer.cell, ElmanCell)
    assert (layer.cell.nonlinearity, layer.cell.bias) == ("relu", False)
    assert (layer.num_layers, layer.bidirectional, layer.zoneout, layer.bias) == (2, True, (0.1,), False)
    assert (layer.output_size, layer.state_sizes) == (10, (5,))
    assert {"elman", "srn"} <= set(scratch_registry.names()) and scratch_registry.LAYER_TYPES["srn"] is rnnkit.Recurrent
    with pytest.raises(TypeError, match="unexpected keyword argument 'peephole'"):
        scratch_registry.build("elman", 3, 5, peephole=True)


def test_a_name_registers_once(scratch_registry):
    with pytest.raises(ValueError, match="a layer named 'lstm' is registered already"):
        scratch_registry.register("lstm", rnnkit.LSTM)
    with pytest.raises(TypeError, match="must be a layer class, a cell class or a function, got int"):
        scratch_registry.register("seven", 7)


@pytest.mark.parametrize("old, new, name", [
    ("rnnkit.units", "rnnkit.layers.elementwise", "MinGRU"),
    ("rnnkit.units_modern", "rnnkit.layers.modern", "SLSTM"),
    ("rnnkit.scan", "rnnkit.engine.scan", "run_scan_cell"),
    ("rnnkit.native", "rnnkit.engine.native", "load"),
])
def test_old_module_paths_warn_and_forward(old, new, name):
    """The moved modules keep their old import path for one release: importing it warns once
    naming the new place, and every name resolves to the new module's (also what is patched)."""
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} has moved to {new}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
