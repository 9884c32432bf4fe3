"""The forward-only native loops (inference: nothing needs a gradient) and the native
one-step runner of a whole stack (generation): the same numbers as torch.nn and as the Python
loop, the fast path asserted to have run, and not run where a gradient is needed."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.cells.elman import _NativeElman
from rnnkit.cells.gru import _NativeGRU
from rnnkit.cells.jordan import _NativeJordan
from rnnkit.cells.lstm import _NativeLSTM
from rnnkit.data.text import Vocabulary
from rnnkit.engine import native
from rnnkit.models.charlm import CharLM, CharLMConfig

pytestmark = pytest.mark.usefixtures("native_loops_built")


T, B, I, H = 7, 4, 5, 6
BINDINGS = {rnnkit.LSTM: _NativeLSTM, rnnkit.GRU: _NativeGRU, rnnkit.RNN: _NativeElman, rnnkit.Jordan: _NativeJordan}


def _count(monkeypatch, cls, method):
    """A list that gets one entry per call of ``cls.method``."""
    calls = []
    real = getattr(cls, method)

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cls, method, counting)
    return calls


def _count_handed(monkeypatch, cls):
    """A list that gets one entry per call of ``cls.library_infer`` that took the call (handed it
    to the library kernel) rather than declining it."""
    handed = []
    real = cls.library_infer

    def counting(*args, **kwargs):
        res = real(*args, **kwargs)
        if res is not None:
            handed.append(1)
        return res

    monkeypatch.setattr(cls, "library_infer", counting)
    return handed


def _handed_to_torch(ours_cls, options, dtype) -> bool:
    """Whether torch's own LSTM runs this configuration (``_NativeLSTM.library_infer``): the plain
    LSTM in float32 (on oneDNN) and float64, without projection or lengths."""
    return ours_cls is rnnkit.LSTM and not options.get("proj_size") and (
        dtype == torch.float64 or torch.backends.mkldnn.is_available())


def _tol(dtype):
    return {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}


def _flat(result):
    out, state = result
    return [out, *(state if isinstance(state, tuple) else (state,))]


# -- inference against torch.nn ---------------------------------------------------------------------
TORCH_TWINS = [
    (rnnkit.LSTM, torch.nn.LSTM, {}), (rnnkit.LSTM, torch.nn.LSTM, {"proj_size": 4}),
    (rnnkit.GRU, torch.nn.GRU, {}), (rnnkit.GRU, torch.nn.GRU, {"bias": False}),
    (rnnkit.RNN, torch.nn.RNN, {}), (rnnkit.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
]
LAYOUTS = [
    {"num_layers": 2, "bidirectional": True}, {"batch_first": True}, {"num_layers": 2},
]


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ours_cls,twin_cls,options", TORCH_TWINS)
@pytest.mark.parametrize("given_state", [False, True])
def test_forward_only_loop_equals_torch_nn(monkeypatch, ours_cls, twin_cls, options, layout, dtype, given_state):
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    torch.manual_seed(0)
    twin = twin_cls(I, H, **options, **layout).to(dtype).eval()
    ours = ours_cls(I, H, **options, **layout).to(dtype).eval()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn((B, T, I) if layout.get("batch_first") else (T, B, I), dtype=dtype)
    D, L = 2 if layout.get("bidirectional") else 1, layout.get("num_layers", 1)
    state = None
    if given_state:
        P = options.get("proj_size") or H
        h0 = torch.randn(L * D, B, P, dtype=dtype)
        state = (h0, torch.randn(L * D, B, H, dtype=dtype)) if ours_cls is rnnkit.LSTM else h0
    calls = _count(monkeypatch, BINDINGS[ours_cls], "infer")
    handed = _count_handed(monkeypatch, BINDINGS[ours_cls])
    trained = _count(monkeypatch, native._Native, "forward")
    with torch.no_grad():
        want = _flat(twin(x, state))
        got = _flat(ours(x, state))
    # torch's own LSTM or the forward-only loop, once per layer and direction; never the training loop
    by_torch = _handed_to_torch(ours_cls, options, dtype)
    assert (len(handed), len(calls)) == ((L * D, 0) if by_torch else (0, L * D)) and not trained
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **_tol(dtype))


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ours_cls,twin_cls,options", TORCH_TWINS)
def test_forward_only_loop_with_packed_sequences_equals_torch_nn(monkeypatch, ours_cls, twin_cls, options, dtype):
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    torch.manual_seed(1)
    twin = twin_cls(I, H, num_layers=2, bidirectional=True, **options).to(dtype).eval()
    ours = ours_cls(I, H, num_layers=2, bidirectional=True, **options).to(dtype).eval()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(T, B, I, dtype=dtype)
    packed = pack_padded_sequence(x, torch.tensor([7, 2, 5, 1]), enforce_sorted=False)
    calls = _count(monkeypatch, BINDINGS[ours_cls], "infer")
    handed = _count_handed(monkeypatch, BINDINGS[ours_cls])
    with torch.no_grad():
        out_w, state_w = twin(packed)
        out_g, state_g = ours(packed)
    assert len(calls) == 4 and not handed  # lengths: the native loop (torch's packed LSTM is slower)
    torch.testing.assert_close(pad_packed_sequence(out_g)[0], pad_packed_sequence(out_w)[0], **_tol(dtype))
    for a, b in zip(_flat((out_g.data, state_g))[1:], _flat((out_w.data, state_w))[1:]):
        torch.testing.assert_close(a, b, **_tol(dtype))


# -- inference against the Python loop, for the options torch.nn lacks ------------------------------
LOOP_CASES = [
    (rnnkit.LSTM, {"peephole": True}), (rnnkit.LSTM, {"zoneout": (0.1, 0.3), "bidirectional": True}),
    (rnnkit.LSTM, {"recurrent_dropout": 0.3, "proj_size": 3, "peephole": True}),
    (rnnkit.LSTM, {"layer_norm": True, "bidirectional": True}),
    (rnnkit.GRU, {"reset_after": False}), (rnnkit.GRU, {"reset_after": False, "bias": False, "zoneout": 0.2}),
    (rnnkit.GRU, {"recurrent_dropout": 0.3, "num_layers": 2}),
    (rnnkit.GRU, {"layer_norm": True}), (rnnkit.GRU, {"layer_norm": True, "reset_after": False, "bidirectional": True}),
    (rnnkit.RNN, {"zoneout": 0.2, "recurrent_dropout": 0.2, "bidirectional": True}),
    (rnnkit.Jordan, {}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [False, True])  # training mode: dropout and zoneout masks, under no_grad
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("cls,options", LOOP_CASES)
def test_forward_only_loop_equals_the_python_loop(monkeypatch, cls, options, use_lengths, training, dtype):
    torch.manual_seed(2)
    args = (I, H, H) if cls is rnnkit.Jordan else (I, H)
    layer = cls(*args, **options).to(dtype).train(training)
    x = torch.randn(T, B, I, dtype=dtype)
    lengths = torch.tensor([7, 3, 5, 1]) if use_lengths else None
    calls = _count(monkeypatch, BINDINGS[cls], "infer")
    handed = _count_handed(monkeypatch, BINDINGS[cls])

    def run():
        torch.manual_seed(5)  # the same dropout / zoneout masks on both paths
        with torch.no_grad():
            return _flat(layer(x, lengths=lengths))

    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    got = run()
    # the variants torch.nn lacks run the native loop, never torch's LSTM
    assert len(calls) == layer.num_layers * (2 if layer.bidirectional else 1) and not handed
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    want = run()
    tol = {"rtol": 1e-4, "atol": 1e-5} if options.get("layer_norm") else {"rtol": 1e-5, "atol": 2e-6}
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **(tol if dtype == torch.float32 else _tol(dtype)))


# -- when it runs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [rnnkit.LSTM, rnnkit.GRU, rnnkit.RNN])
def test_forward_only_loop_runs_only_when_no_gradient_is_needed(monkeypatch, cls):
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer = cls(I, H)
    x = torch.randn(T, B, I)
    # the forward-only path: the plain LSTM's is torch's own LSTM, the others' the native loop
    calls = _count_handed(monkeypatch, BINDINGS[cls]) if cls is rnnkit.LSTM else _count(monkeypatch, BINDINGS[cls],
                                                                                         "infer")
    trained = _count(monkeypatch, native._Native, "forward")
    out, _ = layer(x)  # the parameters need their gradients
    assert not calls and out.requires_grad
    out, _ = layer(x.requires_grad_())
    assert not calls and out.requires_grad
    with torch.no_grad():
        out, _ = layer(x)
    assert len(calls) == 1 and not out.requires_grad
    layer.requires_grad_(False)  # a frozen layer on an input without gradient: nothing needs one
    x = torch.randn(T, B, I)
    out, _ = layer(x)
    assert len(calls) == 2 and not out.requires_grad
    h0 = torch.zeros(1, B, H, requires_grad=True)  # ... but a given initial state that needs one
    out, _ = layer(x, (h0, torch.zeros(1, B, H)) if cls is rnnkit.LSTM else h0)
    assert len(calls) == 2 and out.requires_grad
    out.sum().backward()
    assert h0.grad is not None and h0.grad.abs().sum() > 0
    assert len(trained) == (3 if cls is not rnnkit.RNN else 0)  # the Elman cell trains on the Python loop


HANDED_LAYOUTS = [
    {}, {"num_layers": 2, "bidirectional": True}, {"batch_first": True}, {"bias": False},
    {"num_layers": 3, "bidirectional": True, "batch_first": True},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", HANDED_LAYOUTS)
@pytest.mark.parametrize("given_state", [False, True])
def test_lstm_handed_to_torch_equals_the_native_loop(monkeypatch, layout, dtype, given_state):
    """The plain LSTM's forward-only call goes to torch's own LSTM (oneDNN's in float32): the
    same numbers as the native forward-only loop (``lstm_infer``) with the same weights, which
    runs when the hand-over is turned off, and the same as torch.nn.LSTM."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    torch.manual_seed(3)
    ours = rnnkit.LSTM(I, H, **layout).to(dtype).eval()
    twin = torch.nn.LSTM(I, H, **layout).to(dtype).eval()
    twin.load_state_dict(ours.state_dict())
    x = torch.randn((B, T, I) if layout.get("batch_first") else (T, B, I), dtype=dtype)
    D, L = 2 if layout.get("bidirectional") else 1, layout.get("num_layers", 1)
    state = (torch.randn(L * D, B, H, dtype=dtype), torch.randn(L * D, B, H, dtype=dtype)) if given_state else None
    calls = _count(monkeypatch, _NativeLSTM, "infer")
    handed = _count_handed(monkeypatch, _NativeLSTM)
    with torch.no_grad():
        got = _flat(ours(x, state))
        assert (len(handed), len(calls)) == (L * D, 0)
        with monkeypatch.context() as m:  # the hand-over off: the native loop
            m.setattr(_NativeLSTM, "library_infer", lambda *args: None)
            loop = _flat(ours(x, state))
        assert (len(handed), len(calls)) == (L * D, L * D)
        want = _flat(twin(x, state))
    for a, b, c in zip(got, loop, want):
        torch.testing.assert_close(a, b, **_tol(dtype))
        torch.testing.assert_close(a, c, **_tol(dtype))


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch.backends.mkldnn.flags
def test_lstm_runs_the_native_loop_where_torch_would_not_use_onednn(monkeypatch):
    """float32 without oneDNN: torch's LSTM is its slower generic loop, so the native loop runs."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    layer = rnnkit.LSTM(I, H).eval()
    x = torch.randn(T, B, I)
    calls = _count(monkeypatch, _NativeLSTM, "infer")
    handed = _count_handed(monkeypatch, _NativeLSTM)
    with torch.no_grad():
        with torch.backends.mkldnn.flags(enabled=False):
            off = layer(x)[0]
        assert (len(handed), len(calls)) == (0, 1)
        on = layer(x)[0]
    assert len(handed) == (1 if torch.backends.mkldnn.is_available() else 0)
    torch.testing.assert_close(on, off, **_tol(torch.float32))


def test_the_elman_cell_trains_on_the_python_loop(monkeypatch):
    """The Elman family has only the forward-only loop: with a gradient it runs the Python loop."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    calls = _count(monkeypatch, _NativeElman, "infer")
    layer = rnnkit.RNN(I, H)
    out, _ = layer(torch.randn(T, B, I))
    out.sum().backward()
    assert not calls and layer.weight_hh_l0.grad is not None


# -- generation ---------------------------------------------------------------------------------------
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 3


def _lm(cell: str, num_layers: int, **kw) -> CharLM:
    torch.manual_seed(4)
    return CharLM(CharLMConfig(cell=cell, hidden_size=12, embed_size=6, num_layers=num_layers, **kw),
                  Vocabulary.build(TEXT))


def _count_steps(monkeypatch):
    """A list that gets one entry per native generation step (of any runner made from now on)."""
    steps = []
    real = native.stack_step

    class Counting:
        def __init__(self, runner):
            self.runner = runner

        def step(self, ids):
            steps.append(int(ids.numel()))
            return self.runner.step(ids)

    def counting(*args, **kwargs):
        runner = real(*args, **kwargs)
        return None if runner is None else Counting(runner)

    monkeypatch.setattr(native, "stack_step", counting)
    return steps


SAMPLING = [{"temperature": 0.7, "top_k": 5}, {"temperature": 1.3}, {"argmax": True}]


@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("gru", {}), ("gru", {"reset_after": False}), ("rnn", {}),
                                     ("lstm", {"peephole": True})])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("sampling", SAMPLING)
