"""``rnnkit fit MODEL``: train one of the design-pattern models on a file (or a
built-in demo), report it on held-out data next to its trivial baseline, save it; or
score (``--eval DIR``) or apply (``--predict DIR``) a saved one.

    rnnkit fit tagger     --data train.conll [--valid test.conll] --out runs/tagger
    rnnkit fit tagger     --eval runs/tagger --data test.conll
    rnnkit fit tagger     --predict runs/tagger --data tokens.txt [--output tagged.conll]
    rnnkit fit classifier --data reviews.csv --tokens word --pooling attention --out runs/cls
    rnnkit fit forecaster --data series.csv --target load --features temp --horizon 24 --out runs/fc
    rnnkit fit generator  --demo --out runs/gen && rnnkit fit generator --predict runs/gen --condition class

Model and training options are generated from the config dataclasses
(``TaggerConfig``..., ``FitConfig``): their defaults live there only.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError

MODELS = ("tagger", "classifier", "forecaster", "generator")
_TYPES: dict[str, Callable] = {"int": int, "float": float, "str": str}
_HELP = {
    "cell": "recurrent cell: any registered name (rnn, irnn, lstm, gru, jordan, indrnn, mingru, minlstm, "
            "slstm, mlstm, lru, rglru, s6, qrnn, sru)",
    "pooling": "classifier pooling: last, mean, max, attention",
    "tokens": "text classifier/generator units: char or word",
    "condition_mode": "generator conditioning: init, concat, both",
    "char_channels": "tagger character-CNN channels (0 = no character features)",
    "max_time": "stop training after this long, e.g. 90s, 2m, 1h (0 = no limit)",
    "max_steps": "stop training after this many optimizer steps",
    "window": "forecaster: past rows read per forecast",
    "horizon": "forecaster: future values predicted per forecast",
    "clip": "clip the gradient norm to this value (0 = off)",
}


def duration(text: str) -> float:
    """'90', '90s', '2m', '1.5h' → seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            return float(t[:-1]) * units[t[-1]]
        return float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 2m or 1h, got {text!r}") from None


def _add_config_options(parser: argparse.ArgumentParser, cls, title: str) -> None:
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        text = f"{_HELP.get(f.name, f.name.replace('_', ' '))} (default: {default})"
        if f.type == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
        else:
            kind = duration if f.name == "max_time" else _TYPES[f.type]
            group.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, help=text,
                               metavar={"int": "N", "float": "X", "str": "NAME"}[f.type])


def _config(cls, args: argparse.Namespace):
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**given)


def register(subparsers) -> None:
    from ..models.classifier import ClassifierConfig
    from ..models.forecaster import ForecasterConfig
    from ..models.generator import GeneratorConfig
    from ..models.tagger import TaggerConfig
    from ..train.fit import FitConfig
    from . import add_command

    fit = add_command(subparsers, "fit", help="train, evaluate or apply a tagger/classifier/forecaster/generator",
                      description="Train a tagger, classifier, forecaster or generator on a file or a built-in "
                                  "demo and report it next to its trivial baseline; or score (--eval DIR) or apply "
                                  "(--predict DIR) a saved one. See docs/models.md.")
    models = fit.add_subparsers(dest="model", metavar="MODEL", required=True)
    configs = {"tagger": TaggerConfig, "classifier": ClassifierConfig, "forecaster": ForecasterConfig,
               "generator": GeneratorConfig}
    helps = {"tagger": "many-to-many: one tag per token (CoNLL files, span F1)",
             "classifier": "many-to-one: one label per text or numeric sequence (CSV/TSV)",
             "forecaster": "time-series regression from CSV columns (MAE/RMSE vs naive)",
             "generator": "one-to-many: condition → character sequence (CSV of text,condition)"}
    for name in MODELS:
        p = models.add_parser(name, help=helps[name], description=helps[name])
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        mode = p.add_argument_group("what to do (default: train)")
        src = mode.add_mutually_exclusive_group()
        src.add_argument("--data", type=Path, metavar="FILE", help="training data (or the data for --eval/--predict)")
        src.add_argument("--demo", action="store_true", help="use the built-in demo data (no download)")
        mode.add_argument("--valid", type=Path, metavar="FILE",
                          help="held-out data; default: a --holdout share of --data")
        mode.add_argument("--test", type=Path, metavar="FILE",
                          help="data for the final report; default: the --valid data (which also picks the "
                               "best weights, so the figure is slightly optimistic)")
        mode.add_argument("--holdout", type=float, default=0.1, metavar="F",
                          help="share of --data held out when no --valid is given (default: 0.1)")
        mode.add_argument("--out", type=Path, metavar="DIR", help="save the trained model here")
        mode.add_argument("--overwrite", action="store_true", help="allow --out to replace a saved model")
        what = mode.add_mutually_exclusive_group()
        what.add_argument("--eval", type=Path, metavar="DIR", help="score the model saved in DIR on --data")
        what.add_argument("--predict", type=Path, metavar="DIR", help="apply the model saved in DIR to --data")
        mode.add_argument("--output", type=Path, metavar="FILE", help="write predictions here (default: stdout)")
        mode.add_argument("--threads", type=int, default=1, metavar="N",
                          help="torch CPU threads (default: 1; small recurrent models run fastest on one thread, "
                               "and several threads on a busy machine can be many times slower)")
        _add_data_options(name, p)
        _add_config_options(p, configs[name], f"{name} model")
        _add_config_options(p, FitConfig, "training")
        p.set_defaults(run=run)


