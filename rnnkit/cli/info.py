"""``rnnkit info``: what a run directory holds."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from . import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "info", "describe a run directory",
                    "Print a run's configuration, vocabulary size, parameter count, steps and best "
                    "validation bits per character.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by rnnkit train or rnnkit fit --out")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..train import rundir

    if _earlier_format(args.run_dir) is not None:
        return _describe_earlier(args.run_dir)
    cfg = rundir.read_config(args.run_dir)
    model = rundir.load(args.run_dir, "latest")
    metrics = rundir.read_metrics(args.run_dir)
    # a char LM logs bits per character; the other model types a loss and a validation score
    train_key, val_key = ("train_bpc", "val_bpc") if cfg["model_type"] == "charlm" else ("train_loss", "val_score")
    vals = [v for m in metrics if (v := _number(m, val_key)) is not None]
    last = metrics[-1] if metrics else {}
    print(f"run: {args.run_dir}")
    print(f"model: {cfg['model_type']} " + json.dumps(cfg["model"]))
    print("train: " + json.dumps(cfg["train"]))
    print("data: " + json.dumps(cfg.get("data", {})))
    if hasattr(model, "vocab") and cfg["model_type"] == "charlm":
        print(f"vocabulary: {len(model.vocab)} characters")
        ids = Path(args.run_dir) / rundir.IDS
        print(f"corpus ids: {ids.name}, {ids.stat().st_size:,} bytes (derived from the data)" if ids.is_file()
              else "corpus ids: - (--resume encodes the data again)")
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    print(f"steps: {int(_number(last, 'step') or 0)} ({_number(last, 'time') or 0.0:.0f}s)")
    name = train_key.replace("_", " ")
    value = _number(last, train_key)
    print(f"last {name}: {value:.4f}" if value is not None else f"last {name}: -")
    name = val_key.replace("_", " ").replace("val ", "best val ")
    print(f"{name}: {min(vals):.4f}" if vals else f"{name}: -")
    return 0


def _earlier_format(run_dir) -> str | None:
    """"fit" or "seq2seq" for a directory in a format from before the one run directory
    (``Model.save`` / old ``rnnkit fit --out``; the old ``rnnkit seq2seq train``), else None."""
    path = Path(run_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # read_config says what is wrong
    if not isinstance(cfg, dict) or "model_type" in cfg or "format_version" in cfg:
        return None
    if isinstance(cfg.get("kind"), str):
        return "fit"
    if str(cfg.get("format", "")).startswith("rnnkit-seq2seq"):
        return "seq2seq"
    return None


def _describe_earlier(run_dir) -> int:
    """What a directory of an earlier format holds: its model, config and parameters (these
    formats kept no training metrics). The weights are loaded, so a damaged file is a
    one-line error naming it."""
    from dataclasses import asdict, is_dataclass

    if _earlier_format(run_dir) == "fit":
        from .. import models

        kind = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))["kind"]
        classes = {"tagger": models.Tagger, "classifier": models.Classifier, "forecaster": models.Forecaster,
                   "generator": models.Generator}
        if kind not in classes:
            raise ValueError(f"{run_dir} holds a model of kind {kind!r}; rnnkit fit writes {sorted(classes)}")
        model = classes[kind].load(run_dir)
        config, reader = model.config, f"rnnkit fit {kind} --eval/--predict"
    else:
        from ..tasks.seq2seq_train import load_run

        model, _, _ = load_run(run_dir)
        kind, config, reader = "seq2seq", model.config, "rnnkit seq2seq eval/translate"
    print(f"run: {run_dir}")
    print(f"format: earlier (before the one run-directory format; no training metrics); read by {reader}")
    print(f"model: {kind} " + json.dumps(asdict(config) if is_dataclass(config) else config))
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    return 0


def _number(record: dict, key: str) -> float | None:
    """``record[key]`` when it is a finite number (metrics.jsonl is read as it is found)."""
    value = record.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
