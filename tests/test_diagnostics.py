"""Diagnostics: every measurement against autograd, torch.nn or hand-computed values."""

import base64
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import rnnkit
from rnnkit import diagnostics as dg
from rnnkit.cli import main
from rnnkit.errors import CheckpointError, DataError

from .diag_standin import SAMPLE_TEXT, TinyCharLM

T, B, I, H = 6, 3, 4, 5
TORCH_CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def _torch_cell(layer, l, d):
    """A torch.nn cell holding the weights of layer l, direction d: the independent oracle."""
    name = {rnnkit.RNN: "rnn", rnnkit.LSTM: "lstm", rnnkit.GRU: "gru"}[type(layer)]
    sfx = f"_l{l}" + ("_reverse" if d else "")
    w_ih = getattr(layer, "weight_ih" + sfx)
    cell = TORCH_CELLS[name](w_ih.shape[1], layer.hidden_size, dtype=w_ih.dtype)
    with torch.no_grad():
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, p).copy_(getattr(layer, p + sfx))
    return cell


def _torch_step(cell, x, state):
    if isinstance(cell, nn.LSTMCell):
        return cell(x, state)
    return (cell(x, state[0]),)


# -- observe ----------------------------------------------------------------------------------


def test_observe_states_and_gates_match_torch_lstm_cell():
    layer = rnnkit.LSTM(I, H, num_layers=2, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    with dg.observe(layer) as obs:
        out, (h_n, c_n) = layer(x)
    assert set(obs.states) == {"lstm.l0", "lstm.l1"}
    torch.testing.assert_close(obs.states["lstm.l1"]["h"], out.detach())
    torch.testing.assert_close(obs.states["lstm.l0"]["c"][-1], c_n[0].detach())
    # recompute the gates of layer 0 from the observed previous h with torch.nn's weights
    cell = _torch_cell(layer, 0, 0)
    h = obs.states["lstm.l0"]["h"]
    h_prev = torch.cat([torch.zeros(1, B, H, dtype=h.dtype), h[:-1]])
    pre = x @ cell.weight_ih.t() + cell.bias_ih + h_prev @ cell.weight_hh.t() + cell.bias_hh  # (T, B, 4H)
    i, f, g, o = pre.detach().chunk(4, 2)
    torch.testing.assert_close(obs.gates["lstm.l0"]["i"], i.sigmoid())
    torch.testing.assert_close(obs.gates["lstm.l0"]["f"], f.sigmoid())
    torch.testing.assert_close(obs.gates["lstm.l0"]["g"], g.tanh())
    assert layer._observe is None  # the slot is released


def test_observe_reverse_direction_is_in_time_order_and_last_pass_wins():
    layer = rnnkit.GRU(I, H, bidirectional=True)
    with dg.observe(layer) as obs:
        layer(torch.randn(T + 3, B, I))
        out, _ = layer(x := torch.randn(T, B, I))
    assert obs.states["gru.l0_reverse"]["h"].shape == (T, B, H)
    torch.testing.assert_close(obs.states["gru.l0_reverse"]["h"], out[:, :, H:].detach())
    assert set(obs.gates["gru.l0"]) == {"r", "z", "n"}
    assert x.shape[0] == T


def test_observe_rejects_a_module_without_rnnkit_layers():
    with pytest.raises(ValueError, match="no rnnkit recurrent layer"):
        with dg.observe(nn.LSTM(2, 3)):
            pass


# -- gradient flow ----------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradient_flow_matches_autograd_through_torch_cells(cell):
    layer = rnnkit.make_layer(cell, I, H, num_layers=2, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    w = torch.randn(T, B, H, dtype=torch.float64)
    record = dg.gradient_flow(layer, lambda: (layer(x)[0] * w).sum())
    # oracle: unroll torch.nn cells with the same weights and read h_t.grad
    cells = [_torch_cell(layer, l, 0) for l in range(2)]
    states = [tuple(torch.zeros(B, H, dtype=torch.float64) for _ in layer.cell.state_sizes()) for _ in cells]
    hs = [[], []]
    for t in range(T):
        inp = x[t]
        for l, c in enumerate(cells):
            states[l] = _torch_step(c, inp, states[l])
            states[l][0].retain_grad()
            hs[l].append(states[l][0])
            inp = states[l][0]
    (torch.stack(hs[1]) * w).sum().backward()
    for l in range(2):
        expected = torch.stack([h.grad.norm(dim=1) for h in hs[l]])  # (T, B)
        torch.testing.assert_close(record.norms[f"{cell}.l{l}"], expected)
        torch.testing.assert_close(record.per_step(f"{cell}.l{l}"), expected.mean(1))


def test_gradient_flow_leaves_grads_untouched_and_checks_the_loss():
    model = TinyCharLM(SAMPLE_TEXT)
    idx = model.vocab.encode(SAMPLE_TEXT[:20]).view(-1, 1)
    record = dg.gradient_flow(model, lambda: model(idx)[0][-1].logsumexp(-1).sum())
    assert record.norms["rnn.l0"].shape == (20, 1)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="scalar"):
        dg.gradient_flow(model, lambda: model(idx)[0])


def test_jacobian_of_elman_rnn_equals_the_analytic_form():
    layer = rnnkit.RNN(I, H, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    J = dg.recurrent_jacobians(layer, x)  # (T-1, B, H, H)
    h = layer(x)[0].detach()
    expected = (1 - h[1:] ** 2).unsqueeze(-1) * layer.weight_hh_l0.detach()  # diag(1 - h_t²) W_hh
    torch.testing.assert_close(J, expected)
    sigma = dg.jacobian_spectral_norms(layer, x)
    torch.testing.assert_close(sigma, torch.linalg.matrix_norm(expected, ord=2))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layer_index,direction", [(0, 0), (1, 1)])
def test_jacobian_matches_autograd_of_torch_cell(cell, layer_index, direction):
    layer = rnnkit.make_layer(cell, I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(T, 2, I, dtype=torch.float64)
    J = dg.recurrent_jacobians(layer, x, layer_index, direction)
    with dg.observe(layer) as obs:
        layer(x)
    key = f"{cell}.l{layer_index}" + ("_reverse" if direction else "")
    inp = x if layer_index == 0 else torch.cat([obs.hidden(f"{cell}.l0"), obs.hidden(f"{cell}.l0_reverse")], 2)
    seq = torch.cat(list(obs.states[key].values()), 2)  # (T, B, S)
    torch_cell = _torch_cell(layer, layer_index, direction)
    sizes = list(layer.cell.state_sizes())
    order = list(range(T - 1, -1, -1)) if direction else list(range(T))
    for k in range(1, T):
        t, t_prev = order[k], order[k - 1]
        for b in range(2):
            def f(s, t=t, b=b):
                parts = tuple(p.unsqueeze(0) for p in torch.split(s, sizes))
                return torch.cat(_torch_step(torch_cell, inp[t, b : b + 1], parts), 1).squeeze(0)

            expected = torch.autograd.functional.jacobian(f, seq[t_prev, b])
            torch.testing.assert_close(J[k - 1, b], expected)
    sigma = dg.jacobian_spectral_norms(layer, x, layer_index, direction)
    torch.testing.assert_close(sigma, torch.linalg.svdvals(J)[..., 0])


def test_jacobian_argument_errors():
    layer = rnnkit.LSTM(I, H)
    with pytest.raises(ValueError, match="layer_index"):
        dg.recurrent_jacobians(layer, torch.randn(T, B, I), layer_index=1)
    with pytest.raises(ValueError, match="at least 2 steps"):
        dg.recurrent_jacobians(layer, torch.randn(1, B, I))
    with pytest.raises(TypeError, match="rnnkit layer"):
        dg.recurrent_jacobians(nn.LSTM(I, H), torch.randn(T, B, I))


def test_fresh_gradient_flow_vanishes_for_tanh_rnn_and_explodes_when_scaled():
    base = dict(seq_len=40, hidden_size=16, input_size=4, batch_size=4)
    (van,) = dg.fresh_gradient_flow(dg.GradFlowConfig(cells=("rnn",), **base))
    (lstm,) = dg.fresh_gradient_flow(dg.GradFlowConfig(cells=("lstm",), forget_bias=5.0, **base))
    (exp,) = dg.fresh_gradient_flow(dg.GradFlowConfig(cells=("rnn",), init="orthogonal", scale=3.0, clip=1.0,
                                                      clip_steps=25, **base))
    assert van.grad_norms[-1] == pytest.approx(1.0)  # ‖w‖ = 1 reaches the last step whole
    assert van.first_last_ratio < 1e-6
    assert 1e-2 < lstm.first_last_ratio < 10  # f ≈ 1: the cell state carries the gradient back
    assert exp.first_last_ratio > 10
    assert float(exp.jacobian_norms.mean()) > 1 > float(van.jacobian_norms.mean())
    # clipping keeps the exploding RNN's training finite and small; without it the loss blows up
    assert max(exp.grad_total_unclipped) > 1e3
    assert max(exp.loss_clipped) < 10
    late_unclipped = np.nan_to_num(exp.loss_unclipped[-5:], nan=np.inf).mean()
    assert late_unclipped > 3 * np.mean(exp.loss_clipped[-5:])


# -- gates ------------------------------------------------------------------------------------


def test_gate_saturation_fractions_by_hand():
    g = torch.tensor([[0.05, 0.5, 0.95], [0.02, 0.91, 0.99], [0.5, 0.08, 0.1], [0.95, 0.5, 0.9]])  # (T=4, H=3)
    sat = dg.gate_saturation({"f": g.unsqueeze(1)})
    torch.testing.assert_close(sat.left["f"], torch.tensor([0.5, 0.25, 0.0]))
    torch.testing.assert_close(sat.right["f"], torch.tensor([0.25, 0.25, 0.5]))
    mask = torch.tensor([[True], [True], [False], [False]])
    sat = dg.gate_saturation({"f": g.unsqueeze(1)}, mask=mask)
    torch.testing.assert_close(sat.left["f"], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(sat.right["f"], torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="no gate"):
        dg.gate_saturation({})


def test_observed_gate_saturation_uses_sigmoid_gates_only():
    layer = rnnkit.GRU(I, H)
    with dg.observe(layer) as obs:
        layer(torch.randn(T, B, I))
    sat = dg.observed_gate_saturation(obs)
    assert set(sat["gru.l0"].left) == {"r", "z"}
    z = obs.gates["gru.l0"]["z"]
    torch.testing.assert_close(sat["gru.l0"].right["z"], (z > 0.9).float().mean((0, 1)))


# -- units and signals --------------------------------------------------------------------------


def test_builtin_signals_by_hand():
    text = 'f(a, "x)\\"")\n  [b]\n'
    #        f ( a ,   " x ) \ " " )  \n     [ b ] \n
    assert dg.inside_quote(text) == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert dg.bracket_depth(text) == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0]
    assert dg.position_in_line("ab\ncd") == [0, 1, 2, 0, 1]
    assert dg.indentation("  x\n\ty\n") == [1, 2, 2, 0, 4, 4, 0]
    assert dg.inside_quote("'''a\nb'''c") == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert dg.inside_quote("it's\nx") == [0, 0, 1, 1, 0, 0]  # a single quote ends at the line


def test_bracket_signal_length_matches_text():
    text = 'f(a, "x)\\"")\n  [b]\n'
    assert len(dg.bracket_depth(text)) == len(text) == 19


def test_pearson_matches_numpy():
    a = torch.randn(50, 4, dtype=torch.float64)
    s = torch.randn(50, dtype=torch.float64)
    a[:, 3] = 1.0  # constant unit: r = 0
    r = dg.pearson_per_unit(a, s)
    for u in range(3):
        assert float(r[u]) == pytest.approx(np.corrcoef(a[:, u].numpy(), s.numpy())[0, 1])
    assert float(r[3]) == 0.0


def test_correlated_units_finds_a_planted_unit():
    signal = torch.tensor(dg.bracket_depth(SAMPLE_TEXT))
    N = len(SAMPLE_TEXT)
    obs = dg.Observation()
    h = torch.randn(N, 1, 10)
    c = torch.randn(N, 1, 10)
    c[:, 0, 7] = -0.5 * signal + 0.05 * torch.randn(N)  # anti-correlated planted unit
    obs.states["rnn.l0"] = {"h": h, "c": c}
    best = dg.correlated_units(obs, signal, top_k=3)
    assert (best[0].layer, best[0].state, best[0].unit) == ("rnn.l0", "c", 7)
    assert best[0].r < -0.95
    assert abs(best[1].r) < 0.5


def test_text_activations_of_a_char_model():
    model = TinyCharLM(SAMPLE_TEXT)
    obs = dg.text_activations(model, SAMPLE_TEXT)
    N = len(SAMPLE_TEXT)
    assert obs.states["rnn.l1"]["h"].shape == (N, 1, 12)
    out, _ = model.rnn(model.embed(model.vocab.encode(SAMPLE_TEXT).view(-1, 1)))
    torch.testing.assert_close(obs.hidden("rnn.l1"), out.detach())
    assert model.training  # mode restored


# -- plots ------------------------------------------------------------------------------------


def _png_ok(path, min_side=150):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert path.stat().st_size > 5000
    assert min(img.shape[:2]) >= min_side
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_plots_write_nontrivial_pngs(tmp_path):
    from rnnkit.diagnostics import plots

    model = TinyCharLM(SAMPLE_TEXT)
    obs = dg.text_activations(model, SAMPLE_TEXT)
    figs = {
        "grad": plots.plot_gradient_norms({"a": torch.logspace(-5, 0, 30)}, {"a": torch.rand(29) + 0.5}),
        "gates": plots.plot_gate_saturation(dg.observed_gate_saturation(obs)),
        "text": plots.plot_text_activation(SAMPLE_TEXT, obs.states["rnn.l0"]["c"][:, 0, 3], title="unit 3"),
        "attn": plots.plot_attention(torch.softmax(torch.randn(4, 6), 1), list("abcdef"), ["w", "x", "y", "z"]),
        "metrics": plots.plot_metrics([{"step": s, "train_bpc": 3 - s / 50, "val_bpc": 3.1 - s / 60}
                                       for s in range(0, 100, 10)]),
    }
    for name, fig in figs.items():
        _png_ok(plots.save_png(fig, tmp_path / f"{name}.png"))
    with pytest.raises(ValueError, match="does not match"):
        plots.plot_attention(torch.rand(3, 6), list("abcdef"), ["w", "x"])


def test_gradflow_cli_prints_the_table_and_writes_the_png(tmp_path, capsys):
    out = tmp_path / "gf.png"
    rc = main(["gradflow", "--cell", "rnn,lstm", "--seq-len", "30", "--hidden-size", "8", "--batch-size", "2",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("rnn ", "lstm "))}
    assert float(rows["rnn"][1]) < 1e-3 and float(rows["rnn"][5]) == pytest.approx(1.0)  # t=0 vs t=T-1
    _png_ok(out)
    assert main(["gradflow", "--cell", "nope", "--out", str(out)]) == 2
    assert "unknown cell 'nope'" in capsys.readouterr().err


# -- report -----------------------------------------------------------------------------------

METRICS = [{"step": s, "time": s * 0.1, "train_bpc": 4 - s / 40, "lr": 0.01} for s in range(0, 100, 10)]
METRICS[-1]["val_bpc"] = 2.0


def _payload(page):
    m = re.search(r'<script type="application/json" id="act-data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def test_report_is_self_contained_and_embeds_the_activations():
    model = TinyCharLM(SAMPLE_TEXT, hidden=6)
    page = dg.build_report(model, METRICS, SAMPLE_TEXT, config=dg.ReportConfig(grad_window=30, grad_batch=3))
    assert "http://" not in page and "https://" not in page
    for src in re.findall(r'src="([^"]*)"', page):
        assert src.startswith("data:image/png;base64,")
    for anchor in ("curves", "gradflow", "gates", "units", "signals"):
        assert f'id="{anchor}"' in page
    data = _payload(page)
    assert data["text"] == SAMPLE_TEXT
    assert [b["name"] for b in data["blocks"]] == ["rnn.l0 h", "rnn.l0 c", "rnn.l1 h", "rnn.l1 c"]
    obs = dg.text_activations(model, SAMPLE_TEXT)
    b = data["blocks"][1]
    q = np.frombuffer(base64.b64decode(b["b64"]), dtype=np.uint8).reshape(len(SAMPLE_TEXT), 6)
    values = (q.astype(np.float64) - 127) / 127 * np.array(b["scale"])
    np.testing.assert_allclose(values, obs.states["rnn.l0"]["c"][:, 0].double().numpy(),
                               atol=max(b["scale"]) / 127)
    assert page.count('class="pick"') == 4 * dg.ReportConfig().top_k


@pytest.mark.parametrize("hostile", ["x = '</script><b>'", "<!--<script>", "<img src=x onerror=alert(1)>&amp;",
                                     "a\u2028b\u2029c", "nul \x00 here", "lone \ud800, halves \ud83d\ude00"])
def test_report_json_holds_no_markup_and_one_character_per_analysed_one(hostile):
    """The embedded JSON has no "<", ">", "&", U+2028 or U+2029 (escaped as \\u003c, ...), so the
    HTML parser cannot read any of it as markup (tested in Chromium in test_diagnostics_browser);
    surrogates become U+FFFD, one for one, so the page's characters are the analysed ones."""
    text = (hostile + "\n") * 3
    model = TinyCharLM(text, hidden=4, layers=1)
    page = dg.build_report(model, [], text, config=dg.ReportConfig(grad_window=10, grad_batch=2))
    body = re.search(r'<script type="application/json" id="act-data">(.*?)</script>', page, re.S).group(1)
    assert not set(body) & set("<>&\u2028\u2029")
    shown = _payload(page)["text"]
    assert shown == re.sub("[\ud800-\udfff]", "\ufffd", text) and len(shown) == len(text)


def test_report_cli_reads_the_text_as_strict_utf8(tmp_path, monkeypatch, capsys):
    """The decoding path of the source text: bytes that would decode to a surrogate (CESU-8
    or WTF-8, e.g. ED A0 80) are not UTF-8 and are refused by name; NUL and U+2028 are text."""
    run = _run_dir(tmp_path)
    text = "a\x00b\u2028c </script>\n"
    monkeypatch.setattr(rnnkit, "load", lambda d: TinyCharLM(SAMPLE_TEXT + text, hidden=6), raising=False)
    (tmp_path / "bad.txt").write_bytes(b"def f():\n    return '\xed\xa0\x80'\n")
    assert main(["report", str(run), "--text", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt is not UTF-8 text" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "ok.txt").write_text(text, encoding="utf-8")
    assert main(["report", str(run), "--text", str(tmp_path / "ok.txt")]) == 0
    assert _payload((run / "report.html").read_text(encoding="utf-8"))["text"] == text


def test_report_with_attention_only_and_with_nothing():
    ex = dg.AttentionExample(torch.softmax(torch.randn(3, 5), 1), list("abcde"), ["x", "y", "z"])
    page = dg.build_report(None, [], None, attention=[ex])
    assert 'id="attention"' in page and "act-data" not in page
    with pytest.raises(ValueError, match="nothing to report"):
        dg.build_report(None, [], None)


def test_text_with_characters_outside_the_vocabulary_is_a_data_error():
    model = TinyCharLM("abc ")
    with pytest.raises(DataError, match="vocabulary"):
        dg.text_activations(model, "abz")


def test_read_metrics_names_the_bad_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n\n{"step": 2\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:3"):
        dg.read_metrics(p)
    p.write_text('{"step": 1}\n[1]\n')
    with pytest.raises(DataError, match=r":2: expected a JSON object"):
        dg.read_metrics(p)


def _run_dir(tmp_path, model_type="charlm"):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format_version": 1, "model_type": model_type,
                                                 "model": {}, "train": {}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS))
    return run


def test_report_cli_loads_the_run_through_rnnkit_load(tmp_path, monkeypatch, capsys):
    run = _run_dir(tmp_path)
    model = TinyCharLM(SAMPLE_TEXT, hidden=6)
    seen = []
    monkeypatch.setattr(rnnkit, "load", lambda d: seen.append(d) or model, raising=False)
    (tmp_path / "t.txt").write_text(SAMPLE_TEXT)
    rc = main(["report", str(run), "--text", str(tmp_path / "t.txt"), "--chars", "120"])
    assert rc == 0 and seen == [run]
    page = (run / "report.html").read_text()
    assert _payload(page)["text"] == SAMPLE_TEXT[:120]
    assert "wrote" in capsys.readouterr().out


def test_report_cli_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(rnnkit, "load", raising=False)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    run = _run_dir(tmp_path)
    assert main(["report", str(run)]) == 2
    assert "no rnnkit.load" in capsys.readouterr().err
    monkeypatch.setattr(rnnkit, "load", lambda d: TinyCharLM(SAMPLE_TEXT), raising=False)
    assert main(["report", str(run), "--text", str(tmp_path / "nope.txt")]) == 2
    assert "text file not found" in capsys.readouterr().err


def test_report_cli_seq2seq_run_shows_attention(tmp_path):
    """A real seq2seq run directory: the report decodes fresh examples of its task and
    draws their attention maps."""
    run = tmp_path / "s2s"
    assert main(["seq2seq", "train", "--task", "reverse", "--out", str(run), "--hidden-size", "16",
                 "--embedding-size", "8", "--max-steps", "3", "--eval-every", "3", "--test-size", "8",
                 "--batch-size", "8"]) == 0
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert 'id="attention"' in page and page.count("data:image/png;base64,") >= 1
    (tmp_path / "src.txt").write_text("12345\n987\n")
    assert main(["report", str(run), "--text", str(tmp_path / "src.txt"), "--out", str(tmp_path / "r2.html")]) == 0
    assert 'id="attention"' in (tmp_path / "r2.html").read_text()


def test_checkpoint_error_type_is_used_for_missing_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        main(["report", str(tmp_path / "empty"), "--debug"])


@pytest.mark.parametrize("cell,has_gates", [("rnn", False), ("gru", True)])
def test_report_sections_follow_the_cell(cell, has_gates):
    model = TinyCharLM(SAMPLE_TEXT, cell=cell, hidden=5, layers=1)
    page = dg.build_report(model, [], SAMPLE_TEXT, config=dg.ReportConfig(grad_window=20, grad_batch=2))
    assert ('id="gates"' in page) == has_gates
    assert [b["name"] for b in _payload(page)["blocks"]] == ["rnn.l0 h"]
    assert 'id="curves"' not in page  # no metrics given
