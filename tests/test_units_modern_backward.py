"""The hand-written backward passes of the new units: float64 gradcheck of every one
(parallel scan, chunkwise, step loop, BPTT engine) with lengths, both directions, stacking
and initial state; agreement of all backends with autograd; the parallel forms equal to the
sequential loop at T = 2000; the gradient record and the diagnostics' per-step hook."""

import pytest
import torch
from torch.func import functional_call

import rnnkit
from rnnkit.engine import scan

F64 = torch.float64
I = 2

# name → (layer class, keyword arguments, hidden size)
UNITS = {
    "slstm": (rnnkit.SLSTM, {"num_heads": 2}, 4),
    "slstm-exp": (rnnkit.SLSTM, {"forget_gate": "exp", "num_heads": 1}, 2),
    "mlstm": (rnnkit.MLSTM, {"num_heads": 2, "chunk_size": 2}, 4),
    "mlstm-parallel-exp": (rnnkit.MLSTM, {"num_heads": 1, "chunk_size": None, "forget_gate": "exp"}, 2),
    "lru": (rnnkit.LRU, {"state_size": 2}, 2),
    "lru-identity": (rnnkit.LRU, {"state_size": 3, "activation": "identity"}, 2),
    "rglru": (rnnkit.RGLRU, {}, 3),
    "s6": (rnnkit.S6, {"state_size": 2}, 2),
    "qrnn": (rnnkit.QRNN, {}, 3),
    "qrnn-k1": (rnnkit.QRNN, {"window": 1}, 3),
    "qrnn-k3": (rnnkit.QRNN, {"window": 3}, 2),
    "sru": (rnnkit.SRU, {}, 3),
    "sru-linear": (rnnkit.SRU, {"gate_recurrence": False}, 3),
}
# every hand-written backward: (unit, backend)
HAND_WRITTEN = [
    ("slstm", "bptt"), ("slstm-exp", "bptt"),
    ("mlstm", "chunkwise"), ("mlstm", "bptt"), ("mlstm-parallel-exp", "chunkwise"),
    ("lru", "scan"), ("lru", "bptt"), ("lru-identity", "scan"),
    ("rglru", "scan"), ("rglru", "bptt"),
    ("s6", "scan"), ("s6", "bptt"),
    ("qrnn", "scan"), ("qrnn", "bptt"), ("qrnn-k1", "scan"), ("qrnn-k3", "scan"), ("qrnn-k3", "bptt"),
    ("sru", "bptt"), ("sru-linear", "scan"), ("sru-linear", "bptt"),
]
PARALLEL = [("mlstm", "chunkwise"), ("lru", "scan"), ("rglru", "scan"), ("s6", "scan"), ("qrnn", "scan"),
            ("qrnn-k3", "scan"), ("sru-linear", "scan")]


def make(unit, **kw):
    cls, opts, H = UNITS[unit]
    return cls(I, H, **opts, **kw)


