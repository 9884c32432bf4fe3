"""The run directory: config, vocabulary, weights, trainer state, metrics.

    config.json            {"format_version", "model_type", "model", "train", "data", "rnnkit_version"}
    vocab.json             the vocabulary
    model.safetensors      latest weights          best.safetensors  weights with the best val bpc
    trainer_state.safetensors / trainer_state.json  optimizer tensors, RNG, stream position (resume)
    metrics.jsonl          one JSON object per logged step
    corpus.ids             the corpus encoded with the vocabulary: raw little-endian ids of the
                           vocabulary's dtype, memory-mapped for training; derived data (written
                           again from the data by --resume when missing)

Every file is written atomically (temporary file in the same directory, fsync, rename), and
nothing is ever unpickled: tensors are safetensors, the rest JSON or raw integers.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save
from torch import nn

from ..data.text import Vocabulary
from ..errors import CheckpointError, DataError
from ..models.charlm import CharLM, CharLMConfig

FORMAT_VERSION = 1
CONFIG = "config.json"
VOCAB = "vocab.json"
LATEST = "model.safetensors"
BEST = "best.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
METRICS = "metrics.jsonl"
IDS = "corpus.ids"
CHECKPOINTS = {"latest": LATEST, "best": BEST}

_UMASK = os.umask(0)
os.umask(_UMASK)

#: model types a run directory may hold: name → (model class, config class)
MODEL_TYPES: dict[str, tuple[type[nn.Module], type]] = {"charlm": (CharLM, CharLMConfig)}


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    with atomic_file(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through, piece by piece: a temporary file in the same
    directory, fsynced and renamed over ``path`` when the block ends, removed if it raises."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a checkpoint gets the usual mode
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``run_dir`` (the complete files
    they were to replace are still there). Returns what was removed."""
    stale = [p for p in Path(run_dir).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, save(tensors, metadata=metadata))


def read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({what}): {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a JSON object ({what})")
    return obj


def read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    return read_safetensors(path, what)[0]


#: what parsing an untrusted safetensors file may raise (all become CheckpointError)
_PARSE_ERRORS = (SafetensorError, OSError, ValueError, RuntimeError, TypeError, KeyError, OverflowError,
                 UnicodeDecodeError, struct.error)


def read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file, read once from disk.
    Anything wrong with the file is a one-line CheckpointError naming it."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing ({what})")
    try:
        raw = path.read_bytes()
        if len(raw) < 8:
            raise ValueError(f"{len(raw)} bytes, shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw[:8])
        if n > len(raw) - 8:
            raise ValueError(f"the header claims {n} bytes, the file has {len(raw) - 8} after the length")
        header = json.loads(raw[8:8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("the metadata is not a string → string map")
        tensors = load_bytes(raw)
    except _PARSE_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is corrupt or truncated ({what}): {reason}") from None
    return tensors, metadata


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's config.json, checked for a known format version and model type, and for
    the ``model``/``train``/``data`` sections being JSON objects."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run directory {run} does not exist")
    cfg = read_json(run / CONFIG, "run configuration")
    if "model_type" not in cfg and "format_version" not in cfg:
        other = None
        if isinstance(cfg.get("kind"), str):
            other = f"a {cfg['kind']!r} model written by `rnnkit fit`"
        elif str(cfg.get("format", "")).startswith("rnnkit-seq2seq"):
            other = "a sequence-to-sequence model written by `rnnkit seq2seq`"
        if other:
            raise CheckpointError(f"{run} holds {other}; this command reads the character language models "
                                  f"written by `rnnkit train`")
    version = cfg.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and not isinstance(version, bool):
            age = "newer" if version > FORMAT_VERSION else "older"
            hint = "; upgrade rnnkit to read it" if version > FORMAT_VERSION else ""
            raise CheckpointError(f"{run / CONFIG} has format_version {version}, {age} than the version "
                                  f"{FORMAT_VERSION} this rnnkit reads{hint}")
        raise CheckpointError(f"{run / CONFIG} has format_version {version!r}, expected the integer "
                              f"{FORMAT_VERSION}")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise CheckpointError(f"{run / CONFIG} holds a model of type (model_type) {model_type!r}; this "
                              f"command reads {sorted(MODEL_TYPES)}")
    for section in ("model", "train"):
        if section not in cfg:
            raise CheckpointError(f"{run / CONFIG} has no '{section}' section")
    for section in ("model", "train", "data"):
        if not isinstance(cfg.get(section, {}), dict):
            raise CheckpointError(f"{run / CONFIG}: '{section}' must be a JSON object, got "
                                  f"{type(cfg[section]).__name__}")
    return cfg


def load_state_into(model: nn.Module, path: Path) -> dict[str, str]:
    """Load safetensors weights into ``model`` after checking names, shapes and dtypes.
    Returns the file's metadata."""
    tensors, metadata = read_safetensors(path, "model weights")
    load_checked(model, tensors, path)
    return metadata


def load_checked(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict(tensors)`` after checking names, shapes and dtypes (errors
    name ``path``, where the tensors came from)."""
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path} does not match the config: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, t in tensors.items():
        want = expected[name]
        if t.shape != want.shape or t.dtype != want.dtype:
            raise CheckpointError(f"{path}: tensor {name} is {t.dtype} {tuple(t.shape)}, the config needs "
                                  f"{want.dtype} {tuple(want.shape)}")
    model.load_state_dict(tensors)


def build_model(cfg: dict, vocab: Vocabulary, where: Path) -> nn.Module:
    model_cls, config_cls = MODEL_TYPES[cfg["model_type"]]
    try:
        config = config_cls.from_dict(cfg.get("model", {}))
        return model_cls(config, vocab)
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise CheckpointError(f"{where / CONFIG} has an invalid model config: {e}") from None


def load(run_dir: str | os.PathLike, checkpoint: str = "best", device: str | torch.device = "cpu") -> CharLM:
    """Load the model of a run directory written by :func:`rnnkit.train`.

    Args:
        run_dir: the run directory.
        checkpoint: ``"best"`` (best validation bpc; falls back to latest when the run had no
            validation set) or ``"latest"``.
    Raises CheckpointError (one line) for a missing directory or file, a corrupt or
    truncated file, tensors that do not match the config, or an unknown format/model type.
    """
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {sorted(CHECKPOINTS)}, got {checkpoint!r}")
    run = Path(run_dir)
    cfg = read_config(run)
    try:
        vocab = Vocabulary.load(run / VOCAB)
    except DataError as e:
        raise CheckpointError(str(e)) from None
    model = build_model(cfg, vocab, run)
    if cfg["train"].get("precision") == "fp64":
        model = model.double()
    path = run / CHECKPOINTS[checkpoint]
    if checkpoint == "best" and not path.exists() and (run / LATEST).exists():
        path = run / LATEST
    load_state_into(model, path)
    model.eval()
    return model.to(device)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of metrics.jsonl (a torn last line, from a crash, is ignored)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


Callback = Callable[[dict], None]
