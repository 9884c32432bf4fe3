"""The recurrent units of the long-context revival: sLSTM and mLSTM (xLSTM), LRU, RG-LRU,
the selective state space S6, QRNN and SRU.

Each is a :class:`rnnkit.Recurrent` stack, so stacking, bidirectional, ``lengths``,
PackedSequence, ``batch_first``, a given or learnable initial state and dropout between
layers come with it; it returns ``(output, state)`` and runs one step at a time with a
carried state (:meth:`step`), for generation. The math of each lives in one cell file
(:mod:`rnnkit.cells.slstm`, ...); the engines that run it:

- sLSTM: the sequential BPTT engine with its hand-written ``step_backward`` (its
  recurrence is nonlinear, through block-diagonal recurrent weights);
- mLSTM: the chunkwise-parallel form with a hand-written backward (``"chunkwise"``), or
  its recurrent form step by step (``"bptt"``);
- LRU, RG-LRU, S6, QRNN and the linear SRU: a parallel scan over time with its
  hand-written backward (``"scan"``, :func:`rnnkit.engine.scan.run_scan_cell`), or the same
  steps in sequence (``"bptt"``, :func:`rnnkit.engine.scan.run_steps`);
- SRU with its c_{t-1} terms in the gates (the 2018 form, nonlinear in c): the
  element-wise step loop with its hand-written backward (``"bptt"``);
- QRNN, SRU (both forms) and S6 have a native loop (``rnnkit/cells/native/qrnn.cpp``,
  ``s6.cpp``, :func:`rnnkit.engine.scan.run_native_steps`), which their ``"bptt"`` runs where
  it can and the QRNN's, the linear SRU's and S6's default ``"auto"`` chooses over the scan
  where it runs (faster on the CPU, docs/performance.md).

Every unit also takes ``backend="autograd"``: its steps under autograd, the oracle of the
tests. The input projection (one GEMM for all steps) is differentiated by autograd on
every backend; what is written by hand is everything after it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import engine
from ..cells.base import Cell
from ..cells.lru import LRUCell
from ..cells.mlstm import MLSTMCell, MLSTMChunkwise
from ..cells.qrnn import QRNNCell, causal_conv
from ..cells.rglru import RGLRUCell
from ..cells.s6 import S6Cell
from ..cells.slstm import SLSTMCell
from ..cells.sru import SRUCell
from ..engine import scan
from .elementwise import _check_options
from .recurrent import Recurrent


def _init_linear_(w: Tensor, b: Tensor | None = None) -> None:
    """W and b ~ U(±1/√fan_in), torch.nn.Linear's default."""
    bound = 1.0 / math.sqrt(w.shape[-1])
    w.uniform_(-bound, bound)
    if b is not None:
        b.uniform_(-bound, bound)


