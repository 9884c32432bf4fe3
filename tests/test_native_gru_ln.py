"""The layer-norm GRU's native loop (rnnkit/cells/native/gru_ln.cpp): the input projection's
layer norm runs inside the loop (the engine's GRUCell.prepare_input does not), with the same
outputs and gradients as the Python loop in both forms and every loop option, float64
gradcheck, and the forward-only (no_grad) path."""

from __future__ import annotations

import itertools

import pytest
import torch

import rnnkit
from rnnkit.cells.gru import GRUCell
from rnnkit.engine import native

from .cases import graph_nodes

T, B, I, H = 7, 4, 5, 6

OPTIONS = [
    {}, {"reset_after": False}, {"bias": False}, {"bias": False, "reset_after": False},
    {"recurrent_dropout": 0.3, "zoneout": 0.2},
    {"reset_after": False, "recurrent_dropout": 0.3, "zoneout": 0.15},
    {"bidirectional": True, "num_layers": 2},
    {"reset_after": False, "bidirectional": True, "num_layers": 2, "recurrent_dropout": 0.2},
]


pytestmark = pytest.mark.usefixtures("native_loops_built")


@pytest.fixture
def calls(monkeypatch):
    """Records the calls of GRUCell.prepare_input ("prepare_input") and of the extension's GRU
    entry points (by name) while the native loops are on."""
    seen: list[str] = []
    real_prepare = GRUCell.prepare_input
    monkeypatch.setattr(GRUCell, "prepare_input", lambda *a: seen.append("prepare_input") or real_prepare(*a))
    ext = native.load()

    class Counting:
        def __getattr__(self, name):
            if name.startswith("gru"):
                seen.append(name)
            return getattr(ext, name)

    monkeypatch.setattr(native, "load", lambda *a, **k: None if native.mode() == "0" else Counting())
    return seen


def _layer(dtype=torch.float64, **options):
    """A layer-norm GRU with its gains drawn away from 1 and its biases away from 0, so that a
    swapped or dropped one changes the result."""
    layer = rnnkit.GRU(I, H, layer_norm=True, **options).to(dtype)
    with torch.no_grad():
        for name, q in layer.named_parameters():
            if name.startswith("ln_"):
                q.copy_(torch.rand_like(q) + 0.5)
            elif name.startswith("bias"):
                q.copy_(torch.rand_like(q) - 0.5)
    return layer


def _grads(layer, x, h0, lengths, seed=5):
    torch.manual_seed(seed)  # the same dropout/zoneout masks on both paths
    out, h = layer(x, h0, lengths=lengths) if lengths is not None else layer(x, h0)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out.dtype)
    loss = (out * w).sum() + h.pow(2).sum()
    return [out, h, *torch.autograd.grad(loss, [x, h0, *layer.parameters()])]


def _directions(layer) -> int:
    return layer.num_layers * (2 if layer.bidirectional else 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options,use_lengths,training",
                         list(itertools.product(OPTIONS, [False, True], [True, False])))
def test_layer_norm_gru_native_equals_the_python_loop(monkeypatch, calls, dtype, options, use_lengths, training):
    layer = _layer(dtype, **options).train(training)
    n = _directions(layer)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(n, B, H, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    got = _grads(layer, x, h0, lengths)
    assert sorted(calls) == ["gru_ln_backward"] * n + ["gru_ln_forward"] * n  # no prepare_input, no gru_forward
    assert "_NativeGRUBackward" in graph_nodes(got[0])
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    want = _grads(layer, x, h0, lengths)
    assert calls.count("prepare_input") == n  # the Python loop normalizes x W_ihᵀ before its loop
    # float32: C++ and PyTorch sum the variances and the parameter gradients in different
    # orders; each path is within about 3e-4 (relative, floor 1e-2) of the float64 result
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-3, "atol": 3e-4}
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_gru_native_gradcheck(monkeypatch, calls, reset_after, bias):
    """float64 gradcheck of gru_ln.cpp's BPTT over x, h0 and every parameter (the norms' gains
    and the biases included), both directions, with lengths, recurrent dropout and zoneout
    (the masks fixed by reseeding before every call)."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer = _layer(reset_after=reset_after, bias=bias, bidirectional=True, zoneout=0.2, recurrent_dropout=0.3)
    x = torch.randn(5, 2, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, H, dtype=torch.float64, requires_grad=True)
    names = [k for k, _ in layer.named_parameters()]
    lengths = torch.tensor([5, 3])

    def f(x, h0, *params):
        torch.manual_seed(3)
        with torch.nn.utils.stateless._reparametrize_module(layer, dict(zip(names, params))):
            return layer(x, h0, lengths=lengths)

    assert torch.autograd.gradcheck(f, (x, h0, *layer.parameters()))
    assert "gru_ln_backward" in calls and "prepare_input" not in calls and "gru_forward" not in calls


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("use_lengths", [False, True])
def test_layer_norm_gru_inference_runs_the_native_loop_and_keeps_nothing(monkeypatch, calls, reset_after,
                                                                         use_lengths):
    """Under no_grad the loop runs once per direction with keep=False (forward only) and gives
    the Python loop's output and final state."""
    layer = _layer(reset_after=reset_after, bidirectional=True, num_layers=2).eval()
    x = torch.randn(T, B, I, dtype=torch.float64)
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    with torch.no_grad():
        got = layer(x, lengths=lengths) if use_lengths else layer(x)
    assert calls == ["gru_ln_forward"] * 4
    assert got[0].grad_fn is None
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    with torch.no_grad():
        want = layer(x, lengths=lengths) if use_lengths else layer(x)
    assert calls.count("prepare_input") == 4
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_the_loop_keeps_nothing_when_asked_not_to():
    ext = native.load()
    xw, h0, w = torch.randn(T, B, 3 * H), torch.zeros(B, H), torch.randn(3 * H, H)
    norms = (torch.rand(3 * H) + 0.5, torch.rand(3 * H) + 0.5, torch.randn(3 * H), torch.randn(3 * H))
    kept = ext.gru_ln_forward(xw, h0, w, None, None, None, *norms, True, False, True)
    lean = ext.gru_ln_forward(xw, h0, w, None, None, None, *norms, True, False, False)
    assert sorted(lean) == ["h", "out"]
    assert {"gates", "rec", "ln_stats", "hin", "hr"} <= set(kept)
    torch.testing.assert_close(lean["out"], kept["out"], rtol=0, atol=0)


def test_a_layer_norm_parameter_of_the_wrong_shape_is_a_clear_error():
    ext = native.load()
    xw, h0, w = torch.randn(T, B, 3 * H), torch.zeros(B, H), torch.randn(3 * H, H)
    with pytest.raises(RuntimeError, match=r"layer-norm GRU: a layer-norm parameter or bias has shape \[12\], "
                                           r"expected \(18\)"):
        ext.gru_ln_forward(xw, h0, w, None, None, None, torch.ones(3 * H), torch.ones(2 * H), torch.zeros(3 * H),
                           None, True, False, True)
