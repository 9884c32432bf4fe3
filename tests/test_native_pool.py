"""The native loops' buffer pool (rnnkit/cells/native/pool.h): a large result of a layer-norm
loop comes back from a buffer kept between calls once nothing refers to it any more, and never
while a tensor or a view of it is still alive."""

from __future__ import annotations

import pytest
import torch

from rnnkit.engine import native

pytestmark = pytest.mark.usefixtures("native_loops_built")

T, B, H = 30, 3, 8


def _lstm_ln_forward(ext, seed, T=T):
    g = torch.Generator().manual_seed(seed)
    xw, h0, c0 = (torch.randn(s, generator=g) for s in ((T, B, 4 * H), (B, H), (B, H)))
    w_hh = torch.randn(4 * H, H, generator=g) * 0.3
    norms = (torch.ones(4 * H), torch.ones(4 * H), torch.zeros(4 * H), torch.ones(H), torch.zeros(H))
    return ext.lstm_ln_forward(xw, h0, c0, w_hh, None, None, None, None, None, None, *norms, False, True)


def _gru_ln_forward(ext, seed):
    g = torch.Generator().manual_seed(seed)
    xw, h0 = torch.randn(T, B, 3 * H, generator=g), torch.randn(B, H, generator=g)
    w_hh = torch.randn(3 * H, H, generator=g) * 0.3
    return ext.gru_ln_forward(xw, h0, w_hh, None, None, None, torch.ones(3 * H), torch.ones(3 * H),
                              torch.zeros(3 * H), torch.zeros(3 * H), True, False, True)


FORWARDS = {"lstm_ln": _lstm_ln_forward, "gru_ln": _gru_ln_forward}


@pytest.mark.parametrize("loop", sorted(FORWARDS))
def test_a_released_buffer_is_handed_out_again_with_the_same_results(loop):
    forward, ext = FORWARDS[loop], native.load()
    first = forward(ext, 0)
    want = {k: v.clone() for k, v in first.items()}
    address = first["gates"].data_ptr()
    del first
    again = forward(ext, 0)
    assert again["gates"].data_ptr() == address, "the pool handed out a new buffer for a released one"
    for k, v in want.items():
        torch.testing.assert_close(again[k], v, rtol=0, atol=0, msg=f"{loop}: {k} differs on the reused buffer")


@pytest.mark.parametrize("loop", sorted(FORWARDS))
def test_a_buffer_still_in_use_is_never_handed_out(loop):
    forward, ext = FORWARDS[loop], native.load()
    held = forward(ext, 0)
    view = held["gates"][T // 2]  # a view keeps the storage alive after its tensor is gone
    kept = view.clone()
    del held
    other = forward(ext, 1)  # different inputs: an overwrite would change the view
    assert other["gates"].untyped_storage().data_ptr() != view.untyped_storage().data_ptr()
    torch.testing.assert_close(view, kept, rtol=0, atol=0)
    assert not torch.equal(other["gates"][T // 2], kept)


def _storage_users(t):
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def test_pool_clear_drops_the_kept_buffers():
    """``rnnkit bench``'s activation memory clears the pool first, so that a step allocates
    (and is charged for) what it holds."""
    res = _lstm_ln_forward(native.load(), 0)
    gates = res["gates"]
    alone = _storage_users(torch.empty(3))  # a tensor nothing else refers to
    assert _storage_users(gates) == alone + 1, "the pool keeps the buffer it handed out"
    native.clear_pool()
    assert _storage_users(gates) == alone, "clear_pool left the buffer in the pool"


def test_free_buffers_of_another_shape_are_dropped_when_a_new_shape_comes():
    """Sequences of a new length (a new shape) do not pile up buffers: what the pool keeps stays
    that of the shapes in use."""
    ext = native.load()
    kept = {}
    for steps in (20, 30):  # what one call of each shape keeps, from an empty pool
        native.clear_pool()
        _lstm_ln_forward(ext, 0, T=steps)
        kept[steps] = ext.pool_bytes()
    assert kept[30] == kept[20] * 30 // 20 > 0
    native.clear_pool()
    held = _lstm_ln_forward(ext, 0, T=30)
    del held
    again = _lstm_ln_forward(ext, 0, T=30)  # the same shape: the same buffers
    assert ext.pool_bytes() == kept[30]
    del again
    _lstm_ln_forward(ext, 0, T=20)  # a new shape: the free (30, ...) ones go
    assert ext.pool_bytes() == kept[20]
