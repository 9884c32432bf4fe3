"""Gradient flow through time: ‖∂L/∂h_t‖ per step and the recurrent Jacobian ∂s_t/∂s_{t-1}.

BPTT multiplies the gradient arriving at step t by the transposed Jacobian of each
earlier step,

    ∂L/∂s_k = Σ_{t≥k} (∂s_{t}/∂s_{t-1} ⋯ ∂s_{k+1}/∂s_k)ᵀ ∂ℓ_t/∂s_t,

so ‖∂L/∂s_k‖ shrinks geometrically with t - k when the spectral norms σ_max(∂s_t/∂s_{t-1})
stay below 1 (vanishing gradients) and may grow when they exceed 1 (exploding;
Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import engine
from .._config import option
from ..layers import GradientRecord, Recurrent, make_layer, record_gradient_norms
from .observe import observe


def gradient_flow(model: nn.Module, loss_fn: Callable[[], Tensor]) -> GradientRecord:
    """‖∂L/∂h_t‖ of every rnnkit layer in ``model`` for the loss that ``loss_fn()`` returns.

    ``loss_fn`` runs the forward pass and returns a scalar loss; its gradient is taken with
    :func:`torch.autograd.grad`, so the ``.grad`` fields of the model stay untouched.
    Returns the :class:`rnnkit.GradientRecord`: ``norms[key]`` (T, B), ``per_step(key)`` (T,)
    the batch mean, key like ``"rnn.l0"``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameter that requires grad; gradient flow needs a backward pass")
    with record_gradient_norms(model) as record:
        loss = loss_fn()
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar tensor, got {got}")
        torch.autograd.grad(loss, params, allow_unused=True)
    if not record.norms:
        raise ValueError("no gradient reached any rnnkit layer: does the loss depend on its output?")
    return record


def _layer_inputs(layer: Recurrent, x: Tensor, state=None) -> tuple[Tensor, dict[str, dict[str, Tensor]]]:
    """Run the layer on x (T, B, I) from ``state`` (the layer's ``hx``; None: its own initial
    state) in eval mode and return, for every layer/direction key, its input sequence
    (T, B, ·) and the observed states."""
    was_training = layer.training
    layer.eval()
    try:
        with torch.no_grad(), observe(layer) as obs:
            layer(x, state)
    finally:
        layer.train(was_training)
    states = {k.split(".", 1)[1]: v for k, v in obs.states.items()}
    return x, states


