"""sLSTM, mLSTM, LRU, RG-LRU, S6, QRNN, SRU: each layer against its paper's equations
written out here independently of the cell code, the papers' initialisations, generation
step by step, the registry, the CLI and bad input."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

import rnnkit
from rnnkit.cli import main
from rnnkit.layers.registry import build as build_layer
from rnnkit.layers.registry import names as cell_names

# name → (layer class, constructor keyword arguments)
UNITS = {
    "slstm": (rnnkit.SLSTM, {"num_heads": 2}),
    "slstm-exp": (rnnkit.SLSTM, {"forget_gate": "exp"}),
    "mlstm": (rnnkit.MLSTM, {"num_heads": 2, "chunk_size": 3}),
    "mlstm-exp": (rnnkit.MLSTM, {"forget_gate": "exp", "chunk_size": None}),
    "lru": (rnnkit.LRU, {"state_size": 3}),
    "lru-identity": (rnnkit.LRU, {"activation": "identity"}),
    "rglru": (rnnkit.RGLRU, {}),
    "s6": (rnnkit.S6, {"state_size": 3}),
    "qrnn": (rnnkit.QRNN, {}),
    "qrnn-k1": (rnnkit.QRNN, {"window": 1}),
    "qrnn-k3": (rnnkit.QRNN, {"window": 3}),
    "sru": (rnnkit.SRU, {}),
    "sru-linear": (rnnkit.SRU, {"gate_recurrence": False}),
}
NAMES = ("slstm", "mlstm", "lru", "rglru", "s6", "qrnn", "sru")
I, H = 3, 4
F64 = torch.float64


def make(name, input_size=I, **kw):
    cls, opts = UNITS[name]
    return cls(input_size, H, **opts, **kw)


def states_of(state):
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


def randomize_(layer):
    """Random small weights everywhere (biases and gate parameters included), so that every
    term of the equations matters."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if not name.startswith(("nu_log", "theta_log", "A_log", "a_logit", "gamma_log")):
                p.normal_(0.0, 0.5)
    return layer


# -- the papers' equations, written out -----------------------------------------------------------

def slstm_reference(layer, x):
    """Beck et al. 2024, eqs. (8)-(17) without the stabiliser: i = exp(ĩ) as it is."""
    cell = layer.cell
    w_ih, w_hh, b = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0
    d = cell.head_size
    blocks = [torch.block_diag(*w_hh[g * H:(g + 1) * H].split(d)) for g in range(4)]  # R per gate, (H, H)
    R = torch.cat(blocks)  # (4H, H)
    h = c = n = torch.zeros(x.shape[1], H, dtype=x.dtype)
    outs = []
    for t in range(x.shape[0]):
        pre = x[t] @ w_ih.t() + b + h @ R.t()
        i_t, f_t, z_t, o_t = pre.split(H, 1)
        i, z, o = i_t.exp(), z_t.tanh(), o_t.sigmoid()
        f = f_t.exp() if cell.forget_gate == "exp" else f_t.sigmoid()
        c = f * c + i * z
        n = f * n + i
        h = o * c / n
        outs.append(h)
    return torch.stack(outs), c, n


def mlstm_reference(layer, x):
    """Beck et al. 2024, eqs. (19)-(27) without the stabiliser."""
    cell = layer.cell
    NH, d = cell.num_heads, cell.head_size
    u = x @ layer.weight_ih_l0.t() + layer.bias_ih_l0
    B = x.shape[1]
    C = torch.zeros(B, NH, d, d, dtype=x.dtype)
    n = torch.zeros(B, NH, d, dtype=x.dtype)
    outs = []
    for t in range(x.shape[0]):
        q, k, v = (u[t, :, j * H:(j + 1) * H].reshape(B, NH, d) for j in range(3))
        k = k / math.sqrt(d)
        i = u[t, :, 3 * H:3 * H + NH].exp()
        f_t = u[t, :, 3 * H + NH:3 * H + 2 * NH]
        f = f_t.exp() if cell.forget_gate == "exp" else f_t.sigmoid()
        o = u[t, :, 3 * H + 2 * NH:].sigmoid()
        C = f[..., None, None] * C + i[..., None, None] * torch.einsum("bhi,bhj->bhij", v, k)
        n = f[..., None] * n + i[..., None] * k
        denom = torch.clamp_min((n * q).sum(-1).abs(), 1.0)
        outs.append(o * (torch.einsum("bhij,bhj->bhi", C, q) / denom[..., None]).reshape(B, H))
    return torch.stack(outs), C, n


