"""Building any registered recurrent layer by name and asking it its sizes.

Cell names come from :data:`rnnkit.LAYER_TYPES` and :func:`rnnkit.make_layer`; nothing
here knows the list. A layer's output width and its state layout are read by running
it once on a one-step dummy input, so families added later work unchanged.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from ..cells import Cell
from ..layers import LAYER_TYPES, make_layer


def cell_names() -> list[str]:
    """Every name ``make_layer`` accepts: the registry plus the ``irnn`` alias."""
    return sorted({*LAYER_TYPES, "irnn"})


def build_layer(name: str, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
    """``make_layer`` that also fills a required ``output_size`` (Jordan networks) with
    ``hidden_size``, so that every family can be used with a hidden size alone."""
    cls = LAYER_TYPES.get(name)
    if cls is not None and "output_size" not in kwargs:
        param = inspect.signature(cls.__init__).parameters.get("output_size")
        if param is not None and param.default is inspect.Parameter.empty:
            kwargs["output_size"] = hidden_size
    return make_layer(name, input_size, hidden_size, **kwargs)


def as_states(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A layer's final state as a tuple of (L·D, B, S) tensors, whatever the family."""
    return (state,) if isinstance(state, Tensor) else tuple(state)


def from_states(states: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """The inverse of :func:`as_states`: one tensor for one-state families."""
    return states[0] if len(states) == 1 else states


def probe_layer(layer: nn.Module, input_size: int) -> tuple[int, tuple[int, ...]]:
    """(output features, sizes of the state entries) of ``layer``, by one dummy step.

    A layer on the meta device (a model built only to learn its tensor shapes) cannot run;
    a :class:`~rnnkit.Recurrent` one answers from the sizes its cell states."""
    p = next(layer.parameters())
    if p.device.type == "meta" and isinstance(getattr(layer, "cell", None), Cell):
        return layer.cell.output_size * layer.num_directions, tuple(layer.cell.state_sizes())
    was_training = layer.training
    layer.eval()
    with torch.no_grad():
        out, state = layer(torch.zeros(1, 1, input_size, dtype=p.dtype, device=p.device))
    layer.train(was_training)
    return out.shape[-1], tuple(s.shape[-1] for s in as_states(state))
