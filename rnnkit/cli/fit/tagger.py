"""``rnnkit fit tagger``: many-to-many, one tag per token (CoNLL files, span F1)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._shared import (
    config_from,
    interrupted,
    prf_table,
    run_options,
    save,
    seed_of,
    split_holdout,
    which_data,
    writer,
)
from ._shared import fit_config as fit_config_of


def config_class():
    """The model's config class (imported when the command is built)."""
    from ...models.tagger import TaggerConfig

    return TaggerConfig


def add_data_options(g) -> None:
    g.add_argument("--token-column", type=int, default=0, help="CoNLL column of the token (default: 0)")
    g.add_argument("--tag-column", type=int, default=-1, help="CoNLL column of the tag (default: -1, last)")


def run(args) -> int:
    from ...data.conll import read_conll, read_tokens
    from ...data.slots import write_slot_filling
    from ...models.tagger import Tagger, TaggerConfig, majority_baseline
    from ...models.tagger_app import train_tagger

    if args.predict is not None:
        model = Tagger.load(args.predict)
        sentences = read_tokens(args.data, args.token_column)
        tags = model.predict(sentences)
        f, close = writer(args)
        try:
            for toks, tg in zip(sentences, tags):
                f.write("".join(f"{w} {t}\n" for w, t in zip(toks, tg)) + "\n")
        finally:
            if close:
                f.close()
        return 0
    if args.eval is not None:
        model = Tagger.load(args.eval)
        test = read_conll(args.data, args.token_column, args.tag_column)
        scores = model.evaluate(test)
        prf_table("span type", {**scores.per_type, "micro avg": scores.micro, "macro avg": scores.macro})
        print(f"span F1 (micro) {scores.micro.f1:.4f} on {len(test)} sentences of {args.data}")
        return 0
    if args.demo:
        directory = args.out / "data" if args.out else Path(tempfile.mkdtemp(prefix="rnnkit-slots-"))
        paths = write_slot_filling(directory, seed=seed_of(args))
        print(f"demo: synthetic flight-booking slot filling, written to {directory}/{{train,dev,test}}.conll")
        train, valid, test = (read_conll(paths[k]) for k in ("train", "dev", "test"))
    else:
        train = read_conll(args.data, args.token_column, args.tag_column)
        if args.valid is not None:
            valid = read_conll(args.valid, args.token_column, args.tag_column)
        else:
            train, valid = split_holdout(train, args.holdout, seed_of(args))
        test = read_conll(args.test, args.token_column, args.tag_column) if args.test else valid
    config, fit_config = config_from(TaggerConfig, args), fit_config_of(args)
    print(f"training a tagger on {len(train)} sentences, validating on {len(valid)}; {config}")
    model, result = train_tagger(train, valid, config, fit_config, **run_options(args))
    if interrupted(args, result):
        return 130
    scores, base = model.evaluate(test), majority_baseline(train, test)
    prf_table("span type", {**scores.per_type, "micro avg": scores.micro, "macro avg": scores.macro})
    print(f"{which_data(test is valid)} span F1 (micro) {scores.micro.f1:.4f}   baseline (most frequent tag per word) "
          f"{base.micro.f1:.4f}   [{result.steps} steps, {result.seconds:.0f}s]")
    save(args, model)
    return 0