def test_native_step_samples_the_same_text(monkeypatch, cell, kw, num_layers, sampling):
    """Same seed → the same text as the Python engine's step by step forward (RNNKIT_NATIVE=0),
    for sample and sample_many, with the native step asserted to have run."""
    lm = _lm(cell, num_layers, **kw)
    steps = _count_steps(monkeypatch)
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    got_one = "".join(lm.sample(60, prime="the ", seed=11, **sampling))
    got_many = lm.sample_many(5, 40, seed=12, **sampling)
    assert steps == [1] * 60 + [5] * 39
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    want_one = "".join(lm.sample(60, prime="the ", seed=11, **sampling))
    want_many = lm.sample_many(5, 40, seed=12, **sampling)
    assert len(steps) == 99  # the reference ran no native step
    assert got_one == want_one and got_many == want_many
    assert lm.training  # sample leaves the mode as it was


@pytest.mark.parametrize("cell,kw", [("gru", {"layer_norm": True}), ("lstm", {"zoneout": 0.1}), ("jordan", {}),
                                     ("lstm", {"recurrent_activation": "hard_sigmoid"})])
def test_generation_without_a_native_step_runs_the_forward(monkeypatch, cell, kw):
    if "recurrent_activation" in kw:  # not a CharLMConfig option: build the layer directly
        lm = _lm("lstm", 1)
        lm.rnn = rnnkit.LSTM(6, 12, recurrent_activation="hard_sigmoid")
    else:
        lm = _lm(cell, 1, **kw)
    steps = _count_steps(monkeypatch)
    monkeypatch.setenv("RNNKIT_NATIVE", "auto")
    text = "".join(lm.sample(20, seed=3))
    assert len(text) == 20 and not steps
    assert lm.sample_many(3, 10, seed=3) == lm.sample_many(3, 10, seed=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls,options", [
    (rnnkit.LSTM, {"proj_size": 4, "peephole": True}), (rnnkit.LSTM, {"num_layers": 3}),
    (rnnkit.GRU, {"reset_after": False, "num_layers": 2}), (rnnkit.GRU, {"bias": False}),
    (rnnkit.RNN, {"nonlinearity": "relu", "num_layers": 2}),
])
def test_stack_step_gives_the_logits_and_state_of_the_forward(monkeypatch, cls, options, dtype):
    """runner.step(ids) = head(stack(E[ids], state)) and the state advances in place, step after step."""
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    torch.manual_seed(6)
    V, E = 11, 5
    layer = cls(E, H, **options).to(dtype).eval()
    embed, head = torch.nn.Embedding(V, E).to(dtype), torch.nn.Linear(layer.cell.output_size, V).to(dtype)
    with torch.no_grad():
        _, state = layer(embed(torch.randint(V, (3, B))))
        runner = layer.native_step(state, embed.weight, head.weight, head.bias)
        assert runner is not None
        for _ in range(3):
            ids = torch.randint(V, (B,))
            out, state = layer(embed(ids)[None], state)
            logits = runner.step(ids)
            torch.testing.assert_close(logits, head(out[0]), **_tol(dtype))
            want = state if isinstance(state, tuple) else (state,)
            for k, got in enumerate(zip(*runner.states())):
                torch.testing.assert_close(torch.stack(got), want[k], **_tol(dtype))


