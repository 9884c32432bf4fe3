"""The files of a saved model, for every model type: atomic writes, safetensors read without
pickle, and a config checked against its weights before anything is built.

A run directory is something people share, so everything read from it is untrusted:

- ``config.json`` must be a JSON object; each config section becomes its dataclass only after
  every field has the JSON type its annotation names (``int`` is an integer and not a
  boolean, ``float`` a finite number, ...) and the dataclass's own range checks passed;
- the model is first built on the ``meta`` device (shapes without storage: nothing is
  allocated, whatever sizes the config claims) and its tensor names, shapes and dtypes are
  compared with the safetensors header of the weight file (read without the tensors);
  only a config that matches the weights is built for real, so building allocates no more
  than the weight file holds;
- every problem is a one-line :class:`~rnnkit.errors.CheckpointError` naming the file and
  the field.

Writes go through a temporary file in the same directory, fsync, one rename and an fsync of
the directory: a crash at any moment leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import secrets
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save
from torch import nn

from .errors import CheckpointError

log = logging.getLogger(__name__)

CONFIG, WEIGHTS = "config.json", "model.safetensors"
#: weight-file metadata keys of a saved model: its config.json object, and the id of the save
#: that wrote both files (see :func:`save_model_files`)
SAVED_CONFIG, SAVE_ID = "rnnkit_config", "save_id"

_UMASK = os.umask(0)
os.umask(_UMASK)


# -- atomic writes ---------------------------------------------------------------------------
def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    with atomic_file(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through, piece by piece: a temporary file in the same
    directory, fsynced and renamed over ``path`` when the block ends, removed if it raises."""
    path = Path(path)
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


def remove_stale_temp_files(directory: Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Delete the temporary files a killed writer left in ``directory`` (the complete files
    they were to replace are still there): all of them, or those of the files ``names``.
    Returns what was removed."""
    patterns = [f".{n}.*.tmp" for n in names] if names is not None else [".*.tmp"]
    stale = sorted({p for pattern in patterns for p in Path(directory).glob(pattern) if p.is_file()})
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# -- JSON and safetensors ------------------------------------------------------------------------
def json_type(value: Any) -> str:
    """How JSON calls the type of ``value``, for error messages."""
    if value is None:
        return "null"
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                    (list, "a list"), (dict, "an object")):
        if isinstance(value, t):
            return name
    return type(value).__name__


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters (error messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 15]}…{text[-10:]}"


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in ``path``; anything else is a one-line CheckpointError naming it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not valid JSON ({what}): {reason}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a JSON object ({what}): it holds {json_type(obj)}")
    return obj


#: what parsing an untrusted safetensors file may raise (all become CheckpointError)
PARSE_ERRORS = (SafetensorError, OSError, ValueError, RuntimeError, TypeError, KeyError, OverflowError,
                UnicodeDecodeError, struct.error)


def _corrupt(path: Path, what: str, e: BaseException) -> CheckpointError:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return CheckpointError(f"{path} is corrupt or truncated ({what}): {reason}")


def read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file, read once from disk.
    Anything wrong with the file is a one-line CheckpointError naming it."""
    path = Path(path)
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
    except PARSE_ERRORS as e:
        raise _corrupt(path, what, e) from None
    return tensors, metadata


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A tensor as the safetensors header describes it."""

    dtype: str  # safetensors' name: F32, F64, BF16, I64, ...
    shape: tuple[int, ...]


def read_header(path: Path, what: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensor names, dtypes and shapes and the metadata of a safetensors file, from its
    header alone (the tensors are not read). The header is validated the way loading the
    file would be (offsets inside the file, sizes matching the shapes)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing ({what})")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            infos = {}
            for name in f.keys():
                part = f.get_slice(name)
                infos[name] = TensorInfo(str(part.get_dtype()), tuple(int(d) for d in part.get_shape()))
    except PARSE_ERRORS as e:
        raise _corrupt(path, what, e) from None
    return infos, metadata


_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}


def dtype_name(dtype: torch.dtype) -> str:
    """safetensors' name of a torch dtype (``torch.float32`` → ``F32``)."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


# -- configs -----------------------------------------------------------------------------------
_JSON_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a finite number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "None": ("null", lambda v: v is None),
}


