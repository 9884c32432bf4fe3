"""What the models share: building the recurrent layer by name, padding, and saving
(safetensors weights + a JSON config, never pickle)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..errors import CheckpointError
from ..layers import make_layer

WEIGHTS, CONFIG = "model.safetensors", "config.json"


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


def config_from_dict(cls, obj: dict):
    """A config dataclass from JSON, rejecting unknown fields (a config of another
    version or model) with a clear error."""
    names = {f.name for f in fields(cls)}
    unknown = set(obj) - names
    if unknown:
        raise CheckpointError(f"config has fields {sorted(unknown)} that {cls.__name__} does not know")
    return cls(**obj)


def save_model(directory: str | Path, kind: str, config, model: nn.Module, extra: dict) -> Path:
    """Write ``config.json`` (kind, config, vocabularies/normalisation in ``extra``) and
    ``model.safetensors`` into ``directory``, each via a temporary file and rename so a
    failed save never leaves a half-written model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"kind": kind, "config": asdict(config), **extra}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_w, tmp_c = directory / (WEIGHTS + ".tmp"), directory / (CONFIG + ".tmp")
    save_file(tensors, str(tmp_w))
    tmp_c.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_w, directory / WEIGHTS)
    os.replace(tmp_c, directory / CONFIG)
    return directory


def load_meta(directory: str | Path, kind: str) -> dict:
    """Read and check ``config.json`` of a saved model of ``kind``."""
    path = Path(directory) / CONFIG
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no {CONFIG}; is this a directory written by `rnnkit fit --out`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        found = meta.get("kind") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: holds a {found!r} model, expected {kind!r}")
    return meta


def load_weights(directory: str | Path, model: nn.Module) -> None:
    path = Path(directory) / WEIGHTS
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise CheckpointError(f"{path}: cannot read weights: {e}") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match {CONFIG}: {e}") from None
