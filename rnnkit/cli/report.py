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
                    "Training curves (metrics.jsonl), gradient flow, gate saturation, the text coloured by "
                    "any hidden unit (pick it in the page), the units most correlated with built-in "
                    "signals, and attention maps for seq2seq runs. The page needs no network.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (config.json, model weights, metrics.jsonl)")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text to analyse (default: the source of the "
                   "standard library's textwrap module)")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--chars", type=int, default=d.max_chars, help="characters of text to analyse "
                   "(default %(default)s)")
    p.set_defaults(run=run)


def _default_text() -> str:
    import textwrap

    return Path(textwrap.__file__).read_text(encoding="utf-8")


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


def _seq2seq_attention(run_dir: Path, info: dict, text: str | None, n: int = 4):
    """Decode a few sources with a seq2seq run and return (weights (T_out, T_in), source
    symbols, output symbols) for each: the lines of ``text`` if given, else fresh examples
    of the run's demo task."""
    from ..data.seq2seq_tasks import generate
    from ..tasks.seq2seq_train import load_run, translate

    model, src_vocab, tgt_vocab = load_run(run_dir)
    if model.config.attention == "none":
        raise ValueError(f"{run_dir} is a seq2seq model without attention: there is nothing to draw")
    if text is not None:
        sources = [line for line in text.splitlines() if line.strip()][:n]
    else:
        task = (info.get("train") or {}).get("task")
        if task is None:
            raise ValueError(f"{run_dir} was trained on a file: pass --text with source lines to decode")
        sources = [src for src, _ in generate(task, n, seed=12345)]
    examples = []
    for src, (_, ids, weights) in zip(sources, translate(model, sources, src_vocab, tgt_vocab)):
        src_symbols = [src_vocab.symbols[i] for i in src_vocab.encode(src)]
        out_symbols = [tgt_vocab.symbols[i] for i in ids]
        if len(out_symbols) < weights.shape[0]:  # the EOS step
            out_symbols.append("<eos>")
        examples.append((weights.detach(), src_symbols, out_symbols))
    return examples


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import read_json_object
    from ..diagnostics.report import AttentionExample, ReportConfig, read_metrics, write_report
    from ..tasks.seq2seq_train import FORMAT as SEQ2SEQ_FORMAT
    from ..tasks.seq2seq_train import read_run_info

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
    attention = []
    text = _read_text(args.text) if args.text else None
    if info.get("format") == SEQ2SEQ_FORMAT or info.get("model_type") == "seq2seq":  # the old or the one format
        model = None
        info = read_run_info(run_dir).config
        attention = [AttentionExample(w, s, t) for w, s, t in _seq2seq_attention(run_dir, info, text)]
    elif info.get("model_type") in (None, "charlm"):
        model = _load_model(run_dir)
        text = text or _default_text()
    else:  # a run of `rnnkit fit MODEL --out`: its curves (the text sections need a character model)
        from ..train import rundir

        rundir.read_config(run_dir)  # the same checks as every command that reads the run
        model = None
    cfg = ReportConfig(title=f"rnnkit report: {run_dir.resolve().name}", max_chars=args.chars)
    out = Path(args.out) if args.out else run_dir / "report.html"
    write_report(out, model, metrics, text, attention=attention, config=cfg, info=info)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
