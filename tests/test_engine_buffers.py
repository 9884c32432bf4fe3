"""The engine's fast path: step buffers (Workspace) and the CPU buffer pool give the same
results as the plain path, never overwrite a tensor someone still holds, and survive a
backward through a retained graph."""

import pytest
import torch

import rnnkit
from rnnkit import engine
from rnnkit.cells.base import NO_WORKSPACE, Workspace

from .cases import ALL_CELLS, make

T, B, I, H = 6, 3, 4, 5


#: the cells whose step can write into workspace buffers (the others always allocate)
WORKSPACE_CELLS = [name for name in ALL_CELLS if make(name, I, H).cell.uses_workspace]


def test_the_workspace_cells_are_the_classic_families():
    assert {"rnn-tanh", "jordan", "lstm", "lstm-all", "gru"} <= set(WORKSPACE_CELLS) and "cifg" not in WORKSPACE_CELLS


@pytest.mark.parametrize("cell", WORKSPACE_CELLS)
def test_step_with_workspace_equals_step_without(cell):
    """The cell's step and step_backward give the same values (to the last few bits:
    strided and contiguous kernels may round transcendentals differently) whether they
    write into workspace buffers or allocate."""
    layer = make(cell, I, H, dtype=torch.float64)
    c = layer.cell
    p = layer._params(0, 0)
    state = tuple(torch.randn(B, s, dtype=torch.float64) for s in c.state_sizes())
    xw = torch.randn(B, c.gates * H, dtype=torch.float64)
    with torch.no_grad():
        new_plain, cache_plain = c.step(xw.clone(), state, p, None)
        ws = Workspace(3)
        ws.t = 1
        new_ws, cache_ws = c.step(xw.clone(), state, p, None, ws=ws)
        for a, b in zip(new_plain, new_ws):
            _same(a, b)
        dstate = tuple(torch.randn_like(s) for s in new_plain)
        g_plain, g_ws = {}, {}
        back_plain = c.step_backward(dstate, cache_plain, p, g_plain, None)
        back_ws = c.step_backward(dstate, cache_ws, p, g_ws, None, ws=ws)
    _same(back_plain[0], back_ws[0])  # dxw
    for a, b in zip(back_plain[1], back_ws[1]):  # dstate_prev
        _same(a, b)
    _same(back_plain[2], back_ws[2])  # drec
    assert g_plain.keys() == g_ws.keys()
    for k in g_plain:
        _same(g_plain[k], g_ws[k])


def _same(a, b):
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_no_workspace_allocates():
    like = torch.zeros(2, 3)
    assert NO_WORKSPACE.view("a", like) is None and NO_WORKSPACE.reuse(like) is None
    assert NO_WORKSPACE.out("a", like, (4, 5)).shape == (4, 5)


def test_workspace_views_are_steps_of_one_buffer():
    ws = Workspace(4)
    like = torch.zeros(2, 3)
    ws.t = 2
    v = ws.view("h", like)
    v.fill_(7.0)
    assert ws.buffers["h"].shape == (4, 2, 3)
    assert ws.buffers["h"][2].eq(7.0).all() and ws.buffers["h"][1].data_ptr() != v.data_ptr()
    assert ws.view("h", like) is v


def _train_step(layer, x):
    out, _ = layer(x)
    grads = torch.autograd.grad(out.pow(2).sum(), list(layer.parameters()))
    return out.detach().clone(), grads


def test_pool_reuses_buffers_and_results_stay_the_same():
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    engine._POOL.clear()
    first = _train_step(layer, x)
    pooled = {k: list(v) for k, v in engine._POOL._free.items()}
    assert pooled, "the backward hands its buffers to the pool"
    second = _train_step(layer, x)
    reused = any(b is p for k, bufs in engine._POOL._free.items() for b in bufs for p in pooled.get(k, ()))
    assert reused
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
    for a, b in zip(first[1], second[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pool_never_overwrites_a_view_an_observer_kept():
    """Gate values kept by an observe hook (views into step buffers) survive later calls."""
    torch.manual_seed(0)
    layer = rnnkit.LSTM(I, H)
    kept = []
    layer._observe = lambda key, t, state, cache: kept.append(layer.cell.gate_values(cache)["f"])
    x = torch.randn(T, B, I)
    engine._POOL.clear()
    out, _ = layer(x)
    out.sum().backward()
    layer._observe = None
    snapshot = [f.clone() for f in kept]
    for _ in range(3):
        out, _ = layer(torch.randn(T, B, I) * 5)
        out.sum().backward()
    for f, s in zip(kept, snapshot):
        assert torch.equal(f, s)


def test_backward_twice_through_a_retained_graph():
    torch.manual_seed(0)
    layer = rnnkit.GRU(I, H, reset_after=False)
    x = torch.randn(T, B, I, requires_grad=True)
    out, _ = layer(x)
    (g1,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
    (g2,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_final_state_does_not_alias_the_output():
    layer = rnnkit.LSTM(I, H)
    out, (h, c) = layer(torch.randn(T, B, I))
    torch.testing.assert_close(h[0], out[-1])
    assert h.data_ptr() != out[-1].data_ptr()


@pytest.mark.parametrize("cell", list(ALL_CELLS))
def test_a_training_step_leaves_nothing_behind(cell):
    """After forward and backward, dropping the output frees it and the graph: no step cache
    may view the returned output (a reference cycle through autograd's graph that Python's
    collector cannot break; every training step of the Elman RNN leaked its activations)."""
    import gc
    import weakref

    layer = make(cell, I, H)
    out, _ = layer(torch.randn(T, B, I))
    alive = weakref.ref(out)
    out.sum().backward()
    del out, _
    gc.collect()
    assert alive() is None
