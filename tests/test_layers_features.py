"""Beyond torch.nn: init schemes, learnable initial state, dropout variants, Jordan
teacher forcing, and clear errors on bad input."""

import pytest
import torch

import rnnkit
from rnnkit.cells import ElmanCell, JordanCell, get_activation
from rnnkit.layers import recurrent

from .cases import ALL_CELLS, make


# -- initialisation -----------------------------------------------------------------------------
def test_identity_init_is_irnn():
    layer = rnnkit.make_layer("irnn", 3, 6)
    assert layer.cell.nonlinearity == "relu"
    torch.testing.assert_close(layer.weight_hh_l0, torch.eye(6))
    assert layer.bias_ih_l0.abs().max() == 0 and layer.bias_hh_l0.abs().max() == 0
    assert layer.weight_ih_l0.std() < 0.01


@pytest.mark.parametrize("kind,gates", [("lstm", 4), ("gru", 3), ("rnn", 1)])
def test_orthogonal_init_gives_orthogonal_gate_blocks(kind, gates):
    layer = rnnkit.make_layer(kind, 3, 5, init="orthogonal")
    for block in layer.weight_hh_l0.detach().chunk(gates):
        torch.testing.assert_close(block @ block.t(), torch.eye(5), atol=1e-5, rtol=0)


def test_pytorch_init_bounds_and_forget_bias():
    layer = rnnkit.LSTM(3, 16, forget_bias=1.0)
    bound = 1 / 16**0.5
    assert layer.weight_hh_l0.abs().max() <= bound
    assert torch.all(layer.bias_ih_l0[16:32] == 1.0) and torch.all(layer.bias_hh_l0[16:32] == 0.0)
    with pytest.raises(ValueError, match="forget_bias"):
        rnnkit.GRU(3, 4, forget_bias=1.0)


def test_layer_norm_gains_start_at_one():
    layer = rnnkit.LSTM(3, 4, layer_norm=True)
    assert torch.all(layer.ln_ih_weight_l0 == 1) and torch.all(layer.ln_c_bias_l0 == 0)


# -- initial state ------------------------------------------------------------------------------
def test_learnable_initial_state_is_used_and_trained():
    layer = rnnkit.LSTM(3, 4, num_layers=2, learn_initial_state=True)
    names = [n for n, _ in layer.named_parameters()]
    assert "initial_h" in names and "initial_c" in names
    with torch.no_grad():
        layer.initial_h.fill_(0.5)
    x = torch.randn(5, 2, 3)
    out, _ = layer(x)
    given, _ = layer(x, (torch.full((2, 2, 4), 0.5), torch.zeros(2, 2, 4)))
    torch.testing.assert_close(out, given)
    out.sum().backward()
    assert layer.initial_h.grad.abs().sum() > 0 and layer.initial_c.grad.abs().sum() > 0


# -- dropout variants ---------------------------------------------------------------------------
def test_variational_dropout_keeps_one_mask_per_sequence():
    """With recurrent dropout the same units of h are dropped at every step: a unit
    dropped from the recurrent input has zero weight-gradient contribution throughout."""
    layer = rnnkit.RNN(2, 6, recurrent_dropout=0.5)
    masks = []
    orig = layer._loop_options

    def spy(*args):
        opts = orig(*args)
        masks.append(opts.rmask)
        return opts

    layer._loop_options = spy
    layer(torch.randn(4, 3, 2))
    (mask,) = masks
    assert mask.shape == (3, 6)
    assert set(mask.unique().tolist()) <= {0.0, 2.0}
    layer.eval()
    masks.clear()
    layer(torch.randn(4, 3, 2))
    assert masks == [None]


def test_zoneout_in_eval_is_the_expected_interpolation():
    layer = rnnkit.RNN(2, 3, zoneout=0.25).eval()
    plain = rnnkit.RNN(2, 3).eval()
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(4, 1, 2)
    out, _ = layer(x)
    h = torch.zeros(1, 3)
    for t in range(4):
        new, _ = plain(x[t : t + 1], h.unsqueeze(0))
        h = 0.25 * h + 0.75 * new[0]
        torch.testing.assert_close(out[t], h)