def lru_reference(layer, x):
    """Orvieto et al. 2023, §3 and appendix A, with complex tensors."""
    N = layer.cell.state_size
    lam = torch.exp(-layer.nu_log_l0.exp() + 1j * layer.theta_log_l0.exp())
    gamma = layer.gamma_log_l0.exp()
    w, b = layer.weight_ih_l0, layer.bias_ih_l0
    Bm = torch.complex(w[:N], w[N:2 * N])
    bB = torch.complex(b[:N], b[N:2 * N])
    C = torch.complex(layer.c_re_l0, layer.c_im_l0)
    s = torch.zeros(x.shape[1], N, dtype=torch.complex128)
    outs = []
    for t in range(x.shape[0]):
        s = lam * s + gamma * (x[t].to(torch.complex128) @ Bm.t() + bB)
        y = (s @ C.t()).real + x[t] @ w[2 * N:].t() + b[2 * N:]
        outs.append(F.gelu(y) if layer.cell.activation == "gelu" else y)
    return torch.stack(outs), s


def rglru_reference(layer, x):
    """De et al. 2024, §2.4, eqs. (1)-(4)."""
    u = x @ layer.weight_ih_l0.t() + layer.bias_ih_l0
    a = torch.sigmoid(layer.a_logit_l0)
    h = torch.zeros(x.shape[1], H, dtype=x.dtype)
    outs = []
    for t in range(x.shape[0]):
        r, i, xc = u[t, :, :H].sigmoid(), u[t, :, H:2 * H].sigmoid(), u[t, :, 2 * H:]
        a_t = a ** (8 * r)
        h = a_t * h + torch.sqrt(1 - a_t ** 2) * (i * xc)
        outs.append(h)
    return torch.stack(outs), h


def s6_reference(layer, x):
    """Gu & Dao 2023, Algorithm 2: zero-order hold for A, Δ B for B."""
    cell = layer.cell
    N, R = cell.state_size, cell.dt_rank
    u = x @ layer.weight_ih_l0.t() + layer.bias_ih_l0
    A = -layer.A_log_l0.exp()
    s = torch.zeros(x.shape[1], H, N, dtype=x.dtype)
    outs = []
    for t in range(x.shape[0]):
        xc, dl, Bt, Ct = u[t].split([H, R, N, N], 1)
        dt = F.softplus(dl @ layer.weight_dt_l0.t() + layer.bias_dt_l0)  # (B, H)
        s = torch.exp(dt[..., None] * A) * s + (dt * xc)[..., None] * Bt[:, None, :]
        outs.append(torch.einsum("bhn,bn->bh", s, Ct) + layer.D_l0 * xc)
    return torch.stack(outs), s


def qrnn_reference(layer, x):
    """Bradbury et al. 2017, eqs. (1)-(4) with fo-pooling; the masked convolution by conv1d."""
    k = layer.cell.window
    taps = layer.weight_ih_l0.view(k, 3 * H, I)  # W_j multiplies x_{t-j}
    weight = taps.flip(0).permute(1, 2, 0)  # (3H, I, k): conv1d correlates, so tap j at k-1-j
    pre = F.conv1d(F.pad(x.permute(1, 2, 0), (k - 1, 0)), weight, layer.bias_ih_l0).permute(2, 0, 1)  # (T, B, 3H)
    z, f, o = pre[..., :H].tanh(), pre[..., H:2 * H].sigmoid(), pre[..., 2 * H:].sigmoid()
    c = torch.zeros(x.shape[1], H, dtype=x.dtype)
    outs = []
    for t in range(x.shape[0]):
        c = f[t] * c + (1 - f[t]) * z[t]
        outs.append(o[t] * c)
    return torch.stack(outs), c


