"""Gate saturation (Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding
Recurrent Networks", §4.3): how often each gate unit is nearly closed or nearly open."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .observe import Observation

#: the gates with values in (0, 1); LSTM "g" and GRU "n" are tanh candidates, not gates
SIGMOID_GATES = ("i", "f", "o", "r", "z")
#: a gate value below LEFT is left-saturated (closed), above RIGHT right-saturated (open)
LEFT, RIGHT = 0.1, 0.9


@dataclass
class GateSaturation:
    """Per gate unit, the fraction of steps with value < ``left`` and > ``right``.

    ``left[name]``, ``right[name]``: (H,) fractions in [0, 1], gate name like "f".
    """

    left: dict[str, Tensor]
    right: dict[str, Tensor]


def gate_saturation(gates: dict[str, Tensor], mask: Tensor | None = None,
                    left: float = LEFT, right: float = RIGHT) -> GateSaturation:
    """Saturation fractions of every unit of every gate.

        left_u  = #{(t, b) : g_{t,b,u} < left}  / #steps
        right_u = #{(t, b) : g_{t,b,u} > right} / #steps

    Args:
        gates: name → (T, B, H) gate activations (e.g. ``Observation.gates[key]``).
        mask: optional (T, B) bool, True at the steps that count (inside each sequence's length).
    """
    if not gates:
        raise ValueError("no gate values given: Elman and Jordan cells have no gates")
    if not 0.0 <= left < right <= 1.0:
        raise ValueError(f"thresholds must satisfy 0 <= left < right <= 1, got left={left} right={right}")
    out_l, out_r = {}, {}
    for name, g in gates.items():
        if g.dim() != 3:
            raise ValueError(f"gate {name!r} must be (T, B, H), got shape {tuple(g.shape)}")
        w = torch.ones(g.shape[:2], dtype=g.dtype, device=g.device) if mask is None else mask.to(g.dtype)
        if tuple(w.shape) != tuple(g.shape[:2]):
            raise ValueError(f"mask must have shape {tuple(g.shape[:2])}, got {tuple(w.shape)}")
        n = w.sum()
        if n == 0:
            raise ValueError("mask selects no step")
        w = w.unsqueeze(2)  # (T, B, 1)
        out_l[name] = ((g < left).to(g.dtype) * w).sum((0, 1)) / n  # (H,)
        out_r[name] = ((g > right).to(g.dtype) * w).sum((0, 1)) / n
    return GateSaturation(out_l, out_r)


def observed_gate_saturation(obs: Observation, left: float = LEFT, right: float = RIGHT) -> dict[str, GateSaturation]:
    """:func:`gate_saturation` of the sigmoid gates (:data:`SIGMOID_GATES`) of every observed
    layer that has gates, by layer key."""
    out = {}
    for key, g in obs.gates.items():
        sig = {n: v for n, v in g.items() if n in SIGMOID_GATES}
        if sig:
            out[key] = gate_saturation(sig, left=left, right=right)
    return out
