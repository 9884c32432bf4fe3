"""The run directory: config, vocabulary, weights, trainer state, metrics.

    config.json            {"format_version", "model_type", "model", "train", "data", "rnnkit_version"}
    vocab.json             the vocabulary
    model.safetensors      latest weights          best.safetensors  weights with the best val bpc
    trainer_state.safetensors / trainer_state.json  optimizer tensors, RNG, stream position (resume)
    metrics.jsonl          one JSON object per logged step
    probe.safetensors      the first PROBE_EXAMPLES validation examples as one batch (the fit models
                           and seq2seq runs on a file: `rnnkit report` measures the gradient flow
                           on it; their training data is not here)
    corpus.ids             the corpus encoded with the vocabulary: raw little-endian ids of the
                           vocabulary's dtype, memory-mapped for training; derived data (written
                           again from the data by --resume when missing)

Every file is written atomically (temporary file in the same directory, fsync, rename), and
nothing is ever unpickled: tensors are safetensors, the rest JSON or raw integers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import save
from torch import Tensor, nn

from .._version import __version__
from ..checkpoint import (  # noqa: F401  (the run directory's file helpers, used through this module)
    atomic_file,
    atomic_write,
    build_checked,
    check_against_weights,
    config_from_json,
    fsync_dir,
    json_type,
    load_checked,
    read_header,
    read_safetensors,
    remove_stale_temp_files,
    short,
)
from ..checkpoint import read_json_object as read_json
from ..data.text import Vocabulary
from ..errors import CheckpointError, DataError
from .config import TrainConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG = "config.json"
VOCAB = "vocab.json"
LATEST = "model.safetensors"
BEST = "best.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
METRICS = "metrics.jsonl"
IDS = "corpus.ids"
PROBE = "probe.safetensors"
CHECKPOINTS = {"latest": LATEST, "best": BEST}
#: examples stored with a run for `rnnkit report` (probe.safetensors)
PROBE_EXAMPLES = 8

#: model types a run directory may hold: name → (model class, config class); filled by the
#: applications (:func:`register_model_type`), so the trainer knows no model
MODEL_TYPES: dict[str, tuple[type[nn.Module], type]] = {}
#: name → build(config, the config.json object, run directory) → the model (untrained)
_BUILDERS: dict[str, Callable] = {}
#: name → probe(model, run directory, the config.json object, text) → what `rnnkit report`
#: measures on the model (a :class:`rnnkit.diagnostics.Probe`)
_PROBES: dict[str, Callable] = {}


def register_model_type(name: str, model_cls: type[nn.Module], config_cls: type,
                        build: Callable[[object, dict, Path], nn.Module] | None = None, *,
                        probe: Callable | None = None) -> None:
    """Make run directories whose ``model_type`` is ``name`` loadable. The model is
    ``build(config, cfg, run_dir)`` with ``config = config_cls`` read from the ``model``
    section and ``cfg`` the whole config.json (where an application keeps what else it
    needs, e.g. its vocabularies); by default ``model_cls(config, the run's vocab.json)``.
    Registering a name again with other classes is an error (two applications claiming one
    type).

    ``probe(model, run_dir, cfg, text)`` gives ``rnnkit report`` what it measures the
    trained model on: a batch and its loss (gradient flow through time, gate saturation),
    the text coloured by hidden units for text models, attention examples (see
    :class:`rnnkit.diagnostics.Probe`; ``text`` is the report's ``--text`` or None). Without
    one the report shows the run's configuration and curves."""
    if MODEL_TYPES.get(name, (model_cls, config_cls)) != (model_cls, config_cls):
        raise ValueError(f"model type {name!r} is already registered for {MODEL_TYPES[name][0].__name__}")
    MODEL_TYPES[name] = (model_cls, config_cls)
    _BUILDERS[name] = build or (lambda config, cfg, run: model_cls(config, read_vocabulary(run)))
    if probe is not None:
        _PROBES[name] = probe


def report_probe(model_type: str) -> Callable | None:
    """The ``probe`` hook registered for ``model_type`` (None when it has none)."""
    return _PROBES.get(model_type)


def builder(run_dir: str | os.PathLike, cfg: dict) -> Callable[[object], nn.Module]:
    """``config -> model`` for the run's model type (the run's config.json ``cfg``)."""
    build = _BUILDERS[cfg["model_type"]]
    return lambda config: build(config, cfg, Path(run_dir))


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, save(tensors, metadata=metadata))


def read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    return read_safetensors(path, what)[0]


def read_config(run_dir: str | os.PathLike) -> dict:
    """The run's config.json, checked: a known format version and model type, and ``model``,
    ``train`` and ``data`` sections whose fields have the types and ranges of
    the model type's config class and :class:`~rnnkit.TrainConfig` (one-line CheckpointError
    naming the file and the field otherwise)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run directory {run} does not exist")
    path = run / CONFIG
    cfg = read_json(path, "run configuration")
    if "model_type" not in cfg and "format_version" not in cfg:
        other = None
        if isinstance(cfg.get("kind"), str):
            other = f"a {cfg['kind']!r} model written by `rnnkit fit`"
        elif str(cfg.get("format", "")).startswith("rnnkit-seq2seq"):
            other = "a sequence-to-sequence model written by `rnnkit seq2seq`"
        if other:
            raise CheckpointError(f"{run} holds {other} in the format from before run directories; this command "
                                  f"reads the run directories of `rnnkit train` (and of `fit`/`task`/`seq2seq "
                                  f"train --out`); `rnnkit info` describes it")
    version = cfg.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and not isinstance(version, bool):
            age = "newer" if version > FORMAT_VERSION else "older"
            hint = "; upgrade rnnkit to read it" if version > FORMAT_VERSION else ""
            raise CheckpointError(f"{path} has format_version {version}, {age} than the version "
                                  f"{FORMAT_VERSION} this rnnkit reads{hint}")
        raise CheckpointError(f"{path} has format_version {version!r}, expected the integer {FORMAT_VERSION}")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise CheckpointError(f"{path} holds a model of type (model_type) {model_type!r}; this "
                              f"command reads {sorted(MODEL_TYPES)}")
    for section in ("model", "train"):
        if section not in cfg:
            raise CheckpointError(f"{path} has no '{section}' section")
    config_from_json(MODEL_TYPES[model_type][1], cfg["model"], path, "model")
    config_from_json(TrainConfig, cfg["train"], path, "train")
    _check_data_section(cfg.get("data", {}), path)
    return cfg


#: the keys of the ``data`` section the commands read: key → (expected, check)
_DATA_KEYS = {
    "chars": ("a non-negative integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "files": ("a non-negative integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "skipped": ("a non-negative integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "min_count": ("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "paths": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v)),
    "glob": ("a string or null", lambda v: v is None or isinstance(v, str)),
}


def _check_data_section(data, path: Path) -> None:
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: 'data' must be a JSON object, got {json_type(data)}")
    for key, (expected, check) in _DATA_KEYS.items():
        if key in data and not check(data[key]):
            raise CheckpointError(f"{path}: data.{key} must be {expected}, got {short(data[key])}")


def read_vocabulary(run_dir: str | os.PathLike) -> Vocabulary:
    """The run's vocab.json (CheckpointError naming it when it is missing or invalid)."""
    try:
        return Vocabulary.load(Path(run_dir) / VOCAB)
    except DataError as e:
        raise CheckpointError(str(e)) from None


def _dtype(cfg: dict) -> torch.dtype | None:
    return torch.float64 if cfg["train"].get("precision") == "fp64" else None


def check_resume(run_dir: str | os.PathLike, model, vocab: Vocabulary | None, precision: str,
                 present: dict | None = None, cfg: dict | None = None) -> None:
    """Check, before the model is built, that ``model`` (a model config; with ``vocab`` for
    the char LM, or the run's config.json ``cfg`` for another model type) has the tensors of
    the weights ``--resume`` will read: those of the resume file (or, in the older layout
    without weights there, of model.safetensors). ``present``: the model section of
    config.json."""
    run = Path(run_dir)
    header, _ = read_header(run / STATE_TENSORS, "trainer state")
    weights = {k[len("model."):]: v for k, v in header.items() if k.startswith("model.")}
    path = run / STATE_TENSORS
    if not weights:
        path = run / LATEST
        weights, _ = read_header(path, "model weights")
    cfg = cfg or {"model_type": "charlm"}
    build = builder(run, cfg) if vocab is None else (lambda c: MODEL_TYPES[cfg["model_type"]][0](c, vocab))
    check_against_weights(build, model, weights, run / CONFIG, path,
                          dtype=torch.float64 if precision == "fp64" else None, present=present)


def load_state_into(model: nn.Module, path: Path) -> dict[str, str]:
    """Load safetensors weights into ``model`` after checking names, shapes and dtypes.
    Returns the file's metadata."""
    tensors, metadata = read_safetensors(path, "model weights")
    load_checked(model, tensors, path)
    return metadata


def load(run_dir: str | os.PathLike, checkpoint: str = "best", device: str | torch.device = "cpu") -> nn.Module:
    """Load the model of a run directory written by :func:`rnnkit.train` (or by another
    application whose model type is registered, e.g. ``rnnkit fit tagger --out DIR``).

    Args:
        run_dir: the run directory.
        checkpoint: ``"best"`` (best validation bpc; falls back to latest when the run had no
            validation set) or ``"latest"``.
    Raises CheckpointError (one line) for a missing directory or file, a corrupt or
    truncated file, a config whose fields have the wrong types or ranges or do not match the
    weights (checked on the meta device before the model is built), or an unknown
    format/model type.
    """
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {sorted(CHECKPOINTS)}, got {checkpoint!r}")
    run = Path(run_dir)
    cfg = read_config(run)
    path = run / CHECKPOINTS[checkpoint]
    if checkpoint == "best" and not path.exists() and (run / LATEST).exists():
        path = run / LATEST
    header, _ = read_header(path, "model weights")
    config_cls = MODEL_TYPES[cfg["model_type"]][1]
    config = config_from_json(config_cls, cfg["model"], run / CONFIG, "model")
    model = build_checked(builder(run, cfg), config, header, run / CONFIG, path, dtype=_dtype(cfg),
                          present=cfg["model"])
    load_state_into(model, path)
    model.eval()
    return model.to(device)


def batch_tensors(batch) -> dict[str, Tensor]:
    """A collated batch as named tensors: a dataclass's tensor fields (None left out), a
    tuple's items as "0", "1", ..."""
    if dataclasses.is_dataclass(batch):
        items = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    else:
        items = {str(k): v for k, v in enumerate(batch)}
    return {k: v for k, v in items.items() if isinstance(v, Tensor)}


def write_probe(run_dir: str | os.PathLike, examples: Sequence, collate: Callable[[list], object],
                source: str) -> None:
    """Store the first :data:`PROBE_EXAMPLES` of ``examples``, ``collate``d into one batch,
    as the run's probe.safetensors (metadata ``source``: what they are, e.g. "validation"),
    for ``rnnkit report``: the data itself is not in the run directory. Examples that cannot
    be collated (a validation label the model does not know...) leave the run without the
    file, with a warning: the report then says so, and the training is not the worse for it.
    Call it on rank 0 only."""
    chosen = list(examples)[:PROBE_EXAMPLES]
    if not chosen:
        return
    try:
        batch = batch_tensors(collate(chosen))
    except (ValueError, KeyError, IndexError, TypeError, DataError) as e:
        log.warning("the report's probe sample (%s) was not stored: %s", PROBE, e)
        return
    save_tensors(Path(run_dir) / PROBE, batch, {"source": source})


def use_probe(run_dir: str | os.PathLike, use: Callable[[dict[str, Tensor], str], object],
              fail: Callable[[str], object]):
    """``use(tensors, source)`` on the run's stored probe sample (see :func:`write_probe`),
    or ``fail(reason)`` (one line) when the run has none (trained before it was stored) or
    ``use`` finds it is not a batch of this model (KeyError, ValueError, IndexError,
    TypeError, RuntimeError) or the file is not readable."""
    path = Path(run_dir) / PROBE
    if not path.exists():
        return fail(f"the gradient flow needs a run trained by rnnkit {__version__} or later, which stores a few "
                    f"of the data's examples with the run ({PROBE}); this run has none")
    try:
        tensors, metadata = read_safetensors(path, "report probe")
        return use(tensors, metadata.get("source", "validation"))
    except (CheckpointError, KeyError, ValueError, IndexError, TypeError, RuntimeError) as e:
        return fail(f"{path} does not hold a batch of this model ({e}); no gradient flow")


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of metrics.jsonl: its lines that hold JSON objects (a torn last line, from
    a crash, is ignored, and so is any other line that is not an object)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


Callback = Callable[[dict], None]


#: the files of a run directory the trainer and this module write
RUN_FILES = (LATEST, BEST, STATE_TENSORS, STATE_JSON, METRICS, PROBE, CONFIG)


@contextlib.contextmanager
def run_directory(out: str | os.PathLike | None, resume: bool, overwrite: bool) -> Iterator[Path]:
    """The run directory: ``out`` (new, or without a run in it; with ``resume`` the run in
    it), a temporary directory when ``out`` is None. With ``overwrite`` a run already in
    ``out`` is replaced only once the new run has finished: the new run trains in a sibling
    directory whose files then replace the old run's one by one (config.json last), so a
    failed or interrupted run leaves the old one as it was; other files in ``out`` stay."""
    if out is None:
        if resume:
            raise ValueError("resume needs the run directory (out)")
        with tempfile.TemporaryDirectory(prefix="rnnkit-run-") as tmp:
            yield Path(tmp)
        return
    run = Path(out)
    if resume:
        if not (run / CONFIG).exists():
            raise CheckpointError(f"cannot resume: {run} is not a run directory (no {CONFIG})")
        yield run
        return
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out {run} exists and is not a directory")
    if not (run / CONFIG).exists():
        run.mkdir(parents=True, exist_ok=True)
        yield run
        return
    if not overwrite:
        raise ValueError(f"--out {run} already holds a saved model; pass --overwrite to replace it "
                         f"(or --resume to continue its training)")
    fresh = Path(tempfile.mkdtemp(prefix=f".{run.name}.new-", dir=run.parent))
    try:
        yield fresh
        for name in RUN_FILES:  # config.json last: until then the old config names the old run
            if (fresh / name).exists():
                os.replace(fresh / name, run / name)
            elif (run / name).exists():
                (run / name).unlink()
        fsync_dir(run)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