def test_zoneout_in_training_keeps_some_units_exactly():
    layer = rnnkit.LSTM(2, 50, zoneout=(0.5, 0.0))
    out, _ = layer(torch.randn(3, 4, 2))
    assert (out[2] == out[1]).float().mean() > 0.2  # about half the units kept their value


@pytest.mark.parametrize("rate", [0.03, 0.1, 0.5, 0.7, 0.97])
@pytest.mark.parametrize("few_gaps", [False, True])
def test_zoneout_mask_draws_independent_bernoulli_entries(monkeypatch, rate, few_gaps):
    """The gap sampler's masks have Bernoulli(rate) statistics: the mean, neighbouring pairs,
    and every position alike (the first and the last entry too) — also when it must draw
    its gaps in many rounds (few_gaps: 7 per round)."""
    if few_gaps:
        monkeypatch.setattr(recurrent, "_gaps_to_draw", lambda left, p: 7)
    torch.manual_seed(0)
    n = 20_000 if few_gaps else 200_000
    mask = recurrent.zoneout_mask((n // 100, 10, 10), rate, torch.float64)
    assert mask.shape == (n // 100, 10, 10) and mask.dtype == torch.float64
    x = mask.flatten()
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert abs(x.mean().item() - rate) < 5 * (rate * (1 - rate) / n) ** 0.5
    both = (x[1:] * x[:-1]).mean().item()  # P(two neighbours both 1) = rate²
    assert abs(both - rate**2) < 8 * (rate**2 * (1 - rate**2) / n) ** 0.5
    runs = torch.stack([recurrent.zoneout_mask((6,), rate, torch.float32) for _ in range(3000)])  # (3000, 6)
    per_position = runs.mean(0)
    assert (per_position - rate).abs().max() < 5 * (rate * (1 - rate) / 3000) ** 0.5


def test_zoneout_mask_follows_the_seed_and_rate_zero_keeps_nothing():
    torch.manual_seed(3)
    a = recurrent.zoneout_mask((4, 3, 5), 0.2, torch.float32)
    torch.manual_seed(3)
    torch.testing.assert_close(recurrent.zoneout_mask((4, 3, 5), 0.2, torch.float32), a)
    assert recurrent.zoneout_mask((4, 3, 5), 0.0, torch.float32).abs().sum() == 0



@pytest.mark.parametrize("rates", [(0.1, 0.1), (0.1, 0.3), (0.0, 0.2)])
def test_zoneout_draws_the_entries_that_share_a_rate_as_one_mask(monkeypatch, rates):
    """h and c under one rate come from one zoneout_masks draw split into contiguous views
    (the same entries as one zoneout_mask over both, from the same seed); each rate gets its
    own draw, in the entries' order, and a rate of 0 draws nothing."""
    drawn = []
    real = recurrent.zoneout_masks

    def spy(shapes, rate, dtype, device="cpu"):
        drawn.append((list(shapes), rate))
        return real(shapes, rate, dtype, device)

    monkeypatch.setattr(recurrent, "zoneout_masks", spy)
    layer = rnnkit.LSTM(3, 5, proj_size=4, zoneout=rates)
    opts = layer._loop_options(0, 0, torch.randn(6, 2, 3), None)
    wanted = [([(6, 2, s) for s, r in zip((4, 5), rates) if r == rate], rate)
              for rate in dict.fromkeys(r for r in rates if r)]
    assert drawn == wanted
    for mask, rate, size in zip(opts.zoneout, rates, (4, 5)):
        assert (mask is None) if not rate else (mask.shape == (6, 2, size) and mask.is_contiguous())
    torch.manual_seed(7)
    h, c = real([(6, 2, 4), (6, 2, 5)], 0.3, torch.float64)
    torch.manual_seed(7)
    flat = recurrent.zoneout_mask((6 * 2 * 9,), 0.3, torch.float64)
    torch.testing.assert_close(torch.cat([h.flatten(), c.flatten()]), flat, rtol=0, atol=0)

# -- Jordan -------------------------------------------------------------------------------------
def test_jordan_teacher_forcing_with_own_outputs_equals_free_running():
    layer = rnnkit.Jordan(3, 5, 2)
    x = torch.randn(6, 4, 3)
    free, y_n = layer(x)
    forced, y_n2 = layer(x, teacher=free.detach())
    torch.testing.assert_close(forced, free)
    torch.testing.assert_close(y_n2, y_n)


def test_jordan_teacher_forcing_feeds_previous_target():
    layer = rnnkit.Jordan(3, 5, 2, dtype=torch.float64)
    x = torch.randn(4, 1, 3, dtype=torch.float64)
    teacher = torch.randn(4, 1, 2, dtype=torch.float64)
    out, _ = layer(x, teacher=teacher)
    cell: JordanCell = layer.cell
    p = layer._params(0, 0)
    prev = torch.zeros(1, 2, dtype=torch.float64)
    for t in range(4):
        xw = x[t] @ p["weight_ih"].t() + p["bias_ih"] + p["bias_hh"]
        (y,), _ = cell.step(xw, (prev,), p, None)
        torch.testing.assert_close(out[t], y)
        prev = teacher[t]
    with pytest.raises(ValueError, match="teacher must have shape"):
        layer(x, teacher=teacher[:3])
    with pytest.raises(ValueError, match="single unidirectional"):
        rnnkit.Jordan(3, 5, 2, num_layers=2)(x.float(), teacher=teacher.float())


def test_jordan_output_size_shapes():
    layer = rnnkit.Jordan(3, 5, 2, num_layers=2, bidirectional=True)
    out, y_n = layer(torch.randn(6, 4, 3))
    assert out.shape == (6, 4, 4) and y_n.shape == (4, 4, 2)


# -- activations --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "hard_sigmoid", "hard_sigmoid_keras2", "identity"])
def test_activation_backward_matches_autograd(name):
    act = get_activation(name)
    a = torch.randn(50, dtype=torch.float64, requires_grad=True)
    y = act.forward(a)
    dy = torch.randn(50, dtype=torch.float64)
    (expected,) = torch.autograd.grad(y, a, dy)
    torch.testing.assert_close(act.backward(dy, y.detach()), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hard_sigmoid_is_torchs_hardsigmoid_and_keras2_has_its_own_name(dtype):
    """hard_sigmoid = relu6(a + 3) / 6 (torch.nn.functional.hardsigmoid, Keras 3), forward bit
    for bit, into a buffer too, and its derivative; hard_sigmoid_keras2 = clip(0.2 a + 0.5, 0, 1)."""
    a = (torch.rand(4001, dtype=dtype) - 0.5) * 10  # both kinks inside, no point exactly on them
    act = get_activation("hard_sigmoid")
    want = torch.nn.functional.hardsigmoid(a)
    torch.testing.assert_close(act.forward(a), want, rtol=0, atol=0)
    torch.testing.assert_close(act.forward(a, out=torch.empty_like(a)), want, rtol=0, atol=0)
    dy = torch.randn_like(a)
    a_ = a.clone().requires_grad_()
    (expected,) = torch.autograd.grad(torch.nn.functional.hardsigmoid(a_), a_, dy)
    # torch's hardsigmoid_backward multiplies by 1/6 rounded to float32 even in float64
    torch.testing.assert_close(act.backward(dy, want), expected, rtol=1e-7 if dtype == torch.float64 else 0, atol=0)
    assert 0 < int((expected == 0).sum()) < a.numel()  # both the flat and the sloped parts were hit
    keras2 = get_activation("hard_sigmoid_keras2")
    torch.testing.assert_close(keras2.forward(a), (0.2 * a + 0.5).clamp(0, 1))
    assert not torch.allclose(keras2.forward(a), want)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        rnnkit.LSTM(3, 4, activation="swish")
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        rnnkit.make_layer("transformer", 3, 4)
    with pytest.raises(ValueError, match="nonlinearity"):
        ElmanCell(4, nonlinearity="gelu")
    with pytest.raises(ValueError, match="init must be one of"):
        rnnkit.LSTM(3, 4, init="he")


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", list(ALL_CELLS))
def test_bad_input_raises_clear_errors(cell):
    layer = make(cell, 3, 4, num_layers=2)
    LD = 2
    good = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="2-D .* or 3-D"):
        layer(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match="has 7 features, expected input_size=3"):
        layer(torch.randn(5, 2, 7))
    with pytest.raises(ValueError, match=r"input dtype \(torch.float64\) does not match weight dtype"):
        layer(good.double())
    with pytest.raises(ValueError, match=r"lengths must be in 1..5"):
        layer(good, lengths=[6, 2])
    with pytest.raises(ValueError, match=r"lengths must be in 1..5"):
        layer(good, lengths=[0, 2])
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        layer(good, lengths=[3, 2, 1])
    with pytest.raises(TypeError, match="lengths must be integers"):
        layer(good, lengths=torch.tensor([1.0, 2.0]))
    n_states = len(layer.cell.state_sizes())
    R = layer.cell.output_size
    bad_h = torch.zeros(LD, 3, R)
    with pytest.raises(ValueError, match=r"initial state h must have shape \(2, 2, "):
        layer(good, bad_h if n_states == 1 else (bad_h, torch.zeros(LD, 2, 4)))
    if n_states == 2:
        with pytest.raises(ValueError, match="must have 2 tensor"):
            layer(good, torch.zeros(LD, 2, R))
    with pytest.raises(ValueError, match="empty time or batch"):
        layer(torch.randn(0, 2, 3))
    with pytest.raises(TypeError, match="input must be a Tensor"):
        layer([[1.0, 2.0, 3.0]])


def test_state_dtype_mismatch_is_named():
    layer = rnnkit.GRU(3, 4)
    with pytest.raises(TypeError, match="initial state h dtype torch.float64"):
        layer(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=torch.float64))


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="hidden_size must be greater than zero, got 0"):
        rnnkit.LSTM(3, 0)
    with pytest.raises(ValueError, match="num_layers must be greater than zero, got 0"):
        rnnkit.LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"dropout should be a number in range \[0, 1\].*got 1.5"):
        rnnkit.LSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        rnnkit.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="zoneout takes one rate or 2 rates"):
        rnnkit.LSTM(3, 4, zoneout=(0.1, 0.1, 0.1))