def test_stack_step_rejects_bad_ids():
    layer = rnnkit.GRU(3, 4).eval()
    with torch.no_grad():
        runner = layer.native_step(torch.zeros(1, 2, 4), torch.randn(5, 3), torch.randn(7, 4), None)
        with pytest.raises(RuntimeError, match=r"id 5 is outside the vocabulary 0..4"):
            runner.step(torch.tensor([1, 5]))
        with pytest.raises(RuntimeError, match=r"ids must be a CPU int64 tensor of shape \(2,\)"):
            runner.step(torch.tensor([1]))


@pytest.mark.parametrize("layer,why", [
    (lambda: rnnkit.GRU(3, 4, bidirectional=True), "bidirectional"),
    (lambda: rnnkit.LSTM(3, 4, zoneout=0.1), "zoneout"),
    (lambda: rnnkit.LSTM(3, 4, layer_norm=True), "layer norm"),
    (lambda: rnnkit.GRU(3, 4, layer_norm=True), "layer norm"),
    (lambda: rnnkit.GRU(3, 4, num_layers=2, dropout=0.5).train(), "dropout in training mode"),
    (lambda: rnnkit.GRU(3, 4, backend="autograd"), "the autograd backend"),
])
def test_no_native_step_where_it_cannot_run(layer, why):
    m = layer()
    D = 2 if m.bidirectional else 1
    state = tuple(torch.zeros(m.num_layers * D, 2, s) for s in m.state_sizes)
    assert m.native_step(state if len(state) > 1 else state[0], torch.randn(5, 3)) is None, why
