"""What the models share: building the recurrent layer by name, padding, and saving
(safetensors weights + a JSON config, never pickle)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import checkpoint
from ..data.vocabulary import Vocabulary
from ..errors import CheckpointError
from ..layers import make_layer
from ..layers.registry import names as cell_names


def recurrent_layer(cell: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool,
                    dropout: float) -> nn.Module:
    """The rnnkit layer for ``--cell NAME`` (any name :func:`rnnkit.make_layer` knows).

    A Jordan layer's output has ``hidden_size`` features here, so every cell gives the
    same output width."""
    kwargs: dict[str, Any] = {"num_layers": num_layers, "bidirectional": bidirectional,
                              "dropout": dropout if num_layers > 1 else 0.0}
    if cell == "jordan":
        kwargs["output_size"] = hidden_size
    return make_layer(cell, input_size, hidden_size, **kwargs)


def output_size(layer: nn.Module) -> int:
    """Features per time step of a layer's output: D·R."""
    return layer.cell.output_size * layer.num_directions


def final_hidden(h_n: Tensor | tuple[Tensor, ...], layer: nn.Module) -> Tensor:
    """The last layer's final output state, both directions concatenated: (B, D·R).

    The forward direction's final state is taken at each sequence's own length and the
    backward direction's at step 0 (the engine's ``lengths`` semantics)."""
    h = h_n if isinstance(h_n, Tensor) else h_n[0]  # (L·D, B, R)
    D = layer.num_directions
    return torch.cat(list(h[-D:]), dim=1)  # (B, D·R)


def pad(sequences: Sequence[Sequence[int]], value: int = 0) -> tuple[Tensor, Tensor]:
    """Pad integer sequences time-major: (T, B) int64 and lengths (B,)."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pad needs at least one sequence, each of length at least 1")
    lengths = torch.tensor([len(s) for s in sequences])
    out = torch.full((int(lengths.max()), len(sequences)), value, dtype=torch.int64)  # (T, B)
    for b, s in enumerate(sequences):
        out[: len(s), b] = torch.as_tensor(s, dtype=torch.int64)
    return out, lengths


def valid_mask(lengths: Tensor, T: int) -> Tensor:
    """(T, B) boolean: step t of sequence b is inside its length."""
    return torch.arange(T, device=lengths.device).unsqueeze(1) < lengths.unsqueeze(0)


def check_config(config, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                 rates: tuple[str, ...] = ("dropout",)) -> None:
    """The range checks of a model config's ``__post_init__``: a known ``cell``, integer
    fields that must be ≥ 1 (``positive``) or ≥ 0, and probabilities in [0, 1) (``rates``)."""
    names = cell_names()
    if config.cell not in names:
        raise ValueError(f"unknown cell {config.cell!r}; expected one of {names}")
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(config, name)}")
    for name in non_negative:
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be non-negative, got {getattr(config, name)}")
    for name in rates:
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(config, name)}")


def save_model(directory: str | Path, kind: str, config, model: nn.Module, extra: dict) -> Path:
    """Save ``model`` into ``directory``: ``model.safetensors`` and ``config.json`` (kind,
    config, vocabularies/normalisation in ``extra``), switched from any previous save in one
    atomic rename, so a crash at any moment leaves the previous model or this one, complete
    (see :func:`rnnkit.checkpoint.save_model_files`)."""
    return checkpoint.save_model_files(directory, {"kind": kind, "config": asdict(config), **extra}, model)


class SavedFields:
    """The entries of a saved model's config object beyond its config (vocabularies, column
    names, scaling), each read with its type checked: a one-line CheckpointError naming the
    file and the key otherwise."""

    def __init__(self, obj: dict, path: Path):
        self.obj, self.path = obj, path

    def _bad(self, key: str, expected: str) -> CheckpointError:
        value = self.obj.get(key)
        return CheckpointError(f"{self.path}: {key} must be {expected}, got {checkpoint.short(value)} "
                               f"({checkpoint.json_type(value)})")

    def string(self, key: str) -> str:
        if not isinstance(self.obj.get(key), str):
            raise self._bad(key, "a string")
        return self.obj[key]

    def strings(self, key: str) -> list[str]:
        value = self.obj.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return value

    def numbers(self, key: str, positive: bool = False) -> list[float]:
        """A list of finite numbers (all > 0 with ``positive``)."""
        value = self.obj.get(key)
        ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             and math.isfinite(v) and (v > 0 or not positive) for v in value)
        if not ok:
            raise self._bad(key, "a list of " + ("positive " if positive else "") + "finite numbers")
        return [float(v) for v in value]

    def vocabulary(self, key: str, optional: bool = False) -> Vocabulary | None:
        """A :class:`Vocabulary` saved by ``to_json`` (None for a missing or null entry when
        ``optional``)."""
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if not (isinstance(value, dict) and isinstance(value.get("specials"), bool)
                and isinstance(value.get("symbols"), list) and all(isinstance(s, str) for s in value["symbols"])):
            raise self._bad(key, 'a vocabulary {"symbols": [strings], "specials": true or false}')
        try:
            return Vocabulary.from_json(value)
        except ValueError as e:
            raise CheckpointError(f"{self.path}: {key}: {e}") from None


#: the best validation weights of a run directory (rnnkit.train.rundir.BEST; the models
#: layer does not import the trainer)
BEST_WEIGHTS = "best.safetensors"


def load_model(directory: str | Path, kind: str, config_cls, build: Callable[[Any, SavedFields], nn.Module]):
    """Load a model saved by :func:`save_model`, or trained into a run directory by its
    application (then its best validation weights, when it has them): the config object is checked (its
    ``config`` section against ``config_cls``, the rest as ``build`` reads it through
    :class:`SavedFields`), the model ``build(config, fields)`` is checked against the weight
    file's header on the meta device, and only then built and loaded. Returns it in eval mode."""
    saved = checkpoint.read_saved_model(directory, lambda m: m.get("kind"), kind,
                                        "a model directory written by `rnnkit fit --out` or .save()")
    weights_path, header = saved.weights_path, saved.header
    best = Path(directory) / BEST_WEIGHTS
    if "model_type" in saved.config and best.exists():  # a run directory: its best validation weights
        weights_path = best
        header, _ = checkpoint.read_header(best, "model weights")
    config = checkpoint.config_from_json(config_cls, saved.config.get("config"), saved.config_path, "config")
    extra = SavedFields(saved.config, saved.config_path)
    model = checkpoint.build_checked(lambda c: build(c, extra), config, header, saved.config_path,
                                     weights_path, present=saved.config.get("config"))
    tensors, _ = checkpoint.read_safetensors(weights_path, "model weights")
    checkpoint.load_checked(model, tensors, weights_path)
    return model.eval()
