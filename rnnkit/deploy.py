"""Deployment: the equivalent ``torch.nn`` module of an rnnkit layer or model.

``torch.export``, ONNX (``torch.onnx.export``), TorchScript and runtimes that know
``torch.nn.LSTM/GRU/RNN`` (their ``aten::lstm``/``gru``/``rnn_*`` ops) do not know rnnkit's
hand-written time loop. :func:`to_torch` hands them the same computation as torch.nn
modules with the same weights, for the configurations torch.nn has:

    rnnkit.RNN   (tanh or relu)                          → torch.nn.RNN
    rnnkit.LSTM  (proj_size allowed)                     → torch.nn.LSTM
    rnnkit.GRU   (reset_after=True, torch's form)        → torch.nn.GRU

with any ``num_layers``, ``bias``, ``batch_first``, ``dropout``, ``bidirectional``. An
option torch.nn does not have (peepholes, layer norm, other activations,
``reset_after=False``, zoneout, a learned initial state; the Jordan network and the newer
units) is a one-line error naming it. Recurrent dropout, a training-time regulariser that
is the identity in eval mode, has no torch.nn counterpart and is left out (logged).

:func:`safe_globals` lists what a whole pickled rnnkit module refers to, for ``torch.load``
with ``weights_only=True`` (PyTorch's default since 2.6).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .cells import Cell
from .cells.activations import get_activation
from .layers import GRU, LSTM, RNN, Recurrent

log = logging.getLogger(__name__)


def _kind(layer: Recurrent) -> type[Recurrent]:
    """The layer's class (the class it had before torch.nn.utils.parametrize subclassed it)."""
    return type(layer).__bases__[0] if parametrize.is_parametrized(layer) else type(layer)


def _blocker(layer: Recurrent) -> str | None:
    """What keeps ``layer`` from being a torch.nn module, or None."""
    kind = _kind(layer)
    if kind not in (RNN, LSTM, GRU):
        return f"{kind.__name__} has no torch.nn equivalent (only rnnkit.RNN, LSTM and GRU do)"
    cell = layer.cell
    if kind is LSTM:
        if cell.peephole:
            return "peephole=True (torch.nn.LSTM has no peepholes)"
        if cell.act.name != "tanh":
            return f"activation={cell.act.name!r} (torch.nn.LSTM uses tanh)"
        if cell.sig.name != "sigmoid":
            return f"recurrent_activation={cell.sig.name!r} (torch.nn.LSTM uses sigmoid)"
    if kind is GRU and not cell.reset_after:
        return "reset_after=False (torch.nn.GRU is the reset_after=True form)"
    if getattr(cell, "layer_norm", False):
        return f"layer_norm=True (torch.nn.{kind.__name__} has no layer normalization)"
    if any(layer.zoneout):
        return f"zoneout={layer.zoneout} (torch.nn has no zoneout)"
    if layer.learn_initial_state:
        return "learn_initial_state=True (torch.nn starts from zeros or a given state)"
    return None


def _torch_layer(layer: Recurrent, cls: type[nn.Module] | None, where: str) -> nn.Module:
    """A ``cls`` (torch.nn.RNN/LSTM/GRU or a subclass) with ``layer``'s configuration and weights."""
    reason = _blocker(layer)
    if reason is not None:
        raise ValueError(f"cannot convert {where} to torch.nn: {reason}")
    if layer.recurrent_dropout:
        log.warning("to_torch: %s has recurrent_dropout=%s, which torch.nn does not have; the converted module "
                    "equals it in eval mode", where, layer.recurrent_dropout)
    w = layer.weight_ih_l0
    kwargs = {"num_layers": layer.num_layers, "bias": layer.bias, "batch_first": layer.batch_first,
              "dropout": layer.dropout, "bidirectional": layer.bidirectional, "device": w.device, "dtype": w.dtype}
    if isinstance(layer, RNN):
        kwargs["nonlinearity"] = layer.nonlinearity
    if isinstance(layer, LSTM):
        kwargs["proj_size"] = layer.proj_size
    out = cls(layer.input_size, layer.hidden_size, **kwargs)
    # the current value of every weight: a parametrized or substituted (weight-dropped) one too
    weights = {name: t.detach() for name, t in zip(layer._flat_weights_names, layer._flat_weights)}
    out.load_state_dict(weights, strict=True)
    return out.train(layer.training)


