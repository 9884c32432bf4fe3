"""``rnnkit bench``: measure every cell and variant against torch.nn, a plain Python loop
and the machine's GEMM throughput; write BENCHMARKS.md and a JSON file."""

from __future__ import annotations

import argparse
import shlex
import time

from . import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "bench", help="measure speed against torch.nn, a Python loop and the GEMM roofline",
                    description=__doc__)
    p.add_argument("--quick", action="store_true", help="a smoke run: one small shape, rnn/lstm/gru, 2 rounds")
    p.add_argument("--out", default="BENCHMARKS.md", help="Markdown table to write (default: %(default)s)")
    p.add_argument("--json", default="BENCHMARKS.json", help="JSON results to write (default: %(default)s)")
    p.add_argument("--shapes", nargs="+", metavar="SHAPE",
                   help="shapes SEQxBATCHxHIDDEN or SEQxBATCHxINPUTxHIDDEN (default: the issue's grid)")
    p.add_argument("--cells", nargs="+", metavar="CELL", help="cells/variants to run (default: all; see --list)")
    p.add_argument("--rounds", type=int, help="timed rounds per measurement (default 3, 2 with --quick)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where to measure (default: %(default)s); on cuda torch.nn runs cuDNN")
    p.add_argument("--threads", type=int, help="torch.set_num_threads before measuring (default: torch's)")
    p.add_argument("--sample-chars", type=int, help="characters per model for the sampling throughput (0: skip)")
    p.add_argument("--no-scan", action="store_true", help="skip the training time versus sequence length "
                   "(T = 128 … 4096) of the parallel units (minGRU/minLSTM, mLSTM, LRU, RG-LRU, S6, QRNN) "
                   "against their loops and the sequential cells")
    p.add_argument("--list", action="store_true", help="list the cells/variants and the default shapes, then exit")
    p.add_argument("--render", metavar="JSON",
                   help="measure nothing: write the Markdown table (--out) from the JSON of an earlier run")
    p.set_defaults(run=run)


def _load():
    from ..bench import grid

    return grid


def _scan_section(quick: bool, threads: int | None) -> dict:
    """Training time versus sequence length, parallel scan against sequential loops."""
    from ..bench import scan

    cfg = scan.BenchConfig(threads=threads)
    if quick:
        cfg.seq_lens, cfg.min_seconds = (128, 512), 0.2
    rows = scan.measure(cfg, progress=lambda line: print(line, flush=True))
    return {"rows": rows, "markdown": scan.markdown(rows, cfg)}


def _command(args: argparse.Namespace) -> str:
    """The ``rnnkit bench`` command line that measures what this run measures (the output
    file names left out), for the header of the table."""
    parts = ["rnnkit bench"]
    if args.quick:
        parts.append("--quick")
    for flag, value in (("--shapes", args.shapes), ("--cells", args.cells)):
        if value:
            parts += [flag, *value]
    for flag, value in (("--rounds", args.rounds), ("--threads", args.threads), ("--sample-chars", args.sample_chars)):
        if value is not None:
            parts += [flag, str(value)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if args.no_scan:
        parts.append("--no-scan")
    return " ".join(shlex.quote(p) if p != "rnnkit bench" else p for p in parts)


def run(args: argparse.Namespace) -> int:
    import torch

    bench = _load()
    if args.render:
        import json

        try:
            results = json.loads(open(args.render, encoding="utf-8").read())
            bench.to_markdown(results)  # (validates before anything is written)
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{args.render} is not the JSON of an rnnkit bench run "
                             f"({type(e).__name__}: {e})") from None
        bench.write_outputs(results, args.out, None)
        print(f"wrote {args.out} from {args.render}")
        return 0
    if args.list:
        for name, v in bench.VARIANTS.items():
            print(f"{name:<24} {v.family} {v.options or ''}")
        print("shapes:", " ".join(f"{s.seq}x{s.batch}x{s.input}x{s.hidden}" for s in bench.DEFAULT_SHAPES))
        return 0
    cfg = bench.BenchConfig.quick() if args.quick else bench.BenchConfig()
    if args.shapes:
        cfg.shapes = tuple(bench.Shape.parse(s) for arg in args.shapes for s in arg.split(",") if s)
    if args.cells:
        cfg.variants = tuple(c for arg in args.cells for c in arg.split(",") if c)
    if args.rounds is not None:
        if args.rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {args.rounds}")
        cfg.rounds = args.rounds
    if args.sample_chars is not None:
        if args.sample_chars < 0:
            raise ValueError(f"--sample-chars must be 0 or more, got {args.sample_chars}")
        cfg.sample_chars = args.sample_chars
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch.cuda.is_available() is False (no CUDA device or a CPU-only torch)")
    cfg.device = args.device
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    command = _command(args)
    # the files are rewritten after every point, so an interrupted run keeps what it measured
    results = bench.run(cfg, log=lambda line: print(line, flush=True),
                        on_progress=lambda partial: bench.write_outputs({**partial, "command": command}, args.out,
                                                                        args.json))
    results["command"] = command
    if not args.no_scan:
        results["scan"] = _scan_section(args.quick, args.threads)
    bench.write_outputs(results, args.out, args.json)
    print(f"wrote {args.out} and {args.json} in {time.perf_counter() - t0:.0f} s")
    for key, misses in bench.check_targets(results).items():
        print(f"target {key}: {'met' if not misses else 'missed at ' + str(len(misses)) + ' point(s)'}")
    return 0
