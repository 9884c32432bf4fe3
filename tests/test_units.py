"""IndRNN, and what every new unit shares: step-by-step generation, shapes, the layer
registry, bad input."""

import copy
import math

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit

UNITS = {
    "indrnn": (rnnkit.IndRNN, {}),
    "indrnn-tanh": (rnnkit.IndRNN, {"nonlinearity": "tanh"}),
    "mingru": (rnnkit.MinGRU, {}),
    "minlstm": (rnnkit.MinLSTM, {}),
}
I, H = 3, 4


def make(name, **kw):
    cls, opts = UNITS[name]
    return cls(I, H, **opts, **kw)


# -- IndRNN: the hand-written BPTT ----------------------------------------------------------------

@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
@pytest.mark.parametrize("bidirectional,with_lengths,with_state,bound", [
    (False, False, False, None), (False, True, True, 1.5), (True, True, True, None), (True, False, False, 1.2),
])
def test_indrnn_bptt_gradcheck(nonlinearity, bidirectional, with_lengths, with_state, bound):
    layer = rnnkit.IndRNN(I, H, num_layers=2 if bidirectional else 1, nonlinearity=nonlinearity,
                          bidirectional=bidirectional, recurrent_max_abs=bound, dtype=torch.float64)
    with torch.no_grad():  # move pre-activations away from relu's kink, u inside the bound
        for name, p in layer.named_parameters():
            if name.startswith("bias"):
                p.fill_(0.3)
            if name.startswith("weight_hh"):
                p.uniform_(-1.1, 1.1)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    T, B = 5, 3
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    LD = layer.num_layers * layer.num_directions
    states = (torch.rand(LD, B, H, dtype=torch.float64, requires_grad=True),) if with_state else ()
    lengths = torch.tensor([5, 2, 4]) if with_lengths else None

    def f(x, *rest):
        hx = rest[0] if states else None
        return functional_call(layer, dict(zip(names, rest[len(states):])), (x, hx), {"lengths": lengths})

    assert torch.autograd.gradcheck(f, (x, *states, *params), atol=1e-6, fast_mode=bidirectional)


