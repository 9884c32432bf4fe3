"""Recurrent batch normalization, ``rnnkit.LSTM(..., batch_norm=True)`` (Cooijmans et al. 2017):
the layer against a plain autograd reimplementation written here on torch.nn.functional.batch_norm
(outputs, gradients and running statistics, in training and in evaluation), float64 gradcheck and
gradgradcheck of the hand-written backward, the save/load round trips and the errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import rnnkit
from rnnkit import engine
from rnnkit.cells.bnlstm import BatchNormLSTMCell
from rnnkit.layers import BatchNormLSTM

from .test_dropin_pickle import LAYER_ROUND_TRIPS  # pickle, deepcopy, torch.save, weights_only

I, H = 3, 4


def plain_bn_lstm(m: BatchNormLSTM, x, state=None, lengths=None, running=None):
    """Recurrent batch normalization written out with autograd and F.batch_norm, from the paper's
    equations: per step t, BN over the sequences that reach t, statistics of row min(t, T_max-1)
    of ``running`` (copies of the layer's buffers, updated in place in training), a step that one
    sequence reaches normalized with the running statistics as they were before the forward."""
    T, B, _ = x.shape
    D = 2 if m.bidirectional else 1
    running = {n: b.clone() for n, b in m.named_buffers()} if running is None else running
    before = {n: b.clone() for n, b in running.items()}
    lengths = torch.full((B,), T) if lengths is None else torch.as_tensor(lengths)
    finals_h, finals_c = [], []
    layer_in = x
    for layer in range(m.num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")

            def w(name, sfx=sfx):
                return getattr(m, name + sfx)

            k = layer * D + d
            h = x.new_zeros(B, H) if state is None else state[0][k]
            c = x.new_zeros(B, H) if state is None else state[1][k]
            out = [x.new_zeros(B, H) for _ in range(T)]
            for t in reversed(range(T)) if d else range(T):
                rows = (lengths > t).nonzero().flatten()
                if len(rows) == 0:
                    continue
                row = min(t, m.batch_norm_max_steps - 1)
                batch = m.training and len(rows) > 1
                momentum = m.batch_norm_momentum or 0.0  # unused without a batch
                if batch:  # as torch.nn.BatchNorm1d: count the batch; momentum None averages
                    running[f"bn_num_batches_tracked{sfx}"][row] += 1
                    if m.batch_norm_momentum is None:
                        momentum = 1.0 / float(running[f"bn_num_batches_tracked{sfx}"][row])

                def bn(a, s, gain, shift=None, sfx=sfx, row=row, batch=batch, momentum=momentum):
                    stats = running if batch else before
                    mean = stats[f"bn_{s}_running_mean{sfx}"][row]
                    var = stats[f"bn_{s}_running_var{sfx}"][row]
                    return F.batch_norm(a, mean, var, gain, shift, training=batch, momentum=momentum,
                                        eps=m.batch_norm_eps)

                hr, cr = h[rows], c[rows]
                gates = (bn(layer_in[t, rows] @ w("weight_ih").t(), "ih", w("bn_ih_weight"))
                         + bn(hr @ w("weight_hh").t(), "hh", w("bn_hh_weight")) + w("bias_ih") + w("bias_hh"))
                i, f, g, o = gates.chunk(4, 1)
                c_new = f.sigmoid() * cr + i.sigmoid() * g.tanh()
                h_new = o.sigmoid() * bn(c_new, "c", w("bn_c_weight"), w("bn_c_bias")).tanh()
                h, c = h.index_put((rows,), h_new), c.index_put((rows,), c_new)
                out[t] = out[t].index_put((rows,), h_new)
            outs.append(torch.stack(out))
            finals_h.append(h)
            finals_c.append(c)
        layer_in = torch.cat(outs, 2)
    return layer_in, (torch.stack(finals_h), torch.stack(finals_c)), running


def make(num_layers=1, bidirectional=False, max_steps=100, dtype=torch.float64, **kw):
    m = rnnkit.LSTM(I, H, num_layers, bidirectional=bidirectional, dtype=dtype, batch_norm=True,
                    batch_norm_max_steps=max_steps, **kw)
    with torch.no_grad():  # away from the initial values, so that a swapped parameter shows
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m


def randomize_running(m: BatchNormLSTM) -> None:
    with torch.no_grad():
        for name, b in m.named_buffers():
            if "tracked" not in name:
                b.copy_(torch.rand_like(b) + 0.5 if "var" in name else torch.randn_like(b))


CONFIGS = {
    "plain": dict(),
    "lengths": dict(lengths=[6, 3, 1, 5]),
    "bidirectional": dict(bidirectional=True),
    "bidirectional+lengths": dict(bidirectional=True, lengths=[6, 3, 1, 5]),
    "two_layers": dict(num_layers=2),
    "initial_state": dict(state=True),
    "shared_past_t_max": dict(max_steps=3, lengths=[6, 2, 4, 5]),
    "cumulative_average": dict(max_steps=3, bidirectional=True, momentum=None),
}


def _inputs(cfg, dtype=torch.float64, T=6, B=4):
    D = 2 if cfg.get("bidirectional") else 1
    L = cfg.get("num_layers", 1)
    x = torch.randn(T, B, I, dtype=dtype)
    state = (torch.randn(L * D, B, H, dtype=dtype), torch.randn(L * D, B, H, dtype=dtype)) if cfg.get("state") else None
    return x, state, cfg.get("lengths")


def _layer(cfg, dtype=torch.float64):
    m = make(cfg.get("num_layers", 1), cfg.get("bidirectional", False), cfg.get("max_steps", 100), dtype,
             batch_norm_momentum=cfg.get("momentum", 0.1))
    with torch.no_grad():  # rows seen by some batches already
        for name, b in m.named_buffers():
            if "tracked" in name:
                b.copy_(torch.randint(1, 5, b.shape))
    return m


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", CONFIGS)
def test_matches_plain_autograd_reimplementation(name, training):
    cfg = CONFIGS[name]
    m = _layer(cfg).train(training)
    randomize_running(m)
    x, state, lengths = _inputs(cfg)
    x.requires_grad_(True)
    expected, (eh, ec), running = plain_bn_lstm(m, x, state, lengths)
    gx_ref, *gp_ref = torch.autograd.grad((expected.square().sum() + eh.sum() + ec.sum()), [x, *m.parameters()])
    out, (h, c) = m(x, state, lengths=lengths)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(h, eh)
    torch.testing.assert_close(c, ec)
    for name_, b in m.named_buffers():  # updated as F.batch_norm (torch.nn.BatchNorm1d) updates them
        torch.testing.assert_close(b, running[name_], msg=name_)
    gx, *gp = torch.autograd.grad((out.square().sum() + h.sum() + c.sum()), [x, *m.parameters()])
    torch.testing.assert_close(gx, gx_ref)
    for (pname, _), g, g_ref in zip(m.named_parameters(), gp, gp_ref):
        torch.testing.assert_close(g, g_ref, msg=pname)


def test_running_statistics_update_like_batchnorm1d():
    """Each step's running row follows torch.nn.BatchNorm1d fed that step's projection; rows past
    the sequence stay at their initial 0 / 1; a row shared past T_max is updated once per step."""
    m = make(max_steps=3, dtype=torch.float32)
    m.reset_running_stats()
    x = torch.randn(2, 5, I)
    m(x)
    for t in range(2):
        bn = torch.nn.BatchNorm1d(4 * H, momentum=m.batch_norm_momentum, eps=m.batch_norm_eps)
        bn(x[t] @ m.weight_ih_l0.detach().t())
        torch.testing.assert_close(m.bn_ih_running_mean_l0[t], bn.running_mean)
        torch.testing.assert_close(m.bn_ih_running_var_l0[t], bn.running_var)
    assert torch.equal(m.bn_ih_running_mean_l0[2], torch.zeros(4 * H))
    assert torch.equal(m.bn_c_running_var_l0[2], torch.ones(H))
    # T = 5 > T_max = 3: steps 2, 3, 4 all update row 2, one momentum step each
    m.reset_running_stats()
    x = torch.randn(5, 5, I)
    m(x)
    bn = torch.nn.BatchNorm1d(4 * H, momentum=m.batch_norm_momentum, eps=m.batch_norm_eps)
    for t in range(2, 5):
        bn(x[t] @ m.weight_ih_l0.detach().t())
    torch.testing.assert_close(m.bn_ih_running_mean_l0[2], bn.running_mean)
    torch.testing.assert_close(m.bn_ih_running_var_l0[2], bn.running_var)


def test_momentum_none_is_a_cumulative_average_like_batchnorm1d():
    """batch_norm_momentum=None: each row is the plain average of the batches that reached it (the
    recipe that re-estimates population statistics after training), as nn.BatchNorm1d(momentum=None)."""
    m = make(dtype=torch.float64, batch_norm_momentum=None)
    bn = torch.nn.BatchNorm1d(H, momentum=None, eps=m.batch_norm_eps, dtype=torch.float64)
    x = torch.randn(4, 2, 5, I, dtype=torch.float64)
    with torch.no_grad():
        for k in range(4):
            m(x[k])
            bn(x[k][0] @ m.weight_ih_l0.t()[:, :H])  # the i-gate block of step 0
    torch.testing.assert_close(m.bn_ih_running_mean_l0[0, :H], bn.running_mean)
    torch.testing.assert_close(m.bn_ih_running_var_l0[0, :H], bn.running_var)
    assert m.bn_num_batches_tracked_l0[:2].tolist() == [4, 4] and m.bn_num_batches_tracked_l0[2] == 0


def test_eval_uses_running_statistics():
    """In eval mode a sequence's output does not depend on the rest of its batch, and equals the
    normalization by the running rows written out by hand for a one-step sequence."""
    m = make(dtype=torch.float64).eval()
    randomize_running(m)
    x = torch.randn(3, 5, I, dtype=torch.float64)
    out, _ = m(x)
    alone, _ = m(x[:, 2:3])
    torch.testing.assert_close(out[:, 2:3], alone)
    # one step from zero state, written out
    x0 = x[0]

    def bn(a, s, gain, shift=0.0):
        mean, var = getattr(m, f"bn_{s}_running_mean_l0")[0], getattr(m, f"bn_{s}_running_var_l0")[0]
        return (a - mean) / torch.sqrt(var + m.batch_norm_eps) * gain + shift

    with torch.no_grad():
        gates = (bn(x0 @ m.weight_ih_l0.t(), "ih", m.bn_ih_weight_l0) + bn(torch.zeros(5, 4 * H, dtype=x.dtype), "hh",
                 m.bn_hh_weight_l0) + m.bias_ih_l0 + m.bias_hh_l0)
        i, f, g, o = gates.chunk(4, 1)
        c = i.sigmoid() * g.tanh()
        h = o.sigmoid() * bn(c, "c", m.bn_c_weight_l0, m.bn_c_bias_l0).tanh()
    torch.testing.assert_close(out[0], h)
    # and training mode on the same batch gives other numbers (batch statistics)
    assert not torch.allclose(m.train()(x)[0][0], h)


def _gradcheck_function(m: BatchNormLSTM, lengths, n_state: int):
    names = [n for n, _ in m.named_parameters()]
    saved = {n: b.clone() for n, b in m.named_buffers()}

    def f(x, *tensors):
        for n, b in m.named_buffers():  # the same running statistics at every call of the check
            b.copy_(saved[n])
        state = tuple(tensors[:n_state]) if n_state else None
        params = dict(zip(names, tensors[n_state:]))
        out, (h, c) = torch.func.functional_call(m, params, (x, state), {"lengths": lengths})
        return out, h, c

    return f


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", CONFIGS)
def test_gradcheck_and_gradgradcheck(name, training):
    cfg = CONFIGS[name]
    m = _layer(cfg).train(training)
    randomize_running(m)
    x, state, lengths = _inputs(cfg, T=4 if name != "shared_past_t_max" else 6, B=4)
    if lengths is not None and name != "shared_past_t_max":
        lengths = [min(n, 4) for n in lengths]
    inputs = (x, *(state or ()))
    inputs = tuple(t.detach().requires_grad_(True) for t in inputs)
    params = tuple(p.detach().clone().requires_grad_(True) for p in m.parameters())
    f = _gradcheck_function(m, lengths, len(inputs) - 1)
    assert torch.autograd.gradcheck(f, (*inputs, *params), atol=1e-6)
    assert torch.autograd.gradgradcheck(f, (*inputs, *params), atol=1e-5, fast_mode=True)


def test_hand_written_backward_equals_the_autograd_backend():
    cfg = CONFIGS["bidirectional+lengths"]
    m = _layer(cfg)
    ref = copy.deepcopy(m)
    ref.backend = "autograd"
    x, _, lengths = _inputs(cfg)
    out, _ = m(x, lengths=lengths)
    out_ref, _ = ref(x, lengths=lengths)
    torch.testing.assert_close(out, out_ref)
    assert {f.name() for f, _ in out.grad_fn.next_functions} == {"_BatchNormLSTMFunctionBackward"}  # both directions
    assert out_ref.grad_fn.name() == "CatBackward0" and "_BatchNormLSTMFunctionBackward" not in str(
        [f.name() for f, _ in out_ref.grad_fn.next_functions])
    grads = torch.autograd.grad(out.square().sum(), list(m.parameters()))
    grads_ref = torch.autograd.grad(out_ref.square().sum(), list(ref.parameters()))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


def test_never_the_native_or_generic_loop(monkeypatch):
    """batch_norm=True runs its own loop: the native loop (and the engine's generic loop, which
    knows no statistics) is never called, and the numbers are the reimplementation's."""
    m = make(dtype=torch.float32)
    assert not engine.uses_native_loops(m)

    def refuse(*args, **kwargs):
        raise AssertionError("the batch-normalized LSTM went through the generic engine")

    monkeypatch.setattr(engine, "run", refuse)
    monkeypatch.setattr(engine, "run_reference", refuse)
    monkeypatch.setattr(engine.native, "dispatch", refuse)
    x = torch.randn(5, 3, I)
    expected, _, _ = plain_bn_lstm(m, x)
    out, _ = m(x)
    torch.testing.assert_close(out, expected)
    with pytest.raises(TypeError, match="needs the statistics of its time step"):
        m.cell.step(x[0] @ m.weight_ih_l0.t(), (torch.zeros(3, H), torch.zeros(3, H)), m._params(0, 0), None)


def test_construction_and_initialisation():
    m = rnnkit.make_layer("lstm", I, H, num_layers=2, batch_norm=True, forget_bias=1.0)
    assert isinstance(m, rnnkit.LSTM) and isinstance(m, BatchNormLSTM)
    assert isinstance(m.cell, BatchNormLSTMCell)
    assert torch.equal(m.bn_ih_weight_l1, torch.full((4 * H,), 0.1))  # Cooijmans et al.: γ = 0.1
    assert torch.equal(m.bn_hh_weight_l0, torch.full((4 * H,), 0.1))
    assert torch.equal(m.bn_c_bias_l0, torch.zeros(H))
    assert torch.equal(m.bias_ih_l0[H:2 * H], torch.ones(H))
    assert m.bn_c_running_mean_l1.shape == (100, H) and m.bn_hh_running_var_l0.shape == (100, 4 * H)
    assert type(rnnkit.LSTM(I, H)) is rnnkit.LSTM
    assert "batch_norm_max_steps=100" in repr(m)


def _trained(m: BatchNormLSTM) -> BatchNormLSTM:
    m(torch.randn(5, 4, I, dtype=m.weight_ih_l0.dtype))  # running statistics away from 0 / 1
    return m.eval()


@pytest.mark.parametrize("trip", LAYER_ROUND_TRIPS)
def test_round_trips_keep_outputs_and_statistics(trip):
    m = _trained(make(bidirectional=True, dtype=torch.float32))
    loaded = LAYER_ROUND_TRIPS[trip](m)
    assert type(loaded) is BatchNormLSTM
    x = torch.randn(6, 3, I)
    assert torch.equal(loaded(x)[0], m(x)[0])
    assert torch.equal(loaded.bn_c_running_var_l0_reverse, m.bn_c_running_var_l0_reverse)
    loaded.train()(x)[0].sum().backward()  # and it trains
    assert loaded.weight_hh_l0.grad is not None


def test_state_dict_round_trip():
    m = _trained(make(num_layers=2, dtype=torch.float32))
    sd = m.state_dict()
    assert "bn_ih_running_mean_l1" in sd and "bn_c_bias_l0" in sd and sd["bn_num_batches_tracked_l0"][0] == 1
    fresh = rnnkit.LSTM(I, H, 2, batch_norm=True).eval()
    x = torch.randn(4, 3, I)
    assert not torch.allclose(fresh(x)[0], m(x)[0])
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(x)[0], m(x)[0])
    with pytest.raises(RuntimeError, match="bn_ih_running_mean_l0"):
        rnnkit.LSTM(I, H, 2).load_state_dict(sd)  # a plain LSTM has no statistics


