"""minGRU / minLSTM: the parallel scan, its hand-written backward, and agreement with
the sequential loop and with autograd."""

import pytest
import torch
from torch.func import functional_call

import rnnkit
from rnnkit.engine import scan
from rnnkit.engine.scan import _sequential_scan, linear_scan

# name → (layer class, constructor keyword arguments)
MIN_UNITS = {
    "mingru": (rnnkit.MinGRU, {}),
    "mingru-tanh": (rnnkit.MinGRU, {"candidate_activation": "tanh"}),
    "minlstm": (rnnkit.MinLSTM, {}),
    "minlstm-plain-g": (rnnkit.MinLSTM, {"normalize": False, "candidate_activation": "g"}),
}
I, H = 3, 4


def make(name, **kw):
    """The unit on the parallel scan unless ``backend`` says otherwise (the default, "auto",
    runs the native loop on the CPU: tests/test_native_elementwise.py)."""
    cls, opts = MIN_UNITS[name]
    kw.setdefault("backend", "scan")
    return cls(I, H, **opts, **kw)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 3 steps, so that short test sequences go through every level of the scan."""
    monkeypatch.setattr(scan, "BLOCK", 3)


# -- the scan itself -------------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 10, 27, 28, 100])
@pytest.mark.parametrize("block", [2, 3, 32])
def test_linear_scan_equals_sequential_float64(T, block, reverse):
    a = torch.rand(T, 2, 5, dtype=torch.float64) * 2 - 0.5  # signs and |a| > 1 included
    b = torch.randn(T, 2, 5, dtype=torch.float64)
    h0 = torch.randn(2, 5, dtype=torch.float64)
    h = linear_scan(a, b, h0, reverse, block)
    # the definition, written out independently of _sequential_scan
    expected, prev = [None] * T, h0
    for t in range(T - 1, -1, -1) if reverse else range(T):
        prev = a[t] * prev + b[t]
        expected[t] = prev
    torch.testing.assert_close(h, torch.stack(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_long_sequence_float32_keeps_precision(reverse):
    """T = 2000 with gates near 1 (long memory): the float32 scan stays as close to the
    float64 truth as the float32 sequential loop does (no error growth with T)."""
    T = 2000
    a = torch.rand(T, 4, 64, dtype=torch.float64) * 0.02 + 0.98
    b = torch.randn(T, 4, 64, dtype=torch.float64) * 0.1
    h0 = torch.randn(4, 64, dtype=torch.float64)
    truth = _sequential_scan(a, b, h0, reverse)
    h32 = linear_scan(a.float(), b.float(), h0.float(), reverse)
    seq32 = _sequential_scan(a.float(), b.float(), h0.float(), reverse)
    err_scan = (h32.double() - truth).abs().max().item()
    err_seq = (seq32.double() - truth).abs().max().item()
    assert err_scan < 2e-5
    assert err_scan < 5 * err_seq + 1e-6
    assert truth.abs().max() > 0.5  # the states are not trivially small


def test_linear_scan_rejects_tiny_block():
    with pytest.raises(ValueError, match="block must be at least 2"):
        linear_scan(torch.ones(4, 1), torch.ones(4, 1), torch.zeros(1), block=1)


# -- gradcheck of the hand-written backward --------------------------------------------------------

def _gradcheck_layer(layer, x, states, lengths, fast):
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    n_state = len(states)

    def f(x, *rest):
        hx = rest[0] if n_state else None
        out, hn = functional_call(layer, dict(zip(names, rest[n_state:])), (x, hx), {"lengths": lengths})
        return out, hn

    return torch.autograd.gradcheck(f, (x, *states, *params), atol=1e-6, fast_mode=fast)


@pytest.mark.parametrize("unit,bidirectional,with_lengths,with_state", [
    *[("mingru", *opts) for opts in [(False, False, False), (False, True, True), (True, False, False),
                                      (True, True, False), (True, False, True)]],
    *[(unit, True, True, True) for unit in MIN_UNITS],
    ("minlstm", False, False, False), ("minlstm", False, True, True),
])
def test_scan_gradcheck(unit, bidirectional, with_lengths, with_state, small_blocks):
    """float64 gradcheck of the scan's backward: reverse direction, lengths, initial state,
    stacking; T = 8 with blocks of 3 exercises every level of the scan."""
    layer = make(unit, num_layers=2 if bidirectional else 1, bidirectional=bidirectional, dtype=torch.float64)
    T, B = 8, 3
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    LD = layer.num_layers * layer.num_directions
    states = (torch.randn(LD, B, H, dtype=torch.float64, requires_grad=True),) if with_state else ()
    lengths = torch.tensor([8, 2, 5]) if with_lengths else None
    fast = bidirectional  # full Jacobians for the one-layer cases, random projections otherwise
    assert _gradcheck_layer(layer, x, states, lengths, fast)


def test_scan_gradcheck_with_zoneout_and_recurrent_dropout(small_blocks):
    """Zoneout and variational dropout masks enter as changes of (a, b); fixed masks
    (same seed before each call) make the function deterministic for gradcheck."""
    layer = rnnkit.MinLSTM(I, H, bidirectional=True, zoneout=0.3, recurrent_dropout=0.25, dtype=torch.float64,
                           backend="scan")
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(7, 2, I, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        torch.manual_seed(5)
        return functional_call(layer, dict(zip(names, ps)), (x,), {"lengths": [7, 4]})

    assert torch.autograd.gradcheck(f, (x, *params), atol=1e-6)


# -- the three backends agree ----------------------------------------------------------------------

@pytest.mark.parametrize("unit", list(MIN_UNITS))
def test_scan_matches_sequential_bptt_and_autograd(unit, small_blocks):
    """backend="scan", "bptt" (sequential hand-written BPTT via the engine) and
    "autograd" give the same outputs and gradients, with lengths, zoneout, recurrent
    dropout, a learned initial state, stacking and both directions."""
    kw = dict(num_layers=2, bidirectional=True, zoneout=0.2, recurrent_dropout=0.2,
              learn_initial_state=True, dtype=torch.float64)
    results = []
    for backend in ("scan", "bptt", "autograd"):
        torch.manual_seed(1)
        layer = make(unit, backend=backend, **kw)
        with torch.no_grad():
            layer.initial_h.normal_()
        torch.manual_seed(2)
        x = torch.randn(11, 3, I, dtype=torch.float64, requires_grad=True)
        out, hn = layer(x, lengths=[11, 1, 6])
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() + (hn * hn).sum()
        grads = torch.autograd.grad(loss, [x, *layer.parameters()])
        results.append((out.detach(), hn.detach(), grads))
    for other in results[1:]:
        torch.testing.assert_close(other[0], results[0][0])
        torch.testing.assert_close(other[1], results[0][1])
        for g1, g2 in zip(other[2], results[0][2]):
            torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("unit", ["mingru", "minlstm"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_scan_forward_equals_loop_on_long_sequence(unit, dtype, tol):
    """T = 2000: the parallel scan and the sequential loop agree in float32 and float64."""
    torch.manual_seed(3)
    scan_layer = make(unit, num_layers=2, dtype=dtype)
    loop_layer = make(unit, num_layers=2, dtype=dtype, backend="bptt")
    loop_layer.load_state_dict(scan_layer.state_dict())
    x = torch.randn(2000, 2, I, dtype=dtype)
    with torch.no_grad():
        out_s, h_s = scan_layer(x)
        out_l, h_l = loop_layer(x)
    torch.testing.assert_close(out_s, out_l, rtol=tol, atol=tol)
    torch.testing.assert_close(h_s, h_l, rtol=tol, atol=tol)


@pytest.mark.parametrize("unit", ["mingru", "minlstm"])
def test_gradient_record_of_scan_matches_autograd(unit):
    """The scan's backward records ‖∂L/∂h_t‖ for every step, equal to autograd's."""
    records = []
    for backend in ("scan", "autograd"):
        torch.manual_seed(2)
        layer = make(unit, bidirectional=True, backend=backend, dtype=torch.float64)
        x = torch.randn(40, 3, I, dtype=torch.float64)
        with rnnkit.record_gradient_norms(layer) as rec:
            out, hn = layer(x, lengths=[40, 25, 3])
            (out.pow(2).sum() + hn.sum()).backward()
        records.append(rec)
    assert len(records[0].norms) == 2
    for key, norms in records[0].norms.items():
        assert norms.shape == (40, 3)
        torch.testing.assert_close(norms, records[1].norms[key])
    assert records[0].per_step().shape == (40,)


def test_observe_gate_values_match_sequential():
    """The diagnostics' observe slot sees the same states and gate values per step."""
    seen = {}
    for backend in ("scan", "bptt"):
        torch.manual_seed(0)
        layer = rnnkit.MinLSTM(I, H, bidirectional=True, backend=backend, dtype=torch.float64)
        log = {}
        layer._observe = lambda key, t, state, cache, log=log, layer=layer: log.__setitem__(
            (key, t), (state[0].clone(), layer.cell.gate_values(cache)))
        layer(torch.randn(5, 2, I, dtype=torch.float64), lengths=[5, 3])
        seen[backend] = log
    assert set(seen["scan"]) == set(seen["bptt"]) and len(seen["scan"]) == 10
    for key, (h, gates) in seen["scan"].items():
        h2, gates2 = seen["bptt"][key]
        torch.testing.assert_close(h, h2)
        assert set(gates) == {"f", "i", "h_tilde"}
        for name in gates:
            torch.testing.assert_close(gates[name], gates2[name])


def test_minlstm_normalized_gates_sum_to_one_and_are_stable():
    """f' + i' = 1, and extreme pre-activations give no NaN (no division by f + i)."""
    cell = rnnkit.MinLSTM(1, 2).cell
    xw = torch.tensor([[-200.0, 30.0, -150.0, -300.0, 0.5, -1.0]])  # (1, 3H): xf, xi, xh
    a, b, cache = cell.coefficients(xw)
    f_n, i_n = cache[1], cache[2]
    torch.testing.assert_close(f_n + i_n, torch.ones_like(f_n))
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    # unit 1: f = σ(30) ≈ 1, i = σ(-300) ≈ 0 → f' ≈ 1; unit 0: i ≫ f → f' ≈ 0
    assert a[0, 0] < 1e-6 and a[0, 1] > 1 - 1e-6