def initial_state(layer, B):
    LD = layer.num_layers * layer.num_directions
    states = [torch.randn(LD, B, s, dtype=F64) for s in layer.cell.state_sizes()]
    if isinstance(layer, rnnkit.SLSTM):
        states[2] = states[2].abs() + 0.5  # a normaliser state is positive
    return tuple(s.requires_grad_() for s in states)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 2 steps, so that short sequences go through every level of the scan."""
    monkeypatch.setattr(scan, "BLOCK", 2)


@pytest.mark.parametrize("unit,backend", HAND_WRITTEN)
def test_gradcheck_with_lengths_both_directions_stacking_and_initial_state(unit, backend, small_blocks):
    """float64 gradcheck of the hand-written backward through two bidirectional layers, with
    lengths and a given initial state (every state entry an input, every one an output)."""
    torch.manual_seed(0)
    layer = make(unit, num_layers=2, bidirectional=True, backend=backend, dtype=F64)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    T, B = 5, 2
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    states = initial_state(layer, B)
    n = len(states)

    def f(x, *rest):
        hx = rest[0] if n == 1 else rest[:n]
        out, state = functional_call(layer, dict(zip(names, rest[n:])), (x, hx), {"lengths": [5, 3]})
        return (out, *((state,) if n == 1 else state))

    assert torch.autograd.gradcheck(f, (x, *states, *params), atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("unit,backend", [("slstm", "bptt"), ("mlstm", "chunkwise"), ("lru", "scan"),
                                          ("s6", "scan"), ("qrnn-k3", "scan"), ("sru", "bptt")])
def test_gradcheck_full_jacobian_one_layer(unit, backend, small_blocks):
    """The full Jacobian (no random projection) for one reverse-direction layer."""
    torch.manual_seed(1)
    layer = make(unit, backend=backend, dtype=F64)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(4, 2, I, dtype=F64, requires_grad=True)
    states = tuple(s[0].detach().requires_grad_() for s in initial_state(layer, 2))  # (B, S) each
    n = len(states)
    opts = rnnkit.engine.LoopOptions(reverse=True, lengths=torch.tensor([4, 2]))

    def f(x, *rest):
        p = dict(zip([k.removesuffix("_l0") for k in names], rest[n:]))
        out, state = layer._run(x, rest[:n], p, opts)
        return (out, *state)

    assert torch.autograd.gradcheck(f, (x, *states, *params), atol=1e-6)


@pytest.mark.parametrize("unit", list(UNITS))
def test_every_backend_matches_autograd(unit, small_blocks):
    """Outputs, final states and gradients of every backend equal autograd through the
    steps, with lengths, two bidirectional layers and a learned initial state."""
    backends = make(unit).BACKENDS
    results = []
    for backend in backends:
        torch.manual_seed(1)
        layer = make(unit, num_layers=2, bidirectional=True, learn_initial_state=True, backend=backend, dtype=F64)
        with torch.no_grad():
            for name, p in layer.named_parameters():
                if name.startswith("initial_"):
                    p.uniform_(0.5, 1.5) if name == "initial_n" and unit.startswith("slstm") else p.normal_()
        torch.manual_seed(2)
        x = torch.randn(11, 3, I, dtype=F64, requires_grad=True)
        out, state = layer(x, lengths=[11, 1, 6])
        state = (state,) if isinstance(state, torch.Tensor) else state
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)).sum()
        loss = loss + sum((s * s.detach().sin()).sum() for s in state)
        grads = torch.autograd.grad(loss, [x, *layer.parameters()], allow_unused=True)
        results.append((out.detach(), [s.detach() for s in state], grads))
    ref = results[-1]  # autograd
    assert backends[-1] == "autograd"
    for out, state, grads in results[:-1]:
        torch.testing.assert_close(out, ref[0])
        for a, b in zip(state, ref[1]):
            torch.testing.assert_close(a, b)
        for a, b in zip(grads, ref[2]):
            if a is None or b is None:  # an unused initial output state (h/y of a readout unit)
                assert a is None or a.abs().max() == 0
                continue
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("unit,parallel", PARALLEL)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_parallel_form_equals_the_sequential_loop_at_T_2000(unit, parallel, dtype):
    """T = 2000: the parallel scan (chunkwise form for mLSTM) and the step-by-step loop agree
    in float64 to round-off, and in float32 are as close to the float64 result as the float32
    loop is (no error growth with T)."""
    torch.manual_seed(3)
    T, B = 2000, 2
    base = make(unit, backend=parallel, dtype=F64)
    x64 = torch.randn(T, B, I, dtype=F64)
    truth_layer = make(unit, backend="bptt", dtype=F64)
    truth_layer.load_state_dict(base.state_dict())
    with torch.no_grad():
        truth, truth_state = truth_layer(x64)
    par = make(unit, backend=parallel, dtype=dtype)
    seq = make(unit, backend="bptt", dtype=dtype)
    par.load_state_dict(base.state_dict())
    seq.load_state_dict(base.state_dict())
    x = x64.to(dtype)
    with torch.no_grad():
        out_p, state_p = par(x)
        out_s, state_s = seq(x)
    assert truth.abs().max() > 0.05  # not trivially small
    if dtype == F64:
        torch.testing.assert_close(out_p, out_s, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(state_p, state_s, rtol=1e-9, atol=1e-10)
    else:
        err_p = (out_p.double() - truth).abs().max().item()
        err_s = (out_s.double() - truth).abs().max().item()
        assert err_p < 1e-4 and err_p <= 10 * err_s + 1e-6


@pytest.mark.parametrize("unit,parallel", [("mlstm", "chunkwise"), ("lru", "scan"), ("s6", "scan")])
def test_parallel_backward_equals_the_sequential_backward_at_T_2000(unit, parallel):
    torch.manual_seed(4)
    grads = []
    for backend in (parallel, "bptt"):
        torch.manual_seed(4)
        layer = make(unit, backend=backend, dtype=F64)
        x = torch.randn(2000, 2, I, dtype=F64, requires_grad=True)
        out, _ = layer(x)
        grads.append(torch.autograd.grad(out.sin().sum(), [x, *layer.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("unit,parallel", PARALLEL)
def test_gradient_record_of_the_parallel_form_equals_the_loops(unit, parallel):
    """‖∂L/∂s_t‖ of the memory state (s, c, or mLSTM's C) per step, from the scan's backward
    (mLSTM: the chunkwise form hands the instrumented run to the step loop)."""
    records = []
    for backend in (parallel, "bptt"):
        torch.manual_seed(5)
        layer = make(unit, bidirectional=True, backend=backend, dtype=F64)
        x = torch.randn(12, 3, I, dtype=F64)
        with rnnkit.record_gradient_norms(layer) as rec:
            out, _ = layer(x, lengths=[12, 7, 2])
            out.pow(2).sum().backward()
        records.append(rec)
    assert len(records[0].norms) == 2
    for key, norms in records[0].norms.items():
        assert norms.shape == (12, 3) and norms[0, 0] > 0
        torch.testing.assert_close(norms, records[1].norms[key])


def test_gradient_record_refuses_the_autograd_backend():
    layer = rnnkit.LRU(I, 3, backend="autograd")
    with rnnkit.record_gradient_norms(layer), pytest.raises(ValueError, match="backend other than 'autograd'"):
        layer(torch.randn(4, 1, I))


@pytest.mark.parametrize("unit,parallel,gates", [("rglru", "scan", {"r", "i", "a"}), ("qrnn", "scan", {"g", "f", "o"}),
                                                 ("mlstm", "chunkwise", {"i'", "f'", "o"}), ("s6", "scan", {"dt"})])
def test_diagnostics_hook_sees_the_same_steps_on_every_backend(unit, parallel, gates):
    seen = {}
    for backend in (parallel, "bptt"):
        torch.manual_seed(0)
        layer = make(unit, bidirectional=True, backend=backend, dtype=F64)
        log = {}
        layer._observe = lambda key, t, state, cache, log=log, layer=layer: log.__setitem__(
            (key, t), (state[0].clone(), layer.cell.gate_values(cache)))
        layer(torch.randn(5, 2, I, dtype=F64), lengths=[5, 3])
        seen[backend] = log
    assert set(seen[parallel]) == set(seen["bptt"]) and len(seen["bptt"]) == 10
    for key, (h, values) in seen[parallel].items():
        torch.testing.assert_close(h, seen["bptt"][key][0])
        assert set(values) == gates


def test_rglru_gradient_stays_finite_where_a_t_reaches_one():
    """r_t → 0 makes a_t = 1 and sqrt(1 - a_t²) = 0, whose derivative is infinite; the
    gradients of x_a and Λ carry a factor that vanishes faster and are finite (→ 0)."""
    layer = rnnkit.RGLRU(I, 3, dtype=F64)
    with torch.no_grad():
        layer.bias_ih_l0[:3] = -800.0  # r = σ(-800) = 0 in float64
    x = torch.randn(6, 2, I, dtype=F64, requires_grad=True)
    out, _ = layer(x)
    out.sum().backward()
    for p in (x, *layer.parameters()):
        assert torch.isfinite(p.grad).all()