def recurrent_jacobians(layer: Recurrent, x: Tensor, layer_index: int = 0, direction: int = 0,
                        state=None) -> Tensor:
    """The Jacobians J_t = ∂s_t/∂s_{t-1} of one layer/direction along the sequence x.

    s is the full state, its entries concatenated ([h; c] for the LSTM, h for Elman/GRU);
    J_t is the derivative of the cell's ``step`` (``torch.func.jacrev`` through the same
    code the engine runs), evaluated at the states the layer reaches on x, in eval mode.
    Zoneout and recurrent dropout are not part of it.

    Args:
        layer: an rnnkit layer; x: (T, B, I) time-major input.
        state: the initial state the layer starts from (its ``hx``: (L·D, B, S) or a tuple of
            them; None: the layer's own), e.g. a decoder's state set by its encoder.
    Returns:
        (T-1, B, S, S) with S = Σ state sizes; index t-1 holds J_t for t = 1..T-1 in the
        direction's own order of steps (a reverse direction's first step is t = T-1).
    """
    if not isinstance(layer, Recurrent):
        raise TypeError(f"layer must be an rnnkit layer (rnnkit.Recurrent), got {type(layer).__name__}")
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a (T, B, I) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] < 2:
        raise ValueError(f"the sequence needs at least 2 steps for a Jacobian, got T={x.shape[0]}")
    if not 0 <= layer_index < layer.num_layers:
        raise ValueError(f"layer_index must be in 0..{layer.num_layers - 1}, got {layer_index}")
    if direction not in range(layer.num_directions):
        raise ValueError(f"direction must be 0{' or 1' if layer.bidirectional else ''}, got {direction}")
    cell = layer.cell
    _, states = _layer_inputs(layer, x, state)
    if layer_index == 0:
        inp = x
    else:
        prev = [states[f"l{layer_index - 1}" + ("_reverse" if d else "")] for d in range(layer.num_directions)]
        inp = torch.cat([next(iter(s.values())) for s in prev], 2)  # (T, B, D·R)
    key = f"l{layer_index}" + ("_reverse" if direction else "")
    seq = torch.cat(list(states[key].values()), 2)  # (T, B, S)
    p = {n: w.detach() for n, w in layer._params(layer_index, direction).items()}
    with torch.no_grad():  # the newer units' cells project the input themselves (e.g. the SRU's highway)
        xw = (cell.project(inp.detach(), p) if hasattr(cell, "project")
              else engine._input_projection(cell, inp.detach(), p)[0])  # (T, B, G)
    sizes = list(cell.state_sizes())

    def step_flat(s_prev: Tensor, xw_t: Tensor) -> Tensor:  # (S,), (G,) -> (S,)
        parts = tuple(torch.split(s_prev.unsqueeze(0), sizes, dim=1))
        new, _ = cell.step(xw_t.unsqueeze(0), parts, p, None)
        return torch.cat(new, 1).squeeze(0)

    T, B = x.shape[:2]
    if direction:  # the direction's own order of steps: T-1, ..., 0
        seq, xw = seq.flip(0), xw.flip(0)
    # every J_t depends only on (s_{t-1}, xw_t): one vmap over all (T-1)·B pairs
    s_prev = seq[:-1].reshape((T - 1) * B, -1)  # (N, S)
    xw_t = xw[1:].reshape((T - 1) * B, -1)  # (N, G)
    with warnings.catch_warnings():  # vmap's note that an in-place op (addcmul_) has no batching rule: speed only
        warnings.filterwarnings("ignore", message="There is a performance drop", category=UserWarning)
        J = torch.func.vmap(torch.func.jacrev(step_flat))(s_prev, xw_t)  # (N, S, S)
    return J.view(T - 1, B, *J.shape[1:])  # (T-1, B, S, S)


def jacobian_spectral_norms(layer: Recurrent, x: Tensor, layer_index: int = 0, direction: int = 0,
                            state=None) -> Tensor:
    """σ_max(∂s_t/∂s_{t-1}) along x: (T-1, B). See :func:`recurrent_jacobians`."""
    J = recurrent_jacobians(layer, x, layer_index, direction, state)
    return torch.linalg.matrix_norm(J, ord=2)


# -- the textbook picture for fresh cells ---------------------------------------------------


@dataclass
class GradFlowConfig:
    """A fresh layer, a random input sequence and a loss at the last step only."""

    cells: tuple[str, ...] = option(("rnn", "lstm", "gru"), "the cells to draw")
    seq_len: int = option(100, "time steps T")
    hidden_size: int = option(64, "H")
    input_size: int = option(16, "I")
    batch_size: int = option(16, "B")
    init: str = option("pytorch", "initialisation")
    scale: float = option(1.0, "multiply weight_hh by this after init (> 1 drives the Elman RNN to explode)")
    forget_bias: float | None = option(None, "LSTM forget-gate bias (none: the init's own; 1 in Jozefowicz et al. "
                                             "2015, larger keeps f ≈ 1 so the cell state carries the gradient far "
                                             "back)")
    seed: int = option(0, "random seed")
    clip: float | None = option(None, "also train on a memory task with and without clipping the gradient norm "
                                      "to this")
    clip_steps: int = option(60, "SGD steps of the clipping demonstration")
    clip_lr: float = option(0.1, "learning rate of the clipping demonstration")


@dataclass
class GradFlowResult:
    cell: str
    #: (T,) batch mean of ‖∂L/∂h_t‖ for L = Σ_b wᵀ h_T (‖w‖ = 1, so the last step has norm 1)
    grad_norms: Tensor
    #: (T-1,) mean of σ_max(∂s_t/∂s_{t-1}) over the first (up to) 2 sequences
    jacobian_norms: Tensor
    #: loss per training step without / with clipping (clipping demonstration only)
    loss_unclipped: list[float] = field(default_factory=list)
    loss_clipped: list[float] = field(default_factory=list)
    #: ‖∇θ‖ per training step before clipping, in the unclipped run
    grad_total_unclipped: list[float] = field(default_factory=list)

    @property
    def first_last_ratio(self) -> float:
        """‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖: ≪ 1 vanishing, ≫ 1 exploding."""
        return float(self.grad_norms[0] / self.grad_norms[-1])