def sru_reference(layer, x):
    """Lei et al. 2018, eqs. (3)-(6), with the scaling correction α = √3 of §3.2."""
    w = layer.weight_ih_l0
    bf, br = layer.bias_ih_l0.split(H)
    vf = getattr(layer, "weight_cf_l0", torch.zeros(H, dtype=x.dtype))
    vr = getattr(layer, "weight_cr_l0", torch.zeros(H, dtype=x.dtype))
    c = torch.zeros(x.shape[1], H, dtype=x.dtype)
    outs = []
    for t in range(x.shape[0]):
        xt = x[t] @ w[:H].t()
        x_hat = x[t] if w.shape[0] == 3 * H else x[t] @ w[3 * H:].t()
        f = torch.sigmoid(x[t] @ w[H:2 * H].t() + vf * c + bf)
        r = torch.sigmoid(x[t] @ w[2 * H:3 * H].t() + vr * c + br)
        c = f * c + (1 - f) * xt
        outs.append(r * c + (1 - r) * math.sqrt(3) * x_hat)
    return torch.stack(outs), c


@pytest.mark.parametrize("unit", list(UNITS))
def test_layer_follows_its_papers_equations(unit):
    """One layer, float64, default backend: outputs and final state against the equations
    above. For the stabilised xLSTM cells the stored (c, n) / (C, n) are e^{-m} times the
    paper's, so c·e^m is compared (and h, where m cancels)."""
    torch.manual_seed(3)
    input_size = H if unit.startswith("sru") else I  # the SRU's highway is x itself when I = H
    layer = randomize_(make(unit, input_size=input_size, dtype=F64))
    x = torch.randn(9, 2, input_size, dtype=F64)
    out, state = layer(x)
    state = states_of(state)
    if unit.startswith("slstm"):
        ref, c, n = slstm_reference(layer, x)
        m = state[3][0]
        torch.testing.assert_close(state[1][0] * m.exp(), c)
        torch.testing.assert_close(state[2][0] * m.exp(), n)
    elif unit.startswith("mlstm"):
        ref, C, n = mlstm_reference(layer, x)
        em = state[3][0].exp()  # (B, NH)
        torch.testing.assert_close(state[1][0].view(C.shape) * em[..., None, None], C)
        torch.testing.assert_close(state[2][0].view(n.shape) * em[..., None], n)
    else:
        reference = {"lru": lru_reference, "rglru": rglru_reference, "s6": s6_reference, "qrnn": qrnn_reference,
                     "sru": sru_reference}[unit.split("-")[0]]
        ref, s = reference(layer, x)
        s_flat = torch.cat((s.real, s.imag), -1) if s.is_complex() else s.reshape(s.shape[0], -1)
        torch.testing.assert_close(state[1 if len(state) > 1 else 0][0], s_flat)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(state[0][0], ref[-1])


def test_sru_highway_projection_when_input_width_differs():
    torch.manual_seed(0)
    layer = randomize_(rnnkit.SRU(I, H, dtype=F64))
    assert layer.weight_ih_l0.shape == (4 * H, I)  # W, W_f, W_r and W_s
    x = torch.randn(6, 2, I, dtype=F64)
    torch.testing.assert_close(layer(x)[0], sru_reference(layer, x)[0])
    assert rnnkit.SRU(H, H).weight_ih_l0.shape == (3 * H, H)


def test_slstm_stabiliser_keeps_huge_input_gates_finite():
    """ĩ = 800 overflows exp in float64; the stabilised cell gives the limit of the
    unstabilised one: one dominant write, h = o ⊙ z (c/n = z), and n ≥ 1 from the first step."""
    layer = rnnkit.SLSTM(I, H, num_heads=1, dtype=F64)
    with torch.no_grad():
        layer.weight_hh_l0.zero_()
        layer.weight_ih_l0.zero_()
        layer.bias_ih_l0.copy_(torch.cat((torch.full((H,), 800.0), torch.zeros(H), torch.full((H,), 0.5),
                                          torch.zeros(H))))
    out, (h, c, n, m) = layer(torch.zeros(5, 2, I, dtype=F64))
    assert torch.isfinite(out).all() and torch.isfinite(c).all()
    torch.testing.assert_close(out, torch.full_like(out, 0.5 * math.tanh(0.5)))
    assert (n >= 1).all()
    assert m.max() >= 800  # the stabiliser absorbed the exponent


def test_mlstm_normaliser_floor_bounds_the_output():
    """|nᵀq| below e^{-m} (the paper's max(|nᵀq|, 1)): h̃ = C q, not C q / |nᵀq|."""
    layer = rnnkit.MLSTM(I, H, num_heads=1, dtype=F64)
    x = torch.randn(4, 2, I, dtype=F64)
    with torch.no_grad():
        layer.weight_ih_l0.mul_(1e-4)  # tiny q and k: |nᵀq| ≪ 1
    out, _ = layer(x)
    ref, _, _ = mlstm_reference(layer, x)
    torch.testing.assert_close(out, ref)
    assert out.abs().max() < 1e-3