def _annotation_check(annotation: Any) -> tuple[str, Callable[[Any], bool]] | None:
    """(what is expected, the check) for a field annotation made of int/float/bool/str/None
    (``"float | None"``); None for any other annotation (a nested config)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [p.strip() for p in text.replace("NoneType", "None").split("|")]
    if not all(p in _JSON_CHECKS for p in parts):
        return None
    checks = [_JSON_CHECKS[p] for p in parts]
    return " or ".join(c[0] for c in checks), lambda v: any(c[1](v) for c in checks)


def config_from_json(cls, obj: Any, path: Path, section: str):
    """The config dataclass ``cls`` from the JSON value ``obj`` (``section`` of the file
    ``path``), or a one-line CheckpointError naming the file and the field: ``obj`` must be
    an object whose keys are fields of ``cls``, each of the JSON type its annotation names
    (an integer is not a boolean and not 8.0, a float is finite), and the values must pass
    the dataclass's own checks. A missing field takes its default (the weights check then
    finds one that matters); a field of another type (a nested config) is passed on as it is."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: '{section}' must be a JSON object, got {json_type(obj)}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise CheckpointError(f"{path}: {section} has field(s) {short(unknown)} that {cls.__name__} does not know")
    for name, value in obj.items():
        check = _annotation_check(known[name].type)
        if check is not None and not check[1](value):
            raise CheckpointError(f"{path}: {section}.{name} must be {check[0]}, got {short(value)} "
                                  f"({json_type(value)})")
    try:
        return cls(**obj)
    except (ValueError, TypeError, OverflowError) as e:
        raise CheckpointError(f"{path}: {section}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


# -- building a model that matches its weights ---------------------------------------------------
Shapes = dict[str, TensorInfo]


def _meta_shapes(build: Callable[[Any], nn.Module], config, dtype: torch.dtype | None) -> Shapes:
    """The state-dict tensors the model ``build(config)`` would have, found on the meta device
    (no storage is allocated, whatever the sizes)."""
    with torch.device("meta"):
        model = build(config)
        if dtype is not None:
            model = model.to(dtype)
    return {k: TensorInfo(dtype_name(v.dtype), tuple(v.shape)) for k, v in model.state_dict().items()}


def _int_fields(config) -> list[str]:
    return [f.name for f in dataclasses.fields(config)
            if isinstance(getattr(config, f.name), int) and not isinstance(getattr(config, f.name), bool)]


def _probe(build, config, dtype, name: str, value: int) -> Shapes | None:
    try:
        return _meta_shapes(build, dataclasses.replace(config, **{name: value}), dtype)
    except Exception:  # noqa: BLE001 - a value the config does not allow
        return None


def _field_values_that_fit(build, config, dtype, header: Shapes, expected: Shapes, tensor: str | None
                           ) -> list[tuple[str, int]]:
    """The integer fields of ``config`` that, changed alone, make the model agree with the
    weights, with the value that does: for the shape of ``tensor``, or (``tensor=None``) for
    the set of tensor names. A shape is an affine function of each size field, so two
    builds (the value and the value + 1, or + 2 where + 1 is not allowed) give the value that
    fits, which a third build confirms (for the set of names, the number of tensors is what is
    affine). Only called to explain a mismatch; every build is on the meta device."""
    found = []
    for name in _int_fields(config):
        value = getattr(config, name)
        step, probe = next(((k, p) for k in (1, 2)
                            if (p := _probe(build, config, dtype, name, value + k)) is not None), (0, None))
        if probe is None:
            continue
        if tensor is None:  # a count (num_layers): the number of tensors is affine in it too
            slope = (len(probe) - len(expected)) / step
            if set(probe) == set(expected) or slope == 0:
                continue
            candidate = value + (len(header) - len(expected)) / slope
            if not (candidate.is_integer() and candidate >= 1):
                continue
            fixed = _probe(build, config, dtype, name, int(candidate))
            fits = [int(candidate)] if fixed is not None and set(fixed) == set(header) else []
        else:
            want, got, moved = expected[tensor].shape, header[tensor].shape, probe.get(tensor)
            if moved is None or len(moved.shape) != len(want) or len(got) != len(want):
                continue
            slopes = [(b - a) / step for a, b in zip(want, moved.shape)]
            bad = [i for i in range(len(want)) if want[i] != got[i]]
            if not bad or any(slopes[i] == 0 for i in bad) or any(slopes[i] for i in range(len(want)) if i not in bad):
                continue
            solutions = {value + (got[i] - want[i]) / slopes[i] for i in bad}
            candidate = solutions.pop() if len(solutions) == 1 else 0.0
            if not (candidate.is_integer() and candidate >= 1):
                continue
            fixed = _probe(build, config, dtype, name, int(candidate))
            fits = [int(candidate)] if fixed is not None and fixed.get(tensor) == header[tensor] else []
        if fits:
            found.append((name, fits[0]))
    return found


def _describe_fields(config, names: list[str], present: Mapping | None) -> str:
    parts = []
    for name in names:
        missing = present is not None and name not in present
        parts.append(f"{name} {getattr(config, name)}" + (" (missing: the default)" if missing else ""))
    return ", ".join(parts)


def _mismatch(config, fits: list[tuple[str, int]], present: Mapping | None, config_path: Path,
              weights_path: Path) -> str:
    if not fits:
        return f"{weights_path} does not match the model of {config_path}"
    said = _describe_fields(config, [name for name, _ in fits], present)
    fitting = " or ".join(f"{name} {value}" for name, value in fits)
    return f"{config_path}: {said} does not match {weights_path} (its tensors fit {fitting})"


def build_checked(build: Callable[[Any], nn.Module], config, header: Shapes, config_path: Path, weights_path: Path,
                  *, dtype: torch.dtype | None = None, present: Mapping | None = None) -> nn.Module:
    """``build(config)`` (converted to ``dtype`` when given) once :func:`check_against_weights`
    found that it has exactly the tensors of the weight file: it allocates no more than
    that file holds."""
    check_against_weights(build, config, header, config_path, weights_path, dtype=dtype, present=present)
    model = build(config)
    return model.to(dtype) if dtype is not None else model


def check_against_weights(build: Callable[[Any], nn.Module], config, header: Shapes, config_path: Path,
                          weights_path: Path, *, dtype: torch.dtype | None = None,
                          present: Mapping | None = None) -> None:
    """Check on the meta device that the model ``build(config)`` has exactly the tensors of
    the weight file: the same names, shapes and dtypes as ``header`` (from
    :func:`read_header`). A config that does not match is a one-line CheckpointError naming
    the config fields behind the difference and the shapes; no storage is allocated, whatever
    the sizes the config claims. ``present``: the config's JSON object, to say when a field
    behind a difference was missing from it."""
    largest = max((d for info in header.values() for d in info.shape), default=0)
    layers = getattr(config, "num_layers", None)
    if isinstance(layers, int) and layers > max(1, len(header)):  # layers are built one by one in Python
        raise CheckpointError(f"{config_path}: num_layers {layers} cannot match {weights_path}, which holds "
                              f"{len(header)} tensors")
    try:
        expected = _meta_shapes(build, config, dtype)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the untrusted config makes the model raise
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        too_big = [n for n in _int_fields(config) if getattr(config, n) > largest]
        if too_big:
            raise CheckpointError(f"{config_path}: {_describe_fields(config, too_big, present)} cannot match "
                                  f"{weights_path}, whose largest tensor dimension is {largest} ({reason})") from e
        raise CheckpointError(f"{config_path}: the model config cannot be built: {reason}") from e
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or extra:
        fits = _field_values_that_fit(build, config, dtype, header, expected, None)
        raise CheckpointError(f"{_mismatch(config, fits, present, config_path, weights_path)}: missing "
                              f"{short(missing[:3])}, unexpected {short(extra[:3])}")
    for name, want in expected.items():
        got = header[name]
        if got != want:
            fits = [] if got.dtype != want.dtype else _field_values_that_fit(build, config, dtype, header, expected,
                                                                              name)
            raise CheckpointError(f"{_mismatch(config, fits, present, config_path, weights_path)}: tensor {name} is "
                                  f"{got.dtype} {got.shape} there, the config needs {want.dtype} {want.shape}")


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


# -- a saved model: config.json + model.safetensors, switched in one rename ---------------------------
def save_model_files(directory: str | os.PathLike, config: dict, model: nn.Module) -> Path:
    """Save ``model``'s weights and its ``config`` object into ``directory`` so that a crash at
    any moment leaves the previous save or this one, complete.

    The weight file carries the config too (in its metadata, with a fresh save id that
    config.json also gets), so replacing ``model.safetensors`` is the one step that switches
    from the old model to the new: it is written to a temporary file, fsynced and renamed
    over the old one (then the directory is fsynced), and ``config.json`` follows the same
    way. A crash between the two renames leaves a config.json of the previous save, whose
    save id tells :func:`read_saved_model` to use the config stored with the weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(directory, (WEIGHTS, CONFIG))
    config = {**config, SAVE_ID: secrets.token_hex(8)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {SAVED_CONFIG: json.dumps(config), SAVE_ID: config[SAVE_ID]}
    atomic_write(directory / WEIGHTS, save(tensors, metadata=metadata))
    atomic_write(directory / CONFIG, (json.dumps(config, indent=2) + "\n").encode("utf-8"))
    return directory


@dataclasses.dataclass
class SavedModel:
    """What :func:`read_saved_model` found: the config object to build from (and the file it
    stands for), and the weight file with its header."""

    config: dict
    config_path: Path
    weights_path: Path
    header: Shapes


def read_saved_model(directory: str | os.PathLike, kind_of: Callable[[dict], str | None], expected: str,
                     what: str) -> SavedModel:
    """Read the config object and the weight header of a model saved by :func:`save_model_files`.

    config.json must be a JSON object whose kind (``kind_of(obj)``) is ``expected``; when its
    save id differs from the one stored with the weights (a save was interrupted between its
    two renames), the config stored with the weights is used, checked the same way. ``what``
    names such a directory for the error when there is none (``"a seq2seq run directory"``)."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG, directory / WEIGHTS
    if not directory.is_dir() or not (config_path.exists() or weights_path.exists()):
        raise CheckpointError(f"{directory}: not {what} (no {CONFIG}, no {WEIGHTS})")
    header, metadata = read_header(weights_path, "model weights")
    stored = metadata.get(SAVED_CONFIG)
    if config_path.exists() or stored is None:
        config = read_json_object(config_path, "the model configuration")
        _check_kind(config, config_path, kind_of, expected)
        if stored is None or config.get(SAVE_ID) == metadata.get(SAVE_ID):
            return SavedModel(config, config_path, weights_path, header)
        log.warning("%s is from an earlier save than %s (an interrupted save); using the configuration stored "
                    "with the weights", config_path, weights_path)
    try:
        config = json.loads(stored)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{weights_path}: the configuration stored with the weights is not JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{weights_path}: the configuration stored with the weights is {json_type(config)}, "
                              f"not a JSON object")
    _check_kind(config, weights_path, kind_of, expected)
    return SavedModel(config, weights_path, weights_path, header)


def _check_kind(config: dict, path: Path, kind_of: Callable[[dict], str | None], expected: str) -> None:
    found = kind_of(config)
    if found != expected:
        raise CheckpointError(f"{path}: holds a {found!r} model, expected {expected!r}")
