"""The native loops of the element-wise linear recurrences (minGRU, minLSTM): the same outputs
and gradients as the parallel scan and the Python loop for every option, float64 gradcheck and
gradgradcheck, and which path the layers choose."""

from __future__ import annotations

import itertools

import pytest
import torch

import rnnkit
from rnnkit.cells.minrnn import _NativeMinRNN
from rnnkit.engine import native

from .cases import graph_nodes
from .test_native import _count_native_calls, assert_auto_backend

pytestmark = pytest.mark.usefixtures("native_loops_built")


T, B, I, H = 7, 4, 5, 6

# name → (layer class, constructor keyword arguments): every kind and candidate of minrnn.cpp
MIN_UNITS = {
    "mingru": (rnnkit.MinGRU, {}),
    "mingru-g": (rnnkit.MinGRU, {"candidate_activation": "g"}),
    "mingru-tanh": (rnnkit.MinGRU, {"candidate_activation": "tanh"}),
    "minlstm": (rnnkit.MinLSTM, {}),
    "minlstm-tanh": (rnnkit.MinLSTM, {"candidate_activation": "tanh"}),
    "minlstm-plain-g": (rnnkit.MinLSTM, {"normalize": False, "candidate_activation": "g"}),
    "minlstm-plain": (rnnkit.MinLSTM, {"normalize": False}),
}
OPTIONS = [
    {}, {"bidirectional": True, "num_layers": 2}, {"recurrent_dropout": 0.3, "zoneout": 0.2},
    {"bidirectional": True, "num_layers": 2, "recurrent_dropout": 0.2, "zoneout": 0.1, "bias": False},
]


def _make(unit, **kw):
    cls, opts = MIN_UNITS[unit]
    return cls(I, H, **opts, **kw)


