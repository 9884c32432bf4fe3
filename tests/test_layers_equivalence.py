"""Same weights as torch.nn.RNN/LSTM/GRU → same outputs and gradients (drop-in)."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit

KINDS = ["RNN", "LSTM", "GRU"]
CONFIGS = [
    dict(num_layers=nl, bidirectional=bd, batch_first=bf)
    for nl, bd, bf in itertools.product([1, 2], [False, True], [False, True])
]


def _pair(kind, *args, device="cpu", **kw):
    ref = getattr(torch.nn, kind)(*args, **kw, device=device)
    mine = getattr(rnnkit, kind)(*args, **kw, device=device)
    assert list(mine.state_dict()) == list(ref.state_dict())
    for (k1, v1), (_, v2) in zip(ref.state_dict().items(), mine.state_dict().items()):
        assert v1.shape == v2.shape, k1
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def _state(kind, ref, B, kw):
    LD = ref.num_layers * (2 if ref.bidirectional else 1)
    R = ref.proj_size or ref.hidden_size if kind == "LSTM" else ref.hidden_size
    device = ref.weight_ih_l0.device
    h0 = torch.randn(LD, B, R, device=device)
    return (h0, torch.randn(LD, B, ref.hidden_size, device=device)) if kind == "LSTM" else h0


def _grads(module, x, out, hn):
    hn = hn if isinstance(hn, tuple) else (hn,)
    w = torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)
    loss = (out * w).sum() + sum((h.sin()).sum() for h in hn)
    return torch.autograd.grad(loss, [x, *module.parameters()])


def _assert_same(ref_result, my_result):
    for a, b in zip(ref_result, my_result):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("with_state", [False, True])
def test_same_outputs_and_gradients_as_torch_nn(kind, cfg, with_state, device):
    ref, mine = _pair(kind, 5, 7, device=device, **cfg)
    B, T = 4, 6
    x = (torch.randn(B, T, 5) if cfg["batch_first"] else torch.randn(T, B, 5)).to(device)
    hx = _state(kind, ref, B, cfg) if with_state else None
    results = []
    for m in (ref, mine):
        xi = x.clone().requires_grad_()
        out, hn = m(xi, hx)
        results.append((out, *(hn if isinstance(hn, tuple) else (hn,)), *_grads(m, xi, out, hn)))
    _assert_same(*results)


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_lstm_projection_matches_torch_nn(num_layers, bidirectional, device):
    ref, mine = _pair("LSTM", 5, 8, num_layers=num_layers, bidirectional=bidirectional, proj_size=3, device=device)
    x = torch.randn(6, 4, 5, device=device)
    hx = _state("LSTM", ref, 4, {})
    results = []
    for m in (ref, mine):
        xi = x.clone().requires_grad_()
        out, (h, c) = m(xi, hx)
        assert out.shape == (6, 4, 3 * (2 if bidirectional else 1))
        results.append((out, h, c, *_grads(m, xi, out, (h, c))))
    _assert_same(*results)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence_matches_torch_nn(kind, enforce_sorted, device):
    ref, mine = _pair(kind, 3, 5, num_layers=2, bidirectional=True, device=device)
    lengths = torch.tensor([6, 5, 3, 1]) if enforce_sorted else torch.tensor([3, 6, 1, 5])
    x = torch.randn(6, 4, 3, device=device)
    hx = _state(kind, ref, 4, {})
    results = []
    for m in (ref, mine):
        xi = x.clone().requires_grad_()
        packed = pack_padded_sequence(xi, lengths, enforce_sorted=enforce_sorted)
        out, hn = m(packed, hx)
        assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
        if not enforce_sorted:
            torch.testing.assert_close(out.sorted_indices, packed.sorted_indices)
        assert out.data.device == x.device
        padded, out_lengths = pad_packed_sequence(out)
        assert out_lengths.tolist() == lengths.tolist()
        results.append((out.data, padded, *(hn if isinstance(hn, tuple) else (hn,)),
                        *_grads(m, xi, padded, hn)))
    _assert_same(*results)


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_argument_equals_packed_input(kind):
    """lengths= without packing gives what the packed path gives: zero output past each
    length, final state taken at each sequence's own last step."""
    _, mine = _pair(kind, 3, 5, bidirectional=True)
    x = torch.randn(7, 3, 3)
    lengths = torch.tensor([2, 7, 4])
    out, hn = mine(x, lengths=lengths)
    packed_out, packed_hn = mine(pack_padded_sequence(x, lengths, enforce_sorted=False))
    padded, _ = pad_packed_sequence(packed_out, total_length=7)
    torch.testing.assert_close(out, padded)
    for a, b in zip(hn if isinstance(hn, tuple) else (hn,), packed_hn if isinstance(hn, tuple) else (packed_hn,)):
        torch.testing.assert_close(a, b)
    assert out[2:, 0].abs().max() == 0 and out[4:, 2].abs().max() == 0
    # each sequence alone, unpadded, gives the same outputs
    for b, L in enumerate(lengths.tolist()):
        alone, _ = mine(x[:L, b : b + 1])
        torch.testing.assert_close(out[:L, b : b + 1], alone)


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input_matches_torch_nn(kind, device):
    ref, mine = _pair(kind, 3, 4, num_layers=2, device=device)
    x = torch.randn(5, 3, device=device)
    hx = _state(kind, ref, 1, {})
    hx = tuple(h.squeeze(1) for h in hx) if isinstance(hx, tuple) else hx.squeeze(1)
    o1, h1 = ref(x, hx)
    o2, h2 = mine(x, hx)
    assert o2.shape == (5, 4)
    torch.testing.assert_close(o2, o1)
    for a, b in zip(h1 if isinstance(h1, tuple) else (h1,), h2 if isinstance(h2, tuple) else (h2,)):
        torch.testing.assert_close(b, a)


def test_dropout_between_layers_is_active_only_in_training():
    layer = rnnkit.LSTM(3, 4, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 3)
    layer.train()
    a, _ = layer(x)
    b, _ = layer(x)
    assert not torch.allclose(a, b)
    layer.eval()
    c, _ = layer(x)
    d, _ = layer(x)
    torch.testing.assert_close(c, d)