# -- initialisation --------------------------------------------------------------------------------

def test_lru_ring_initialisation_and_gamma():
    torch.manual_seed(0)
    layer = rnnkit.LRU(16, 32, state_size=512, r_min=0.4, r_max=0.9, max_phase=math.pi / 10, dtype=F64)
    lam_abs = torch.exp(-layer.nu_log_l0.exp())
    phase = layer.theta_log_l0.exp()
    assert lam_abs.min() >= 0.4 and lam_abs.max() <= 0.9
    # |λ|² uniform on [r_min², r_max²] (uniform on the ring's area): its mean is the midpoint
    assert (lam_abs ** 2).mean().item() == pytest.approx((0.16 + 0.81) / 2, abs=0.03)
    assert phase.min() >= 0 and phase.max() <= math.pi / 10
    torch.testing.assert_close(layer.gamma_log_l0.exp(), torch.sqrt(1 - lam_abs ** 2))
    assert layer.weight_ih_l0[:1024].std().item() == pytest.approx(1 / math.sqrt(2 * 16), rel=0.05)  # B
    assert layer.c_re_l0.std().item() == pytest.approx(1 / math.sqrt(512), rel=0.05)


def test_lru_normalisation_keeps_state_variance_at_one():
    """γ = sqrt(1 - |λ|²): white input of unit variance gives states of unit variance per
    B-row norm — the point of the normalisation (the paper's §3.3)."""
    torch.manual_seed(0)
    layer = rnnkit.LRU(1, 4, state_size=256, r_min=0.9, r_max=0.99, activation="identity", bias=False, dtype=F64)
    with torch.no_grad():
        layer.weight_ih_l0[:512].fill_(1 / math.sqrt(2))  # |B_n|² = 1
    x = torch.randn(600, 8, 1, dtype=F64)
    _, (_, s) = layer(x)
    var = (s[0] ** 2).sum(-1).mean() / 256  # E|s_n|² per state
    assert var.item() == pytest.approx(1.0, rel=0.15)


def test_rglru_initialisation_puts_a_power_c_in_the_papers_range():
    torch.manual_seed(0)
    layer = rnnkit.RGLRU(8, 2000)
    ac = torch.sigmoid(layer.a_logit_l0.double()) ** 8
    assert ac.min() >= 0.9 - 1e-6 and ac.max() <= 0.999 + 1e-6
    assert ac.mean().item() == pytest.approx((0.9 + 0.999) / 2, abs=0.01)  # uniform


def test_s6_initialisation_follows_mamba():
    torch.manual_seed(0)
    layer = rnnkit.S6(8, 64, state_size=16, dt_min=0.001, dt_max=0.1)
    assert layer.cell.dt_rank == 4  # ⌈64/16⌉
    torch.testing.assert_close(-layer.A_log_l0.exp()[0], -torch.arange(1.0, 17.0))  # S4D-real
    assert (layer.D_l0 == 1).all()
    dt = F.softplus(layer.bias_dt_l0)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    assert layer.weight_dt_l0.abs().max() <= 0.5  # U(±R^-1/2)


def test_xlstm_forget_biases_and_sru_init():
    torch.manual_seed(0)
    s = rnnkit.SLSTM(I, 8)
    torch.testing.assert_close(s.bias_ih_l0[8:16], torch.linspace(3.0, 6.0, 8))
    assert s.bias_ih_l0[:8].abs().max() == 0 and s.cell.num_heads == 4
    m = rnnkit.MLSTM(I, 8)
    NH = m.cell.num_heads
    torch.testing.assert_close(m.bias_ih_l0[24 + NH:24 + 2 * NH], torch.linspace(3.0, 6.0, NH))
    sru = rnnkit.SRU(64, 64)
    assert sru.weight_cf_l0.abs().max() == 0 and sru.bias_ih_l0.abs().max() == 0
    assert sru.weight_ih_l0.std().item() == pytest.approx(1 / math.sqrt(64), rel=0.05)  # variance 1/d


# -- generation and chunks ----------------------------------------------------------------------

