"""What the ``rnnkit fit`` models share: the progress line and bar, the hold-out split, --out
checks, the writer of --output, and the readers of the classifier's and the generator's
CSV files."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from ...errors import DataError


def progress_line(entry: dict) -> str:
    """The line of an evaluation window's end (``fit``'s ``log`` entry)."""
    parts = [f"step {entry['step']:>6}", f"{entry['seconds']:7.1f}s"]
    if "loss" in entry:
        parts.append(f"train loss {entry['loss']:.4f}")
    if "score" in entry:
        parts.append(f"validation score {entry['score']:.4f} (lower is better)")
    return "  " + "  ".join(parts)




def split_holdout(items: list, share: float, seed: int) -> tuple[list, list]:
    if not 0 < share < 1:
        raise ValueError(f"--holdout must be in (0, 1), got {share}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    k = max(1, int(round(len(items) * share)))
    if len(items) - k < 1:
        raise DataError(f"only {len(items)} example(s): too few to hold out {share:.0%} and still train")
    return [items[i] for i in order[k:]], [items[i] for i in order[:k]]


def which_data(test_is_valid: bool) -> str:
    return "held-out (also picked the best weights)" if test_is_valid else "test"


def check_out(args) -> None:
    out = args.out
    if args.resume:
        if out is None:
            raise ValueError("--resume needs --out DIR, the run to continue")
        if not (out / "config.json").exists():
            raise ValueError(f"--resume: {out} holds no run (no config.json)")
        return
    if out is not None and out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a directory")
        if (out / "config.json").exists() and not args.overwrite:
            raise ValueError(f"--out {out} already holds a saved model; pass --overwrite to replace it "
                             f"(or --resume to continue its training)")


def run_options(args) -> dict:
    """The run keywords of ``train_<model>``: out, resume, overwrite, and the progress: the
    bar of the command (``args.bar``, a :class:`~rnnkit.cli._common.TrainingBar`) as the
    trainer's callback, the per-evaluation lines printed above it."""
    bar = args.bar
    return {"out": args.out, "resume": args.resume, "overwrite": args.overwrite, "callback": bar,
            "log": lambda entry: bar.line(progress_line(entry))}


def fit_config(args):
    """The FitConfig of the command line; on --resume the run's own, with the options given."""
    from dataclasses import replace

    from ...checkpoint import config_from_json, read_json_object
    from ...train.fit import FitConfig
    from .._options import given

    if not (getattr(args, "resume", False) and args.out is not None):
        return FitConfig(**given(args, FitConfig))
    path = args.out / "config.json"
    stored = config_from_json(FitConfig, read_json_object(path, "run configuration").get("fit", {}), path, "fit")
    return replace(stored, **given(args, FitConfig))


def interrupted(args, result) -> bool:
    """Whether Ctrl-C stopped the training (then says how to resume)."""
    if result.stopped_by != "interrupted":
        return False
    where = f"checkpoint in {args.out}; resume with the same command and --resume" if args.out else \
        "nothing saved (no --out DIR given)"
    print(f"interrupted after {result.steps} steps: {where}", file=sys.stderr)
    return True


def save(args, model) -> None:
    if args.out is None:
        print("not saved (no --out DIR given)")
        return
    print(f"saved {args.out} (run directory: rnnkit info {args.out}, rnnkit report {args.out})")


def writer(args):
    if args.output is None:
        return sys.stdout, False
    return open(args.output, "w", encoding="utf-8"), True


def seed_of(args) -> int:
    return fit_config(args).seed


def config_from(cls, args):
    """The dataclass ``cls`` with the fields given on the command line (the rest default)."""
    from .._options import given

    return cls(**given(args, cls))


def column(spec: str) -> int | str:
    return int(spec) if spec.lstrip("-").isdigit() else spec


def prf_table(title: str, rows: dict) -> None:
    print(f"{title:<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for name, s in rows.items():
        print(f"{name:<20} {s.precision:9.3f} {s.recall:9.3f} {s.f1:9.3f} {s.support:8d}")


def read_classification(args, path: Path):
    from ...data.tabular import read_labelled_sequences, read_labelled_text

    if getattr(args, "format", "text") == "numeric":
        if not isinstance(column(args.label_column), int):
            raise ValueError(f"--label-column must be an index for numeric files, got {args.label_column!r}")
        d = read_labelled_sequences(path, int(args.label_column), bool(args.header), args.delimiter)
        return d.sequences, d.labels
    header = True if args.header is None else args.header
    d = read_labelled_text(path, column(args.text_column), column(args.label_column), header, args.delimiter)
    return d.texts, d.labels


def demo_identifiers(args):
    from ...data.identifiers import identifier_dataset

    print("demo: identifiers of the Python standard library by kind (class/function/argument/constant/module)")
    names, kinds = identifier_dataset(seed=seed_of(args), max_files=300, per_kind=1500)
    pairs = list(zip(names, kinds))
    k = len(pairs) // 10
    return pairs[2 * k :], pairs[k : 2 * k], pairs[:k]


def split_pairs(args):
    """(train, valid, test) pairs for the classifier and the generator."""
    if args.demo:
        return demo_identifiers(args)
    pairs = list(zip(*read_classification(args, args.data)))
    if args.valid is not None:
        train, valid = pairs, list(zip(*read_classification(args, args.valid)))
    else:
        train, valid = split_holdout(pairs, args.holdout, seed_of(args))
    return train, valid, list(zip(*read_classification(args, args.test))) if args.test else valid
