"""``rnnkit report RUN_DIR``: one self-contained HTML page about a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CheckpointError, DataError
from . import add_command


def register(subparsers) -> None:
    from ..diagnostics.report import ReportConfig

    d = ReportConfig()
    p = add_command(subparsers, "report", "write a self-contained HTML report of a training run",
                    "Training curves (metrics.jsonl) and the gradient flow through time for every run "
                    "directory (char LM, fit, task, seq2seq), gate saturation for gated cells, the text "
                    "coloured by any hidden unit for character models (char LM, generator), the units most "
                    "correlated with built-in signals, and attention maps for seq2seq runs. The page needs "
                    "no network.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (config.json, model weights, metrics.jsonl)")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text: for a char LM the text to analyse (default: "
                   "the source of the standard library's textwrap module); for seq2seq the source lines whose "
                   "attention is drawn (default: fresh examples of its task)")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--chars", type=int, default=d.max_chars, help="characters of text to analyse "
                   "(default %(default)s)")
    p.set_defaults(run=run)


def _load_model(run_dir: Path):
    try:
        from .. import load
    except ImportError:
        raise CheckpointError("this rnnkit has no rnnkit.load to read run directories; "
                              "install an rnnkit with the char-LM models") from None
    return load(run_dir)


def _read_text(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"text file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    if not text:
        raise DataError(f"{path} is empty")
    return text


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import read_json_object
    from ..diagnostics.report import Probe, ReportConfig, read_metrics, write_report
    from ..tasks.seq2seq_train import FORMAT as SEQ2SEQ_FORMAT
    from ..train import rundir

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    if not (run_dir / "config.json").exists():
        raise CheckpointError(f"{run_dir} is not a run directory: no config.json")
    if args.chars < 3:
        raise ValueError(f"--chars must be at least 3, got {args.chars}")
    # the same checks as every command that reads the run: one-line errors for a bad config
    info = read_json_object(run_dir / "config.json", "run configuration")
    metrics_path = run_dir / "metrics.jsonl"
    metrics = read_metrics(metrics_path) if metrics_path.exists() else []
    text = _read_text(args.text) if args.text else None
    if info.get("format") == SEQ2SEQ_FORMAT:  # a seq2seq directory of the format before run directories
        model_type, model = "seq2seq", None  # (its hook reads it)
    else:  # every check of rnnkit.load; a one-line error for an old `Model.save` directory or an unknown type
        model = _load_model(run_dir)
        model_type = info.get("model_type", "charlm")
    # what the report measures the model on is the model type's to say (its registered hook)
    hook = rundir.report_probe(model_type)
    probe = hook(model, run_dir, info, text) if hook is not None else Probe(model)
    if probe.missing:
        print(f"note: {probe.missing}")
    cfg = ReportConfig(title=f"rnnkit report: {run_dir.resolve().name}", max_chars=args.chars)
    out = Path(args.out) if args.out else run_dir / "report.html"
    write_report(out, None, metrics, config=cfg, info=info, probe=probe)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