def _add_data_options(name: str, p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data format")
    if name == "tagger":
        g.add_argument("--token-column", type=int, default=0, help="CoNLL column of the token (default: 0)")
        g.add_argument("--tag-column", type=int, default=-1, help="CoNLL column of the tag (default: -1, last)")
        return
    if name in ("classifier", "generator"):
        if name == "classifier":
            g.add_argument("--format", choices=("text", "numeric"), default="text",
                           help="text,label rows or rows of numbers with a label (default: text)")
        g.add_argument("--text-column", default="0", help="text column: name or index (default: 0)")
        g.add_argument("--label-column", default="-1",
                       help="label (classifier) or condition (generator) column: name or index (default: -1)")
        g.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                       help="the first row is a header (default: yes for text, no for numeric)")
    if name == "forecaster":
        g.add_argument("--target", help="column to forecast (demo: SUNACTIVITY)")
        g.add_argument("--features", default="", help="comma-separated extra input columns")
        g.add_argument("--test-fraction", type=float, default=0.2, help="last share of rows held out (default: 0.2)")
        g.add_argument("--season", type=int, default=None,
                       help="period for the seasonal-naive baseline (default: none; demo: 11)")
    if name == "generator":
        g.add_argument("--condition", action="append", help="--predict: condition(s) to sample (default: all)")
        g.add_argument("--samples", type=int, default=5, help="--predict: samples per condition (default: 5)")
        g.add_argument("--temperature", type=float, default=1.0, help="--predict: sampling temperature")
        g.add_argument("--max-length", type=int, default=40, help="--predict: longest sample (default: 40)")
    g.add_argument("--delimiter", default=None, help="CSV delimiter (default: tab for .tsv, comma otherwise)")


# -- helpers ----------------------------------------------------------------------------------
def _log(entry: dict) -> None:
    parts = [f"step {entry['step']:>6}", f"{entry['seconds']:7.1f}s"]
    if "loss" in entry:
        parts.append(f"train loss {entry['loss']:.4f}")
    if "score" in entry:
        parts.append(f"validation score {entry['score']:.4f} (lower is better)")
    print("  " + "  ".join(parts), flush=True)


