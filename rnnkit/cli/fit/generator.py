"""``rnnkit fit generator``: one-to-many, condition → character sequence (CSV of text,condition)."""

from __future__ import annotations

from ._shared import (
    config_from,
    interrupted,
    read_classification,
    run_options,
    save,
    seed_of,
    split_pairs,
    which_data,
    writer,
)
from ._shared import fit_config as fit_config_of
from .classifier import add_column_options


def config_class():
    """The model's config class (imported when the command is built)."""
    from ...models.generator import GeneratorConfig

    return GeneratorConfig


def add_data_options(g) -> None:
    add_column_options(g)
    g.add_argument("--condition", action="append", help="--predict: condition(s) to sample (default: all)")
    g.add_argument("--samples", type=int, default=5, help="--predict: samples per condition (default: 5)")
    g.add_argument("--temperature", type=float, default=1.0, help="--predict: sampling temperature")
    g.add_argument("--max-length", type=int, default=40, help="--predict: longest sample (default: 40)")


def run(args) -> int:
    import torch

    from ...models.generator import Generator, GeneratorConfig, unigram_bits
    from ...models.generator_app import train_generator

    if args.predict is not None:
        model = Generator.load(args.predict)
        conditions = args.condition or model.conditions.symbols
        g = torch.Generator().manual_seed(seed_of(args))
        f, close = writer(args)
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
        x, y = read_classification(args, args.data)
        print(f"{model.bits_per_symbol(x, y):.4f} bits per symbol on {len(x)} sequences of {args.data}")
        return 0
    train, valid, test = split_pairs(args)
    config, fit_config = config_from(GeneratorConfig, args), fit_config_of(args)
    tx, ty = [p[0] for p in train], [p[1] for p in train]
    vx, vy = [p[0] for p in valid], [p[1] for p in valid]
    sx, sy = [p[0] for p in test], [p[1] for p in test]
    print(f"training a generator on {len(train)} sequences, validating on {len(valid)}; {config}")
    model, result = train_generator(tx, ty, (vx, vy), config, fit_config, **run_options(args))
    if interrupted(args, result):
        return 130
    bits, base = model.bits_per_symbol(sx, sy), unigram_bits(tx, sx)
    print(f"{which_data(test is valid)} {bits:.4f} bits per symbol   baseline (unigram, unconditioned) {base:.4f}   "
          f"[{result.steps} steps, {result.seconds:.0f}s]")
    g = torch.Generator().manual_seed(fit_config.seed)
    for c in model.conditions.symbols:
        print(f"  {c:<12} " + "  ".join(model.sample(c, 5, 40, 0.8, g)))
    save(args, model)
    return 0
