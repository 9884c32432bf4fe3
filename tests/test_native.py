"""The native (C++) LSTM loop: the same outputs and gradients as the Python engine for
every option it takes, float64 gradcheck, and the dispatch rules (what runs natively and
what falls back to the Python loop)."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

import rnnkit
from rnnkit.cells.gru import _NativeGRU
from rnnkit.cells.indrnn import _NativeIndRNN
from rnnkit.cells.jordan import _NativeJordan
from rnnkit.cells.lstm import _NativeLSTM
from rnnkit.engine import native

from .cases import graph_nodes

pytestmark = pytest.mark.usefixtures("native_loops_built")


T, B, I, H = 7, 4, 5, 6


def _grads(layer, x, state, lengths, seed):
    torch.manual_seed(seed)  # the same dropout/zoneout masks on both paths
    out, (h, c) = layer(x, state, lengths=lengths) if lengths is not None else layer(x, state)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    loss = (out * w).sum() + h.pow(2).sum() + c.sum()
    return [out, h, c, *torch.autograd.grad(loss, [x, *state, *layer.parameters()])]


def _native_function_of(layer):
    return {rnnkit.LSTM: _NativeLSTM, rnnkit.GRU: _NativeGRU,
            rnnkit.Jordan: _NativeJordan, rnnkit.IndRNN: _NativeIndRNN}[type(layer)]


def _both_paths(monkeypatch, grads, layer, *args):
    """``grads(layer, *args, seed)`` on the native loop and on the Python loop, asserting that
    the native loop ran once per layer and direction (a silent fallback would compare the
    Python loop with itself) and the Python loop did not call it."""
    calls = _count_native_calls(monkeypatch, _native_function_of(layer))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    got = grads(layer, *args, 5)
    assert len(calls) == layer.num_layers * (2 if layer.bidirectional else 1)
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    want = grads(layer, *args, 5)
    assert len(calls) == layer.num_layers * (2 if layer.bidirectional else 1)
    return got, want


OPTIONS = [
    {}, {"peephole": True}, {"bidirectional": True, "num_layers": 2}, {"recurrent_dropout": 0.3},
    {"zoneout": 0.2}, {"zoneout": (0.1, 0.3), "peephole": True, "recurrent_dropout": 0.2, "bidirectional": True},
    {"layer_norm": True},
    {"layer_norm": True, "peephole": True, "zoneout": 0.2, "recurrent_dropout": 0.2, "bidirectional": True},
    {"proj_size": 4}, {"proj_size": 3, "num_layers": 2, "bidirectional": True, "zoneout": 0.1},
    {"proj_size": 4, "layer_norm": True, "peephole": True, "recurrent_dropout": 0.2},
    {"layer_norm": True, "bias": False, "num_layers": 2, "bidirectional": True, "zoneout": (0.1, 0.3)},
]


def _random_norms(layer):
    """Gains and biases of the layer norms away from their initial 1 and 0, so that a swapped
    or dropped one changes the result."""
    with torch.no_grad():
        for name, q in layer.named_parameters():
            if name.startswith("ln_"):
                q.copy_(torch.rand_like(q) - 0.5 if "bias" in name else torch.rand_like(q) + 0.5)
    return layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options,use_lengths,training",
                         list(itertools.product(OPTIONS, [False, True], [True, False])))
def test_native_equals_the_python_loop(monkeypatch, dtype, options, use_lengths, training):
    layer = _random_norms(rnnkit.LSTM(I, H, **options).to(dtype).train(training))
    n = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    state = tuple(torch.randn(n, B, size, dtype=dtype, requires_grad=True)
                  for size in (options.get("proj_size") or H, H))
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    got, want = _both_paths(monkeypatch, _grads, layer, x, state, lengths)
    if dtype == torch.float64:
        tol = {"rtol": 1e-12, "atol": 1e-12}
    else:  # float32 layer norm: C++ and PyTorch sum the variance in different orders
        tol = {"rtol": 1e-4, "atol": 1e-4} if options.get("layer_norm") else {"rtol": 1e-5, "atol": 2e-6}
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("options", [{}, {"peephole": True, "zoneout": 0.25, "recurrent_dropout": 0.3},
                                     {"layer_norm": True, "peephole": True}, {"proj_size": 3, "zoneout": 0.2},
                                     {"layer_norm": True, "proj_size": 3, "zoneout": 0.2, "recurrent_dropout": 0.3}])
@pytest.mark.parametrize("reverse", [False, True])
def test_native_gradcheck(monkeypatch, options, reverse):
    """float64 gradcheck of the C++ BPTT (masks fixed by reseeding before every call)."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer = _random_norms(rnnkit.LSTM(3, 4, bidirectional=reverse, **options).double())
    n = 2 if reverse else 1
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(n, 2, options.get("proj_size") or 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(n, 2, 4, dtype=torch.float64, requires_grad=True)
    assert _gradcheck(monkeypatch, layer, x, h0, c0)


@pytest.mark.parametrize("proj_size", [0, 4])
def test_same_outputs_and_gradients_as_torch_nn_lstm(monkeypatch, proj_size):
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    calls = _count_native_calls(monkeypatch)
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=proj_size)
    ours = rnnkit.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=proj_size)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, requires_grad=True)
    out_r, (h_r, c_r) = ref(x)
    out_o, (h_o, c_o) = ours(x)
    for a, b in ((out_o, out_r), (h_o, h_r), (c_o, c_r)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    g_r = torch.autograd.grad(out_r.pow(2).sum(), [x, *ref.parameters()])
    g_o = torch.autograd.grad(out_o.pow(2).sum(), [x, *ours.parameters()])
    for a, b in zip(g_o, g_r):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert len(calls) == 4  # 2 layers × 2 directions


def _count_native_calls(monkeypatch, function=None):
    """A list that gets one entry per call of the native loop of the binding ``function`` (the LSTM's)."""
    function = function or _NativeLSTM
    calls = []
    real = function.forward

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(function, "forward", counting)
    return calls


def assert_auto_backend(monkeypatch, binding, make, native_node: str, scan_node: str):
    """``backend="auto"`` (the default of ``make(**kw)``'s layer) trains and infers on the native
    loop of ``binding`` on the CPU (counted: once per layer and direction; ``native_node`` in
    the graph); ``backend="scan"``, the gradient record and ``RNNKIT_NATIVE=0`` run the scan
    (``scan_node``), inference giving the same outputs and states on both."""
    calls = _count_native_calls(monkeypatch, binding)
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    layer = make()
    per_call = layer.num_layers * (2 if layer.bidirectional else 1)
    assert layer.backend == "auto" and "backend" not in repr(layer)
    out, _ = layer(torch.randn(T, B, layer.input_size))
    assert len(calls) == per_call and native_node in graph_nodes(out)
    scan_layer = make(backend="scan")
    scan_layer.load_state_dict(layer.state_dict())
    x = torch.randn(T, B, layer.input_size)
    with torch.no_grad():  # inference: the forward-only call of the same loop
        got, want = layer(x), scan_layer(x)
    assert len(calls) == 2 * per_call
    torch.testing.assert_close(got, want)
    out, _ = scan_layer(x.requires_grad_())
    assert scan_node in graph_nodes(out) and "backend='scan'" in repr(scan_layer)
    with rnnkit.record_gradient_norms(layer) as rec:
        out, _ = layer(x)
        out.sum().backward()
    assert len(calls) == 2 * per_call and scan_node in graph_nodes(out) and rec.norms
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    out, _ = layer(x)
    assert len(calls) == 2 * per_call and scan_node in graph_nodes(out)


def _gradcheck(monkeypatch, layer, x, *state):
    """float64 gradcheck of ``layer``'s native loop over x, its initial state and its
    parameters, with lengths [5, 3] and the dropout/zoneout masks fixed by reseeding before
    every call; asserts that the native loop is what ran."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    calls = _count_native_calls(monkeypatch, _native_function_of(layer))
    names = [k for k, _ in layer.named_parameters()]
    lengths = torch.tensor([5, 3])
    n = len(state)

    def f(x, *rest):
        torch.manual_seed(3)
        with torch.nn.utils.stateless._reparametrize_module(layer, dict(zip(names, rest[n:]))):
            out, final = layer(x, rest[:n] if n > 1 else rest[0], lengths=lengths)
        return (out, *(final if isinstance(final, tuple) else (final,)))

    ok = torch.autograd.gradcheck(f, (x, *state, *layer.parameters()))
    assert len(calls) >= layer.num_layers * (2 if layer.bidirectional else 1)
    return ok


@pytest.mark.parametrize("options,native_expected", [
    ({}, True), ({"peephole": True}, True), ({"zoneout": 0.1}, True), ({"recurrent_dropout": 0.2}, True),
    ({"layer_norm": True}, True), ({"proj_size": 3}, True), ({"recurrent_activation": "hard_sigmoid"}, False),
])
def test_which_layers_run_natively(monkeypatch, options, native_expected):
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    calls = _count_native_calls(monkeypatch)
    out, _ = rnnkit.LSTM(I, H, **options)(torch.randn(T, B, I))
    out.sum().backward()
    assert bool(calls) == native_expected


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_lstm_normalizes_its_input_inside_the_native_loop(monkeypatch, bias):
    """The layer-norm LSTM's native loop takes the raw x W_ihᵀ (lstm_ln.cpp): the engine's
    layer norm of the input projection over all T·B rows (LSTMCell.prepare_input and its
    backward) does not run, lstm_ln_forward/lstm_ln_backward do, and the result is the
    Python loop's, which runs prepare_input."""
    from rnnkit.cells.lstm import LSTMCell

    prepared, ext_calls = [], []
    real_prepare = LSTMCell.prepare_input
    monkeypatch.setattr(LSTMCell, "prepare_input", lambda *a: prepared.append(1) or real_prepare(*a))
    ext = native.load()

    class Counting:
        def __getattr__(self, name):
            if name.startswith("lstm"):
                ext_calls.append(name)
            return getattr(ext, name)

    monkeypatch.setattr(native, "load", lambda *a, **k: None if native.mode() == "0" else Counting())
    layer = _random_norms(rnnkit.LSTM(I, H, layer_norm=True, bias=bias, bidirectional=True).double())
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(2, B, H, dtype=torch.float64, requires_grad=True) for _ in range(2))
    got = _grads(layer, x, state, None, 0)
    assert not prepared and "_NativeLSTMBackward" in graph_nodes(got[0])
    assert sorted(ext_calls) == ["lstm_ln_backward"] * 2 + ["lstm_ln_forward"] * 2
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    want = _grads(layer, x, state, None, 0)
    assert prepared  # the Python loop normalizes x W_ihᵀ before its loop
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_layer_norm_loop_hands_out_a_kept_buffer_only_when_nothing_refers_to_it():
    """lstm_ln.cpp keeps its large results between calls: a result still referenced, by its
    tensor or by a view, is never handed out again (it would be overwritten)."""
    ext = native.load()
    Tb, Bb, Hb = 3, 2, 4
    xw = torch.randn(Tb, Bb, 4 * Hb)
    norms = [torch.rand(4 * Hb) + 0.5, torch.rand(4 * Hb) + 0.5, torch.randn(4 * Hb), torch.ones(Hb), torch.zeros(Hb)]

    def forward():
        return ext.lstm_ln_forward(xw, torch.zeros(Bb, Hb), torch.zeros(Bb, Hb), torch.randn(4 * Hb, Hb), None, None,
                                   None, None, None, None, *norms, False, True)

    first = forward()
    gates, rec_view = first["gates"], first["rec"][1:]
    kept = gates.clone(), rec_view.clone()
    del first
    for _ in range(3):
        res = forward()
        assert res["gates"].data_ptr() != gates.data_ptr()
        assert res["rec"].untyped_storage().data_ptr() != rec_view.untyped_storage().data_ptr()
    torch.testing.assert_close((gates, rec_view), kept, rtol=0, atol=0)