@pytest.mark.parametrize("unit", list(UNITS))
@pytest.mark.parametrize("given_state", [False, True])
def test_step_by_step_equals_forward(unit, given_state):
    """step() (the recurrent form) gives forward's (the training form's) outputs and state,
    through 3 layers, from a given or a learned initial state."""
    torch.manual_seed(4)
    layer = make(unit, num_layers=3, dropout=0.5, learn_initial_state=not given_state, dtype=F64).eval()
    sizes = layer.cell.state_sizes()
    T, B = 9, 2
    init = [torch.randn(3, B, s, dtype=F64) for s in sizes]
    if unit.startswith("slstm"):
        init[2] = init[2].abs() + 0.5  # a normaliser state is positive
    if not given_state:
        with torch.no_grad():
            for name, value in zip(layer.cell.state_names, init):
                getattr(layer, f"initial_{name}").copy_(value[:, :1])
    x = torch.randn(T, B, I, dtype=F64)
    h0 = (init[0] if len(init) == 1 else tuple(init)) if given_state else None
    out, state = layer(x, h0)
    h, steps = h0, []
    for t in range(T):
        y, h = layer.step(x[t], h)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps), out)
    for a, b in zip(states_of(h), states_of(state)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("unit", list(UNITS))
def test_chunks_with_carried_state_equal_the_whole_sequence(unit):
    """Two pieces with the state carried equal one run (truncated BPTT, stateful use): the
    QRNN's convolution carry, the xLSTM stabilisers and the S6/LRU states all carry over."""
    torch.manual_seed(5)
    layer = make(unit, num_layers=2, dtype=F64)
    x = torch.randn(40, 2, I, dtype=F64)
    out, state = layer(x)
    out1, s1 = layer(x[:17])
    out2, s2 = layer(x[17:], s1)
    torch.testing.assert_close(torch.cat((out1, out2)), out)
    for a, b in zip(states_of(s2), states_of(state)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, None])
def test_mlstm_every_chunk_size_computes_the_recurrent_form(chunk):
    torch.manual_seed(6)
    layer = randomize_(rnnkit.MLSTM(I, H, num_heads=2, chunk_size=chunk, bidirectional=True, dtype=F64))
    ref = rnnkit.MLSTM(I, H, num_heads=2, bidirectional=True, backend="bptt", dtype=F64)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(13, 3, I, dtype=F64)
    out, state = layer(x, lengths=[13, 4, 9])
    out_r, state_r = ref(x, lengths=[13, 4, 9])
    torch.testing.assert_close(out, out_r)
    for a, b in zip(state, state_r):
        torch.testing.assert_close(a, b)


# -- shapes, registry, serialisation, models and CLI ------------------------------------------------------

@pytest.mark.parametrize("unit", list(UNITS))
def test_shapes_bidirectional_stacked_batch_first_unbatched(unit):
    layer = make(unit, num_layers=2, bidirectional=True, batch_first=True, dropout=0.2)
    out, state = layer(torch.randn(5, 7, I))  # (B, T, I)
    assert out.shape == (5, 7, 2 * H)
    assert [tuple(s.shape) for s in states_of(state)] == [(4, 5, s) for s in layer.cell.state_sizes()]
    out, state = layer(torch.randn(7, I))  # unbatched
    assert out.shape == (7, 2 * H) and states_of(state)[0].shape == (4, H)


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_built_by_name_with_defaults(name):
    """make_layer(name, ...) with the char LM's arguments; the models' helpers read the
    output and state sizes; the state feeds back; the layer serialises and copies."""
    cls = rnnkit.LAYER_TYPES[name]
    assert name in cell_names() and cls.__name__ in rnnkit.__all__ and getattr(rnnkit, cls.__name__) is cls
    layer = rnnkit.make_layer(name, 5, 12, num_layers=2, dropout=0.1, batch_first=False)
    assert isinstance(layer, cls) and layer.num_layers == 2
    out, state = layer(torch.randn(4, 3, 5), None)
    assert out.shape == (4, 3, 12)
    built = build_layer(name, 5, 12)
    assert (built.output_size, tuple(built.state_sizes)) == (12, tuple(layer.cell.state_sizes()))
    out2, state2 = layer(torch.randn(4, 3, 5), state)
    assert out2.shape == (4, 3, 12) and not torch.equal(states_of(state2)[0], states_of(state)[0])
    buffer = io.BytesIO()
    torch.save(layer, buffer)  # serialises the whole module: fails on a lambda or closure stored on it
    assert buffer.tell() > 1000
    twin = copy.deepcopy(layer).eval()
    x = torch.randn(6, 2, 5)
    torch.testing.assert_close(twin(x)[0], layer.eval()(x)[0])


