"""Property-based tests: random shapes, lengths and options through the layers, the
hand-written BPTT against the autograd reference; bad shapes only raise the documented
error types."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkit

from .cases import ALL_CELLS, make

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def layer_cases(draw):
    return dict(
        cell=draw(st.sampled_from(list(ALL_CELLS))),
        T=draw(st.integers(1, 6)),
        B=draw(st.integers(1, 4)),
        I=draw(st.integers(1, 4)),
        H=draw(st.integers(4, 6)),
        num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        use_lengths=draw(st.booleans()),
        zoneout=draw(st.sampled_from([0.0, 0.3])),
        recurrent_dropout=draw(st.sampled_from([0.0, 0.4])),
        seed=draw(st.integers(0, 2**16)),
    )


@SETTINGS
@given(layer_cases())
def test_random_configurations_match_the_autograd_reference(case):
    torch.manual_seed(case["seed"])
    kw = dict(num_layers=case["num_layers"], bidirectional=case["bidirectional"],
              batch_first=case["batch_first"], zoneout=case["zoneout"],
              recurrent_dropout=case["recurrent_dropout"], dtype=torch.float64)
    fast = make(case["cell"], case["I"], case["H"], **kw)
    ref = make(case["cell"], case["I"], case["H"], backend="autograd", **kw)
    ref.load_state_dict(fast.state_dict())
    T, B = case["T"], case["B"]
    shape = (B, T, case["I"]) if case["batch_first"] else (T, B, case["I"])
    x = torch.randn(shape, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,)) if case["use_lengths"] else None
    results = []
    for layer in (fast, ref):
        torch.manual_seed(case["seed"] + 1)
        xi = x.clone().requires_grad_()
        out, hn = layer(xi, lengths=lengths)
        hn = hn if isinstance(hn, tuple) else (hn,)
        loss = out.pow(2).sum() + sum(h.sum() for h in hn)
        results.append((out, *hn, *torch.autograd.grad(loss, [xi, *layer.parameters()])))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=4),
    lengths=st.one_of(st.none(), st.lists(st.integers(-2, 8), min_size=0, max_size=5)),
    cell=st.sampled_from(["lstm", "gru", "rnn-tanh", "jordan"]),
)
def test_arbitrary_shapes_raise_only_documented_errors(shape, lengths, cell):
    layer = make(cell, 3, 4)
    try:
        out, _ = layer(torch.randn(shape), lengths=lengths)
    except (ValueError, TypeError):
        return
    # accepted: then it was a well-formed (T, I) or (T, B, I) input
    assert len(shape) in (2, 3) and shape[-1] == 3 and 0 not in shape
    assert out.shape[0] == shape[0]
    assert torch.isfinite(out).all()


def test_every_documented_cell_is_covered():
    assert {type(make(c, 2, 4)) for c in ALL_CELLS} == {rnnkit.RNN, rnnkit.LSTM, rnnkit.GRU, rnnkit.Jordan,
                                                     rnnkit.Recurrent}  # cifg: a registered cell class


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_layers_run_in_each_floating_dtype(dtype):
    layer = rnnkit.LSTM(3, 4, dtype=dtype)
    ref = torch.nn.LSTM(3, 4, dtype=dtype)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3, dtype=dtype)
    out, _ = layer(x)
    assert out.dtype == dtype
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(out, ref(x)[0], atol=tol, rtol=tol)