def test_diagnostics_hooks_and_the_off_switch_use_the_python_loop(monkeypatch):
    calls = _count_native_calls(monkeypatch)
    layer = rnnkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    with rnnkit.record_gradient_norms(layer) as rec:
        layer(x)[0].sum().backward()
    assert not calls and rec.per_step().shape == (T,)
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    layer(x)[0].sum().backward()
    assert not calls
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    layer(x)[0].sum().backward()
    assert len(calls) == 1


def test_bad_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RNNKIT_NATIVE", "fast")
    with pytest.raises(ValueError, match="RNNKIT_NATIVE must be auto, 0 or 1, got 'fast'"):
        rnnkit.LSTM(I, H)(torch.randn(T, B, I))


# -- GRU -----------------------------------------------------------------------------------
GRU_OPTIONS = [
    {}, {"reset_after": False}, {"bidirectional": True, "num_layers": 2}, {"recurrent_dropout": 0.3},
    {"zoneout": 0.2, "reset_after": False}, {"zoneout": 0.1, "recurrent_dropout": 0.2, "bidirectional": True},
    {"bias": False}, {"bias": False, "reset_after": False, "recurrent_dropout": 0.3},
    {"layer_norm": True}, {"layer_norm": True, "reset_after": False},
    {"layer_norm": True, "bidirectional": True, "num_layers": 2, "zoneout": 0.1, "recurrent_dropout": 0.2},
    {"layer_norm": True, "reset_after": False, "bidirectional": True, "num_layers": 2, "recurrent_dropout": 0.3},
    {"layer_norm": True, "bias": False, "zoneout": 0.2},
]