def test_device_mismatch_is_named():
    layer = rnnkit.LSTM(3, 4)
    with pytest.raises(ValueError, match="input is on meta but the parameters are on cpu"):
        layer(torch.empty(5, 2, 3, device="meta"))


def test_gradient_record_names_nested_layers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))
    model.add_module("encoder", rnnkit.GRU(3, 4, num_layers=2))
    x = torch.randn(6, 2, 3)
    with rnnkit.record_gradient_norms(model) as rec:
        out, _ = model.encoder(model[0](x))
        out[-1].sum().backward()
    assert set(rec.norms) == {"encoder.l0", "encoder.l1"}
    # only the last step receives a gradient from the loss; earlier ones through time
    norms = rec.per_step("encoder.l1")
    assert norms.shape == (6,) and norms[-1] > 0


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm-layernorm", "gru-reset-before", "jordan"])
def test_bf16_autocast_runs_the_loop_in_bf16_with_float32_gradients(cell):
    layer = make(cell, 3, 8, zoneout=0.1, recurrent_dropout=0.1)
    x = torch.randn(6, 4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    grads = [p.grad for p in layer.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    layer.eval()
    with torch.no_grad():
        exact, _ = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            approx, _ = layer(x)
    torch.testing.assert_close(approx.float(), exact, atol=0.1, rtol=0.1)
