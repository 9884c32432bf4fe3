"""torch.compile of models with rnnkit layers (the graph breaks at each layer, which runs
eagerly on its engine; same outputs and gradients as eager), and torch.func.functional_call
for MAML-style code (fast weights, create_graph, outer backward) equal to torch.nn.LSTM's."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import rnnkit

from .cases import graph_nodes, use_path


class Model(nn.Module):
    """input projection → an rnnkit layer → head: compiled graphs on both sides of the layer."""

    def __init__(self, layer: nn.Module, width: int):
        super().__init__()
        self.inp, self.rnn, self.head = nn.Linear(3, 4), layer, nn.Linear(width, 2)

    def forward(self, x):
        out, _ = self.rnn(torch.tanh(self.inp(x)))
        return self.head(out).mean(0)


def _outputs_and_grads(model, x):
    torch.manual_seed(0)  # the same recurrent dropout masks
    out = model(x)
    grads = torch.autograd.grad(out.pow(2).sum(), [x, *model.parameters()])
    return [out, *grads]


def test_torch_compile_inductor_same_outputs_and_gradients(monkeypatch):
    """The default backend (inductor, C++ on the CPU) on one small model, on the native loop."""
    use_path(monkeypatch, "native")
    torch._dynamo.reset()
    model = Model(rnnkit.LSTM(4, 5, num_layers=2), 5)
    x = torch.randn(6, 2, 3, requires_grad=True)
    want = _outputs_and_grads(model, x)
    got = _outputs_and_grads(torch.compile(model), x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the native loop ran inside the compiled model, and the graph broke only at the layer
    assert "_NativeLSTMBackward" in graph_nodes(torch.compile(model)(x))
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_count == 2 and explanation.graph_break_count == 1


LAYERS = {
    "gru-bidirectional": (lambda: rnnkit.GRU(4, 5, bidirectional=True, recurrent_dropout=0.2), 10),
    "rnn-relu": (lambda: rnnkit.RNN(4, 5, nonlinearity="relu", zoneout=0.1), 5),
    "lstm-proj-layernorm": (lambda: rnnkit.LSTM(4, 5, proj_size=3, layer_norm=True), 3),
    "jordan": (lambda: rnnkit.Jordan(4, 5, 3), 3),
    "mingru": (lambda: rnnkit.MinGRU(4, 5, num_layers=2), 5),
    "indrnn": (lambda: rnnkit.IndRNN(4, 5, recurrent_max_abs=1.0), 5),
}


@pytest.mark.parametrize("path", ["native", "python", "autograd"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_torch_compile_aot_eager_same_outputs_and_gradients(monkeypatch, name, path):
    kw = use_path(monkeypatch, path)
    build, width = LAYERS[name]
    model = Model(build(), width)
    if kw:
        model.rnn.backend = kw["backend"]
    x = torch.randn(6, 2, 3, requires_grad=True)
    want = _outputs_and_grads(model, x)
    torch._dynamo.reset()
    got = _outputs_and_grads(torch.compile(model, backend="aot_eager"), x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# two units of issue #16 on their hand-written backends (mLSTM's chunkwise form, the LRU's
# parallel scan over a complex state) and on "autograd": (builder, output width)
MODERN = {
    "mlstm": (lambda backend: rnnkit.MLSTM(4, 4, num_heads=2, chunk_size=4, backend=backend), 4),
    "lru": (lambda backend: rnnkit.LRU(4, 5, state_size=3, bidirectional=True, backend=backend), 10),
}
MODERN_BACKENDS = {"mlstm": "chunkwise", "lru": "scan"}


@pytest.mark.parametrize("fast", [True, False], ids=["hand-written", "autograd"])
@pytest.mark.parametrize("name", list(MODERN))
def test_torch_compile_aot_eager_modern_units(name, fast):
    build, width = MODERN[name]
    torch.manual_seed(0)
    model = Model(build(MODERN_BACKENDS[name] if fast else "autograd"), width)
    x = torch.randn(6, 2, 3, requires_grad=True)
    want = _outputs_and_grads(model, x)
    torch._dynamo.reset()
    got = _outputs_and_grads(torch.compile(model, backend="aot_eager"), x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# -- functional_call and MAML ---------------------------------------------------------------------
def _maml_grads(model, x_support, y_support, x_query, y_query, inner_lr=0.1):
    """One MAML outer step (Finn et al. 2017): an inner SGD step on the support set through
    functional_call with fast weights (create_graph=True), the query loss at the fast weights,
    and its gradient w.r.t. the initial weights (through the inner step)."""
    params = dict(model.named_parameters())

    def loss(p, x, y):
        out, _ = functional_call(model, p, (x,))
        return (out[-1] - y).pow(2).mean()

    inner = torch.autograd.grad(loss(params, x_support, y_support), list(params.values()), create_graph=True)
    fast = {n: p - inner_lr * g for (n, p), g in zip(params.items(), inner)}
    outer = loss(fast, x_query, y_query)
    return [outer, *torch.autograd.grad(outer, list(params.values()))]


@pytest.mark.parametrize("path", ["native", "python", "autograd"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_maml_with_functional_call_equals_torch_nn(monkeypatch, name, path):
    kw = use_path(monkeypatch, path)
    torch_cls, cls = {"lstm": (nn.LSTM, rnnkit.LSTM), "gru": (nn.GRU, rnnkit.GRU)}[name]
    ref = torch_cls(3, 4, num_layers=2, dtype=torch.float64)
    layer = cls(3, 4, num_layers=2, dtype=torch.float64, **kw)
    layer.load_state_dict(ref.state_dict())
    data = [torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64),
            torch.randn(6, 2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)]
    want = _maml_grads(ref, *data)
    got = _maml_grads(layer, *data)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    # the second-order term is there: first-order MAML (inner gradients detached) differs
    assert not torch.allclose(got[1], _first_order_maml(layer, *data)[1])


@pytest.mark.parametrize("name", list(MODERN))
def test_maml_with_functional_call_on_modern_units_equals_the_autograd_backend(name):
    """The second-order MAML gradient through the hand-written backend (which hands the inner
    create_graph backward to its reference) equals the one of the unit's steps under autograd."""
    build, _ = MODERN[name]
    torch.manual_seed(0)
    layer = build(MODERN_BACKENDS[name]).double()
    ref = build("autograd").double()
    ref.load_state_dict(layer.state_dict())
    D, H = layer.num_directions, layer.hidden_size
    data = [torch.randn(5, 2, 4, dtype=torch.float64), torch.randn(2, D * H, dtype=torch.float64),
            torch.randn(6, 2, 4, dtype=torch.float64), torch.randn(2, D * H, dtype=torch.float64)]
    want = _maml_grads(ref, *data)
    got = _maml_grads(layer, *data)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert not torch.allclose(got[1], _first_order_maml(layer, *data)[1])


def _first_order_maml(model, x_support, y_support, x_query, y_query, inner_lr=0.1):
    params = dict(model.named_parameters())
    out, _ = functional_call(model, params, (x_support,))
    inner = torch.autograd.grad((out[-1] - y_support).pow(2).mean(), list(params.values()))
    fast = {n: p - inner_lr * g for (n, p), g in zip(params.items(), inner)}
    out, _ = functional_call(model, fast, (x_query,))
    outer = (out[-1] - y_query).pow(2).mean()
    return [outer, *torch.autograd.grad(outer, list(params.values()))]
