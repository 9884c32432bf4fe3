"""Activation functions with their derivatives, in one place.

Every derivative is written in terms of the activation's *output* y = φ(a), which is
what the forward step keeps for the backward (no pre-activation needs storing).
``backward(dy, y)`` returns dy ⊙ φ'(a) in one fused kernel where PyTorch has one.
Both take an optional ``out=`` tensor to write into (a preallocated buffer of the
engine's :class:`~rnnkit.cells.base.Workspace`, possibly the input itself); ``None``
allocates, which is what the autograd reference path uses:

    sigmoid              y = 1 / (1 + e^-a)           dy/da = y (1 - y)
    tanh                 y = tanh a                   dy/da = 1 - y²
    relu                 y = max(a, 0)                dy/da = [y > 0]
    hard_sigmoid         y = relu6(a + 3) / 6         dy/da = [0 < y < 1] / 6
                           = clip(a/6 + 1/2, 0, 1)    (torch.nn.Hardsigmoid, Keras 3)
    hard_sigmoid_keras2  y = clip(0.2 a + 0.5, 0, 1)  dy/da = 0.2 [0 < y < 1]   (Keras 2)
    identity             y = a                        dy/da = 1

An :class:`Activation` pickles as its name (``get_activation(name)`` when loaded), so a
layer that holds one pickles, deep-copies and survives ``torch.save(module)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass(frozen=True)
class Activation:
    """An activation φ and its backward dy ⊙ φ'(a), expressed through the output y = φ(a)."""

    name: str
    #: forward(a, out=None) -> φ(a)
    forward: Callable[..., Tensor]
    #: backward(dy, y, out=None) -> dy ⊙ φ'(a)
    backward: Callable[..., Tensor]

    def __reduce__(self):
        return get_activation, (self.name,)

    def __setstate__(self, state: dict) -> None:
        # Only a pickle written before Activations pickled by name comes here (its state
        # holds the functions). "hard_sigmoid" then meant Keras 2's form: keep that meaning.
        name = state["name"]
        known = get_activation(_PICKLED_BEFORE_RENAME.get(name, name))
        for f in fields(self):
            object.__setattr__(self, f.name, getattr(known, f.name))


#: what a name meant in pickles that hold the functions (written before the rename)
_PICKLED_BEFORE_RENAME = {"hard_sigmoid": "hard_sigmoid_keras2"}

_aten = torch.ops.aten


def _sigmoid_backward(dy: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    # sigmoid_backward(dy, y) = dy ⊙ y(1 - y)
    return _aten.sigmoid_backward(dy, y) if out is None else _aten.sigmoid_backward.grad_input(dy, y, grad_input=out)


def _tanh_backward(dy: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    # tanh_backward(dy, y) = dy ⊙ (1 - y²)
    return _aten.tanh_backward(dy, y) if out is None else _aten.tanh_backward.grad_input(dy, y, grad_input=out)


def _relu(a: Tensor, out: Tensor | None = None) -> Tensor:
    return torch.relu(a) if out is None else torch.clamp_min(a, 0.0, out=out)


def _relu_backward(dy: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    # threshold_backward(dy, y, 0) = dy ⊙ [y > 0]
    if out is None:
        return _aten.threshold_backward(dy, y, 0)
    return _aten.threshold_backward.grad_input(dy, y, 0, grad_input=out)


def _hard_sigmoid(a: Tensor, out: Tensor | None = None) -> Tensor:
    # relu6(a + 3) / 6: F.hardsigmoid's kernel into a buffer; out of place the same arithmetic
    # in differentiable steps (aten's hardsigmoid_backward has no derivative: double backward)
    return (a + 3).clamp(0, 6) / 6 if out is None else _aten.hardsigmoid.out(a, out=out)


def _hard_sigmoid_backward(dy: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    d = dy * (((y > 0) & (y < 1)).to(y.dtype) / 6)  # [-3 < a < 3] / 6
    return d if out is None else out.copy_(d)


def _hard_sigmoid_keras2(a: Tensor, out: Tensor | None = None) -> Tensor:
    y = (0.2 * a + 0.5).clamp(0.0, 1.0)
    return y if out is None else out.copy_(y)


def _hard_sigmoid_keras2_backward(dy: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    d = dy * (0.2 * ((y > 0) & (y < 1)).to(y.dtype))
    return d if out is None else out.copy_(d)


def _identity(a: Tensor, out: Tensor | None = None) -> Tensor:
    return a if out is None or out is a else out.copy_(a)


def _identity_backward(dy: Tensor, y: Tensor, out: Tensor | None = None) -> Tensor:
    return dy if out is None else out.copy_(dy)


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_backward),
    "tanh": Activation("tanh", torch.tanh, _tanh_backward),
    "relu": Activation("relu", _relu, _relu_backward),
    "hard_sigmoid": Activation("hard_sigmoid", _hard_sigmoid, _hard_sigmoid_backward),
    "hard_sigmoid_keras2": Activation("hard_sigmoid_keras2", _hard_sigmoid_keras2, _hard_sigmoid_keras2_backward),
    "identity": Activation("identity", _identity, _identity_backward),
}


def get_activation(name: str) -> Activation:
    """Look an activation up by name; raises ValueError listing the known names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