class _ModernRecurrent(Recurrent):
    """The layer machinery the units share: backend choice, the stack loop, one step for
    generation. Subclasses set ``BACKENDS`` (the first is the default) and may override
    :meth:`_run_parallel` (the parallel backend) and :meth:`_run`."""

    BACKENDS: tuple[str, ...] = ("scan", "bptt", "autograd")
    #: keyword options of rnnkit.Recurrent the unit takes (besides ``backend``)
    OPTIONS: tuple[str, ...] = ("learn_initial_state",)

    def __init__(self, cell: Cell, input_size: int, num_layers: int, bias: bool, batch_first: bool,
                 dropout: float, bidirectional: bool, device, dtype, backend: str | None, options: dict):
        _check_options(type(self).__name__, options, self.OPTIONS)
        backend = self.BACKENDS[0] if backend is None else backend
        if backend not in self.BACKENDS:
            raise ValueError(f"backend must be one of {self.BACKENDS}, got {backend!r}")
        super().__init__(cell, input_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, backend="autograd" if backend == "autograd" else "bptt", **options)
        self.backend = backend

    def extra_repr(self) -> str:
        s = super().extra_repr().replace(f", backend={self.backend!r}", "")
        return s if self.backend == self.BACKENDS[0] else s + f", backend={self.backend!r}"

    # -- one direction of one layer ---------------------------------------------------------
    def _run(self, x: Tensor, state0: tuple[Tensor, ...], p: dict[str, Tensor],
             opts: engine.LoopOptions) -> tuple[Tensor, tuple[Tensor, ...]]:
        if self.backend == "autograd":
            if opts.record is not None:
                raise ValueError("the gradient record needs a hand-written backward: use a backend other "
                                 "than 'autograd'")
            out, state_n, _ = engine._loop(self.cell, self.cell.project(x, p), state0, p, opts, keep_caches=False)
            return out, state_n
        if self.backend == "bptt":
            return scan.run_steps(self.cell, self.cell.project(x, p), state0, p, opts)
        if self.backend == "auto":  # the native loop where it runs (CPU, float32/64, built), else the scan
            fast = self._run_native(x, state0, p, opts)
            if fast is not None:
                return fast
        return self._run_parallel(x, state0, p, opts)

    def _run_native(self, x, state0, p, opts):
        """The cell's native loop over u (:func:`rnnkit.engine.scan.run_native_steps`), or None
        where it does not run for this call."""
        if torch.is_autocast_enabled(x.device.type) or not scan.native_steps_run(self.cell, x, opts):
            return None
        return scan.run_native_steps(self.cell, self.cell.project(x, p), state0, p, opts)

    def _run_parallel(self, x, state0, p, opts):
        return scan.run_scan_cell(self.cell, self.cell.project(x, p), state0, p, opts)

    def _forward_stack(self, x: Tensor, state0: list[Tensor], lengths: Tensor | None):
        device = x.device.type
        if torch.is_autocast_enabled(device):
            # autocast does not reach inside the hand-written passes (and has no complex
            # bfloat16 for the LRU): the recurrence runs in the parameters' dtype
            dtype = self.weight_ih_l0.dtype
            with torch.autocast(device, enabled=False):
                return self._forward_stack(x.to(dtype), [s.to(dtype) for s in state0], lengths)
        D = self.num_directions
        finals: list[list[Tensor]] = [[] for _ in state0]
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                opts = self._loop_options(layer, d, layer_in, lengths)
                out, st = self._run(layer_in, tuple(s[k] for s in state0), self._params(layer, d), opts)
                outs.append(out)
                for f, s in zip(finals, st):
                    f.append(s)
            layer_in = outs[0] if D == 1 else torch.cat(outs, 2)  # (T, B, D·R)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, True)
        return layer_in, [torch.stack(f) for f in finals]

    # -- generation ---------------------------------------------------------------------------
    def step(self, x: Tensor, state=None):
        """Advance every layer by one step.

        x: (B, I) the input of this step; state: as ``forward`` returns it (one (L, B, S)
        tensor per state entry, a tuple when there are several), None for the initial
        state. Returns the top layer's output (B, R) and the new state. Feeding a sequence
        step by step gives the outputs of ``forward`` on the whole sequence.
        """
        if self.bidirectional:
            raise ValueError("step() runs forward in time; a bidirectional layer needs the whole sequence")
        if not isinstance(x, Tensor) or x.dim() != 2:
            got = f"{x.dim()}-D of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"step() takes one step of input (B, I), got {got}")
        self._check_input(x.unsqueeze(0))
        states = self._initial_state(state, x.shape[0], x.unsqueeze(0))  # one (L, B, S) per entry
        new_states: list[list[Tensor]] = [[] for _ in states]
        layer_in = x
        for layer in range(self.num_layers):
            p = self._params(layer, 0)
            new, _ = self.cell.step(self.cell.project(layer_in, p), tuple(s[layer] for s in states), p, None)
            for acc, s in zip(new_states, new):
                acc.append(s)
            layer_in = new[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, True)
        stacked = tuple(torch.stack(s) for s in new_states)
        return layer_in, (stacked[0] if len(stacked) == 1 else stacked)


