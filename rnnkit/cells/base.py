"""The contract between a cell and the BPTT engine.

A cell is the mathematics of one direction of one layer. It owns no tensors: the layer
owns the parameters and passes them in as a dict ``p`` keyed by the names of
:meth:`Cell.param_shapes` (``weight_ih``, ``weight_hh``, ``bias_ih``, ...).

The engine computes the input projection of every step at once,

    xw = x W_ihᵀ (+ b_ih (+ b_hh if fold_bias_hh))          # (T, B, G)

optionally transformed by :meth:`Cell.prepare_input` (layer norm of the input
projection), then runs the time loop calling :meth:`Cell.step` and, in reverse,
:meth:`Cell.step_backward`. A state is a tuple of tensors whose first entry is the
layer's output at that step and the tensor the recurrent weight multiplies.

``step_backward`` returns the gradient of the step's input projection ``dxw``, of the
previous state, and of the recurrent pre-activation ``drec`` (the output of the
recurrent GEMM), so that the engine forms ``dW_hh`` with one GEMM over all steps.
Small cell-specific parameters (peepholes, layer-norm gains, projection) are
accumulated by the cell into ``grads`` as the loop runs.

Buffers. A cell that sets ``uses_workspace = True`` takes a :class:`Workspace` as the
keyword ``ws`` of ``step`` and ``step_backward`` and writes the tensors it keeps for
the backward (gates, new state) into ``ws.view(name, like)``: step t's slice of one
(T, ...) buffer per name, allocated once per sequence. Tensors kept across steps then
need no allocation per step (on CPU a fresh allocation costs page faults that take
longer than the arithmetic), and the engine can hand the state's first entry out as
the layer output without a copy. Under autograd (the reference path) the workspace is
:data:`NO_WORKSPACE`, whose ``view`` and ``reuse`` return ``None``, so the same code
runs out of place: ``torch.sigmoid(a, out=None)`` allocates as usual.

Native loops. A family with a C++ time loop (``rnnkit/cells/native/``) says so through
:meth:`Cell.native_binding`: None when its options have no native code (the engine then
runs the Python loop), else a :class:`NativeBinding` that calls the family's entry points
and assembles its parameter gradients. The engine (:mod:`rnnkit.engine.native`) does the
rest, the same for every family: the input projection, the masks of the loop options,
saving the tensors the binding names, the double backward and dx, dW_ih. When no gradient
is needed it calls the binding's forward-only :meth:`NativeBinding.infer` instead (or, where
the binding hands the call to a library kernel that computes it exactly,
:meth:`NativeBinding.library_infer`), and generation runs a whole stack one step at a time
through :meth:`NativeBinding.step_layer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Params = dict[str, Tensor]
State = tuple[Tensor, ...]


class Workspace:
    """Per-step output buffers for one run of the time loop (see the module docstring).

    ``view(name, like)`` returns step ``t``'s (``like``-shaped) slice of a (T, *like.shape)
    buffer, made on first use; ``reuse(x)`` returns ``x`` itself (write the result over
    the input, e.g. an activation over its pre-activation held in a buffer). The engine
    sets ``t`` before each step and may :meth:`adopt` its own buffers (the layer output,
    the gradient of the input projection) so that the cell writes straight into them.
    """

    active = True

    def __init__(self, T: int, alloc: Callable[..., Tensor] | None = None):
        self.T = T
        self.t = 0
        self.buffers: dict[str, Tensor] = {}
        self._steps: dict[str, list[Tensor]] = {}
        #: alloc(shape, dtype=, device=) makes a buffer (torch.empty, or the engine's pool)
        self._alloc = alloc or torch.empty

    def adopt(self, name: str, buffer: Tensor) -> None:
        """Use ``buffer`` (T, ...) for ``name``."""
        self.buffers[name] = buffer
        self._steps[name] = list(buffer.unbind(0))

    def view(self, name: str, like: Tensor, shape: tuple[int, ...] | None = None) -> Tensor | None:
        steps = self._steps.get(name)
        if steps is None:
            size = tuple(like.shape) if shape is None else shape
            self.adopt(name, self._alloc((self.T, *size), dtype=like.dtype, device=like.device))
            steps = self._steps[name]
        return steps[self.t]

    def reuse(self, x: Tensor) -> Tensor | None:
        return x

    def release(self) -> dict[str, Tensor]:
        """Forget the per-step views and hand the buffers back to the caller."""
        buffers, self.buffers, self._steps = self.buffers, {}, {}
        return buffers

    def out(self, name: str, like: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
        """Like :meth:`view`, but a fresh tensor where there is no workspace."""
        v = self.view(name, like, shape)
        if v is None:
            v = torch.empty(like.shape if shape is None else shape, dtype=like.dtype, device=like.device)
        return v


class _NoWorkspace(Workspace):
    """The workspace of the autograd path: every result is a fresh tensor."""

    active = False

    def __init__(self):
        super().__init__(0)

    def view(self, name: str, like: Tensor, shape: tuple[int, ...] | None = None) -> Tensor | None:
        return None

    def reuse(self, x: Tensor) -> Tensor | None:
        return None


NO_WORKSPACE: Workspace = _NoWorkspace()


class NativeBinding:
    """A cell family's binding to its native time loop, for one cell's options.

    The engine's native Function (:class:`rnnkit.engine.native._Native`) calls
    :meth:`forward` with the prepared input projection and :meth:`backward` with what
    :meth:`forward` asked to keep; the extension module ``ext`` is passed in (the entry
    points of ``rnnkit/cells/native/common.h``), so a binding imports nothing of the engine.
    ``masks`` has ``rmask`` (B, S_0), ``valid`` (T, B) and ``zoneout`` (one (T, B, S_k) per
    state entry), each None where off (:class:`rnnkit.engine.native.NativeMasks`).
    """

    #: whether the family has a native training loop (:meth:`forward` keeping what
    #: :meth:`backward` reads); False for a family with only a forward-only loop (the Elman
    #: cell), whose training runs the Python loop
    trains: bool = True
    #: whether the loop prepares its input itself: then the engine hands :meth:`forward` (and
    #: :meth:`infer`) x W_ihᵀ + :meth:`Cell.input_bias` without :meth:`Cell.prepare_input`, and
    #: :meth:`backward` returns the gradient of that and the gradients of the parameters
    #: ``prepare_input`` would have used (the layer-norm LSTM and GRU normalize their input
    #: rows inside the loop, fused with the gate pass)
    prepares_input: bool = False

    def __init__(self, cell: Cell):
        self.cell = cell

    def infer(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool) -> dict[str, Tensor]:
        """The forward-only loop, run when no gradient is needed (``torch.no_grad()``, or
        nothing requires one): it keeps nothing for a backward. xw: (T, B, G) contiguous (the
        loop may overwrite it). Returns, by name, ``"out"`` (T, B, R) and the final state
        under the cell's ``state_names``.

        By default the training loop's :meth:`forward` without keeping anything; a family
        with a leaner loop for some of its options overrides this."""
        out, state_n, _ = self.forward(ext, xw, state0, p, masks, reverse, False)
        return {"out": out, **dict(zip(self.cell.state_names, state_n))}

    def library_infer(self, x: Tensor, state0: State, p: Params, masks,
                      reverse: bool) -> tuple[Tensor, State] | None:
        """A library's fused kernel that computes this forward-only call exactly, input
        projection included, or None (the default: then :meth:`infer` runs). Asked first, for a
        call that needs no gradient; x: (T, B, I) (not projected), state0: (B, S_k) each.
        Returns out (T, B, R) and the final state. A family overrides this where a library
        kernel is measured faster than its own loop for some of its options (the LSTM hands
        torch.nn.LSTM's configurations to ``torch.lstm``)."""
        return None

    def step_layer(self, p: Params) -> tuple[str, list[Tensor | None]] | None:
        """This layer as one layer of the extension's ``StackStep`` (one generation step of a
        whole stack, ``rnnkit/cells/native/infer.h``): its kind and its weights in the order
        infer.h lists for that kind; None where the family has no native step for these
        options (generation then runs the layer's forward per step)."""
        return None

    def forward(self, ext, xw: Tensor, state0: State, p: Params, masks, reverse: bool,
                keep: bool) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        """The loop forward. xw: (T, B, G) contiguous (the loop may overwrite it).

        Returns out (T, B, R), the final state and, by name, the tensors the backward
        reads (empty when not ``keep``)."""
        raise NotImplementedError

    def backward(self, ext, saved: dict[str, Tensor | None], dout: Tensor | None, dstate: State, p: Params,
                 masks, reverse: bool) -> tuple[Tensor, State, Params]:
        """The loop backward. dout: (T, B, R) or None; dstate: the final state's gradients.

        Returns d(xw) (T, B, G) (before :meth:`Cell.prepare_input_backward`, or of the raw
        projection with :attr:`prepares_input`), the initial state's gradients and the
        gradients of every parameter but ``weight_ih``."""
        raise NotImplementedError


class Cell:
    """Base class of every cell family; see the module docstring for the contract."""

    #: G / hidden_size: width of the input projection in units of hidden_size
    gates: int = 1
    #: whether b_hh is added to the input projection (True) or inside the step (False)
    fold_bias_hh: bool = True
    #: whether drec is the same tensor as dxw (then the engine stores it once)
    drec_is_dxw: bool = True
    #: names of state entries, e.g. ("h", "c")
    state_names: tuple[str, ...] = ("h",)
    #: whether step/step_backward take ``ws=`` (a :class:`Workspace`)
    uses_workspace: bool = False

    def __init__(self, hidden_size: int, bias: bool = True):
        if hidden_size <= 0:
            raise ValueError(f"hidden_size must be positive, got {hidden_size}")
        self.hidden_size = hidden_size
        self.bias = bias

    # -- shapes ---------------------------------------------------------------------------
    @property
    def output_size(self) -> int:
        """Size of state[0]: the layer output and the recurrent input."""
        return self.hidden_size

    def state_sizes(self) -> tuple[int, ...]:
        return (self.output_size,)

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        """Parameter names (without layer suffix) and shapes, in state_dict order."""
        G, R = self.gates * self.hidden_size, self.output_size
        shapes = {"weight_ih": (G, input_size), "weight_hh": (G, R)}
        if self.bias:
            shapes.update(bias_ih=(G,), bias_hh=(G,))
        return shapes

    # -- input projection hooks -------------------------------------------------------------
    def input_bias(self, p: Params) -> Tensor | None:
        """The bias added to x W_ihᵀ for all steps at once."""
        if not self.bias:
            return None
        return p["bias_ih"] + p["bias_hh"] if self.fold_bias_hh else p["bias_ih"]

    def prepare_input(self, xw: Tensor, p: Params) -> tuple[Tensor, object]:
        """Transform the (T, B, G) input projection before the loop; identity by default."""
        return xw, None

    def prepare_input_backward(self, dxw: Tensor, ctx: object, p: Params, grads: Params) -> Tensor:
        return dxw

    def bias_grads(self, dxw_sum: Tensor, drec_sum: Tensor, grads: Params) -> None:
        """Distribute the summed gradients of the input projection and the recurrent
        pre-activation to the biases."""
        if self.bias:
            grads["bias_ih"] = dxw_sum
            grads["bias_hh"] = dxw_sum if self.fold_bias_hh else drec_sum

    def weight_hh_grad(self, drec: Tensor, rec_in: Tensor) -> Tensor:
        """dW_hh from all steps at once: drec (N, G), rec_in (N, R) → (G, R)."""
        return drec.t() @ rec_in

    # -- the step ---------------------------------------------------------------------------
    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        """One step forward. xw: (B, G); rmask: (B, R) variational dropout mask or None.

        Returns the new state and a cache whose first entry is the recurrent input
        (the tensor the recurrent weight multiplied)."""
        raise NotImplementedError

    def step_backward(
        self, dstate: State, cache: tuple, p: Params, grads: Params, rmask: Tensor | None
    ) -> tuple[Tensor, State, Tensor]:
        """BPTT through one step: (dxw (B, G), dstate_prev, drec (B, G))."""
        raise NotImplementedError

    def gate_values(self, cache: tuple) -> dict[str, Tensor]:
        """The gate activations of one step, by name (e.g. {"i": (B, H), ...}); empty
        for cells without gates. Used by the diagnostics."""
        return {}

    @property
    def has_backward(self) -> bool:
        return type(self).step_backward is not Cell.step_backward

    def native_binding(self) -> NativeBinding | None:
        """This cell's binding to a native time loop for its options, or None (no native
        code: the engine runs the Python loop). See :class:`NativeBinding`."""
        return None

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def accumulate(grads: Params, name: str, value: Tensor) -> None:
    """grads[name] += value, creating the entry on first use."""
    if name in grads:
        grads[name].add_(value)
    else:
        grads[name] = value.clone()


def differentiable_backward(forward: Callable[..., Sequence[Tensor]], inputs: Sequence[Tensor],
                            needs: Sequence[bool], grad_outputs: Sequence[Tensor | None]) -> tuple[Tensor | None, ...]:
    """The backward of a hand-written ``torch.autograd.Function`` when autograd asks for a
    differentiable one (``create_graph=True``: gradient penalties, MAML, Hessian-vector
    products). A hand-written backward reads tensors saved without history, so a second
    derivative through it would be wrong; instead ``forward``, the same function of the
    Function's tensor ``inputs`` written with differentiable operations (the saved inputs,
    which keep their history), runs again under autograd and is differentiated with
    ``create_graph=True``: the gradients returned are differentiable to any order.

    forward(*inputs) -> the Function's outputs; needs: which inputs want a gradient
    (``ctx.needs_input_grad`` at their positions); grad_outputs: the gradients reaching the
    outputs, None for an output not used. Returns one gradient per input (None where not
    needed, or where no output depends on it)."""
    with torch.enable_grad():
        # each input as a node of its own, so that a gradient never flows into one input
        # through another input's history (e.g. an h0 computed from x)
        own = [t.view_as(t) if need else t for t, need in zip(inputs, needs)]
        outputs = forward(*own)
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if g is not None and o.requires_grad]
        wanted = [t for t, need in zip(own, needs) if need]
        grads = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=True,
                                    allow_unused=True) if pairs else [None] * len(wanted)
    found = iter(grads)
    return tuple(next(found) if need else None for need in needs)


# -- layer normalization (Ba, Kiros & Hinton 2016) ---------------------------------------------
# y = γ ⊙ (a - μ) / σ + β over the last dimension, σ = sqrt(var(a) + ε).
# Its backward, with â = (a - μ)/σ and ĝ = γ ⊙ dy:
#   da = (ĝ - mean(ĝ) - â ⊙ mean(ĝ ⊙ â)) / σ,   dγ = Σ dy ⊙ â,   dβ = Σ dy
# Both directions run as PyTorch's fused layer-norm kernels (one call each per step).
LN_EPS = 1e-5


def layer_norm(a: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, tuple]:
    """Layer norm over the last dimension; returns (y, cache)."""
    y, mean, rstd = torch.native_layer_norm(a, (a.shape[-1],), weight, bias, LN_EPS)
    return y, (a, mean, rstd)


def layer_norm_backward(
    dy: Tensor, cache: tuple, weight: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(da, dγ, dβ) for :func:`layer_norm`."""
    a, mean, rstd = cache
    da, dw, db = torch.ops.aten.native_layer_norm_backward(
        dy, a, (a.shape[-1],), mean, rstd, weight, bias, (True, True, bias is not None)
    )
    return da, dw, db
