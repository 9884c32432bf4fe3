"""float64 gradcheck of the hand-written BPTT, and agreement with the autograd reference."""

import pytest
import torch
from torch.func import functional_call

import rnnkit

from .cases import ALL_CELLS, make

T, B, I, H = 4, 3, 3, 4


def _states(layer, batch, dtype=torch.float64):
    LD = layer.num_layers * layer.num_directions
    device = next(layer.parameters()).device
    return tuple(torch.randn(LD, batch, s, dtype=dtype, device=device, requires_grad=True)
                 for s in layer.cell.state_sizes())


def _call(layer, params, x, states, lengths):
    hx = None if states is None else (states[0] if len(states) == 1 else states)
    out, hn = functional_call(layer, params, (x, hx), {"lengths": lengths})
    hn = hn if isinstance(hn, tuple) else (hn,)
    return (out, *hn)


@pytest.mark.parametrize("cell", list(ALL_CELLS))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_bptt_gradcheck(cell, bidirectional, with_lengths, with_state, device):
    layer = make(cell, I, H, num_layers=2 if bidirectional else 1, bidirectional=bidirectional,
                 dtype=torch.float64, device=device)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(T, B, I, dtype=torch.float64, device=device, requires_grad=True)
    states = _states(layer, B) if with_state else ()
    lengths = torch.tensor([4, 2, 3]) if with_lengths else None
    n_state = len(states)

    def f(x, *rest):
        st = rest[:n_state] if n_state else None
        return _call(layer, dict(zip(names, rest[n_state:])), x, st, lengths)

    # full Jacobians for the plainest and the fullest case, random projections otherwise
    fast = not (with_lengths and with_state and not bidirectional) and not (
        not with_lengths and not with_state and not bidirectional)
    assert torch.autograd.gradcheck(f, (x, *states, *params), atol=1e-6, fast_mode=fast)


@pytest.mark.parametrize("cell", list(ALL_CELLS))
def test_bptt_matches_autograd_with_lengths_dropout_zoneout(cell, device):
    """Hand-written BPTT and the autograd reference agree on outputs and every gradient,
    with lengths, recurrent dropout and zoneout all on (same random masks)."""
    n_states = len(make(cell, I, H).state_sizes)
    kw = dict(num_layers=2, bidirectional=True, recurrent_dropout=0.3, zoneout=0.2,
              learn_initial_state=True, dtype=torch.float64, device=device)
    fast = make(cell, I, H, **kw)
    ref = make(cell, I, H, backend="autograd", **kw)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(6, B, I, dtype=torch.float64, device=device)
    lengths = torch.tensor([6, 1, 4])
    results = []
    for layer in (fast, ref):
        torch.manual_seed(1)
        xi = x.clone().requires_grad_()
        out, hn = layer(xi, lengths=lengths)
        hn = hn if isinstance(hn, tuple) else (hn,)
        assert len(hn) == n_states
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)).sum()
        loss = loss + sum((h * h).sum() for h in hn)
        grads = torch.autograd.grad(loss, [xi, *layer.parameters()])
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    for (name, _), g1, g2 in zip(fast.named_parameters(), results[0][1][1:], results[1][1][1:]):
        torch.testing.assert_close(g1, g2, msg=f"gradient of {name}")
    torch.testing.assert_close(results[0][1][0], results[1][1][0])


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm", "gru-reset-before", "jordan"])
def test_gradient_record_matches_autograd(cell):
    """‖∂L/∂h_t‖ recorded by the engine equals the norm autograd computes for h_t."""
    records = []
    for backend in ("bptt", "autograd"):
        torch.manual_seed(2)
        layer = make(cell, I, H, bidirectional=True, backend=backend, dtype=torch.float64)
        x = torch.randn(7, B, I, dtype=torch.float64)
        with rnnkit.record_gradient_norms(layer) as rec:
            out, _ = layer(x, lengths=[7, 5, 2])
            out.pow(2).sum().backward()
        records.append(rec)
    kind = type(make(cell, I, H)).__name__.lower()
    assert set(records[0].norms) == {f"{kind}.l0", f"{kind}.l0_reverse"}
    for key in records[0].norms:
        assert records[0].norms[key].shape == (7, B)
        torch.testing.assert_close(records[0].norms[key], records[1].norms[key])
    assert records[0].per_step().shape == (7,)