# -- RG-LRU ----------------------------------------------------------------------------------------

class RGLRU(_ModernRecurrent):
    """Real-Gated Linear Recurrent Unit (De et al. 2024, "Griffin"; the recurrence of Hawk).

        r_t = σ(W_a x_t + b_a)     i_t = σ(W_x x_t + b_x)     x̃_t = W_c x_t + b_c
        a_t = a^{c r_t},  a = σ(Λ),  c = 8
        h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ x̃_t)

    (see :class:`~rnnkit.cells.rglru.RGLRUCell`). In Griffin the recurrence reads the
    output of a short convolution of a projected branch; here x̃ is a linear projection of
    the layer input, so that the unit maps I to H features on its own.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.GRU.
        c: the constant of a_t = a^{c r_t} (the paper's 8).
        a_range: (low, high): Λ starts with a^c ~ U(low, high), the paper's (0.9, 0.999).
        backend: ``"scan"`` (parallel scan, default), ``"bptt"`` (the same steps in
            sequence) or ``"autograd"`` (the reference).
        learn_initial_state: as :class:`rnnkit.Recurrent`.

    Parameters per layer: ``weight_ih_l{k}`` (3H, I) rows (a, x, c), ``bias_ih_l{k}``
    (3H,), ``a_logit_l{k}`` (H,) = Λ. W_ih and b_ih start as torch.nn.Linear's
    U(±1/√I). State: h (L·D, B, H).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, c: float = 8.0, a_range: tuple[float, float] = (0.9, 0.999),
                 backend: str | None = None, **options):
        low, high = a_range
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"a_range must be (low, high) with 0 < low <= high < 1, got {a_range}")
        self.a_range = (float(low), float(high))
        super().__init__(RGLRUCell(hidden_size, bias, c), input_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype, backend, options)

    def reset_parameters(self) -> None:
        low, high = self.a_range
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    _init_linear_(getattr(self, names["weight_ih"]), getattr(self, names.get("bias_ih", ""), None))
                    lam = getattr(self, names["a_logit"])
                    a = lam.uniform_(low, high).pow_(1.0 / self.cell.c)  # a^c ~ U(low, high)
                    lam.copy_(a.log() - (-a).log1p())  # Λ = logit(a)



def _default_heads(hidden_size: int) -> int:
    """4 heads (the xLSTM papers' setting) where they divide H, else 2 or 1."""
    return next(h for h in (4, 2, 1) if hidden_size % h == 0)


def _init_forget_bias_(bias: Tensor, rows: slice, n: int) -> None:
    """Forget-gate biases spread over [3, 6] (f = σ(b) from 0.95 to 0.998): units start
    with memories from tens to hundreds of steps."""
    bias[rows] = torch.linspace(3.0, 6.0, n, dtype=bias.dtype, device=bias.device)


# -- sLSTM -----------------------------------------------------------------------------------------

class SLSTM(_ModernRecurrent):
    """sLSTM, the scalar-memory cell of xLSTM (Beck et al. 2024, §2.2).

        (ĩ, f̃, z̃, õ)_t = W x_t + R h_{t-1} + b        R block-diagonal: num_heads heads
        m_t = max(log f_t + m_{t-1}, ĩ_t)              log f = log σ(f̃) or f̃ (exp gate)
        c_t = exp(log f_t + m_{t-1} - m_t) c_{t-1} + exp(ĩ_t - m_t) tanh(z̃_t)
        n_t = exp(log f_t + m_{t-1} - m_t) n_{t-1} + exp(ĩ_t - m_t)
        h_t = σ(õ_t) ⊙ c_t / n_t

    (see :class:`~rnnkit.cells.slstm.SLSTMCell`): exponential input gate, normaliser n and
    stabiliser m. Its recurrence is nonlinear (h_{t-1} enters the gates through R), so it
    trains on the sequential BPTT engine with the cell's hand-written ``step_backward``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.LSTM.
        num_heads: heads of the block-diagonal R (default: 4 where they divide H, else 2 or 1).
        forget_gate: ``"sigmoid"`` (default) or ``"exp"``.
        backend: ``"bptt"`` (default) or ``"autograd"`` (the reference).
        learn_initial_state, recurrent_dropout: as :class:`rnnkit.Recurrent`.

    Parameters per layer: ``weight_ih_l{k}`` (4H, I) rows (i, f, z, o), ``weight_hh_l{k}``
    (4H, d), the diagonal blocks of R (row (gate, head, j) holds R[gate, head][j, :]),
    ``bias_ih_l{k}`` (4H,). W and R start as U(±1/√fan_in), the biases at 0 except the
    forget gate's, spread over [3, 6]. State: (h, c, n, m), each (L·D, B, H).
    """

    BACKENDS = ("bptt", "autograd")
    OPTIONS = ("learn_initial_state", "recurrent_dropout")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, num_heads: int | None = None, forget_gate: str = "sigmoid",
                 backend: str | None = None, **options):
        heads = _default_heads(hidden_size) if num_heads is None else num_heads
        super().__init__(SLSTMCell(hidden_size, heads, bias, forget_gate), input_size, num_layers, bias,
                         batch_first, dropout, bidirectional, device, dtype, backend, options)

    def reset_parameters(self) -> None:
        H = self.hidden_size
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    _init_linear_(getattr(self, names["weight_ih"]))
                    _init_linear_(getattr(self, names["weight_hh"]))
                    if self.bias:
                        b = getattr(self, names["bias_ih"])
                        b.zero_()
                        _init_forget_bias_(b, slice(H, 2 * H), H)

    def _run(self, x, state0, p, opts):
        if self.backend == "autograd":
            return engine.run_reference(self.cell, x, state0, p, opts)
        return engine.run(self.cell, x, state0, p, opts)


