"""The native loop of the selective state space model S6 (rnnkit/cells/native/s6.cpp): the same
outputs, final states and gradients as the parallel scan, the Python step loop and autograd
for every option of the layer, float64 gradcheck and gradgradcheck, generation, and which
path the layer chooses."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.cells.s6 import _NativeS6
from rnnkit.engine import native

from .cases import graph_nodes
from .test_native import _count_native_calls, assert_auto_backend

pytestmark = pytest.mark.usefixtures("native_loops_built")


T, B, I, H, N = 7, 4, 5, 6, 3

OPTIONS = [
    {}, {"bias": False}, {"dt_rank": 2}, {"bidirectional": True, "num_layers": 2},
    {"bidirectional": True, "num_layers": 2, "learn_initial_state": True},
]


def _layer(dtype=torch.float64, **kw):
    """An S6 layer whose parameters are moved off their initial values (A_log, D, b_Δ all
    distinct per channel and state), so that every gradient is exercised."""
    torch.manual_seed(0)
    layer = rnnkit.S6(I, H, state_size=N, **kw).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def _grads(layer, x, state, lengths):
    out, (y, s) = layer(x, state, lengths=lengths)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    loss = (out * w).sum() + y.pow(2).sum() + (1.7 * s).sin().sum()
    inputs = [x, *state, *layer.parameters()]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [out, y, s, *(torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("use_lengths", [False, True])
def test_native_s6_equals_scan_python_loop_and_autograd(monkeypatch, dtype, options, use_lengths):
    """The native loop (counted: once per layer and direction), the parallel scan, the Python
    step loop and the steps under autograd: the same outputs, final (y, s) and gradients of x,
    the initial state and every parameter (W_ih, b_ih, W_Δ, b_Δ, A_log, D; float64 to 1e-10),
    with lengths, both directions, stacking and a learnable initial state."""
    layer = _layer(dtype, **options)
    n = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    state = (torch.randn(n, B, H, dtype=dtype, requires_grad=True),
             torch.randn(n, B, H * N, dtype=dtype, requires_grad=True))
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    calls = _count_native_calls(monkeypatch, _NativeS6)
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    assert layer.backend == "auto"
    got = _grads(layer, x, state, lengths)
    assert len(calls) == n
    wants = []
    for backend in ("scan", "autograd"):
        layer.backend = backend
        wants.append(_grads(layer, x, state, lengths))
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    layer.backend = "bptt"
    wants.append(_grads(layer, x, state, lengths))
    assert len(calls) == n
    names = [k for k, _ in layer.named_parameters()]
    for name in ("weight_dt_l0", "bias_dt_l0", "A_log_l0", "D_l0"):  # out, y, s, x, y_0, s_0 first
        assert got[6 + names.index(name)].abs().max() > 0
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for want in wants:
        assert len(got) == len(want)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("lengths", [None, [37, 20, 16, 1]])
def test_native_s6_recomputes_states_across_blocks(monkeypatch, lengths):
    """T = 37 spans three of the loop's blocks of 16 steps (it keeps the state entering each
    and recomputes the others in the backward); lengths end inside and at a block's edge.
    Outputs, final state and every gradient equal the scan's (float64, 1e-10), both directions."""
    layer = _layer(bidirectional=True)
    x = torch.randn(37, B, I, dtype=torch.float64, requires_grad=True)
    state = (torch.randn(2, B, H, dtype=torch.float64, requires_grad=True),
             torch.randn(2, B, H * N, dtype=torch.float64, requires_grad=True))
    lengths = None if lengths is None else torch.tensor(lengths)
    calls = _count_native_calls(monkeypatch, _NativeS6)
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    got = _grads(layer, x, state, lengths)
    assert len(calls) == 2
    layer.backend = "scan"
    for a, b in zip(got, _grads(layer, x, state, lengths)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_native_s6_gradcheck_and_gradgradcheck(monkeypatch, bidirectional):
    """float64 gradcheck of the native loop (lengths, initial state s_0, every parameter) and
    gradgradcheck through its hand-over to the Python steps under create_graph=True."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    calls = _count_native_calls(monkeypatch, _NativeS6)
    layer = _layer(bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = torch.randn(5, 2, I, dtype=torch.float64, requires_grad=True)
    y0 = torch.randn(D, 2, H, dtype=torch.float64)
    s0 = torch.randn(D, 2, H * N, dtype=torch.float64, requires_grad=True)
    names = [k for k, _ in layer.named_parameters()]

    def f(x, s0, *params):  # y_0 does not enter the recurrence
        with torch.nn.utils.stateless._reparametrize_module(layer, dict(zip(names, params))):
            out, (y, s) = layer(x, (y0, s0), lengths=torch.tensor([5, 3]))
        return out.tanh(), y, s

    inputs = (x, s0, *layer.parameters())
    assert torch.autograd.gradcheck(f, inputs)
    assert calls
    n = len(calls)
    assert torch.autograd.gradgradcheck(f, inputs)
    assert len(calls) > n


def test_default_backend_runs_native_and_falls_back_to_the_scan(monkeypatch):
    """backend="auto" (the default) trains and infers on the native loop on the CPU; with the
    native loops off, with the gradient record, or on backend="scan" it runs the scan."""
    assert_auto_backend(monkeypatch, _NativeS6, lambda **kw: rnnkit.S6(I, H, num_layers=2, state_size=N, **kw),
                        "_NativeS6Backward", "_ScanCellRecurrenceBackward")


def test_step_by_step_equals_the_native_forward():
    """Generation (step()) continues what the native forward computed."""
    layer = _layer(num_layers=2)
    x = torch.randn(9, 3, I, dtype=torch.float64)
    out, (y_n, s_n) = layer(x)
    assert "_NativeS6Backward" in graph_nodes(out)
    state = None
    for t in range(9):
        y, state = layer.step(x[t], state)
        torch.testing.assert_close(y, out[t], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state[0], y_n, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state[1], s_n, rtol=1e-12, atol=1e-12)


def test_native_s6_rejects_a_wrong_width():
    ext = native.load()
    u = torch.zeros(3, 2, 10)  # H + R + 2N = 4 + 1 + 4 = 9
    with pytest.raises(RuntimeError, match=r"u must be \(T, B, H \+ R \+ 2N\)"):
        ext.s6_forward(u, torch.zeros(3, 2, 4), torch.zeros(4, 2), torch.zeros(4), torch.zeros(2, 4),
                       torch.zeros(2, 8), None, 1, False, False)