def test_indrnn_bptt_matches_autograd_with_dropout_and_zoneout():
    kw = dict(num_layers=2, bidirectional=True, recurrent_dropout=0.3, zoneout=0.2, learn_initial_state=True,
              dtype=torch.float64)
    fast = rnnkit.IndRNN(I, H, **kw)
    ref = rnnkit.IndRNN(I, H, backend="autograd", **kw)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(6, 3, I, dtype=torch.float64)
    results = []
    for layer in (fast, ref):
        torch.manual_seed(1)
        out, hn = layer(x, lengths=[6, 1, 4])
        grads = torch.autograd.grad(out.sin().sum() + hn.pow(2).sum(), list(layer.parameters()))
        results.append((out, grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    for g1, g2 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g1, g2)


def test_indrnn_equations():
    """h_t = relu(W x_t + u ⊙ h_{t-1} + b), written out."""
    layer = rnnkit.IndRNN(I, H, dtype=torch.float64)
    x = torch.randn(4, 2, I, dtype=torch.float64)
    out, hn = layer(x)
    h = torch.zeros(2, H, dtype=torch.float64)
    for t in range(4):
        h = torch.relu(x[t] @ layer.weight_ih_l0.t() + layer.weight_hh_l0 * h + layer.bias_ih_l0)
        torch.testing.assert_close(out[t], h)
    torch.testing.assert_close(hn[0], h)
    assert layer.weight_hh_l0.shape == (H,)


# -- IndRNN: the recurrent-weight constraint and the initialisation ------------------------------

def test_indrnn_bound_from_time_steps_and_gamma():
    layer = rnnkit.IndRNN(I, H, time_steps=100, gamma=2.0)
    assert layer.recurrent_max_abs == pytest.approx(2.0 ** (1 / 100))
    assert "recurrent_max_abs" in repr(layer)


def test_indrnn_constraint_holds_after_optimizer_step():
    bound = 1.01
    layer = rnnkit.IndRNN(I, H, num_layers=2, bidirectional=True, recurrent_max_abs=bound)
    other = rnnkit.IndRNN(I, H, recurrent_max_abs=bound)  # not in the optimizer: left alone
    opt = torch.optim.SGD(layer.parameters(), lr=100.0)
    x = torch.randn(10, 2, I)
    out, _ = layer(x)
    (out.sum() * 1e3 + sum(p.sum() * 1e3 for n, p in layer.named_parameters() if "weight_hh" in n)).backward()
    with torch.no_grad():
        other.weight_hh_l0.fill_(5.0)
    opt.step()
    for name, p in layer.named_parameters():
        if "weight_hh" in name:
            assert p.detach().abs().max().item() <= bound
            assert p.detach().abs().max().item() == pytest.approx(bound)  # the step pushed u to the bound
    assert other.weight_hh_l0.detach().max().item() == 5.0


def test_indrnn_copy_keeps_the_constraint():
    layer = copy.deepcopy(rnnkit.IndRNN(I, H, recurrent_max_abs=1.0))
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    layer.weight_hh_l0.grad = torch.full((H,), -10.0)
    opt.step()
    assert layer.weight_hh_l0.detach().max().item() == 1.0


def test_indrnn_forward_uses_the_bounded_weight():
    """A weight set beyond the bound acts as the bound (and gets no gradient past it)."""
    layer = rnnkit.IndRNN(I, H, recurrent_max_abs=1.0, dtype=torch.float64)
    clipped = rnnkit.IndRNN(I, H, dtype=torch.float64)
    clipped.load_state_dict(layer.state_dict())
    with torch.no_grad():
        layer.weight_hh_l0.copy_(torch.tensor([3.0, -3.0, 0.5, 1.0]))
        clipped.weight_hh_l0.copy_(torch.tensor([1.0, -1.0, 0.5, 1.0]))
    x = torch.randn(6, 2, I, dtype=torch.float64)
    out, _ = layer(x)
    torch.testing.assert_close(out, clipped(x)[0])
    out.sum().backward()
    assert layer.weight_hh_l0.grad[0] == 0 and layer.weight_hh_l0.grad[1] == 0


def test_indrnn_initialisation():
    torch.manual_seed(0)
    layer = rnnkit.IndRNN(64, 256, recurrent_max_abs=0.9)
    u = layer.weight_hh_l0
    assert u.min() >= 0 and u.max() <= 0.9  # U(0, bound)
    assert u.mean().item() == pytest.approx(0.45, abs=0.05)
    free = rnnkit.IndRNN(64, 256).weight_hh_l0  # no bound: U(0, 1)
    assert free.min() >= 0 and free.max() <= 1 and free.mean().item() == pytest.approx(0.5, abs=0.05)
    assert layer.bias_ih_l0.abs().max() == 0
    # He normal for relu: std sqrt(2 / fan_in)
    assert layer.weight_ih_l0.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.05)
    lower = rnnkit.IndRNN(4, 100, recurrent_init=(0.5 ** (1 / 50), 2 ** (1 / 50)))
    assert lower.weight_hh_l0.min() >= 0.5 ** (1 / 50)


# -- generation: one step at a time ---------------------------------------------------------------

@pytest.mark.parametrize("unit", list(UNITS))
@pytest.mark.parametrize("given_state", [False, True])
def test_step_by_step_equals_forward(unit, given_state):
    torch.manual_seed(4)
    layer = make(unit, num_layers=3, dropout=0.5, learn_initial_state=not given_state, dtype=torch.float64).eval()
    if not given_state:
        with torch.no_grad():
            layer.initial_h.normal_()
    T, B = 9, 2
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(3, B, H, dtype=torch.float64) if given_state else None
    out, hn = layer(x, h0)
    h, steps = h0, []
    for t in range(T):
        y, h = layer.step(x[t], h)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps), out)
    torch.testing.assert_close(h, hn)


def test_scan_forward_resumes_from_a_carried_state():
    """Two halves with the state carried equal the whole sequence (stateful use)."""
    layer = rnnkit.MinGRU(I, H, num_layers=2, dtype=torch.float64)
    x = torch.randn(70, 2, I, dtype=torch.float64)
    out, hn = layer(x)
    out1, h1 = layer(x[:33])
    out2, h2 = layer(x[33:], h1)
    torch.testing.assert_close(torch.cat((out1, out2)), out)
    torch.testing.assert_close(h2, hn)


# -- shapes, conventions, registry -----------------------------------------------------------------