def _grads(layer, x, h0, lengths, seed=5):
    torch.manual_seed(seed)  # the same dropout/zoneout masks on every path
    out, h = layer(x, h0, lengths=lengths)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    loss = (out * w).sum() + h.pow(2).sum()
    return [out, h, *torch.autograd.grad(loss, [x, h0, *layer.parameters()])]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("unit,options,use_lengths", [
    *itertools.product(MIN_UNITS, [OPTIONS[0], OPTIONS[3]], [True]),
    *itertools.product(["mingru", "minlstm"], OPTIONS, [False, True]),
])
def test_native_equals_scan_and_python_loop(monkeypatch, dtype, unit, options, use_lengths):
    """The native loop (counted: once per layer and direction), the parallel scan and the
    Python loop give the same outputs and gradients of x, h_0 and every parameter: float64
    to 1e-10, with lengths, both directions, stacking, recurrent dropout and zoneout."""
    layer = _make(unit, **options).to(dtype)
    n = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(n, B, H, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    calls = _count_native_calls(monkeypatch, _NativeMinRNN)
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer.backend = "bptt"
    got = _grads(layer, x, h0, lengths)
    assert len(calls) == n
    layer.backend = "scan"
    scan = _grads(layer, x, h0, lengths)
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    layer.backend = "bptt"
    loop = _grads(layer, x, h0, lengths)
    assert len(calls) == n
    tol = {"rtol": 1e-5, "atol": 2e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for want in (scan, loop):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("unit", ["mingru", "mingru-g", "minlstm", "minlstm-plain-g"])
@pytest.mark.parametrize("reverse", [False, True])
def test_native_gradcheck(monkeypatch, unit, reverse):
    """float64 gradcheck of the native loop with lengths, zoneout and recurrent dropout (masks
    fixed by reseeding), over x, h_0 and the parameters; asserts that it is what ran."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    calls = _count_native_calls(monkeypatch, _NativeMinRNN)
    layer = _make(unit, bidirectional=reverse, zoneout=0.2, recurrent_dropout=0.3).double()
    x = torch.randn(5, 2, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2 if reverse else 1, 2, H, dtype=torch.float64, requires_grad=True)
    names = [k for k, _ in layer.named_parameters()]

    def f(x, h0, *params):
        torch.manual_seed(3)
        with torch.nn.utils.stateless._reparametrize_module(layer, dict(zip(names, params))):
            return layer(x, h0, lengths=torch.tensor([5, 3]))

    assert torch.autograd.gradcheck(f, (x, h0, *layer.parameters()))
    assert len(calls) >= (2 if reverse else 1)


@pytest.mark.parametrize("unit", ["mingru-tanh", "minlstm"])
def test_native_gradgradcheck_hands_over_to_the_reference(monkeypatch, unit):
    """The native backward is not differentiable: under create_graph=True the engine
    differentiates the Python reference instead, so second derivatives are right."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    calls = _count_native_calls(monkeypatch, _NativeMinRNN)
    layer = _make(unit, bidirectional=True).double()
    x = torch.randn(4, 2, I, dtype=torch.float64, requires_grad=True)
    params = list(layer.parameters())
    names = [k for k, _ in layer.named_parameters()]

    def f(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(layer, dict(zip(names, ps))):
            out, h = layer(x, lengths=torch.tensor([4, 2]))
        return out.tanh(), h

    assert torch.autograd.gradgradcheck(f, (x, *params))
    assert calls


@pytest.mark.parametrize("unit", ["mingru", "minlstm", "qrnn"])
def test_default_backend_runs_native_and_falls_back_to_the_scan(monkeypatch, unit):
    """backend="auto" (the default) trains and infers on the native loop on the CPU; with
    the native loops off, with the gradient record, or on backend="scan" it runs the scan."""
    from rnnkit.cells.qrnn import _NativeFoPool

    make, binding, node = {
        "mingru": (lambda **kw: rnnkit.MinGRU(I, H, num_layers=2, **kw), _NativeMinRNN, "_NativeMinRNNBackward"),
        "minlstm": (lambda **kw: rnnkit.MinLSTM(I, H, num_layers=2, **kw), _NativeMinRNN, "_NativeMinRNNBackward"),
        "qrnn": (lambda **kw: rnnkit.QRNN(I, H, num_layers=2, window=1, **kw), _NativeFoPool, "_NativeFoPoolBackward"),
    }[unit]
    scan_node = "_ScanCellRecurrenceBackward" if unit == "qrnn" else "_LinearRecurrenceBackward"
    assert_auto_backend(monkeypatch, binding, make, node, scan_node)


@pytest.mark.parametrize("unit", ["mingru", "minlstm-tanh"])
def test_step_by_step_equals_the_native_forward(unit):
    """Generation (step()) continues what the native forward computed."""
    layer = _make(unit, num_layers=2).double()
    x = torch.randn(9, 3, I, dtype=torch.float64)
    out, h_n = layer(x)
    assert "_NativeMinRNNBackward" in graph_nodes(out)
    h = None
    for t in range(9):
        y, h = layer.step(x[t], h)
        torch.testing.assert_close(y, out[t], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_n, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_minlstm_extreme_gates_stay_finite(dtype):
    """Pre-activations of ±hundreds: the normalized gates f' = f / (f + i) of the native loop
    are finite and equal the Python cell's (which avoids dividing by a tiny f + i)."""
    cell = rnnkit.MinLSTM(1, 3).cell
    xw = torch.tensor([[-200.0, 30.0, -750.0, -300.0, -300.0, -740.0, 0.7, -1.0, 2.0]], dtype=dtype)  # xf, xi, xh
    a, b, _ = cell.coefficients(xw)
    res = native.load().minrnn_forward(xw.view(1, 1, 9).contiguous(), torch.ones(1, 3, dtype=dtype), None, None,
                                       None, "minlstm", "identity", False, False)
    assert torch.isfinite(res["out"]).all()
    torch.testing.assert_close(res["out"][0], a + b)  # h_0 = 1: h_1 = a + b
    assert a[0, 0] > 1 - 1e-6 and a[0, 1] > 1 - 1e-6 and 1e-5 < a[0, 2] < 1e-4  # σ(-10) for the third


def test_native_minrnn_rejects_a_wrong_width():
    ext = native.load()
    with pytest.raises(RuntimeError, match=r"xw must be \(T, B, 3·H\)"):
        ext.minrnn_forward(torch.zeros(2, 1, 8), torch.zeros(1, 4), None, None, None, "minlstm", "identity",
                           False, False)
    with pytest.raises(RuntimeError, match="kind must be"):
        ext.minrnn_forward(torch.zeros(2, 1, 8), torch.zeros(1, 4), None, None, None, "mingru3", "identity",
                           False, False)


# -- QRNN and SRU: the fo-pooling loop (qrnn.cpp) ----------------------------------------------------

# name → (layer class, keyword arguments, input size, the backend of their parallel scan or None)
POOL_UNITS = {
    "qrnn": (rnnkit.QRNN, {}, I, "scan"),
    "qrnn-k1": (rnnkit.QRNN, {"window": 1}, I, "scan"),
    "qrnn-k3": (rnnkit.QRNN, {"window": 3}, I, "scan"),
    "sru": (rnnkit.SRU, {}, I, None),
    "sru-square": (rnnkit.SRU, {"highway_scale": 1.5}, H, None),  # I = H: x̂ = x
    "sru-linear": (rnnkit.SRU, {"gate_recurrence": False}, I, "scan"),
}


def _pool_layer(unit, **kw):
    cls, opts, width, _ = POOL_UNITS[unit]
    layer = cls(width, H, **opts, **kw)
    with torch.no_grad():  # v ≠ 0, so that the SRU's gate recurrence matters
        for name, p in layer.named_parameters():
            if name.startswith(("weight_cf", "weight_cr")):
                p.uniform_(-1.0, 1.0)
    return layer


def _pool_grads(layer, x, state, lengths):
    out, final = layer(x, state, lengths=lengths)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    loss = (out * w).sum() + sum((f * f.tanh()).sum() for f in final)
    inputs = [x, *state, *layer.parameters()]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [out, *final, *(torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("unit", list(POOL_UNITS))
@pytest.mark.parametrize("options,use_lengths", [({}, False), ({}, True),
                                                 ({"bidirectional": True, "num_layers": 2}, True)])
def test_native_fopool_equals_python_loop_and_scan(monkeypatch, dtype, unit, options, use_lengths):
    """The native fo-pooling (counted: once per layer and direction), the Python step loop and,
    where the unit has one, the parallel scan: the same outputs, final states and gradients of
    x, the initial state and every parameter (float64 to 1e-10)."""
    from rnnkit.cells.qrnn import _NativeFoPool

    layer = _pool_layer(unit, **options).to(dtype)
    n = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x = torch.randn(T, B, layer.input_size, dtype=dtype, requires_grad=True)
    state = tuple(torch.randn(n, B, s, dtype=dtype, requires_grad=True) for s in layer.cell.state_sizes())
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    calls = _count_native_calls(monkeypatch, _NativeFoPool)
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer.backend = "bptt"
    got = _pool_grads(layer, x, state, lengths)
    assert len(calls) == n
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    wants = [_pool_grads(layer, x, state, lengths)]
    if POOL_UNITS[unit][3]:
        layer.backend = POOL_UNITS[unit][3]
        wants.append(_pool_grads(layer, x, state, lengths))
    assert len(calls) == n
    tol = {"rtol": 1e-5, "atol": 2e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for want in wants:
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("unit", ["qrnn", "sru", "sru-linear"])
def test_native_fopool_gradcheck_and_gradgradcheck(monkeypatch, unit):
    """float64 gradcheck of the native loop (both directions, lengths, initial state) and
    gradgradcheck through its hand-over to the Python steps under create_graph=True."""
    from rnnkit.cells.qrnn import _NativeFoPool

    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    calls = _count_native_calls(monkeypatch, _NativeFoPool)
    layer = _pool_layer(unit, bidirectional=True, backend="bptt").double()
    x = torch.randn(5, 2, layer.input_size, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(2, 2, s, dtype=torch.float64, requires_grad=True) for s in layer.cell.state_sizes())
    names = [k for k, _ in layer.named_parameters()]
    k = len(state)

    def f(x, *rest):
        with torch.nn.utils.stateless._reparametrize_module(layer, dict(zip(names, rest[k:]))):
            out, final = layer(x, rest[:k], lengths=torch.tensor([5, 3]))
        return (out.tanh(), *final[1:])  # h_n is out at the last step

    inputs = (x, *state[1:], *layer.parameters())
    g = lambda x, *rest: f(x, state[0], *rest)  # noqa: E731 -- h_0 does not enter the recurrence
    assert torch.autograd.gradcheck(g, inputs)
    assert torch.autograd.gradgradcheck(g, inputs)
    assert calls