# -- mLSTM -----------------------------------------------------------------------------------------

class MLSTM(_ModernRecurrent):
    """mLSTM, the matrix-memory cell of xLSTM (Beck et al. 2024, §2.3).

        q, k, v = W_q x_t + b_q, (W_k x_t + b_k)/√d, W_v x_t + b_v    (per head, d = H/heads)
        ĩ, f̃ = w_iᵀ x_t + b_i, w_fᵀ x_t + b_f      (one scalar per head)
        C_t = f_t C_{t-1} + i_t v_t k_tᵀ           n_t = f_t n_{t-1} + i_t k_t
        h_t = σ(W_o x_t + b_o) ⊙ C_t q_t / max(|n_tᵀ q_t|, 1)
        i_t = exp(ĩ), f_t = σ(f̃) or exp(f̃), stabilised by m_t (see :class:`~rnnkit.cells.mlstm.MLSTMCell`)

    The gates read only x_t, so all steps are computed at once: ``backend="chunkwise"``
    (default) runs the chunkwise-parallel form with chunks of ``chunk_size`` steps
    (``chunk_size=None``: the whole sequence as one chunk, the paper's parallel form,
    quadratic in T) with a hand-written backward; ``"bptt"`` runs the recurrent form step
    by step with the cell's hand-written ``step_backward``; ``"autograd"`` the recurrent
    form under autograd. :meth:`step` is the recurrent form, for generation.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.LSTM.
        num_heads: memory heads (default: 4 where they divide H, else 2 or 1).
        forget_gate: ``"sigmoid"`` (default) or ``"exp"``.
        chunk_size: L of the chunkwise form (default 64).
        backend, learn_initial_state: see above and :class:`rnnkit.Recurrent`.

    Parameters per layer: ``weight_ih_l{k}`` (4H + 2·heads, I) rows (q, k, v, i, f, o) and
    ``bias_ih_l{k}``: U(±1/√I), biases 0 except the forget gate's, spread over [3, 6].
    State: (h (L·D, B, H), C (L·D, B, heads·d·d), n (L·D, B, H), m (L·D, B, heads)).
    """

    BACKENDS = ("chunkwise", "bptt", "autograd")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, num_heads: int | None = None, forget_gate: str = "sigmoid",
                 chunk_size: int | None = 64, backend: str | None = None, **options):
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        self.chunk_size = chunk_size
        heads = _default_heads(hidden_size) if num_heads is None else num_heads
        super().__init__(MLSTMCell(hidden_size, heads, bias, forget_gate), input_size, num_layers, bias,
                         batch_first, dropout, bidirectional, device, dtype, backend, options)

    def reset_parameters(self) -> None:
        H, NH = self.hidden_size, self.cell.num_heads
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    _init_linear_(getattr(self, names["weight_ih"]))
                    if self.bias:
                        b = getattr(self, names["bias_ih"])
                        b.zero_()
                        _init_forget_bias_(b, slice(3 * H + NH, 3 * H + 2 * NH), NH)

    def _run_parallel(self, x, state0, p, opts):
        if opts.record is not None or opts.observe is not None:  # the diagnostics instrument the steps
            return scan.run_steps(self.cell, self.cell.project(x, p), state0, p, opts)
        out, *state_n = MLSTMChunkwise.apply(self.cell, opts.lengths, opts.reverse, self.chunk_size,
                                             self.cell.project(x, p), *state0)
        return out, tuple(state_n)