@pytest.mark.parametrize("unit", list(UNITS))
def test_shapes_bidirectional_stacked_batch_first(unit):
    layer = make(unit, num_layers=3, bidirectional=True, batch_first=True, dropout=0.2)
    out, hn = layer(torch.randn(5, 7, I))  # (B, T, I)
    assert out.shape == (5, 7, 2 * H)
    assert hn.shape == (6, 5, H)
    out, hn = layer(torch.randn(7, I))  # unbatched
    assert out.shape == (7, 2 * H) and hn.shape == (6, H)


@pytest.mark.parametrize("unit", list(UNITS))
def test_lengths_freeze_state_and_zero_outputs(unit):
    """Past its length a sequence outputs zeros and h_n is its state at its last step;
    the same as running that sequence alone, and the same as a PackedSequence."""
    layer = make(unit, bidirectional=True, dtype=torch.float64)
    x = torch.randn(6, 2, I, dtype=torch.float64)
    out, hn = layer(x, lengths=[6, 3])
    assert out[3:, 1].abs().max() == 0
    alone, hn_alone = layer(x[:3, 1:])
    torch.testing.assert_close(out[:3, 1:], alone)
    torch.testing.assert_close(hn[:, 1:], hn_alone)
    packed_out, packed_hn = layer(pack_padded_sequence(x, [6, 3]))
    torch.testing.assert_close(pad_packed_sequence(packed_out)[0], out)
    torch.testing.assert_close(packed_hn, hn)


@pytest.mark.parametrize("name,cls", [("indrnn", rnnkit.IndRNN), ("mingru", rnnkit.MinGRU),
                                      ("minlstm", rnnkit.MinLSTM)])
def test_make_layer_builds_registered_units(name, cls):
    """The char LM's call: make_layer(cell, E, H, num_layers, dropout, batch_first=False),
    then layer(x (T, B, E), state) → (out (T, B, H), state) and the state fed back."""
    assert rnnkit.LAYER_TYPES[name] is cls
    layer = rnnkit.make_layer(name, 5, 8, num_layers=2, dropout=0.1, batch_first=False)
    assert isinstance(layer, cls) and layer.num_layers == 2
    out, state = layer(torch.randn(4, 3, 5), None)
    assert out.shape == (4, 3, 8) and state.shape == (2, 3, 8)
    out2, state2 = layer(torch.randn(4, 3, 5), state)
    assert out2.shape == (4, 3, 8) and not torch.equal(state2, state)


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["indrnn", "mingru", "minlstm"])
def test_unknown_keyword_is_an_error(name):
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['peephole'\]"):
        rnnkit.make_layer(name, 5, 8, peephole=True)
    with pytest.raises(TypeError, match="init="):
        rnnkit.make_layer(name, 5, 8, init="orthogonal")


@pytest.mark.parametrize("kwargs,match", [
    ({"backend": "cuda"}, "backend must be one of"),
    ({"candidate_activation": "relu"}, "candidate_activation must be one of"),
])
def test_min_unit_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rnnkit.MinGRU(I, H, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"nonlinearity": "sigmoid"}, "nonlinearity must be"),
    ({"recurrent_max_abs": 1.1, "time_steps": 10}, "not both"),
    ({"recurrent_max_abs": 0.0}, "recurrent_max_abs must be positive"),
    ({"time_steps": 0}, "time_steps must be positive"),
    ({"time_steps": 5, "gamma": -1.0}, "gamma must be positive"),
    ({"recurrent_init": (1.0, 0.0)}, "low <= high"),
])
def test_indrnn_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rnnkit.IndRNN(I, H, **kwargs)


@pytest.mark.parametrize("unit", list(UNITS))
def test_bad_input_errors(unit):
    layer = make(unit)
    with pytest.raises(ValueError, match="expected input_size=3"):
        layer(torch.randn(4, 2, 5))
    with pytest.raises(ValueError, match="lengths must be in 1..4"):
        layer(torch.randn(4, 2, I), lengths=[5, 1])
    with pytest.raises(ValueError, match=r"initial state h must have shape \(1, 2, 4\)"):
        layer(torch.randn(4, 2, I), torch.zeros(1, 3, H))
    with pytest.raises(ValueError, match=r"step\(\) takes one step of input \(B, I\)"):
        layer.step(torch.randn(4, 2, I))
    with pytest.raises(ValueError, match="expected input_size=3"):
        layer.step(torch.randn(2, 5))
    with pytest.raises(ValueError, match="bidirectional"):
        make(unit, bidirectional=True).step(torch.randn(2, I))
