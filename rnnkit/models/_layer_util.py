"""Building any registered recurrent layer by name and asking it its sizes: thin wrappers
over :mod:`rnnkit.layers.registry`, kept for the callers that import them from here."""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import registry


def cell_names() -> list[str]:
    """Every name ``make_layer`` accepts (:func:`rnnkit.layers.registry.names`)."""
    return registry.names()


def build_layer(name: str, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
    """:func:`rnnkit.layers.registry.build` (the Jordan network's ``output_size`` defaults to
    ``hidden_size`` in its registered factory)."""
    return registry.build(name, input_size, hidden_size, **kwargs)


def as_states(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A layer's final state as a tuple of (L·D, B, S) tensors, whatever the family."""
    return (state,) if isinstance(state, Tensor) else tuple(state)


def from_states(states: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """The inverse of :func:`as_states`: one tensor for one-state families."""
    return states[0] if len(states) == 1 else states


def probe_layer(layer: nn.Module, input_size: int) -> tuple[int, tuple[int, ...]]:
    """(output features, sizes of the state entries) of ``layer``: its ``output_size`` and
    ``state_sizes`` (no forward; ``input_size`` is not needed any more)."""
    return layer.output_size, tuple(layer.state_sizes)
