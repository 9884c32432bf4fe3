"""The character language model's application: :func:`train` builds a :class:`CharLM`
run (corpus → vocabulary → id file → run directory) and runs it on the trainer; the run
directory's ``charlm`` model type is registered here (:mod:`rnnkit.train` knows no model).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

import torch

from .._version import __version__
from ..data.text import CorpusStream, Vocabulary, memory_map_ids, scan_corpus, split_train_val
from ..errors import CheckpointError, DataError
from ..train import distributed, rundir
from ..train.config import TrainConfig
from ..train.trainer import LanguageModelTask, Trainer, TrainResult
from .charlm import CharLM, CharLMConfig


def report_probe(model: CharLM, run_dir: Path, cfg: dict, text: str | None):
    """What ``rnnkit report`` measures a char LM on: ``text`` (default: the source of the
    standard library's textwrap module) — windows of it for the gradient flow, all of it
    for the hidden units."""
    import textwrap

    from ..diagnostics.report import Probe

    return Probe(model, text=text if text is not None else Path(textwrap.__file__).read_text(encoding="utf-8"))


rundir.register_model_type("charlm", CharLM, CharLMConfig, probe=report_probe)

log = logging.getLogger(__name__)

#: TrainConfig fields that may change when a run is resumed (the budget and reporting)
RESUMABLE_FIELDS = ("max_steps", "max_time", "eval_every", "sample_every", "sample_length", "checkpoint_every",
                    "on_nan", "nan_lr_factor", "nan_max_retries")


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("charlm-%Y%m%d-%H%M%S")


def _check_same(given, stored, allowed: Sequence[str], what: str) -> None:
    for f in fields(given):
        if f.name not in allowed and getattr(given, f.name) != getattr(stored, f.name):
            raise ValueError(f"--resume keeps the run's {what} config: {f.name} is {getattr(stored, f.name)!r} "
                             f"in the run, got {getattr(given, f.name)!r}")


def train(data: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
          out: str | os.PathLike | None = None,
          model: CharLMConfig | None = None,
          config: TrainConfig | None = None,
          *,
          glob: str | None = None,
          min_count: int = 1,
          resume: bool = False,
          callback: rundir.Callback | None = None,
          device: str | torch.device = "cpu") -> TrainResult:
    """Train a character language model into a run directory.

    Args:
        data: files, directories (recursive) or ``"-"``; None reads the default corpus
            (the Python standard library's sources).
        out: the run directory; default ``runs/charlm-<timestamp>``. It must not exist or
            be empty, unless ``resume``.
        model, config: the architecture and the training settings (defaults when None;
            on resume, None means as stored, and only the budget fields may change).
        glob: file-name pattern for files inside directories (``"*.py"``).
        min_count: characters seen fewer times are folded into the unknown symbol.
        resume: continue the run in ``out`` exactly where its last checkpoint left off.
        callback: receives progress events (see :class:`Trainer`).
        device: torch device; under torchrun ``cuda`` means ``cuda:LOCAL_RANK``.

    Under ``torchrun`` (``WORLD_SIZE`` in the environment) this joins the process group and
    trains data-parallel (see :mod:`rnnkit.train.distributed` and docs/distributed.md): rank
    0 writes the run directory and calls ``callback``; every rank returns the same result.

    Returns a :class:`TrainResult`; the model is ``rnnkit.load(result.run_dir)``.
    """
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    joined = distributed.DistEnv.from_env().enabled and not torch.distributed.is_initialized()
    env, device = distributed.setup(device)
    try:
        if env.enabled and data and any(str(p) == "-" for p in data):
            raise ValueError("--data - (stdin) cannot be used under torchrun: only one process has the input; "
                             "write it to a file")
        return _train(data, out, model, config, glob, min_count, resume,
                      callback if env.is_main else None, device, env)
    finally:
        if joined:
            distributed.shutdown()


def _write_ids(stream: CorpusStream, vocab: Vocabulary, path: Path) -> None:
    """Encode the corpus into the id file ``path`` (written atomically)."""
    t0 = time.monotonic()
    with rundir.atomic_file(path) as f:
        n_unknown = stream.write_ids(vocab, f)
    if n_unknown:
        log.warning("%d character(s) are not in the vocabulary and were mapped to the unknown symbol", n_unknown)
    log.info("encoded %d characters into %s in %.1fs", stream.chars, path, time.monotonic() - t0)


def _ids_file_matches(path: Path, vocab: Vocabulary, chars) -> bool:
    """Whether ``path`` holds ``chars`` ids of the vocabulary's dtype (the id file of the run)."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    return isinstance(chars, int) and size == chars * vocab.dtype.itemsize


def _scan(data, glob) -> CorpusStream:
    t0 = time.monotonic()
    stream = scan_corpus(data, glob)
    log.info("counted %d characters in %d file(s) in %.1fs", stream.chars, len(stream.files), time.monotonic() - t0)
    return stream


def _corpus_ids(run: Path, vocab: Vocabulary, data_cfg: dict, data, env) -> torch.Tensor:
    """The run's id file, memory-mapped. A rank that does not see the file rank 0 wrote (a
    multi-node job without shared storage) encodes the corpus into a private temporary
    file instead, after checking that its data gives rank 0's vocabulary and length."""
    path = run / rundir.IDS
    chars = data_cfg.get("chars")
    if env.is_main or _ids_file_matches(path, vocab, chars):
        return memory_map_ids(path, vocab, chars)
    log.warning("rank %d does not see %s written by rank 0 (no shared storage?): encoding the corpus into a "
                "temporary file of its own", env.rank, path)
    with _scan(data if data else data_cfg.get("paths") or None, data_cfg.get("glob")) as stream:
        if stream.chars != chars or stream.vocabulary(data_cfg.get("min_count", 1)).chars != vocab.chars:
            raise DataError(f"rank {env.rank} reads different data than rank 0 ({stream.chars} characters, rank 0 "
                            f"{chars}): every node needs the same --data")
        with tempfile.TemporaryDirectory(prefix="rnnkit-ids-") as tmp:
            _write_ids(stream, vocab, Path(tmp) / rundir.IDS)
            return memory_map_ids(Path(tmp) / rundir.IDS, vocab, chars)  # the mapping outlives the file


def _train(data, out, model, config, glob, min_count, resume, callback, device, env) -> TrainResult:
    run = Path(out) if out is not None else default_run_dir()
    if resume:
        if not (run / rundir.CONFIG).exists():
            raise CheckpointError(f"cannot resume: {run} is not a run directory (no {rundir.CONFIG})")
        cfg = rundir.read_config(run)
        if env.is_main:  # (only the writer: another rank could remove what rank 0 is writing)
            for stale in rundir.remove_stale_temp_files(run):
                log.info("removed %s, left by an interrupted write", stale.name)
        stored_model = CharLMConfig.from_dict(cfg["model"])
        stored_train = TrainConfig.from_dict(cfg["train"])
        if model is not None:
            _check_same(model, stored_model, (), "model")
        if config is not None:
            _check_same(config, stored_train, RESUMABLE_FIELDS, "training")
        model, config = stored_model, config or stored_train
        data_cfg = cfg.get("data", {})
        vocab = rundir.read_vocabulary(run)
        rundir.check_resume(run, model, vocab, config.precision, cfg["model"])  # before the model is built

        def encode_again() -> None:
            """The id file is derived data: when it is missing or does not match, encode the
            run's data again (the same number of characters, or the data changed)."""
            if _ids_file_matches(run / rundir.IDS, vocab, data_cfg.get("chars")):
                return
            with _scan(data if data else data_cfg.get("paths") or None, data_cfg.get("glob")) as stream:
                if stream.chars != data_cfg.get("chars"):
                    raise DataError(f"cannot resume: the corpus now has {stream.chars} characters, the run was "
                                    f"trained on {data_cfg.get('chars')} (did the data change?)")
                _write_ids(stream, vocab, run / rundir.IDS)

        distributed.on_main(encode_again)
        cfg["train"] = asdict(config)
        distributed.barrier()  # every rank has read the stored config before rank 0 rewrites it
        if env.is_main:
            rundir.write_json(run / rundir.CONFIG, cfg)
    else:
        if env.enabled and out is None:
            raise ValueError("under torchrun give --out DIR: the ranks would pick different timestamped "
                             "default directories")
        model = model or CharLMConfig()
        config = config or TrainConfig()

        def make_run_dir() -> tuple[list[str], dict]:
            """Count the corpus, then write the id file, config.json and vocab.json (rank 0)."""
            if run.exists() and (not run.is_dir() or any(run.iterdir())):
                raise ValueError(f"output directory {run} already exists and is not empty; "
                                 f"pass --resume to continue that run or choose another --out")
            with _scan(data, glob) as stream:
                vocab = stream.vocabulary(min_count)
                data_cfg = {"paths": [str(p) for p in data] if data else [], "glob": glob, "min_count": min_count,
                            **stream.describe()}
                created = not run.exists()
                run.mkdir(parents=True, exist_ok=True)
                try:
                    _write_ids(stream, vocab, run / rundir.IDS)
                except BaseException:
                    if created:  # leave nothing behind (the temporary id file is already removed)
                        with contextlib.suppress(OSError):
                            run.rmdir()
                    raise
            rundir.write_json(run / rundir.CONFIG, {
                "format_version": rundir.FORMAT_VERSION, "model_type": "charlm", "model": asdict(model),
                "train": asdict(config), "data": data_cfg, "rnnkit_version": __version__})
            vocab.save(run / rundir.VOCAB)
            return vocab.chars, data_cfg

        # rank 0 writes; an error there is raised on every rank; the others get its vocabulary
        chars, data_cfg = distributed.broadcast_object(distributed.on_main(make_run_dir))
        vocab = Vocabulary(chars)
    ids = _corpus_ids(run, vocab, data_cfg, data, env)  # (N,), memory-mapped
    train_ids, val_ids = split_train_val(ids, config.val_fraction)
    torch.manual_seed(config.seed)
    net = CharLM(model, vocab).to(device)  # the same initial weights on every rank
    if config.precision == "fp64":
        net = net.double()
    if env.rank:
        torch.manual_seed(config.seed + 1_000_003 * env.rank)  # own dropout masks on each rank
    trainer = Trainer(net, LanguageModelTask(train_ids, val_ids, config), config, run, callback)
    if resume:
        trainer.restore()
    log.info("training %s (%d parameters, vocabulary %d) on %d characters into %s",
             model.cell, net.num_parameters(), len(vocab), len(train_ids), run)
    return trainer.run()
