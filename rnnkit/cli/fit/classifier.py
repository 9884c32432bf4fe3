"""``rnnkit fit classifier``: many-to-one, one label per text or numeric sequence (CSV/TSV)."""

from __future__ import annotations

import argparse

from ._shared import (
    config_from,
    interrupted,
    prf_table,
    read_classification,
    run_options,
    save,
    split_pairs,
    which_data,
    writer,
)
from ._shared import fit_config as fit_config_of


def config_class():
    """The model's config class (imported when the command is built)."""
    from ...models.classifier import ClassifierConfig

    return ClassifierConfig


def add_data_options(g) -> None:
    g.add_argument("--format", choices=("text", "numeric"), default="text",
                   help="text,label rows or rows of numbers with a label (default: text)")
    add_column_options(g)


def add_column_options(g) -> None:
    """The columns of the text,label (classifier) or text,condition (generator) files."""
    g.add_argument("--text-column", default="0", help="text column: name or index (default: 0)")
    g.add_argument("--label-column", default="-1",
                   help="label (classifier) or condition (generator) column: name or index (default: -1)")
    g.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                   help="the first row is a header (default: yes for text, no for numeric)")


def run(args) -> int:
    from ...data._files import read_text
    from ...data.tabular import read_numeric_rows
    from ...models.classifier import Classifier, ClassifierConfig, majority_baseline
    from ...models.classifier_app import train_classifier

    if args.predict is not None:
        model = Classifier.load(args.predict)
        if model.is_text:
            lines = [ln for ln in read_text(args.data) if ln.strip()]
            examples = lines
        else:
            examples, lines = read_numeric_rows(args.data, args.delimiter)
        f, close = writer(args)
        try:
            for label, line in zip(model.predict(examples), lines):
                f.write(f"{label}\t{line}\n")
        finally:
            if close:
                f.close()
        return 0
    if args.eval is not None:
        model = Classifier.load(args.eval)
        x, y = read_classification(args, args.data)
        scores = model.evaluate(x, y)
        prf_table("class", scores.per_class)
        print(f"accuracy {scores.accuracy:.4f}   macro F1 {scores.macro_f1:.4f} on {len(y)} examples of {args.data}")
        return 0
    train, valid, test = split_pairs(args)
    config, fit_config = config_from(ClassifierConfig, args), fit_config_of(args)
    tx, ty = [p[0] for p in train], [p[1] for p in train]
    vx, vy = [p[0] for p in valid], [p[1] for p in valid]
    sx, sy = [p[0] for p in test], [p[1] for p in test]
    print(f"training a classifier on {len(train)} examples, validating on {len(valid)}; {config}")
    model, result = train_classifier(tx, ty, (vx, vy), config, fit_config, **run_options(args))
    if interrupted(args, result):
        return 130
    scores, base = model.evaluate(sx, sy), majority_baseline(ty, sy)
    prf_table("class", scores.per_class)
    print(f"{which_data(test is valid)} accuracy {scores.accuracy:.4f} (macro F1 {scores.macro_f1:.4f})   "
          f"baseline (majority class) {base.accuracy:.4f} (macro F1 {base.macro_f1:.4f})   "
          f"[{result.steps} steps, {result.seconds:.0f}s]")
    save(args, model)
    return 0
