"""The layer registry: every recurrent layer by the name the CLI and configs use (``--cell NAME``).

A family registers once, with one line (in ``rnnkit/layers/__init__.py``)::

    register("lstm", LSTM)                     # a layer class
    register("irnn", irnn)                     # a preset: a function building a layer
    register("cifg", CIFGCell)                 # a cell class: a Recurrent stack of it

and every command that takes ``--cell``, every model and :func:`build` then know it. A
factory is called as ``factory(input_size, hidden_size, **options)``. A cell class is
wrapped: the options of :class:`~rnnkit.layers.recurrent.Recurrent` (``num_layers``,
``dropout``, ``zoneout``, ...) go to the layer, the others to the cell
(``cell_type(hidden_size, bias, **others)``).

Every layer built here answers its sizes without running: ``layer.output_size`` (features
per step of its output) and ``layer.state_sizes`` (the last dimension of each state entry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ..cells.base import Cell
from .recurrent import Recurrent

#: factory(input_size, hidden_size, **options) -> layer
Factory = Callable[..., nn.Module]

_FACTORIES: dict[str, Factory] = {}

#: the layer class of every name registered with a class (a cell class registers
#: :class:`~rnnkit.layers.recurrent.Recurrent`); presets such as ``irnn`` are in :func:`names`
#: only. For new code :func:`names` and :func:`build`.
LAYER_TYPES: dict[str, type[nn.Module]] = {}

#: the keyword options that go to :class:`Recurrent` when a cell class is registered
_LAYER_OPTIONS = ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "device", "dtype",
                  "learn_initial_state", "recurrent_dropout", "zoneout", "init", "forget_bias", "backend")


def _cell_layer(cell_type: type[Cell]) -> Factory:
    def build_layer(input_size: int, hidden_size: int, **options) -> nn.Module:
        layer_options = {k: options.pop(k) for k in _LAYER_OPTIONS if k in options}
        cell = cell_type(hidden_size, layer_options.get("bias", True), **options)
        return Recurrent(cell, input_size, **layer_options)

    build_layer.__doc__ = f"A :class:`Recurrent` stack of :class:`{cell_type.__qualname__}`."
    return build_layer


def register(name: str, factory: Factory | type[Cell], *, aliases: Sequence[str] = (),
             layer_type: type[nn.Module] | None = None) -> None:
    """Register ``factory`` under ``name`` (and each of ``aliases``).

    factory: a layer class, a function ``(input_size, hidden_size, **options) -> layer``, or a
        :class:`~rnnkit.cells.base.Cell` class (see the module docstring).
    layer_type: the class a function builds, for :data:`LAYER_TYPES` (a class factory is its
        own; a cell class gives :class:`Recurrent`; a preset leaves it out).
    """
    if isinstance(factory, type) and issubclass(factory, Cell):
        factory, layer_type = _cell_layer(factory), Recurrent
    elif isinstance(factory, type):
        layer_type = layer_type or factory
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be a layer class, a cell class or a function, got "
                        f"{type(factory).__name__}")
    for key in (name, *aliases):
        if key in _FACTORIES:
            raise ValueError(f"a layer named {key!r} is registered already")
        _FACTORIES[key] = factory
        if layer_type is not None:
            LAYER_TYPES[key] = layer_type


def names() -> list[str]:
    """Every registered name, sorted (what ``--cell`` accepts)."""
    return sorted(_FACTORIES)


def build(name: str, input_size: int, hidden_size: int, **options) -> nn.Module:
    """Build a layer by its registered name, e.g. ``build("lstm", 64, 256, num_layers=2,
    layer_norm=True)``."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; expected one of {names()}") from None
    return factory(input_size, hidden_size, **options)


def make_layer(name: str, input_size: int, hidden_size: int, **kwargs) -> nn.Module:
    """Build a layer by its registered name (:func:`build`), e.g. ``make_layer("lstm", 64, 256,
    num_layers=2, layer_norm=True)``; ``make_layer("irnn", ...)`` is the ReLU Elman RNN with
    identity init (Le et al. 2015)."""
    return build(name, input_size, hidden_size, **kwargs)