def _split(items: list, share: float, seed: int) -> tuple[list, list]:
    if not 0 < share < 1:
        raise ValueError(f"--holdout must be in (0, 1), got {share}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    k = max(1, int(round(len(items) * share)))
    if len(items) - k < 1:
        raise DataError(f"only {len(items)} example(s): too few to hold out {share:.0%} and still train")
    return [items[i] for i in order[k:]], [items[i] for i in order[:k]]


def _which(test_is_valid: bool) -> str:
    return "held-out (also picked the best weights)" if test_is_valid else "test"


def _check_out(args) -> None:
    out = args.out
    if out is not None and out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a directory")
        if (out / "config.json").exists() and not args.overwrite:
            raise ValueError(f"--out {out} already holds a saved model; pass --overwrite to replace it")


def _save(args, model) -> None:
    if args.out is None:
        print("not saved (no --out DIR given)")
        return
    print(f"saved {model.save(args.out)}")


def _writer(args):
    if args.output is None:
        return sys.stdout, False
    return open(args.output, "w", encoding="utf-8"), True


def _seed(args) -> int:
    from ..train.fit import FitConfig

    return _config(FitConfig, args).seed


def _column(spec: str) -> int | str:
    return int(spec) if spec.lstrip("-").isdigit() else spec


def _prf_table(title: str, rows: dict) -> None:
    print(f"{title:<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for name, s in rows.items():
        print(f"{name:<20} {s.precision:9.3f} {s.recall:9.3f} {s.f1:9.3f} {s.support:8d}")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.eval is None and args.predict is None:
        if args.data is None and not args.demo:
            raise ValueError("give --data FILE or --demo to train (or --eval/--predict DIR)")
        _check_out(args)
    elif args.demo:
        raise ValueError("--demo trains a model; --eval/--predict take a saved model and --data FILE")
    elif args.data is None and not (args.model == "generator" and args.predict is not None):
        raise ValueError("--eval/--predict need --data FILE")
    return {"tagger": _tagger, "classifier": _classifier, "forecaster": _forecaster,
            "generator": _generator}[args.model](args)


# -- tagger -----------------------------------------------------------------------------------
def _tagger(args) -> int:
    from ..data.conll import read_conll, read_tokens
    from ..data.slots import write_slot_filling
    from ..models.tagger import Tagger, TaggerConfig, majority_baseline
    from ..models.tagger_app import train_tagger
    from ..train.fit import FitConfig

    if args.predict is not None:
        model = Tagger.load(args.predict)
        sentences = read_tokens(args.data, args.token_column)
        tags = model.predict(sentences)
        f, close = _writer(args)
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
        _prf_table("span type", {**scores.per_type, "micro avg": scores.micro, "macro avg": scores.macro})
        print(f"span F1 (micro) {scores.micro.f1:.4f} on {len(test)} sentences of {args.data}")
        return 0
    if args.demo:
        directory = args.out / "data" if args.out else Path(tempfile.mkdtemp(prefix="rnnkit-slots-"))
        paths = write_slot_filling(directory, seed=_seed(args))
        print(f"demo: synthetic flight-booking slot filling, written to {directory}/{{train,dev,test}}.conll")
        train, valid, test = (read_conll(paths[k]) for k in ("train", "dev", "test"))
    else:
        train = read_conll(args.data, args.token_column, args.tag_column)
        if args.valid is not None:
            valid = read_conll(args.valid, args.token_column, args.tag_column)
        else:
            train, valid = _split(train, args.holdout, _seed(args))
        test = read_conll(args.test, args.token_column, args.tag_column) if args.test else valid
    config, fit_config = _config(TaggerConfig, args), _config(FitConfig, args)
    print(f"training a tagger on {len(train)} sentences, validating on {len(valid)}; {config}")
    model, result = train_tagger(train, valid, config, fit_config, log=_log)
    scores, base = model.evaluate(test), majority_baseline(train, test)
    _prf_table("span type", {**scores.per_type, "micro avg": scores.micro, "macro avg": scores.macro})
    print(f"{_which(test is valid)} span F1 (micro) {scores.micro.f1:.4f}   baseline (most frequent tag per word) "
          f"{base.micro.f1:.4f}   [{result.steps} steps, {result.seconds:.0f}s]")
    _save(args, model)
    return 0


# -- classifier -------------------------------------------------------------------------------
def _read_classification(args, path: Path):
    from ..data.tabular import read_labelled_sequences, read_labelled_text

    if getattr(args, "format", "text") == "numeric":
        if not isinstance(_column(args.label_column), int):
            raise ValueError(f"--label-column must be an index for numeric files, got {args.label_column!r}")
        d = read_labelled_sequences(path, int(args.label_column), bool(args.header), args.delimiter)
        return d.sequences, d.labels
    header = True if args.header is None else args.header
    d = read_labelled_text(path, _column(args.text_column), _column(args.label_column), header, args.delimiter)
    return d.texts, d.labels


def _demo_identifiers(args):
    from ..data.identifiers import identifier_dataset

    print("demo: identifiers of the Python standard library by kind (class/function/argument/constant/module)")
    names, kinds = identifier_dataset(seed=_seed(args), max_files=300, per_kind=1500)
    pairs = list(zip(names, kinds))
    k = len(pairs) // 10
    return pairs[2 * k :], pairs[k : 2 * k], pairs[:k]


def _split_pairs(args):
    """(train, valid, test) pairs for the classifier and the generator."""
    if args.demo:
        return _demo_identifiers(args)
    pairs = list(zip(*_read_classification(args, args.data)))
    if args.valid is not None:
        train, valid = pairs, list(zip(*_read_classification(args, args.valid)))
    else:
        train, valid = _split(pairs, args.holdout, _seed(args))
    return train, valid, list(zip(*_read_classification(args, args.test))) if args.test else valid


def _classifier(args) -> int:
    from ..data._files import read_text
    from ..models.classifier import Classifier, ClassifierConfig, majority_baseline
    from ..models.classifier_app import train_classifier
    from ..train.fit import FitConfig

    if args.predict is not None:
        model = Classifier.load(args.predict)
        lines = [ln for ln in read_text(args.data) if ln.strip()]
        if model.is_text:
            examples = lines
        else:
            delimiter = args.delimiter or ("\t" if args.data.suffix.lower() in (".tsv", ".tab") else ",")
            examples = []
            for i, ln in enumerate(lines, 1):
                try:
                    examples.append([float(v) for v in ln.split(delimiter) if v.strip()])
                except ValueError:
                    raise DataError(f"{args.data}: example {i}: not a comma-separated row of numbers: {ln!r}") from None
        f, close = _writer(args)
        try:
            for label, line in zip(model.predict(examples), lines):
                f.write(f"{label}\t{line}\n")
        finally:
            if close:
                f.close()
        return 0
    if args.eval is not None:
        model = Classifier.load(args.eval)
        x, y = _read_classification(args, args.data)
        scores = model.evaluate(x, y)
        _prf_table("class", scores.per_class)
        print(f"accuracy {scores.accuracy:.4f}   macro F1 {scores.macro_f1:.4f} on {len(y)} examples of {args.data}")
        return 0
    train, valid, test = _split_pairs(args)
    config, fit_config = _config(ClassifierConfig, args), _config(FitConfig, args)
    tx, ty = [p[0] for p in train], [p[1] for p in train]
    vx, vy = [p[0] for p in valid], [p[1] for p in valid]
    sx, sy = [p[0] for p in test], [p[1] for p in test]
    print(f"training a classifier on {len(train)} examples, validating on {len(valid)}; {config}")
    model, result = train_classifier(tx, ty, (vx, vy), config, fit_config, log=_log)
    scores, base = model.evaluate(sx, sy), majority_baseline(ty, sy)
    _prf_table("class", scores.per_class)
    print(f"{_which(test is valid)} accuracy {scores.accuracy:.4f} (macro F1 {scores.macro_f1:.4f})   "
          f"baseline (majority class) {base.accuracy:.4f} (macro F1 {base.macro_f1:.4f})   "
          f"[{result.steps} steps, {result.seconds:.0f}s]")
    _save(args, model)
    return 0


# -- forecaster -------------------------------------------------------------------------------
def _forecast_report(s, prefix: str) -> None:
    print(f"{prefix}{s.count} forecasts: MAE {s.mae:.4f}  RMSE {s.rmse:.4f}   "
          f"naive (last value) MAE {s.naive_mae:.4f}  RMSE {s.naive_rmse:.4f}" +
          (f"   seasonal naive MAE {s.seasonal_mae:.4f}  RMSE {s.seasonal_rmse:.4f}"
           if s.seasonal_mae is not None else ""))
    if len(s.mae_per_step) > 1:
        print("MAE per horizon step: " + " ".join(f"{v:.3f}" for v in s.mae_per_step))


def _forecaster(args) -> int:
    from ..data.tabular import read_columns
    from ..models.forecaster import Forecaster, ForecasterConfig, sunspots_csv
    from ..models.forecaster_app import train_forecaster
    from ..train.fit import FitConfig

    features = [c.strip() for c in args.features.split(",") if c.strip()]
    if args.predict is not None or args.eval is not None:
        model = Forecaster.load(args.predict or args.eval)
        series = read_columns(args.data, model.columns, args.delimiter)
        if args.predict is not None:
            f, close = _writer(args)
            try:
                f.write(f"step,{model.target}\n")
                for h, v in enumerate(model.forecast(series), 1):
                    f.write(f"{h},{v:.6g}\n")
            finally:
                if close:
                    f.close()
            return 0
        scores = model.evaluate(series, 0, args.season or 0)
        _forecast_report(scores, f"{args.data}: ")
        return 0
    season = args.season
    if args.demo:
        path, target = sunspots_csv(), args.target or "SUNACTIVITY"
        season = 11 if season is None else season
        print(f"demo: yearly sunspot numbers 1700-2008 from statsmodels ({path})")
    else:
        if not args.target:
            raise ValueError("--target COLUMN is required with --data")
        path, target = args.data, args.target
    series = read_columns(path, [target, *features], args.delimiter)
    config, fit_config = _config(ForecasterConfig, args), _config(FitConfig, args)
    n = len(series[target])
    print(f"training a forecaster on the first {1 - args.test_fraction:.0%} of {n} rows; {config}")
    model, result, first_test = train_forecaster(series, target, features, config, fit_config, args.test_fraction,
                                                 log=_log)
    scores = model.evaluate(series, first_test, season or 0)
    _forecast_report(scores, "held-out (last rows): ")
    verdict = "beats" if scores.mae < scores.naive_mae else "does NOT beat"
    print(f"the model {verdict} the naive baseline (MAE {scores.mae:.4f} vs {scores.naive_mae:.4f})   "
          f"[{result.steps} steps, {result.seconds:.0f}s]")
    _save(args, model)
    return 0


# -- generator --------------------------------------------------------------------------------
def _generator(args) -> int:
    import torch

    from ..models.generator import Generator, GeneratorConfig, unigram_bits
    from ..models.generator_app import train_generator
    from ..train.fit import FitConfig

    if args.predict is not None:
        model = Generator.load(args.predict)
        conditions = args.condition or model.conditions.symbols
        g = torch.Generator().manual_seed(_seed(args))
        f, close = _writer(args)
        try:
            for c in conditions:
                for s in model.sample(c, args.samples, args.max_length, args.temperature, g):
                    f.write(f"{c}\t{s}\n")
        finally:
            if close:
                f.close()
        return 0
    if args.eval is not None:
        model = Generator.load(args.eval)
        x, y = _read_classification(args, args.data)
        print(f"{model.bits_per_symbol(x, y):.4f} bits per symbol on {len(x)} sequences of {args.data}")
        return 0
    train, valid, test = _split_pairs(args)
    config, fit_config = _config(GeneratorConfig, args), _config(FitConfig, args)
    tx, ty = [p[0] for p in train], [p[1] for p in train]
    vx, vy = [p[0] for p in valid], [p[1] for p in valid]
    sx, sy = [p[0] for p in test], [p[1] for p in test]
    print(f"training a generator on {len(train)} sequences, validating on {len(valid)}; {config}")
    model, result = train_generator(tx, ty, (vx, vy), config, fit_config, log=_log)
    bits, base = model.bits_per_symbol(sx, sy), unigram_bits(tx, sx)
    print(f"{_which(test is valid)} {bits:.4f} bits per symbol   baseline (unigram, unconditioned) {base:.4f}   "
          f"[{result.steps} steps, {result.seconds:.0f}s]")
    g = torch.Generator().manual_seed(fit_config.seed)
    for c in model.conditions.symbols:
        print(f"  {c:<12} " + "  ".join(model.sample(c, 5, 40, 0.8, g)))
    _save(args, model)
    return 0