def test_sensible_defaults_for_heads_and_state_sizes():
    assert rnnkit.make_layer("slstm", 3, 12).cell.num_heads == 4
    assert rnnkit.make_layer("mlstm", 3, 10).cell.num_heads == 2
    assert rnnkit.make_layer("mlstm", 3, 7).cell.num_heads == 1
    assert rnnkit.make_layer("lru", 3, 10).cell.state_size == 10
    assert rnnkit.make_layer("s6", 3, 40).cell.state_size == 16
    assert rnnkit.make_layer("qrnn", 3, 10).cell.window == 2
    assert rnnkit.make_layer("sru", 3, 10).backend == "bptt"
    assert rnnkit.SRU(3, 10, gate_recurrence=False).backend == "auto"  # the native loop, else the scan
    assert rnnkit.make_layer("qrnn", 3, 10).backend == "auto"


def test_cli_task_and_train_run_the_new_units(tmp_path, capsys):
    assert main(["task", "adding", "--cell", "slstm", "--seq-len", "8", "--hidden-size", "8", "--max-steps", "2",
                 "--eval-every", "2", "--test-size", "10"]) == 0
    assert "with slstm" in capsys.readouterr().out
    corpus = tmp_path / "corpus.py"
    corpus.write_text("".join(f"def f{i}(x):\n    return x + {i % 10}\n\n" for i in range(100)))
    run = tmp_path / "run"
    assert main(["train", "--cell", "lru", "--data", str(corpus), "--out", str(run), "--max-steps", "2",
                 "--hidden-size", "8", "--embed-size", "4", "--batch-size", "2", "--seq-len", "8",
                 "--max-time", "0", "--val-fraction", "0.1", "--quiet"]) == 0
    assert main(["sample", str(run), "--length", "20", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.strip()) > 0


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_unknown_or_unsupported_keyword_is_an_error(name):
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['peephole'\]"):
        rnnkit.make_layer(name, 5, 8, peephole=True)
    with pytest.raises(TypeError, match="init="):
        rnnkit.make_layer(name, 5, 8, init="orthogonal")
    if name != "slstm":
        with pytest.raises(TypeError, match=r"\['zoneout'\]"):
            rnnkit.make_layer(name, 5, 8, zoneout=0.1)
    with pytest.raises(ValueError, match="backend must be one of"):
        rnnkit.make_layer(name, 5, 8, backend="cuda")


@pytest.mark.parametrize("cls,kwargs,match", [
    (rnnkit.SLSTM, {"num_heads": 3}, "num_heads must divide hidden_size=4"),
    (rnnkit.SLSTM, {"forget_gate": "tanh"}, "forget_gate must be one of"),
    (rnnkit.MLSTM, {"num_heads": 0}, "num_heads must divide"),
    (rnnkit.MLSTM, {"chunk_size": 0}, "chunk_size must be a positive integer or None"),
    (rnnkit.LRU, {"r_min": 0.9, "r_max": 0.5}, "r_min <= r_max"),
    (rnnkit.LRU, {"r_max": 1.0}, "r_max < 1"),
    (rnnkit.LRU, {"state_size": 0}, "state_size must be positive"),
    (rnnkit.LRU, {"activation": "relu"}, "activation must be one of"),
    (rnnkit.RGLRU, {"a_range": (0.9, 1.0)}, "a_range"),
    (rnnkit.RGLRU, {"c": 0.0}, "c must be positive"),
    (rnnkit.S6, {"dt_min": 0.2, "dt_max": 0.1}, "dt_min <= dt_max"),
    (rnnkit.S6, {"dt_rank": 0}, "dt_rank must be positive"),
    (rnnkit.QRNN, {"window": 0}, "window must be at least 1"),
    (rnnkit.SRU, {"backend": "scan"}, r"backend must be one of \('bptt', 'autograd'\)"),
])
def test_bad_options(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(I, H, **kwargs)


@pytest.mark.parametrize("unit", ["slstm", "mlstm", "lru", "rglru", "s6", "qrnn-k3", "sru"])
def test_bad_input_errors(unit):
    layer = make(unit)
    with pytest.raises(ValueError, match="expected input_size=3"):
        layer(torch.randn(4, 2, 5))
    with pytest.raises(ValueError, match="lengths must be in 1..4"):
        layer(torch.randn(4, 2, I), lengths=[5, 1])
    name, size = layer.cell.state_names[0], layer.cell.state_sizes()[0]
    wrong = tuple(torch.zeros(1, 3, s) for s in layer.cell.state_sizes())
    with pytest.raises(ValueError, match=rf"initial state {name} must have shape \(1, 2, {size}\)"):
        layer(torch.randn(4, 2, I), wrong[0] if len(wrong) == 1 else wrong)
    with pytest.raises(ValueError, match=r"step\(\) takes one step of input \(B, I\)"):
        layer.step(torch.randn(4, 2, I))
    with pytest.raises(ValueError, match="expected input_size=3"):
        layer.step(torch.randn(2, 5))
    with pytest.raises(ValueError, match="bidirectional"):
        make(unit, bidirectional=True).step(torch.randn(2, I))


@pytest.mark.parametrize("name", NAMES)
def test_under_bf16_autocast_the_recurrence_runs_in_the_parameters_dtype(name):
    """autocast does not reach inside the hand-written passes: the layer gives its float32
    result (and gradients) inside an autocast region, and the ops after it autocast as usual."""
    layer = rnnkit.make_layer(name, 5, 8)
    x = torch.randn(6, 2, 5)
    ref, _ = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x)
        head = torch.nn.Linear(8, 3)(out)
    assert out.dtype == torch.float32 and head.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
    head.float().sum().backward()
    assert torch.isfinite(layer.weight_ih_l0.grad).all() and layer.weight_ih_l0.grad.abs().max() > 0


def test_bench_measures_the_new_units_and_renders_their_table():
    from rnnkit.bench import scan as bench

    cfg = bench.BenchConfig(seq_lens=(8,), batch_size=2, input_size=3, hidden_size=4, rounds=1, min_seconds=0.0,
                            models=("mingru-scan", "slstm", "mlstm-chunkwise", "mlstm-loop", "lru-scan", "lru-loop",
                                    "rglru-scan", "s6-scan", "qrnn-scan", "sru", "torch.nn.LSTM"))
    rows = bench.measure(cfg)
    assert [r["model"] for r in rows] == list(cfg.models) and all(r["ms_per_step"] > 0 for r in rows)
    table = bench.markdown(rows, cfg)
    assert "minGRU, minLSTM and the classic cells:" in table and "the units of docs/new-units.md:" in table
    assert ("| T | slstm | mlstm-chunkwise | mlstm-loop | lru-scan | lru-loop | rglru-scan | s6-scan | qrnn-scan | "
            "sru | torch.nn.LSTM | mlstm loop/chunkwise | lru loop/scan |") in table


@pytest.mark.parametrize("cell,jacobians", [("sru", True), ("lru", True), ("mlstm", False)])
def test_report_of_a_char_model_with_the_new_units(cell, jacobians):
    """The HTML report's analysis runs on the new units: the gradient record of their
    backward, the per-step states, and the step Jacobians where the state is small enough
    (an mLSTM's d×d memories are left out, as are state entries too large to show)."""
    import rnnkit.diagnostics as dg
    from rnnkit.data.text import Vocabulary
    from rnnkit.models import CharLM, CharLMConfig

    text = "".join(f"def f{i}(x):\n    return x + {i % 10}\n" for i in range(6))
    model = CharLM(CharLMConfig(cell=cell, hidden_size=8, embed_size=4), Vocabulary.build(text))
    # mLSTM's state: h 8 + C 4·2·2 + n 8 + m 4 = 36 numbers; LRU's 8 + 16; SRU's 16
    config = dg.ReportConfig(grad_window=10, grad_batch=2, jacobian_max_state=32, max_units_shown=12)
    data = dg.report.analyse(model, [], text, config=config)
    assert set(data.grad_norms) == {"rnn.l0"} and data.grad_norms["rnn.l0"].shape == (10,)
    assert bool(data.jacobian_norms) == jacobians
    page = dg.report.render_html(data, config)
    first = model.rnn.cell.state_names[0]  # h, or the output y
    assert "Hidden units over the text" in page and f'"name":"rnn.l0 {first}"' in page
    assert ('"name":"rnn.l0 C"' in page) is False  # 16 units > max_units_shown
