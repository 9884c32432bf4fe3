"""The contract of cells whose state follows a linear recurrence and is read out by a map.

    u_t = project(x_t)                      the input projection, all steps in one GEMM
    s_t = a_t ⊙ s_{t-1} + b_t               (a_t, b_t) = coefficients(u_t)
    y_t = readout(s_t, u_t)                 the layer output (B, R)

LRU, RG-LRU, S6, QRNN and the linear SRU are of this form (:mod:`rnnkit.cells.lru`, ...).
The recurrence state s_t may have any shape per sequence ((H,), (N,) complex, (H, N))
and be complex; because a_t and b_t do not depend on s, all states are one parallel scan
over time (:func:`rnnkit.engine.scan.run_scan_cell`), and one step of the same formulas
(:meth:`ScanCell.step`) is the sequential form, for generation.

The layer state is ``(y, s)``: y the output at the last step, as every rnnkit layer's
state[0] is (a classifier reads it; it does not enter the recurrence), and s flattened to a
real (B, S) tensor (a complex s as its real then its imaginary half). A cell whose output
is its state (``readout_is_state``) has the one-entry state ``(s,)``.

BPTT of one step. Gradients of complex tensors are in PyTorch's convention
g = ∂L/∂Re + i ∂L/∂Im, in which the gradient through a product w = a ⊙ s is conj(a) ⊙ dw;
for real tensors conj is the identity. With ds the gradient reaching s_t (from step t+1)
and dy the one reaching y_t:

    ds += readout_backward(dy)          (and its du, e.g. through a skip term D x)
    da = ds ⊙ conj(s_{t-1})      db = ds      ds_{t-1} = conj(a_t) ⊙ ds
    du = coefficients_backward(da, db) + du of the readout

The cells' own parameters (everything but ``weight_ih``/``bias_ih``) get their gradients
accumulated into ``grads`` by the two ``*_backward`` methods.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Cell, Params, State


class ScanCell(Cell):
    """Base of the cells of the module docstring; subclasses define the coefficients and
    the readout (with their backward) and the shape of s."""

    state_names: tuple[str, ...] = ("y", "s")
    #: whether y_t = s_t (then the state is (s,) and there is no readout)
    readout_is_state: bool = False
    #: whether s is complex (stored in the layer state as real and imaginary halves)
    complex_state: bool = False
    #: whether the recurrence is linear in s, i.e. runs as a parallel scan
    parallel: bool = True
    #: index of the state entry whose gradient norm ‖∂L/∂s_t‖ the gradient record reports
    memory_state: int = -1

    # -- shapes -------------------------------------------------------------------------------
    def scan_shape(self) -> tuple[int, ...]:
        """Shape of s_t for one sequence (complex entries count once)."""
        return (self.hidden_size,)

    def input_width(self, input_size: int) -> int:
        """G, the width of the input projection u."""
        return self.gates * self.hidden_size

    def state_sizes(self) -> tuple[int, ...]:
        size = math.prod(self.scan_shape()) * (2 if self.complex_state else 1)
        return (size,) if self.readout_is_state else (self.output_size, size)

    def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
        G = self.input_width(input_size)
        shapes: dict[str, tuple[int, ...]] = {"weight_ih": (G, input_size)}
        if self.bias:
            shapes["bias_ih"] = (G,)
        return shapes

    def input_bias(self, p: Params) -> Tensor | None:
        return p["bias_ih"] if self.bias else None

    def project(self, x: Tensor, p: Params) -> Tensor:
        """u = x W_ihᵀ + b for all steps at once: (..., I) → (..., G)."""
        return F.linear(x, p["weight_ih"], self.input_bias(p))

    # -- s between its own shape and the layer state's real (B, S) ------------------------------
    def to_scan(self, flat: Tensor) -> Tensor:
        """(..., S) real → (..., *scan_shape) (complex for a complex state). The map is an
        isometry, so it is also the backward of :meth:`from_scan`."""
        if self.complex_state:
            n = flat.shape[-1] // 2
            flat = torch.complex(flat[..., :n], flat[..., n:])
        return flat.unflatten(-1, self.scan_shape()) if len(self.scan_shape()) > 1 else flat

    def from_scan(self, s: Tensor) -> Tensor:
        """The inverse of :meth:`to_scan` (and its backward)."""
        if len(self.scan_shape()) > 1:
            s = s.flatten(-len(self.scan_shape()))
        return torch.cat((s.real, s.imag), -1) if self.complex_state else s

    # -- the math, for any leading shape (..., G) ------------------------------------------------
    def coefficients(self, u: Tensor, p: Params) -> tuple[Tensor, Tensor, tuple]:
        """(a, b, cache) of s' = a ⊙ s + b, each (..., *scan_shape)."""
        raise NotImplementedError

    def coefficients_backward(self, da: Tensor, db: Tensor, cache: tuple, p: Params, grads: Params) -> Tensor:
        """du (..., G) from the gradients of a and b; parameter gradients into ``grads``."""
        raise NotImplementedError

    def readout(self, s: Tensor, u: Tensor, cache: tuple, p: Params) -> tuple[Tensor, tuple]:
        """(y (..., R), cache) from s (..., *scan_shape) and u."""
        raise NotImplementedError

    def readout_backward(self, dy: Tensor, cache: tuple, p: Params, grads: Params) -> tuple[Tensor, Tensor | None]:
        """(ds, du or None) from dy."""
        raise NotImplementedError

    # -- one step, for generation and the sequential loop ----------------------------------------
    def step(self, xw: Tensor, state: State, p: Params, rmask: Tensor | None) -> tuple[State, tuple]:
        s_prev = self.to_scan(state[-1])
        a, b, cache = self.coefficients(xw, p)
        s = a * s_prev + b
        if self.readout_is_state:
            return (self.from_scan(s),), (s_prev, a, cache, None)
        y, rcache = self.readout(s, xw, cache, p)
        return (y, self.from_scan(s)), (s_prev, a, cache, rcache)

    def step_backward(self, dstate, cache, p, grads, rmask, memory_grad: list | None = None):
        """BPTT of one step (module docstring). ``memory_grad``: a list to which the total
        gradient of s_t (from step t+1 and from y_t) is appended, for the gradient record."""
        s_prev, a, coeff_cache, rcache = cache
        ds = self.to_scan(dstate[-1])
        du_readout = None
        if not self.readout_is_state:
            ds_y, du_readout = self.readout_backward(dstate[0], rcache, p, grads)
            ds = ds + ds_y
        if memory_grad is not None:
            memory_grad.append(self.from_scan(ds))
        da = ds * s_prev.conj()  # s' = a ⊙ s + b
        ds_prev = ds * a.conj()
        du = self.coefficients_backward(da, ds, coeff_cache, p, grads)
        if du_readout is not None:
            du = du + du_readout
        if self.readout_is_state:
            return du, (self.from_scan(ds_prev),), du
        return du, (torch.zeros_like(dstate[0]), self.from_scan(ds_prev)), du