def test_unbatched_input():
    m = _trained(make(dtype=torch.float32))
    x = torch.randn(5, I)
    out, (h, c) = m(x)
    out_b, (h_b, c_b) = m(x.unsqueeze(1))
    torch.testing.assert_close(out, out_b.squeeze(1))
    torch.testing.assert_close(h, h_b.squeeze(1))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        m.train()(x)


def test_packed_sequence_equals_lengths():
    m = make(dtype=torch.float32)
    x = torch.randn(5, 3, I)
    lengths = [5, 2, 4]
    out, (h, _) = m(x, lengths=lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    m.reset_running_stats()
    out_p, (h_p, _) = m(packed)
    out_p, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, total_length=5)
    torch.testing.assert_close(out_p, out)
    torch.testing.assert_close(h_p, h)


@pytest.mark.parametrize("option, value", [("proj_size", 2), ("peephole", True), ("layer_norm", True),
                                           ("activation", "relu"), ("zoneout", 0.1), ("recurrent_dropout", 0.2)])
def test_conflicting_options_name_the_conflict(option, value):
    with pytest.raises(ValueError, match=f"batch_norm=True cannot be combined with {option}="):
        rnnkit.LSTM(I, H, batch_norm=True, **{option: value})


@pytest.mark.parametrize("option, value", [("batch_norm_max_steps", 0), ("batch_norm_momentum", 1.5),
                                           ("batch_norm_momentum", "0.1"),
                                           ("batch_norm_eps", 0.0)])