def _fresh_layer(name: str, cfg: GradFlowConfig) -> Recurrent:
    kwargs = {"forget_bias": cfg.forget_bias} if cfg.forget_bias is not None and name == "lstm" else {}
    layer = make_layer(name, cfg.input_size, cfg.hidden_size, init=cfg.init, dtype=torch.float64, **kwargs)
    if not isinstance(layer, Recurrent):
        raise TypeError(f"cell {name!r} does not build an rnnkit.Recurrent layer")
    if cfg.scale != 1.0:
        with torch.no_grad():
            for pname, w in layer.named_parameters():
                if pname.startswith("weight_hh"):
                    w.mul_(cfg.scale)
    return layer


def fresh_gradient_flow(cfg: GradFlowConfig | None = None) -> list[GradFlowResult]:
    """Gradient flow of freshly initialised layers, one per name in ``cfg.cells``.

    Input x ~ N(0, 1) of shape (T, B, I); loss L = Σ_b wᵀ h_T with a random unit vector w,
    so ‖∂L/∂h_{T-1}‖ = 1 and ‖∂L/∂h_t‖ shows how much of it reaches step t. Computed in
    float64 so that vanishing gradients are not lost to rounding.
    """
    cfg = cfg or GradFlowConfig()
    if cfg.seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {cfg.seq_len}")
    if cfg.scale <= 0 or not math.isfinite(cfg.scale):
        raise ValueError(f"scale must be a positive number, got {cfg.scale}")
    if cfg.clip is not None and cfg.clip <= 0:
        raise ValueError(f"clip must be positive, got {cfg.clip}")
    results = []
    for name in cfg.cells:
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        layer = _fresh_layer(name, cfg)
        x = torch.randn(cfg.seq_len, cfg.batch_size, cfg.input_size, generator=gen, dtype=torch.float64)
        w = torch.randn(layer.cell.output_size, generator=gen, dtype=torch.float64)
        w = w / w.norm()

        def loss_fn(layer=layer, x=x, w=w) -> Tensor:
            out, _ = layer(x)
            return (out[-1] @ w).sum()

        record = gradient_flow(layer, loss_fn)
        norms = record.per_step()
        # a few sequences suffice for the Jacobian: one SVD per step and sequence is costly
        jn = jacobian_spectral_norms(layer, x[:, : min(cfg.batch_size, 2)]).mean(1)
        res = GradFlowResult(name, norms, jn)
        if cfg.clip is not None:
            res.loss_unclipped, res.grad_total_unclipped = _train_memory_task(name, cfg, None)
            res.loss_clipped, _ = _train_memory_task(name, cfg, cfg.clip)
        results.append(res)
    return results


def _train_memory_task(name: str, cfg: GradFlowConfig, clip: float | None) -> tuple[list[float], list[float]]:
    """SGD on a memory task (regress x[0, :, 0] from h_T, Hochreiter-style long lag), with or
    without clipping the gradient norm to ``clip`` (Pascanu et al. 2013); returns the loss
    and the gradient norm before clipping, per step. A non-finite loss ends the run."""
    torch.manual_seed(cfg.seed)
    layer = _fresh_layer(name, cfg)
    readout = nn.Linear(layer.cell.output_size, 1, dtype=torch.float64)
    params = [*layer.parameters(), *readout.parameters()]
    opt = torch.optim.SGD(params, lr=cfg.clip_lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses, totals = [], []
    for _ in range(cfg.clip_steps):
        x = torch.randn(cfg.seq_len, cfg.batch_size, cfg.input_size, generator=gen, dtype=torch.float64)
        out, _ = layer(x)
        loss = nn.functional.mse_loss(readout(out[-1]).squeeze(1), x[0, :, 0])
        opt.zero_grad()
        loss.backward()
        total = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
        losses.append(float(loss.detach()))
        totals.append(float(total))
        if not (math.isfinite(losses[-1]) and math.isfinite(totals[-1])):
            break
        opt.step()
    return losses, totals