# -- LRU -------------------------------------------------------------------------------------------

class LRU(_ModernRecurrent):
    """Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks
    for Long Sequences").

        λ = exp(-exp(ν) + i exp(θ))                (N,) complex, |λ| < 1 by construction
        s_t = λ ⊙ s_{t-1} + γ ⊙ (B x_t)             B complex (N, I), γ = exp(γ_log)
        y_t = φ(Re(C s_t) + D x_t)                 C complex (H, N), D real (H, I)

    (see :class:`~rnnkit.cells.lru.LRUCell`). Trained by a parallel scan over time.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.GRU.
        state_size: N, complex states (default H).
        r_min, r_max, max_phase: the ring initialisation: |λ|² ~ U(r_min², r_max²),
            arg λ ~ U(0, max_phase) (default 0.9, 0.999, 2π: long memories from the start,
            the paper's setting for its long-range tasks).
        activation: ``"gelu"`` (default: the nonlinearity the paper puts after every LRU;
            without it a stack of LRUs is a linear time-invariant filter) or ``"identity"``
            (y = Re(C s) + D x, the bare LRU).
        backend: ``"scan"`` (default), ``"bptt"`` or ``"autograd"``.
        learn_initial_state: as :class:`rnnkit.Recurrent`.

    Initialisation as the paper: γ = sqrt(1 - |λ|²) (so that a white input gives states of
    unit variance), B_re, B_im ~ N(0, 1/(2I)), C_re, C_im ~ N(0, 1/N); D ~ N(0, 1/I)
    (the paper's element-wise D ~ N(0, 1), as a matrix), bias 0.
    Parameters per layer: ``weight_ih_l{k}`` (2N + H, I) rows (B_re, B_im, D),
    ``bias_ih_l{k}``, ``nu_log_l{k}``, ``theta_log_l{k}``, ``gamma_log_l{k}`` (N,),
    ``c_re_l{k}``, ``c_im_l{k}`` (H, N). State: (y (L·D, B, H), s (L·D, B, 2N): real
    then imaginary parts).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, state_size: int | None = None, r_min: float = 0.9,
                 r_max: float = 0.999, max_phase: float = 2 * math.pi, activation: str = "gelu",
                 backend: str | None = None, **options):
        if not 0.0 <= r_min <= r_max < 1.0:
            raise ValueError(f"need 0 <= r_min <= r_max < 1, got r_min={r_min}, r_max={r_max}")
        if not max_phase > 0:
            raise ValueError(f"max_phase must be positive, got {max_phase}")
        self.ring = (float(r_min), float(r_max), float(max_phase))
        super().__init__(LRUCell(hidden_size, state_size, bias, activation), input_size, num_layers, bias,
                         batch_first, dropout, bidirectional, device, dtype, backend, options)

    def reset_parameters(self) -> None:
        r_min, r_max, max_phase = self.ring
        N = self.cell.state_size
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    w = getattr(self, names["weight_ih"])
                    fan_in = w.shape[1]
                    w[: 2 * N].normal_(0.0, 1.0 / math.sqrt(2 * fan_in))  # B_re, B_im
                    w[2 * N :].normal_(0.0, 1.0 / math.sqrt(fan_in))  # D
                    if self.bias:
                        getattr(self, names["bias_ih"]).zero_()
                    r2 = torch.empty(N, dtype=torch.float64).uniform_(r_min**2, r_max**2)  # |λ|²
                    getattr(self, names["nu_log"]).copy_(torch.log(-0.5 * torch.log(r2)))  # |λ| = exp(-e^ν)
                    theta = torch.empty(N, dtype=torch.float64).uniform_(0.0, max_phase)
                    getattr(self, names["theta_log"]).copy_(torch.log(theta.clamp_min(1e-12)))
                    getattr(self, names["gamma_log"]).copy_(0.5 * torch.log1p(-r2))  # γ = sqrt(1 - |λ|²)
                    for name in ("c_re", "c_im"):
                        getattr(self, names[name]).normal_(0.0, 1.0 / math.sqrt(N))


# -- S6 --------------------------------------------------------------------------------------------

class S6(_ModernRecurrent):
    """The selective state space model of Mamba (Gu & Dao 2023, S6), as a layer of its own.

        (x̃, δ, B_t, C_t) = W_ih x_t + b_ih          x̃: (H,) channels,  B_t, C_t: (N,)
        Δ_t = softplus(W_Δ δ + b_Δ)                  (H,), δ of rank R
        s_t = exp(Δ_t A) ⊙ s_{t-1} + (Δ_t ⊙ x̃_t) ⊗ B_t      A = -exp(A_log): (H, N)
        y_t = s_t C_t + D ⊙ x̃_t

    (see :class:`~rnnkit.cells.s6.S6Cell`: zero-order hold for A, Mamba's Euler form Δ B
    for B). Without the Mamba block's convolution and SiLU gate: the channels x̃ are a
    linear projection of the input. Trained by its native loop on the CPU
    (``rnnkit/cells/native/s6.cpp``: Δ, B, C for all steps at once, then one pass over time
    per sequence) and by a parallel scan over the (B, H, N) state elsewhere.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.GRU.
        state_size: N per channel (default 16, Mamba's).
        dt_rank: R (default ⌈H/16⌉, Mamba's).
        dt_min, dt_max: Δ starts log-uniform in [dt_min, dt_max] (default 0.001, 0.1).
        backend: ``"auto"`` (default: the native loop where it runs — CPU, float32/float64,
            the extension built —, else the scan), ``"scan"``, ``"bptt"`` (the steps in
            sequence: the native loop where it runs, else the Python steps) or ``"autograd"``.
        learn_initial_state: as :class:`rnnkit.Recurrent`.

    Initialisation as Mamba: A_n = -(n + 1) (S4D-real), D = 1, W_Δ ~ U(±R^{-1/2}), b_Δ the
    inverse softplus of Δ ~ logU(dt_min, dt_max); W_ih U(±1/√I), b_ih 0.
    Parameters per layer: ``weight_ih_l{k}`` (H + R + 2N, I) rows (x̃, δ, B, C),
    ``bias_ih_l{k}``, ``weight_dt_l{k}`` (H, R), ``bias_dt_l{k}`` (H,), ``A_log_l{k}``
    (H, N), ``D_l{k}`` (H,). State: (y (L·D, B, H), s (L·D, B, H·N)).
    """

    BACKENDS = ("auto", "scan", "bptt", "autograd")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, state_size: int = 16, dt_rank: int | None = None,
                 dt_min: float = 0.001, dt_max: float = 0.1, backend: str | None = None, **options):
        if not 0.0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.dt_range = (float(dt_min), float(dt_max))
        super().__init__(S6Cell(hidden_size, state_size, dt_rank, bias), input_size, num_layers, bias,
                         batch_first, dropout, bidirectional, device, dtype, backend, options)

    def reset_parameters(self) -> None:
        dt_min, dt_max = self.dt_range
        H, N, R = self.hidden_size, self.cell.state_size, self.cell.dt_rank
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    _init_linear_(getattr(self, names["weight_ih"]))
                    if self.bias:
                        getattr(self, names["bias_ih"]).zero_()
                    getattr(self, names["weight_dt"]).uniform_(-(R**-0.5), R**-0.5)
                    log_dt = torch.empty(H, dtype=torch.float64).uniform_(math.log(dt_min), math.log(dt_max))
                    dt = log_dt.exp().clamp_min(1e-4)
                    getattr(self, names["bias_dt"]).copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(Δ)
                    A_log = getattr(self, names["A_log"])
                    A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float64)).expand(H, N))
                    getattr(self, names["D"]).fill_(1.0)


# -- QRNN ------------------------------------------------------------------------------------------

class QRNN(_ModernRecurrent):
    """Quasi-recurrent neural network with fo-pooling (Bradbury et al. 2017).

        (z̃, f̃, õ)_t = Σ_{j<k} W_j x_{t-j} + b      masked convolution of width k over time
        c_t = σ(f̃_t) ⊙ c_{t-1} + (1 - σ(f̃_t)) ⊙ tanh(z̃_t)
        h_t = σ(õ_t) ⊙ c_t

    (see :class:`~rnnkit.cells.qrnn.QRNNCell`). The convolution is matrix work for all
    steps at once; the pooling is an element-wise linear recurrence, run by its native loop
    on the CPU (``rnnkit/cells/native/qrnn.cpp``) and as a parallel scan elsewhere.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.GRU.
        window: k, the convolution's width over time (default 2, the paper's language
            model; 1 makes every gate a function of x_t alone).
        backend: ``"auto"`` (default: the native pooling loop where it runs — CPU,
            float32/float64, the extension built —, else the scan), ``"scan"``, ``"bptt"``
            (the steps in sequence: the native loop where it runs, else the Python steps) or
            ``"autograd"``.
        learn_initial_state: as :class:`rnnkit.Recurrent`.

    Parameters per layer: ``weight_ih_l{k}`` (k·3H, I), the taps (W_0; ...; W_{k-1}) each
    with rows (z, f, o), and ``bias_ih_l{k}`` (3H,), U(±1/√(k·I)) like a convolution of
    that width. State: (h, c) (L·D, B, H) and, for k > 1, the convolution's carry
    (L·D, B, (k-1)·3H): the earlier inputs' part of the next steps' pre-activations.
    """

    BACKENDS = ("auto", "scan", "bptt", "autograd")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, window: int = 2, backend: str | None = None, **options):
        super().__init__(QRNNCell(hidden_size, bias, window), input_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device, dtype, backend, options)

    def reset_parameters(self) -> None:
        k = self.cell.window
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    w = getattr(self, names["weight_ih"])
                    bound = 1.0 / math.sqrt(k * w.shape[1])
                    w.uniform_(-bound, bound)
                    if self.bias:
                        getattr(self, names["bias_ih"]).uniform_(-bound, bound)

    def _run(self, x, state0, p, opts):
        if self.backend == "bptt":  # the pooling's native loop after the convolution, where it runs
            fast = self._run_native(x, state0, p, opts)
            if fast is not None:
                return fast
        return super()._run(x, state0, p, opts)

    def _run_native(self, x, state0, p, opts):
        pool = self.cell.pooling()  # the steps after the convolution: window 1
        if torch.is_autocast_enabled(x.device.type) or not scan.native_steps_run(pool, x, opts):
            return None
        u = self.cell.project(x, p)  # (T, B, k·3H)
        carry0 = state0[2] if self.cell.window > 1 else None
        pre, carry_n = causal_conv(u, carry0, self.cell.window, opts.lengths, opts.reverse)  # (T, B, 3H)
        out, (h_n, c_n) = scan.run_native_steps(pool, pre, state0[:2], p, opts)
        return out, ((h_n, c_n) if carry_n is None else (h_n, c_n, carry_n))

    def _run_parallel(self, x, state0, p, opts):
        u = self.cell.project(x, p)  # (T, B, k·3H)
        if opts.observe is not None:
            return scan.run_steps(self.cell, u, state0, p, opts)
        carry0 = state0[2] if self.cell.window > 1 else None
        pre, carry_n = causal_conv(u, carry0, self.cell.window, opts.lengths, opts.reverse)  # (T, B, 3H)
        out, (h_n, c_n) = scan.run_scan_cell(self.cell, pre, state0[:2], p, opts)
        return out, ((h_n, c_n) if carry_n is None else (h_n, c_n, carry_n))


# -- SRU -------------------------------------------------------------------------------------------

class SRU(_ModernRecurrent):
    """Simple Recurrent Unit (Lei et al. 2018).

        f_t = σ(W_f x_t + v_f ⊙ c_{t-1} + b_f)
        c_t = f_t ⊙ c_{t-1} + (1 - f_t) ⊙ W x_t
        r_t = σ(W_r x_t + v_r ⊙ c_{t-1} + b_r)
        h_t = r_t ⊙ c_t + (1 - r_t) ⊙ α x_t              (x_t → W_s x_t when I ≠ H)

    (see :class:`~rnnkit.cells.sru.SRUCell`). The three matrix products are computed for
    all steps at once; the recurrence is element-wise. With ``gate_recurrence=True`` (the
    paper's v ⊙ c_{t-1} terms) it is nonlinear in c and runs as an element-wise loop with
    a hand-written backward (``backend="bptt"``, the default; on the CPU its native loop,
    ``rnnkit/cells/native/qrnn.cpp``); ``gate_recurrence=False`` drops them, making c a
    linear recurrence, trained by the same native loop where it runs and else by the
    parallel scan (``"auto"``, then the default; ``"scan"`` always the scan).

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.GRU.
        gate_recurrence: the v ⊙ c_{t-1} terms (default True).
        highway_scale: α (default √3, the paper's scaling correction for a highway bias of 0).
        backend: ``"bptt"``, ``"auto"`` and ``"scan"`` (gate_recurrence=False only) or
            ``"autograd"``.
        learn_initial_state: as :class:`rnnkit.Recurrent`.

    Initialisation as the paper (§3.2): weights with mean 0 and variance 1/I
    (U(±√(3/I))), biases 0, v = 0 (the unit starts as its linear form). Parameters per
    layer: ``weight_ih_l{k}`` (3H, I) rows (W, W_f, W_r) and, if I ≠ H, W_s (4H rows),
    ``bias_ih_l{k}`` (2H,) = (b_f, b_r), ``weight_cf_l{k}``, ``weight_cr_l{k}`` (H,) =
    v_f, v_r. State: (h, c), each (L·D, B, H).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, gate_recurrence: bool = True, highway_scale: float = math.sqrt(3.0),
                 backend: str | None = None, **options):
        self.BACKENDS = ("bptt", "autograd") if gate_recurrence else ("auto", "scan", "bptt", "autograd")
        super().__init__(SRUCell(hidden_size, bias, gate_recurrence, highway_scale), input_size, num_layers,
                         bias, batch_first, dropout, bidirectional, device, dtype, backend, options)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    w = getattr(self, names["weight_ih"])
                    bound = math.sqrt(3.0 / w.shape[1])
                    w.uniform_(-bound, bound)
                    for name in ("bias_ih", "weight_cf", "weight_cr"):
                        if name in names:
                            getattr(self, names[name]).zero_()