def test_bad_batch_norm_options(option, value):
    with pytest.raises(ValueError, match=option):
        rnnkit.LSTM(I, H, batch_norm=True, **{option: value})


def test_batch_of_one_in_training_is_an_error():
    m = make(dtype=torch.float32)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training, got input batch of 1"):
        m(torch.randn(3, 1, I))
    out, _ = m.eval()(torch.randn(3, 1, I))  # evaluation normalizes with the running statistics
    assert out.shape == (3, 1, H)


def test_to_torch_refuses():
    with pytest.raises(ValueError, match="BatchNormLSTM has no torch.nn equivalent"):
        rnnkit.to_torch(rnnkit.LSTM(I, H, batch_norm=True))


def test_gradient_norm_record():
    """record_gradient_norms sees ‖∂L/∂h_t‖ of the batch-normalized loop: with the loss Σ h_T the
    last step's is √H, and an earlier step's is the norm of the gradient autograd gives h_t."""
    m = make(dtype=torch.float64)
    x = torch.randn(4, 3, I, dtype=torch.float64)
    with rnnkit.record_gradient_norms(m) as record:
        out, _ = m(x)
        out[-1].sum().backward()
    norms = record.norms["batchnormlstm.l0"]
    assert norms.shape == (4, 3)
    torch.testing.assert_close(norms[-1], torch.full((3,), H ** 0.5, dtype=torch.float64))
    assert (norms[0] > 0).all() and not torch.allclose(norms[0], norms[-1])


