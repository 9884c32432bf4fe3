"""Newer recurrent units with element-wise recurrence: IndRNN, minGRU and minLSTM.

All three are :class:`rnnkit.Recurrent` stacks, so stacking, bidirectional, ``lengths``,
PackedSequence, ``batch_first``, given or learnable initial state, dropout between
layers, zoneout and the gradient record come with them, and they return
``(output, h_n)`` like ``torch.nn.GRU``. They also run one step at a time with a carried
state (:meth:`step`), for generation.

- :class:`IndRNN` (Li et al. 2018) has a nonlinear recurrence and runs on the
  sequential BPTT engine like the classic cells (its native loop: one input GEMM over all
  T·B rows, then an element-wise C++ loop forward and backward).
- :class:`MinGRU` and :class:`MinLSTM` (Feng et al. 2024) have a recurrence linear in
  h. By default (``backend="auto"``) they train on their native sequential loop where it
  runs (CPU, float32/float64, the extension built: one input GEMM over all T·B rows, then
  an element-wise C++ loop forward and backward, faster than the scan on the CPU, see
  docs/performance.md) and by the parallel scan of :mod:`rnnkit.engine.scan` elsewhere;
  ``backend="scan"`` always takes the scan, ``"bptt"`` the sequential engine (native or
  the Python loop), ``"autograd"`` the Python loop under autograd (the test oracle): all
  give the same results.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .. import engine
from ..cells.indrnn import IndRNNCell
from ..cells.minrnn import LinearRecurrenceCell, MinGRUCell, MinLSTMCell
from ..engine import scan
from .recurrent import Recurrent

#: the keyword options of rnnkit.Recurrent the new units take
_RECURRENT_OPTIONS = ("learn_initial_state", "recurrent_dropout", "zoneout", "backend")


def _check_options(name: str, options: dict, allowed: tuple[str, ...] = _RECURRENT_OPTIONS) -> None:
    """Unknown keywords are an error naming them (the CLI passes user options through)."""
    for key in ("init", "forget_bias"):
        if key in options:
            raise TypeError(f"{name} does not take {key}=: it initialises its weights as its paper does "
                            "(see the class docstring)")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{name} got unexpected keyword argument(s) {unknown}; besides its own arguments it "
                        f"takes {list(allowed)}")


class _StepMixin:
    """One time step of a unidirectional stack with a carried state, for generation."""

    def step(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Advance every layer by one step.

        x: (B, I) the input of this step; h: (L, B, H) the state after the previous step
        (None: the initial state, zeros or learned). Returns the top layer's output (B, H)
        and the new state (L, B, H). Feeding a sequence step by step gives the outputs
        of ``forward`` on the whole sequence.
        """
        self: Recurrent  # type: ignore[no-redef]
        if self.bidirectional:
            raise ValueError("step() runs forward in time; a bidirectional layer needs the whole sequence")
        if not isinstance(x, Tensor) or x.dim() != 2:
            got = f"{x.dim()}-D of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"step() takes one step of input (B, I), got {got}")
        self._check_input(x.unsqueeze(0))
        B = x.shape[0]
        (state,) = self._initial_state(h, B, x.unsqueeze(0))  # (L, B, H)
        new_states = []
        layer_in = x
        for layer in range(self.num_layers):
            p = self._params(layer, 0)
            xw, _ = engine._input_projection(self.cell, layer_in.unsqueeze(0), p)  # (1, B, G)
            (h_new,), _ = self.cell.step(xw[0], (state[layer],), p, None)
            new_states.append(h_new)
            layer_in = h_new
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, True)
        return layer_in, torch.stack(new_states)


# -- IndRNN ------------------------------------------------------------------------------------

#: every IndRNN with a recurrent-weight bound, projected after each optimizer step
_BOUNDED: weakref.WeakSet = weakref.WeakSet()
_HOOK: list = []


def _project_after_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for layer in list(_BOUNDED):
        if any(id(p) in params for p in layer.parameters()):
            layer.constrain_()