class _Lengths:
    """rnnkit's ``forward(input, hx, lengths=)`` and ``num_directions`` on a torch.nn layer, for
    models that call their layer that way: ``lengths`` become a PackedSequence (the same
    semantics: zero outputs past a length, the final state at each sequence's own end)."""

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def forward(self, input, hx=None, lengths: Tensor | None = None):
        if lengths is None:
            return super().forward(input, hx)
        if not isinstance(input, Tensor) or input.dim() != 3:
            raise ValueError("lengths= needs a batched (3-D) padded input")
        T = input.shape[1 if self.batch_first else 0]
        packed = pack_padded_sequence(input, torch.as_tensor(lengths).cpu(), batch_first=self.batch_first,
                                      enforce_sorted=False)
        out, state = super().forward(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=T)
        return out, state


class _RNN(_Lengths, nn.RNN):
    """torch.nn.RNN that also takes ``lengths=`` (see :func:`to_torch`)."""


class _LSTM(_Lengths, nn.LSTM):
    """torch.nn.LSTM that also takes ``lengths=`` (see :func:`to_torch`)."""


class _GRU(_Lengths, nn.GRU):
    """torch.nn.GRU that also takes ``lengths=`` (see :func:`to_torch`)."""


_TORCH = {RNN: nn.RNN, LSTM: nn.LSTM, GRU: nn.GRU}
_WITH_LENGTHS = {RNN: _RNN, LSTM: _LSTM, GRU: _GRU}


def to_torch(module: nn.Module) -> nn.Module:
    """The equivalent torch.nn module, for ``torch.export``, ONNX and TorchScript.

    An rnnkit layer (:class:`rnnkit.RNN`, :class:`rnnkit.LSTM`, :class:`rnnkit.GRU`) becomes
    the ``torch.nn`` layer of the same configuration with the same weights (same outputs).
    Any other module (a model) is deep-copied with every rnnkit layer inside replaced by a
    subclass of its torch.nn layer that also accepts rnnkit's ``lengths=`` (run as a
    PackedSequence) and has ``num_directions``, so the model's own forward runs unchanged;
    ``module`` itself is not modified. The train/eval mode is kept.

    Raises ValueError naming the layer and the option for what torch.nn does not have
    (see the module docstring).
    """
    if isinstance(module, Recurrent):
        return _torch_layer(module, _TORCH.get(_kind(module)), _kind(module).__name__)
    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, Recurrent)]
    for name, m in layers:  # every reason before anything is copied
        reason = _blocker(m)
        if reason is not None:
            raise ValueError(f"cannot convert {name} ({type(m).__name__}) to torch.nn: {reason}")
    converted = copy.deepcopy(module)
    for name, _ in layers:
        parent_name, _, attr = name.rpartition(".")
        parent = converted.get_submodule(parent_name)
        layer = getattr(parent, attr)
        setattr(parent, attr, _torch_layer(layer, _WITH_LENGTHS[_kind(layer)], name))
    return converted


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def safe_globals() -> list:
    """The rnnkit classes and functions a whole pickled rnnkit module refers to (its layer
    classes, cells and ``get_activation``, by which an activation pickles), for loading a
    ``torch.save(model)`` file with ``torch.load(f, weights_only=True)``::

        with torch.serialization.safe_globals([*rnnkit.safe_globals(), MyModel, nn.Linear, ...]):
            model = torch.load(f, weights_only=True)

    Every class defined so far that derives from :class:`rnnkit.Recurrent` or
    :class:`rnnkit.Cell` is included (the registered layer families and the converted layers of
    :func:`to_torch` too), except the classes ``torch.nn.utils.parametrize`` makes (a
    parametrized module does not pickle, as in torch.nn)."""
    classes = [Recurrent, *_subclasses(Recurrent), Cell, *_subclasses(Cell), _RNN, _LSTM, _GRU]
    return [c for c in dict.fromkeys(classes) if not c.__name__.startswith("Parametrized")] + [get_activation]
