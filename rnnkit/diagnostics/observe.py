"""Watch the forward pass: per-step states and gate activations of every rnnkit layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..layers import Recurrent


@dataclass
class Observation:
    """What :func:`observe` saw during the forward passes inside its ``with`` block.

    Keys are ``"<module name>.l<layer>[_reverse]"``, the naming of
    :class:`rnnkit.GradientRecord` (e.g. ``"rnn.l0"``, ``"encoder.l1_reverse"``).

    - ``states[key][name]``: (T, B, S) the state entry ``name`` ("h", "c", "y") after each step;
    - ``gates[key][name]``: (T, B, H) the gate activation ``name`` at each step
      ({"i", "f", "g", "o"} for the LSTM, {"r", "z", "n"} for the GRU; none for Elman/Jordan).

    Steps are in time order (index t is input position t, also for reverse directions).
    A later forward pass inside the block replaces the record of an earlier one.
    """

    states: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    gates: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    #: the layer module each key belongs to
    layers: dict[str, Recurrent] = field(default_factory=dict)

    def hidden(self, key: str | None = None) -> Tensor:
        """(T, B, R) the output state (``h``; ``y`` for Jordan) of one layer (default: the first)."""
        key = self._key(key)
        return next(iter(self.states[key].values()))

    def _key(self, key: str | None) -> str:
        if not self.states:
            raise ValueError("nothing was observed: run a forward pass of the model inside the with block")
        if key is None:
            return next(iter(self.states))
        if key not in self.states:
            raise KeyError(f"no layer {key!r} was observed; observed: {sorted(self.states)}")
        return key


class _Collector:
    """Receives the engine's per-step callbacks of one layer and stacks them at the end."""

    def __init__(self, obs: Observation, name: str, layer: Recurrent):
        self.obs, self.name, self.layer = obs, name, layer
        self.steps: dict[str, dict[int, tuple]] = {}

    def __call__(self, key: str, t: int, state: tuple, cache: tuple) -> None:
        gates = self.layer.cell.gate_values(cache)
        if t in self.steps.get(key, {}):  # a new forward pass starts: drop the previous one
            self.steps = {}
        per_t = self.steps.setdefault(key, {})
        per_t[t] = (tuple(s.detach() for s in state), {n: g.detach() for n, g in gates.items()})

    def finish(self) -> None:
        names = self.layer.cell.state_names
        for key, per_t in self.steps.items():
            order = sorted(per_t)
            full = f"{self.name}.{key}"
            self.obs.states[full] = {
                n: torch.stack([per_t[t][0][k] for t in order]) for k, n in enumerate(names)  # (T, B, S)
            }
            gate_names = per_t[order[0]][1].keys()
            self.obs.gates[full] = {g: torch.stack([per_t[t][1][g] for t in order]) for g in gate_names}
            self.obs.layers[full] = self.layer


@contextmanager
def observe(module: nn.Module) -> Iterator[Observation]:
    """Record states and gate activations of every rnnkit layer inside ``module``.

    ::

        with rnnkit.diagnostics.observe(model) as obs:
            model(x)
        obs.states["rnn.l0"]["c"]    # (T, B, H) LSTM cell state of layer 0
        obs.gates["rnn.l0"]["f"]     # (T, B, H) forget gate

    The observation is filled in when the block exits. Tensors are detached copies.
    """
    layers = [(name or type(m).__name__.lower(), m) for name, m in module.named_modules()
              if isinstance(m, Recurrent)]
    if not layers:
        raise ValueError(f"{type(module).__name__} contains no rnnkit recurrent layer to observe")
    obs = Observation()
    collectors = []
    for name, m in layers:
        if m._observe is not None:
            raise RuntimeError(f"layer {name!r} is already being observed (nested observe blocks)")
        c = _Collector(obs, name, m)
        m._observe = c
        collectors.append(c)
    try:
        yield obs
    finally:
        for (_, m), c in zip(layers, collectors):
            m._observe = None
            c.finish()