class IndRNN(_StepMixin, Recurrent):
    """Independently recurrent neural network (Li, Li, Cook, Zhu & Gao, CVPR 2018).

        h_t = φ(W_ih x_t + u ⊙ h_{t-1} + b)        u ∈ R^H,  φ = relu (default) or tanh

    (see :class:`~rnnkit.cells.indrnn.IndRNNCell`). Each unit's gradient through time
    is ∂h_{n,T}/∂h_{n,t} = ∏_{k=t+1..T} φ'(a_{n,k}) u_n; with relu, where the unit is
    active this is u_n^{T-t}. The paper keeps it within [ε, γ] by constraining

        |u_n| ≤ γ^{1/T}   (no explosion over T steps)     [|u_n| ≥ ε^{1/T}: no vanishing]

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.RNN.
        nonlinearity: ``"relu"`` (the paper) or ``"tanh"``.
        recurrent_max_abs: the bound on |u|; or give ``time_steps`` (T) and ``gamma`` (γ,
            default 2, the largest gradient magnification allowed) to use γ^{1/T}. None:
            no constraint. The bound is applied in every forward (u is clamped, so an
            out-of-range weight gets no gradient past the bound) and the stored weight is
            projected onto it after every optimizer step that updates this layer (and by
            :meth:`constrain_`), as the paper's training clips it.
        recurrent_init: (low, high): u ~ U(low, high). Default: U(0, bound), as the
            authors' code starts the first layers (U(0, 1) without a bound); for units
            that must keep long memory they start the last layer in
            U((1/γ)^{1/T}, γ^{1/T}) — pass that range.
        learn_initial_state, recurrent_dropout, zoneout, backend: as :class:`rnnkit.Recurrent`.

    The input weights start from He (Kaiming) normal initialisation for relu (Xavier
    uniform for tanh; the authors' adding-problem code uses N(0, 0.001²) instead), the
    bias at 0. Parameters per layer: ``weight_ih_l{k}`` (H, I),
    ``weight_hh_l{k}`` (H,) = u, ``bias_ih_l{k}`` (H,) = b.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "relu",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        recurrent_max_abs: float | None = None,
        time_steps: int | None = None,
        gamma: float = 2.0,
        recurrent_init: tuple[float, float] | None = None,
        **options,
    ):
        _check_options("IndRNN", options)
        if time_steps is not None:
            if recurrent_max_abs is not None:
                raise ValueError("give recurrent_max_abs or time_steps (with gamma), not both")
            if time_steps < 1:
                raise ValueError(f"time_steps must be positive, got {time_steps}")
            if gamma <= 0:
                raise ValueError(f"gamma must be positive, got {gamma}")
            recurrent_max_abs = gamma ** (1.0 / time_steps)
        if recurrent_max_abs is not None and not recurrent_max_abs > 0:
            raise ValueError(f"recurrent_max_abs must be positive, got {recurrent_max_abs}")
        if recurrent_init is None:
            recurrent_init = (0.0, recurrent_max_abs if recurrent_max_abs is not None else 1.0)
        low, high = recurrent_init
        if not low <= high:
            raise ValueError(f"recurrent_init must be (low, high) with low <= high, got {recurrent_init}")
        cell = IndRNNCell(hidden_size, bias, nonlinearity)
        self._indrnn_init = (float(recurrent_max_abs) if recurrent_max_abs is not None else None,
                             (float(low), float(high)))
        super().__init__(cell, input_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, **options)
        self.nonlinearity = nonlinearity
        self.recurrent_max_abs = self._indrnn_init[0]
        self.recurrent_init = self._indrnn_init[1]
        if self.recurrent_max_abs is not None:
            _BOUNDED.add(self)
            if not _HOOK:
                _HOOK.append(register_optimizer_step_post_hook(_project_after_step))

    def reset_parameters(self) -> None:
        bound, (low, high) = self._indrnn_init
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    w_ih = getattr(self, names["weight_ih"])
                    if self.cell.nonlinearity == "relu":
                        nn.init.kaiming_normal_(w_ih, nonlinearity="relu")
                    else:
                        nn.init.xavier_uniform_(w_ih)
                    u = getattr(self, names["weight_hh"])
                    u.uniform_(low, high)
                    if bound is not None:
                        u.clamp_(-bound, bound)
                    if self.bias:
                        getattr(self, names["bias_ih"]).zero_()

    def constrain_(self) -> None:
        """Project every recurrent weight onto |u| ≤ recurrent_max_abs, in place."""
        if self.recurrent_max_abs is None:
            return
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    getattr(self, names["weight_hh"]).clamp_(-self.recurrent_max_abs, self.recurrent_max_abs)

    def __setstate__(self, state: dict) -> None:  # copies (copy.deepcopy) keep the projection
        super().__setstate__(state)
        if self.recurrent_max_abs is not None:
            _BOUNDED.add(self)

    def _params(self, layer: int, direction: int) -> dict[str, Tensor]:
        p = super()._params(layer, direction)
        if self.recurrent_max_abs is not None:
            p["weight_hh"] = p["weight_hh"].clamp(-self.recurrent_max_abs, self.recurrent_max_abs)
        return p

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "relu":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.recurrent_max_abs is not None:
            s += f", recurrent_max_abs={self.recurrent_max_abs:.6g}"
        return s


# -- minGRU / minLSTM ----------------------------------------------------------------------------

BACKENDS = ("auto", "scan", "bptt", "autograd")


class _LinearRecurrent(_StepMixin, Recurrent):
    """A stack of a :class:`~rnnkit.cells.minrnn.LinearRecurrenceCell`, trained by the
    native sequential loop where it runs and else the parallel scan (``backend="auto"``),
    always by the parallel scan (``"scan"``), by the sequential hand-written BPTT
    (``"bptt"``: the native loop where it runs, else the Python loop) or by autograd through
    the sequential loop (``"autograd"``)."""

    def __init__(self, cell: LinearRecurrenceCell, input_size: int, num_layers: int, bias: bool,
                 batch_first: bool, dropout: float, bidirectional: bool, device, dtype,
                 backend: str, options: dict):
        _check_options(type(self).__name__, options)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        super().__init__(cell, input_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, backend="autograd" if backend == "autograd" else "bptt", **options)
        self.backend = backend

    def reset_parameters(self) -> None:
        """W_ih and b_ih ~ U(±1/√fan_in), torch.nn.Linear's default (the paper's layers are
        nn.Linear)."""
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    w = getattr(self, names["weight_ih"])
                    bound = 1.0 / math.sqrt(w.shape[1])
                    w.uniform_(-bound, bound)
                    if self.bias:
                        getattr(self, names["bias_ih"]).uniform_(-bound, bound)

    def extra_repr(self) -> str:
        s = super().extra_repr().replace(f", backend={self.backend!r}", "")
        return s if self.backend == "auto" else s + f", backend={self.backend!r}"

    def _auto_backend(self, x: Tensor, opts: engine.LoopOptions) -> str:
        """``"bptt"`` where the native loop runs this call (CPU float32/float64, the extension
        built, no gradient record or per-step hook, no autocast), else ``"scan"``."""
        if torch.is_autocast_enabled(x.device.type) or engine.native.dispatch(self.cell, x, opts) is None:
            return "scan"
        return "bptt"

    def _forward_stack(self, x: Tensor, state0: list[Tensor], lengths: Tensor | None):
        D = self.num_directions
        finals: list[Tensor] = []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                opts = self._loop_options(layer, d, layer_in, lengths)
                p = self._params(layer, d)
                backend = self._auto_backend(layer_in, opts) if self.backend == "auto" else self.backend
                if backend == "scan":
                    out, (h_n,) = scan.run_scan(self.cell, layer_in, (state0[0][k],), p, opts)
                elif backend == "bptt":
                    out, (h_n,) = engine.run(self.cell, layer_in, (state0[0][k],), p, opts)
                else:
                    out, (h_n,) = engine.run_reference(self.cell, layer_in, (state0[0][k],), p, opts)
                outs.append(out)
                finals.append(h_n)
            layer_in = outs[0] if D == 1 else torch.cat(outs, 2)  # (T, B, D·H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, True)
        return layer_in, [torch.stack(finals)]


class MinGRU(_LinearRecurrent):
    """minGRU (Feng et al. 2024): a GRU whose gates read only the input.

        z_t = σ(W_z x_t + b_z)      h̃_t = W_h x_t + b_h
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    (see :class:`~rnnkit.cells.minrnn.MinGRUCell`). Trained by its native sequential loop on
    the CPU and by a parallel scan over time (:mod:`rnnkit.engine.scan`) elsewhere; run step
    by step by :meth:`step`.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.GRU.
        candidate_activation: ``"identity"`` (the paper), ``"g"`` (the paper's log-space
            variant, h̃ > 0) or ``"tanh"``.
        backend: ``"auto"`` (the native loop where it runs, else the scan), ``"scan"``
            (parallel scan), ``"bptt"`` (sequential loop with the hand-written BPTT: native
            where it runs, else Python) or ``"autograd"`` (the reference).
        learn_initial_state, recurrent_dropout, zoneout: as :class:`rnnkit.Recurrent`.

    Parameters per layer: ``weight_ih_l{k}`` (2H, I) rows (z, h), ``bias_ih_l{k}`` (2H,).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, candidate_activation: str = "identity",
                 backend: str = "auto", **options):
        cell = MinGRUCell(hidden_size, bias, candidate_activation)
        super().__init__(cell, input_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, backend, options)


class MinLSTM(_LinearRecurrent):
    """minLSTM (Feng et al. 2024): an LSTM with gates of the input only, normalised
    forget/input gates and no output gate.

        f_t = σ(W_f x_t + b_f)   i_t = σ(W_i x_t + b_i)   h̃_t = W_h x_t + b_h
        f'_t = f_t / (f_t + i_t)   i'_t = i_t / (f_t + i_t)        (normalize=True)
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

    (see :class:`~rnnkit.cells.minrnn.MinLSTMCell`). Arguments as :class:`MinGRU`, plus
    ``normalize`` (False: the unnormalised gates f, i). Parameters per layer:
    ``weight_ih_l{k}`` (3H, I) rows (f, i, h), ``bias_ih_l{k}`` (3H,).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, candidate_activation: str = "identity",
                 normalize: bool = True, backend: str = "auto", **options):
        cell = MinLSTMCell(hidden_size, bias, candidate_activation, normalize)
        super().__init__(cell, input_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, backend, options)