# -- reachable from the models and the CLI ----------------------------------------------------------------------
def test_cli_task_batch_norm(capsys):
    from rnnkit.cli import main

    assert main(["task", "reber", "--hidden-size", "8", "--max-steps", "2", "--eval-every", "2", "--test-size", "8",
                 "--batch-norm"]) == 0  # Reber strings: lengths vary within a batch
    out = capsys.readouterr().out
    assert "batch_norm=True" in out and "after 2 steps" in out
    assert main(["task", "temporal-order", "--seq-len", "10", "--max-steps", "1", "--batch-norm"] + ["--eval-every",
                 "1", "--test-size", "8"]) == 0
    assert "forget_bias=3.0, batch_norm=True" in capsys.readouterr().out  # with the task's own LSTM options
    assert main(["task", "adding", "--cell", "gru", "--max-steps", "1", "--batch-norm"]) == 2
    assert "--batch-norm needs --cell lstm, got --cell gru" in capsys.readouterr().err


def test_charlm_trains_saves_and_resumes_with_batch_norm(tmp_path):
    """The char LM with a batch-normalized LSTM (``rnnkit train --cell lstm --batch-norm``): the running
    statistics go into the run directory, and an interrupted run resumes to the same losses."""
    from rnnkit.models import CharLM, CharLMConfig
    from rnnkit.train import TrainConfig, read_metrics, rundir

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i % 7} + {i % 3}\n\n" for i in range(60)))
    cfg = TrainConfig(batch_size=4, seq_len=8, max_steps=6, max_time=0, eval_every=3, sample_every=0,
                      val_fraction=0.1, warmup_steps=0)
    model = CharLMConfig(cell="lstm", hidden_size=8, embed_size=4, batch_norm=True)
    full = rnnkit.train(corpus, tmp_path / "full", model, cfg)
    assert full.steps == 6
    saved = rundir.read_tensors(tmp_path / "full" / "model.safetensors", "")
    assert saved["rnn.bn_hh_running_var_l0"].shape == (100, 4 * 8)
    assert not torch.equal(saved["rnn.bn_hh_running_var_l0"][:8], torch.ones(8, 4 * 8))

    def interrupt_at_4(event):
        if event["kind"] == "step" and event["step"] == 4:
            raise KeyboardInterrupt

    rnnkit.train(corpus, tmp_path / "part", model, cfg, callback=interrupt_at_4)
    rnnkit.train(corpus, tmp_path / "part", resume=True)
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["train_bpc"] for r in a] == [r["train_bpc"] for r in b]
    loaded = rnnkit.load(tmp_path / "full", "latest")
    assert isinstance(loaded.rnn, BatchNormLSTM)
    assert torch.equal(loaded.rnn.bn_hh_running_var_l0, saved["rnn.bn_hh_running_var_l0"])
    with pytest.raises(ValueError, match="does not accept the options"):
        CharLM(CharLMConfig(cell="gru", batch_norm=True), loaded.vocab)
    assert "".join(loaded.sample(20, seed=0))  # generation, one step at a time with batch 1, in eval mode


def test_torch_export_and_compile_give_the_eager_numbers():
    m = make(dtype=torch.float32).eval()
    randomize_running(m)
    x = torch.randn(5, 2, I)
    expected, _ = m(x)
    exported = torch.export.export(m, (x,)).module()
    torch.testing.assert_close(exported(x)[0], expected)
    torch.testing.assert_close(torch.compile(m)(x)[0], expected)