def _one_state_grads(layer, x, h0, lengths, seed):
    torch.manual_seed(seed)
    out, h = layer(x, h0, lengths=lengths) if lengths is not None else layer(x, h0)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    loss = (out * w).sum() + h.pow(2).sum()
    return [out, h, *torch.autograd.grad(loss, [x, h0, *layer.parameters()])]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options,use_lengths,training",
                         list(itertools.product(GRU_OPTIONS, [False, True], [True, False])))
def test_native_gru_equals_the_python_loop(monkeypatch, dtype, options, use_lengths, training):
    layer = rnnkit.GRU(I, H, **options).to(dtype).train(training)
    n = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(n, B, H, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    got, want = _both_paths(monkeypatch, _one_state_grads, layer, x, h0, lengths)
    if dtype == torch.float64:
        tol = {"rtol": 1e-10, "atol": 1e-10}
    else:  # float32 layer norm: C++ and PyTorch sum the variance in different orders
        tol = {"rtol": 1e-4, "atol": 1e-4} if options.get("layer_norm") else {"rtol": 1e-5, "atol": 2e-6}
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_native_gru_gradcheck(monkeypatch, reset_after, layer_norm):
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer = rnnkit.GRU(3, 4, bidirectional=True, reset_after=reset_after, zoneout=0.2,
                       recurrent_dropout=0.3, layer_norm=layer_norm).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    assert _gradcheck(monkeypatch, layer, x, h0)


def test_native_gru_matches_torch_nn_gru(monkeypatch):
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    calls = _count_native_calls(monkeypatch, _NativeGRU)
    ref = torch.nn.GRU(I, H, num_layers=2, bidirectional=True)
    ours = rnnkit.GRU(I, H, num_layers=2, bidirectional=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, requires_grad=True)
    (out_r, h_r), (out_o, h_o) = ref(x), ours(x)
    torch.testing.assert_close(out_o, out_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_o, h_r, rtol=1e-5, atol=1e-6)
    g_r = torch.autograd.grad(out_r.pow(2).sum(), [x, *ref.parameters()])
    g_o = torch.autograd.grad(out_o.pow(2).sum(), [x, *ours.parameters()])
    for a, b in zip(g_o, g_r):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert len(calls) == 4  # 2 layers × 2 directions


@pytest.mark.parametrize("reset_after", [True, False])
def test_layer_norm_gru_runs_natively(monkeypatch, reset_after):
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    calls = _count_native_calls(monkeypatch, _NativeGRU)
    out, _ = rnnkit.GRU(I, H, layer_norm=True, reset_after=reset_after, bidirectional=True)(torch.randn(T, B, I))
    out.sum().backward()
    assert len(calls) == 2 and "_NativeGRUBackward" in graph_nodes(out)


@pytest.mark.parametrize("failure,expected", [
    ("compiler error", "the C\\+\\+ compiler \\(.+\\) failed: .*c\\+\\+: command not found"),
    ("no compiler", "no C\\+\\+ compiler found \\(/nonexistent/c\\+\\+ is not on PATH\\)"),
])
def test_a_failed_build_falls_back_to_the_python_loop_or_fails_when_required(monkeypatch, caplog, tmp_path,
                                                                            failure, expected):
    """A build that fails (the compiler fails, or there is none and the cache holds no build):
    ``auto`` warns once, naming the cause, and runs the Python loop; ``1`` is an error."""
    import torch.utils.cpp_extension as cpp

    def compiler_error(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: command not found")

    monkeypatch.setattr(cpp, "load", compiler_error)
    if failure == "no compiler":
        monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setenv("RNNKIT_NATIVE_CACHE", str(tmp_path / "cache"))  # empty: nothing built yet
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_failed", None)
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    calls = _count_native_calls(monkeypatch)
    layer = rnnkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    with caplog.at_level("WARNING", logger="rnnkit.native"):
        out, _ = layer(x)
        layer(x)
    assert not calls and out.shape == (T, B, H)
    warnings = [r.getMessage() for r in caplog.records if "are not available" in r.getMessage()]
    assert len(warnings) == 1 and re.search(expected, warnings[0]), warnings
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    with pytest.raises(RuntimeError, match="RNNKIT_NATIVE=1 but the native loops could not be built: " + expected):
        layer(x)


# -- Jordan ----------------------------------------------------------------------------------
JORDAN_OPTIONS = [
    {}, {"output_activation": "sigmoid"}, {"nonlinearity": "relu", "output_activation": "tanh"},
    {"bidirectional": True, "num_layers": 2}, {"recurrent_dropout": 0.3, "zoneout": 0.2},
    {"bias": False, "output_activation": "hard_sigmoid"},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options,use_lengths,training",
                         list(itertools.product(JORDAN_OPTIONS, [False, True], [True, False])))
def test_native_jordan_equals_the_python_loop(monkeypatch, dtype, options, use_lengths, training):
    O = 3
    layer = rnnkit.Jordan(I, H, O, **options).to(dtype).train(training)
    n = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    y0 = torch.randn(n, B, O, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    got, want = _both_paths(monkeypatch, _one_state_grads, layer, x, y0, lengths)
    tol = {"rtol": 1e-5, "atol": 2e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


def test_native_jordan_gradcheck(monkeypatch):
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer = rnnkit.Jordan(3, 4, 2, bidirectional=True, output_activation="tanh", zoneout=0.2,
                          recurrent_dropout=0.3).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    y0 = torch.randn(2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert _gradcheck(monkeypatch, layer, x, y0)


def test_the_activations_with_native_code_are_the_ones_the_extension_knows():
    """cells/jordan.py asks NATIVE_ACTIVATIONS; common.h's activation_names() is what the C++
    loop takes: the two lists must agree, else a cell would be sent to a loop that rejects it."""
    from rnnkit.cells.jordan import NATIVE_ACTIVATIONS

    assert tuple(native.load().activations) == NATIVE_ACTIVATIONS


def test_the_native_entry_points_name_their_results():
    """The Python↔C++ contract is by name (common.h): the LSTM forward returns the state under
    its names and, with every option on, each saved tensor the backward and the binding read."""
    ext = native.load()
    Tb, Bb, Hb, Pb = 3, 2, 4, 3
    xw = torch.randn(Tb, Bb, 4 * Hb)
    res = ext.lstm_forward(xw.clone(), torch.zeros(Bb, Pb), torch.zeros(Bb, Hb), torch.randn(4 * Hb, Pb),
                           torch.randn(Pb, Hb), torch.randn(3, Hb), None, None, None, None, False, True)
    assert set(res) == {"out", "h", "c", "hr", "c_in", "c_new", "tc", "h_full"}
    assert res["out"].shape == (Tb, Bb, Pb) and res["c"].shape == (Bb, Hb)
    with pytest.raises(RuntimeError, match="no tensor named 'c_in'"):
        ext.lstm_backward(None, torch.zeros(Bb, Pb), torch.zeros(Bb, Hb), {"gates": xw}, torch.randn(4 * Hb, Pb),
                          None, None, None, None, None, None, False)
    norms = [torch.ones(4 * Hb), torch.ones(4 * Hb), torch.zeros(4 * Hb), torch.ones(Hb), torch.zeros(Hb)]
    res = ext.lstm_ln_forward(xw, torch.zeros(Bb, Pb), torch.zeros(Bb, Hb), torch.randn(4 * Hb, Pb),
                              torch.randn(Pb, Hb), torch.randn(3, Hb), None, None, None, None, *norms, False, True)
    assert set(res) == {"out", "h", "c", "gates", "rec", "ln_stats", "hr", "c_in", "c_new", "h_full"}
    assert res["ln_stats"].shape == (Tb, Bb, 6)
    with pytest.raises(RuntimeError, match=r"layer-norm parameter has shape \[4\], expected \(16\)"):
        ext.lstm_ln_forward(xw, torch.zeros(Bb, Pb), torch.zeros(Bb, Hb), torch.randn(4 * Hb, Pb), None, None,
                            None, None, None, None, norms[3], *norms[1:], False, True)


def test_the_peephole_gradients_are_summed_in_the_native_backward():
    """The C++ backward returns "dpeep" = (Σ di_a ⊙ c_{t-1},
    Σ df_a ⊙ c_{t-1}, Σ do_a ⊙ c_t), summed in its gate pass; the binding uses it instead of
    three reductions over (T, B, H)."""
    ext = native.load()
    g = torch.Generator().manual_seed(0)
    Tb, Bb, Hb = 4, 3, 5

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    xw, h0, c0, w_hh, peep = rand(Tb, Bb, 4 * Hb), rand(Bb, Hb), rand(Bb, Hb), rand(4 * Hb, Hb), rand(3, Hb)
    fwd = ext.lstm_forward(xw, h0, c0, w_hh, None, peep, None, None, None, None, False, True)
    saved = {"gates": xw, **{k: v for k, v in fwd.items() if k not in ("out", "h", "c")}}
    res = ext.lstm_backward(rand(Tb, Bb, Hb), rand(Bb, Hb), rand(Bb, Hb), saved, w_hh, None, peep, None, None,
                            None, None, False)
    dg, c_new = res["dgates"], fwd["c_new"]
    c_in = torch.cat((c0.unsqueeze(0), c_new[:-1]))  # c_{t-1}
    want = torch.stack(((dg[..., :Hb] * c_in).sum((0, 1)), (dg[..., Hb:2 * Hb] * c_in).sum((0, 1)),
                        (dg[..., 3 * Hb:] * c_new).sum((0, 1))))
    torch.testing.assert_close(res["dpeep"], want, rtol=1e-12, atol=1e-12)


# -- IndRNN ----------------------------------------------------------------------------------
INDRNN_OPTIONS = [
    {}, {"nonlinearity": "tanh"}, {"bidirectional": True, "num_layers": 2},
    {"recurrent_dropout": 0.3, "zoneout": 0.2, "nonlinearity": "tanh"}, {"bias": False, "recurrent_max_abs": 0.9},
    {"bidirectional": True, "num_layers": 2, "recurrent_dropout": 0.2, "zoneout": 0.1, "nonlinearity": "tanh"},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options,use_lengths,training",
                         list(itertools.product(INDRNN_OPTIONS, [False, True], [True, False])))
def test_native_indrnn_equals_the_python_loop(monkeypatch, dtype, options, use_lengths, training):
    layer = rnnkit.IndRNN(I, H, **options).to(dtype).train(training)
    with torch.no_grad():  # u past 1 in places, so that the recurrence does not fade at once
        for name, p in layer.named_parameters():
            if name.startswith("weight_hh"):
                p.uniform_(-1.2, 1.2)
    n = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(n, B, H, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    got, want = _both_paths(monkeypatch, _one_state_grads, layer, x, h0, lengths)
    tol = {"rtol": 1e-5, "atol": 2e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
@pytest.mark.parametrize("reverse", [False, True])
def test_native_indrnn_gradcheck(monkeypatch, nonlinearity, reverse):
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer = rnnkit.IndRNN(3, 4, bidirectional=reverse, nonlinearity=nonlinearity, zoneout=0.2,
                          recurrent_dropout=0.3, recurrent_max_abs=1.5).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2 if reverse else 1, 2, 4, dtype=torch.float64, requires_grad=True)
    assert _gradcheck(monkeypatch, layer, x, h0)


def test_indrnn_runs_natively_and_the_off_switch_uses_the_python_loop(monkeypatch):
    calls = _count_native_calls(monkeypatch, _NativeIndRNN)
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    out, _ = rnnkit.IndRNN(I, H, num_layers=2)(torch.randn(T, B, I))
    out.sum().backward()
    assert len(calls) == 2 and "_NativeIndRNNBackward" in graph_nodes(out)
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    out, _ = rnnkit.IndRNN(I, H)(torch.randn(T, B, I))
    assert len(calls) == 2 and "_BPTTBackward" in graph_nodes(out)
