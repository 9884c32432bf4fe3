"""What the applications of the four example-trained models (tagger, classifier,
forecaster, generator) share: a run on the one :class:`~rnnkit.train.Trainer` with an
:class:`~rnnkit.train.examples.ExampleTask`, in a run directory of the one format.

    config.json   {"format_version", "model_type", "model", "train", "fit", "data",
                   "rnnkit_version"} + the model's saved fields ("kind", "config", its
                   vocabularies / scaling), so `Tagger.load(DIR)` reads it as well
    model.safetensors / best.safetensors / trainer_state.* / metrics.jsonl   (the trainer's)
    probe.safetensors   the first PROBE_EXAMPLES validation examples (training examples without
                        validation data) as one collated batch: what `rnnkit report` measures
                        the gradient flow on, since the data itself is not in the run directory

Without a directory (``out=None``) the run goes into a temporary one, removed afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..errors import CheckpointError
from ..train import distributed, rundir
from ..train.examples import ExampleTask
from ..train.fit import FitConfig, FitResult
from ..train.trainer import Trainer, TrainResult

#: FitConfig fields a resumed run may change (its budget and reporting)
RESUMABLE = ("max_steps", "max_time", "eval_every", "checkpoint_every", "on_nan")


#: examples stored with a run for `rnnkit report` (probe.safetensors)
PROBE_EXAMPLES = rundir.PROBE_EXAMPLES


def register(model_type: str, model_cls, config_cls, probe: Callable | None = None) -> None:
    """Make ``model_type`` run directories loadable (``rnnkit.load``, ``rnnkit info``): the
    model is ``model_cls.from_saved(config, fields)`` with the fields read from config.json.

    ``probe(model, tensors, source)`` → the :class:`rnnkit.diagnostics.Probe` of ``rnnkit
    report``, from the tensors of the run's probe.safetensors (the batch :func:`fit_run`
    stored; ``source``: "validation" or "training"). A run without the file (trained before
    it was stored) or with one that is not such a batch gets a report without gradient flow
    and one line saying why."""
    from ._common import SavedFields

    hook = None
    if probe is not None:
        def hook(model: nn.Module, run_dir: Path, cfg: dict, text: str | None):
            from ..diagnostics.report import Probe

            return rundir.use_probe(run_dir, lambda tensors, source: probe(model, tensors, source),
                                    lambda why: Probe(model, missing=why))

    rundir.register_model_type(model_type, model_cls, config_cls, lambda config, cfg, run: model_cls.from_saved(
        config, SavedFields(cfg, run / rundir.CONFIG)), probe=hook)


#: the files of a run directory the trainer and this module write
RUN_FILES = rundir.RUN_FILES


def _fit_result(run: Path, result: TrainResult, fc: FitConfig, task: ExampleTask) -> FitResult:
    """The :class:`FitResult` of a run, from its metrics.jsonl: the training loss averaged
    over each evaluation window, the evaluations and the best one (the latest of equals: the
    weights of best.safetensors)."""
    keys = task.metric_keys
    out = FitResult(steps=result.steps, seconds=result.elapsed)
    window: list[float] = []
    for record in rundir.read_metrics(run):
        window.append(record[keys["train"]])
        score = record.get(keys["val"])
        if record["step"] % fc.eval_every == 0 or score is not None or record["step"] == result.steps:
            out.train_loss.append(sum(window) / len(window))
            window.clear()
        if score is not None:
            out.evaluations.append((record["step"], score))
            if out.best_score is None or score <= out.best_score:  # the latest of equals, as best.safetensors
                out.best_score, out.best_step = score, record["step"]
    if result.interrupted:
        out.stopped_by = "interrupted"
    elif result.steps < fc.max_steps:
        out.stopped_by = "max_time"
    return out


def _progress(log: Callable[[dict], None] | None, callback: Callable[[dict], None] | None, eval_every: int,
              task: ExampleTask) -> Callable[[dict], None] | None:
    """The trainer's events, also as the ``log`` entries of :func:`~rnnkit.train.fit.fit`:
    ``{"step", "seconds", "loss"[, "score"]}`` at each evaluation window's end."""
    if log is None:
        return callback
    keys, window = task.metric_keys, []

    def on_event(event: dict) -> None:
        if callback is not None:
            callback(event)
        if event["kind"] != "step":
            return
        window.append(event[keys["train"]])
        score = event.get(keys["val"])
        if event["step"] % eval_every == 0 or score is not None or event["progress"] >= 1.0:
            entry: dict[str, Any] = {"step": event["step"], "seconds": event["time"],
                                     "loss": sum(window) / len(window)}
            if score is not None:
                entry["score"] = score
            window.clear()
            log(entry)

    return on_event


