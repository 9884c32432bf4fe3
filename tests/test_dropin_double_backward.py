"""Double backward (``create_graph=True``: gradient penalties, MAML, Hessian-vector products)
on every engine path: float64 gradgradcheck for every cell family and option, the same
second-order gradients as torch.nn, and the hand-written backward handing over to the
differentiable reference only when autograd asks for a graph."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import rnnkit
from rnnkit.cells import mlstm
from rnnkit.engine import bptt as engine
from rnnkit.engine import scan

from .cases import ALL_CELLS, graph_nodes, make, use_path

T, B, I, H = 3, 2, 3, 4
PATHS = ["native", "python", "autograd"]


def _function(layer, names, n_state, lengths, seed=3):
    """f(x, *state, *params) -> (out, *final state), with dropout/zoneout masks fixed by the seed."""

    def f(x, *rest):
        torch.manual_seed(seed)
        hx = None if not n_state else (rest[0] if n_state == 1 else tuple(rest[:n_state]))
        out, final = functional_call(layer, dict(zip(names, rest[n_state:])), (x, hx), {"lengths": lengths})
        return (out, *(final if isinstance(final, tuple) else (final,)))

    return f


def _inputs(layer, with_state=True, steps=T):
    x = torch.randn(steps, B, layer.input_size, dtype=torch.float64, requires_grad=True)
    LD = layer.num_layers * layer.num_directions
    states = [torch.randn(LD, B, s, dtype=torch.float64) for s in layer.cell.state_sizes()] if with_state else []
    if isinstance(layer, rnnkit.SLSTM):
        states[2] = states[2].abs() + 0.5  # the normaliser n of the sLSTM is positive
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    return x, tuple(s.requires_grad_() for s in states), params


OPTIONS = {
    "lengths+state": {},
    "bidirectional+masks": dict(bidirectional=True, recurrent_dropout=0.3, zoneout=0.2),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("cell", list(ALL_CELLS))
def test_gradgradcheck_every_cell_and_option(monkeypatch, cell, options, path):
    kw = use_path(monkeypatch, path)
    layer = make(cell, I, H, dtype=torch.float64, **OPTIONS[options], **kw)
    x, states, params = _inputs(layer, with_state=options == "lengths+state")
    f = _function(layer, [n for n, _ in layer.named_parameters()], len(states), torch.tensor([3, 2]))
    assert torch.autograd.gradgradcheck(f, (x, *states, *params), atol=1e-5, fast_mode=True)


UNITS = {
    "indrnn": (lambda **kw: rnnkit.IndRNN(I, H, recurrent_max_abs=1.2, nonlinearity="tanh", **kw),
               ["bptt", "autograd"]),
    "irnn": (lambda **kw: rnnkit.make_layer("irnn", I, H, **kw), ["bptt", "autograd"]),
    "mingru": (lambda **kw: rnnkit.MinGRU(I, H, candidate_activation="tanh", **kw), ["scan", "bptt", "autograd"]),
    "mingru-g": (lambda **kw: rnnkit.MinGRU(I, H, candidate_activation="g", **kw), ["scan", "bptt"]),
    "minlstm": (lambda **kw: rnnkit.MinLSTM(I, H, **kw), ["scan", "bptt", "autograd"]),
    "minlstm-plain": (lambda **kw: rnnkit.MinLSTM(I, H, normalize=False, **kw), ["scan", "bptt"]),
}


@pytest.mark.parametrize("unit,backend", [(u, b) for u, (_, backends) in UNITS.items() for b in backends])
def test_gradgradcheck_newer_units(monkeypatch, unit, backend):
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    build, _ = UNITS[unit]
    layer = build(num_layers=2, bidirectional=True, recurrent_dropout=0.2, zoneout=0.1, dtype=torch.float64,
                  backend=backend)
    x, states, params = _inputs(layer)
    f = _function(layer, [n for n, _ in layer.named_parameters()], 1, torch.tensor([3, 2]))
    assert torch.autograd.gradgradcheck(f, (x, *states, *params), atol=1e-5, fast_mode=True)


# the units of issue #16, each on every backend: (builder, backends); the hand-written
# backwards hand over to the reference under create_graph
MODERN = {
    "slstm": (lambda **kw: rnnkit.SLSTM(I, H, num_heads=2, recurrent_dropout=0.2, **kw), ["bptt", "autograd"]),
    "mlstm": (lambda **kw: rnnkit.MLSTM(I, H, num_heads=2, chunk_size=3, **kw), ["chunkwise", "bptt", "autograd"]),
    "lru": (lambda **kw: rnnkit.LRU(I, H, state_size=3, **kw), ["scan", "bptt", "autograd"]),
    "rglru": (lambda **kw: rnnkit.RGLRU(I, H, **kw), ["scan", "bptt", "autograd"]),
    "s6": (lambda **kw: rnnkit.S6(I, H, state_size=3, **kw), ["scan", "bptt", "autograd"]),
    "qrnn": (lambda **kw: rnnkit.QRNN(I, H, **kw), ["scan", "bptt", "autograd"]),
    "sru": (lambda **kw: rnnkit.SRU(I, H, **kw), ["bptt", "autograd"]),
    "sru-linear": (lambda **kw: rnnkit.SRU(I, H, gate_recurrence=False, **kw), ["scan", "bptt", "autograd"]),
}
MODERN_CASES = [(u, b) for u, (_, backends) in MODERN.items() for b in backends]


def _modern(unit, backend):
    """The unit, bidirectional, with random weights of the scale where every term matters
    (the gates' initial biases would saturate some), and float64."""
    build, _ = MODERN[unit]
    layer = build(bidirectional=True, backend=backend, dtype=torch.float64)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if not name.startswith(("nu_log", "theta_log", "A_log", "a_logit", "gamma_log")):
                p.normal_(0.0, 0.5)
    return layer


@pytest.mark.parametrize("unit,backend", MODERN_CASES)
def test_gradgradcheck_modern_units(unit, backend):
    """T = 4 with lengths (4, 2), both directions, a given initial state; mLSTM's chunks of 3
    steps: a whole and a padded one; the QRNN's convolution carry in its state."""
    layer = _modern(unit, backend)
    x, states, params = _inputs(layer, steps=4)
    f = _function(layer, [n for n, _ in layer.named_parameters()], len(states), torch.tensor([4, 2]))
    assert torch.autograd.gradgradcheck(f, (x, *states, *params), atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("unit,backend", [(u, b) for u, b in MODERN_CASES if b != "autograd"])
def test_second_order_gradients_equal_the_autograd_backend(unit, backend):
    """Gradient penalty and Hessian-vector product through the hand-written backends equal
    those of the unit's steps under autograd (its oracle), with lengths and an initial state."""
    layer, ref = _modern(unit, backend), _modern(unit, "autograd")
    ref.load_state_dict(layer.state_dict())
    x, states, _ = _inputs(layer, steps=5)
    state = states[0] if len(states) == 1 else states
    v = [torch.randn_like(t) for t in [*layer.parameters(), x]]
    lengths = torch.tensor([5, 3])
    want = _second_order(ref, x, state, v, lengths)
    got = _second_order(layer, x, state, v, lengths)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# -- the same second-order gradients as torch.nn --------------------------------------------------
TORCH_LAYERS = {
    "lstm": (torch.nn.LSTM, rnnkit.LSTM, {}),
    "lstm-proj": (torch.nn.LSTM, rnnkit.LSTM, {"proj_size": 2}),
    "gru": (torch.nn.GRU, rnnkit.GRU, {}),
    "rnn-tanh": (torch.nn.RNN, rnnkit.RNN, {}),
    "rnn-relu": (torch.nn.RNN, rnnkit.RNN, {"nonlinearity": "relu"}),
}


def _second_order(layer, x, state, v, lengths=None):
    """(gradient penalty ∂/∂θ Σ‖∂L/∂(θ, x)‖², Hessian-vector product H v) for L = Σ out² + Σ h_n."""
    params = list(layer.parameters())
    torch.manual_seed(0)  # the same recurrent dropout masks
    out, final = layer(x, state) if lengths is None else layer(x, state, lengths=lengths)
    finals = final if isinstance(final, tuple) else (final,)
    loss = out.pow(2).sum() + sum(h.sum() for h in finals)
    grads = torch.autograd.grad(loss, [*params, x], create_graph=True)
    penalty = sum(g.pow(2).sum() for g in grads)
    dpenalty = torch.autograd.grad(penalty, [*params, x], retain_graph=True)
    hvp = torch.autograd.grad(sum((g * w).sum() for g, w in zip(grads, v)), [*params, x])
    return [loss, *grads, *dpenalty, *hvp]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", list(TORCH_LAYERS))
def test_second_order_gradients_equal_torch_nn(monkeypatch, name, bidirectional, path):
    torch_cls, cls, options = TORCH_LAYERS[name]
    kw = use_path(monkeypatch, path)
    ref = torch_cls(I, 4, num_layers=2, bidirectional=bidirectional, dtype=torch.float64, **options)
    layer = cls(I, 4, num_layers=2, bidirectional=bidirectional, dtype=torch.float64, **options, **kw)
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(5, B, I, dtype=torch.float64, requires_grad=True)
    D = 2 if bidirectional else 1
    h0 = torch.randn(2 * D, B, options.get("proj_size") or 4, dtype=torch.float64)
    state = (h0, torch.randn(2 * D, B, 4, dtype=torch.float64)) if cls is rnnkit.LSTM else h0
    v = [torch.randn_like(t) for t in [*ref.parameters(), x]]
    want = _second_order(ref, x, state, v)
    got = _second_order(layer, x, state, v)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# -- the hand-written backward hands over only under create_graph --------------------------------
def _count_reference_backwards(monkeypatch) -> list:
    """Count the hand-overs to the differentiable reference (every Function's create_graph
    branch goes through differentiable_backward)."""
    calls = []
    real = engine.differentiable_backward

    def counting(*args):
        calls.append(1)
        return real(*args)

    for module in (engine, scan, mlstm):
        monkeypatch.setattr(module, "differentiable_backward", counting)
    return calls


CASES = {
    "native-lstm": ("native", lambda: rnnkit.LSTM(I, H, num_layers=2, peephole=True), "_NativeLSTMBackward"),
    "native-gru": ("native", lambda: rnnkit.GRU(I, H, reset_after=False, zoneout=0.1), "_NativeGRUBackward"),
    "native-gru-layernorm": ("native", lambda: rnnkit.GRU(I, H, layer_norm=True, bidirectional=True),
                             "_NativeGRUBackward"),
    "native-lstm-layernorm": ("native", lambda: rnnkit.LSTM(I, H, layer_norm=True, recurrent_dropout=0.2),
                              "_NativeLSTMBackward"),
    "native-jordan": ("native", lambda: rnnkit.Jordan(I, H, 2, recurrent_dropout=0.2), "_NativeJordanBackward"),
    "python-lstm": ("python", lambda: rnnkit.LSTM(I, H, layer_norm=True, proj_size=2), "_BPTTBackward"),
    "python-indrnn": ("python", lambda: rnnkit.IndRNN(I, H), "_BPTTBackward"),
    "native-indrnn": ("native", lambda: rnnkit.IndRNN(I, H, nonlinearity="tanh", zoneout=0.1), "_NativeIndRNNBackward"),
    "scan-minlstm": ("python", lambda: rnnkit.MinLSTM(I, H, zoneout=0.1), "_LinearRecurrenceBackward"),
    "native-minlstm": ("native", lambda: rnnkit.MinLSTM(I, H, zoneout=0.1, bidirectional=True),
                       "_NativeMinRNNBackward"),
    "native-sru": ("native", lambda: rnnkit.SRU(I, H, num_layers=2), "_NativeFoPoolBackward"),
    "native-qrnn": ("native", lambda: rnnkit.QRNN(I, H, window=3, backend="bptt"), "_NativeFoPoolBackward"),
    "python-slstm": ("python", lambda: rnnkit.SLSTM(I, H, num_layers=2), "_BPTTBackward"),
    "chunkwise-mlstm": ("python", lambda: rnnkit.MLSTM(I, H, chunk_size=4, bidirectional=True),
                        "MLSTMChunkwiseBackward"),
    "scan-lru": ("python", lambda: rnnkit.LRU(I, H, bidirectional=True), "_ScanCellRecurrenceBackward"),
    "scan-qrnn": ("python", lambda: rnnkit.QRNN(I, H, window=3), "_ScanCellRecurrenceBackward"),
    "steps-mlstm": ("python", lambda: rnnkit.MLSTM(I, H, backend="bptt"), "_StepLoopBackward"),
    "steps-sru": ("python", lambda: rnnkit.SRU(I, H, num_layers=2), "_StepLoopBackward"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fast_backward_unless_create_graph(monkeypatch, case):
    """Ordinary backward: the hand-written (here: native / Python / scan) backward, no
    reference. create_graph=True: the reference, once per direction and layer, with the same
    first-order gradients."""
    path, build, node = CASES[case]
    use_path(monkeypatch, path)
    layer = build().double()
    calls = _count_reference_backwards(monkeypatch)
    x = torch.randn(6, B, I, dtype=torch.float64, requires_grad=True)

    def grads(create_graph):
        torch.manual_seed(0)
        out, _ = layer(x, lengths=torch.tensor([6, 3]))
        assert node in graph_nodes(out)
        return torch.autograd.grad(out.pow(3).sum(), [x, *layer.parameters()], create_graph=create_graph)

    fast = grads(False)
    assert not calls
    differentiable = grads(True)
    assert len(calls) == layer.num_layers * layer.num_directions
    assert all(g.requires_grad for g in differentiable)
    for a, b in zip(differentiable, fast):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


RECORDED = {
    "gru": lambda: rnnkit.GRU(I, H, num_layers=2),
    "lru-scan": lambda: rnnkit.LRU(I, H, num_layers=2),
    "qrnn-scan": lambda: rnnkit.QRNN(I, H, num_layers=2, window=3),
    "sru-steps": lambda: rnnkit.SRU(I, H, num_layers=2),
}


@pytest.mark.parametrize("name", list(RECORDED))
def test_double_backward_with_the_gradient_record(monkeypatch, name):
    """The gradient record of the diagnostics keeps working when the backward builds a graph,
    and records the same norms (of the memory state, for the units of issue #16)."""
    use_path(monkeypatch, "python")
    layer = RECORDED[name]().double()
    x = torch.randn(6, B, I, dtype=torch.float64, requires_grad=True)
    norms = []
    for create_graph in (False, True):
        with rnnkit.record_gradient_norms(layer) as rec:
            out, _ = layer(x)
            (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=create_graph)
        norms.append(dict(rec.norms))
        if create_graph:
            g.sum().backward()  # and the second backward goes through
    kind = type(layer).__name__.lower()
    assert set(norms[0]) == set(norms[1]) == {f"{kind}.l0", f"{kind}.l1"}
    for key in norms[0]:
        torch.testing.assert_close(norms[1][key], norms[0][key])
        assert not norms[1][key].requires_grad