def fit_run(model_type: str, make_model: Callable[[], nn.Module],
            examples: Sequence | Callable[[nn.Module], Sequence],
            collate: Callable[[nn.Module, list], Any], loss_fn: Callable[[nn.Module, Any], torch.Tensor],
            eval_fn: Callable[[nn.Module], float] | None, fit_config: FitConfig | None, *,
            log: Callable[[dict], None] | None = None, out: str | os.PathLike | None = None, resume: bool = False,
            overwrite: bool = False, callback: Callable[[dict], None] | None = None,
            data: dict | None = None,
            probe: tuple[str, Sequence | Callable[[nn.Module], Sequence]] | None = None) -> tuple[nn.Module, FitResult]:
    """Train the model ``make_model()`` (built after seeding with ``fit_config.seed``; on
    ``resume`` the run's own model, with the config and vocabularies it stored) on
    ``examples`` and return it with the best validation weights (the latest without
    ``eval_fn``) and the :class:`FitResult`.

    ``examples``: a list, or ``examples(model)`` when they depend on the model (a
    forecaster's windows); ``collate(model, examples)`` builds a batch, ``loss_fn(model, batch)`` is its loss,
    ``eval_fn(model)`` the validation score (lower is better). ``out``: the run directory
    (exact ``resume``, Ctrl-C checkpoint, metrics.jsonl, ``rnnkit info``/``report``);
    ``callback`` receives the trainer's events; ``data`` is recorded in config.json.
    ``probe`` = (source, examples or examples(model)): the first :data:`PROBE_EXAMPLES` of
    them, collated, are stored as probe.safetensors for ``rnnkit report`` (source:
    "validation" or "training", what they are).

    Under torchrun (``WORLD_SIZE`` in the environment) this joins the process group and
    trains data-parallel, each rank on its share of every batch (see
    :mod:`rnnkit.train.examples`): rank 0 writes the run directory and calls ``log`` and
    ``callback``; every rank returns rank 0's model and result."""
    fc = fit_config or FitConfig()
    chosen = examples if callable(examples) else (lambda model: examples)
    with distributed.session() as (env, _), distributed.run_directory(out, resume, overwrite) as run:
        if resume:
            cfg = rundir.read_config(run)
            if cfg["model_type"] != model_type:
                raise CheckpointError(f"cannot resume: {run} holds a {cfg['model_type']!r} run, not a "
                                      f"{model_type!r} one")
            path = run / rundir.CONFIG
            stored = rundir.config_from_json(FitConfig, cfg.get("fit", {}), path, "fit")
            # a fit_config given on resume changes the budget only
            fc = stored if fit_config is None else replace(stored, **{k: getattr(fc, k) for k in RESUMABLE})
            config = rundir.config_from_json(rundir.MODEL_TYPES[model_type][1], cfg["model"], path, "model")
            rundir.check_resume(run, config, None, "fp32", cfg["model"], cfg)
            model = rundir.builder(run, cfg)(config)
            examples = chosen(model)
            if len(examples) != cfg.get("data", {}).get("examples"):
                raise CheckpointError(f"cannot resume: the data now has {len(examples)} training examples, the run "
                                      f"was trained on {cfg.get('data', {}).get('examples')} (did the data change?)")
            cfg["fit"], cfg["train"] = asdict(fc), asdict(fc.train_config())
            if env.is_main:
                rundir.write_json(run / rundir.CONFIG, cfg)
        else:
            torch.manual_seed(fc.seed)
            model = make_model()
            examples = chosen(model)
            if env.is_main:  # under torchrun rank 0 writes the run
                rundir.write_json(run / rundir.CONFIG, {
                    "format_version": rundir.FORMAT_VERSION, "model_type": model_type, "model": asdict(model.config),
                    "train": asdict(fc.train_config()), "fit": asdict(fc),
                    "data": {**(data or {}), "examples": len(examples)}, "rnnkit_version": __version__,
                    # the model's saved fields, as Model.save() writes them (Model.load reads the run)
                    "kind": model_type, "config": asdict(model.config), **model.saved_fields()})
        if env.is_main and probe is not None and not (run / rundir.PROBE).exists():
            source, given = probe
            rundir.write_probe(run, given(model) if callable(given) else given,
                               lambda chosen: collate(model, chosen), source)
        task = ExampleTask(examples, fc.batch_size, lambda chosen: collate(model, chosen), loss_fn, eval_fn,
                           seed=fc.seed)
        trainer = Trainer(model, task, fc.train_config(), run,
                          _progress(log, callback, fc.eval_every, task) if env.is_main else None)
        if resume:
            trainer.restore()
        result = trainer.run()
        if env.is_main and (run / rundir.BEST).exists():
            rundir.load_state_into(model, run / rundir.BEST)
        model.eval()
        # under torchrun every rank returns rank 0's model and result (rank 0 read the run)
        distributed.broadcast_module(model)
        return model, distributed.broadcast_object(_fit_result(run, result, fc, task) if env.is_main else None)
