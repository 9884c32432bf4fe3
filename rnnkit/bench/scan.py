"""Training-step time against sequence length: parallel scan vs sequential loop.

Measures forward + backward of one layer on random data for minGRU and minLSTM trained
by the parallel scan (``backend="scan"``) and by the sequential loop with the same
hand-written backward (``backend="bptt"``: their native loop where the extension is built,
as for ``*-loop`` of QRNN and for the SRU; the others' loops are Python), next to
rnnkit.IndRNN, rnnkit.LSTM, rnnkit.GRU and torch.nn.LSTM, and the units of
docs/new-units.md (sLSTM, mLSTM's chunkwise form and its loop, LRU, RG-LRU, S6 and QRNN by
scan and by loop, SRU), all in the same run. The table has one part per group of models
(:data:`GROUPS`).

    python benchmarks/scan_vs_loop.py                      # default grid, < 3 minutes on CPU
    python benchmarks/scan_vs_loop.py --docs docs/new-units.md   # also rewrite the table there

``rnnkit bench`` runs it too and adds its table to BENCHMARKS.md (``--no-scan`` skips it).

Importable: :func:`measure` returns the rows, :func:`markdown` renders them.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

import rnnkit

DOCS_BEGIN = "<!-- scan_vs_loop table: begin (written by benchmarks/scan_vs_loop.py) -->"
DOCS_END = "<!-- scan_vs_loop table: end -->"


@dataclass
class BenchConfig:
    seq_lens: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
    batch_size: int = 8
    input_size: int = 128
    hidden_size: int = 128
    #: timed training steps per model and length (after one warm-up); the fastest counts.
    #: Short sequences get more rounds, until ``min_seconds`` have passed for that length.
    rounds: int = 3
    min_seconds: float = 2.0
    device: str = "cpu"
    #: torch intra-op threads (None: torch's default)
    threads: int | None = None
    models: tuple[str, ...] = ("mingru-scan", "mingru-loop", "minlstm-scan", "minlstm-loop",
                               "indrnn", "rnnkit.GRU", "rnnkit.LSTM", "torch.nn.LSTM",
                               "slstm", "mlstm-chunkwise", "mlstm-loop", "lru-scan", "lru-loop", "rglru-scan",
                               "rglru-loop", "s6-scan", "s6-loop", "qrnn-scan", "qrnn-loop", "sru")
    seed: int = 0
    extra: dict = field(default_factory=dict)


def _builders(cfg: BenchConfig) -> dict[str, Callable[[], nn.Module]]:
    I, H = cfg.input_size, cfg.hidden_size
    return {
        "mingru-scan": lambda: rnnkit.MinGRU(I, H, backend="scan"),
        "mingru-loop": lambda: rnnkit.MinGRU(I, H, backend="bptt"),
        "minlstm-scan": lambda: rnnkit.MinLSTM(I, H, backend="scan"),
        "minlstm-loop": lambda: rnnkit.MinLSTM(I, H, backend="bptt"),
        "indrnn": lambda: rnnkit.IndRNN(I, H),
        "rnnkit.GRU": lambda: rnnkit.GRU(I, H),
        "rnnkit.LSTM": lambda: rnnkit.LSTM(I, H),
        "torch.nn.LSTM": lambda: nn.LSTM(I, H),
        "slstm": lambda: rnnkit.SLSTM(I, H),
        "mlstm-chunkwise": lambda: rnnkit.MLSTM(I, H, backend="chunkwise"),
        "mlstm-loop": lambda: rnnkit.MLSTM(I, H, backend="bptt"),
        "lru-scan": lambda: rnnkit.LRU(I, H, backend="scan"),
        "lru-loop": lambda: rnnkit.LRU(I, H, backend="bptt"),
        "rglru-scan": lambda: rnnkit.RGLRU(I, H, backend="scan"),
        "rglru-loop": lambda: rnnkit.RGLRU(I, H, backend="bptt"),
        "s6-scan": lambda: rnnkit.S6(I, H, backend="scan"),
        "s6-loop": lambda: rnnkit.S6(I, H, backend="bptt"),
        "qrnn-scan": lambda: rnnkit.QRNN(I, H, backend="scan"),
        "qrnn-loop": lambda: rnnkit.QRNN(I, H, backend="bptt"),
        "sru": lambda: rnnkit.SRU(I, H),
    }


#: the parts of the table: a part lists the models of its group that were measured, plus the
#: torch.nn.LSTM reference, and the loop/scan ratio of every unit measured both ways
GROUPS: dict[str, tuple[str, ...]] = {
    "minGRU, minLSTM and the classic cells": ("mingru-scan", "mingru-loop", "minlstm-scan", "minlstm-loop",
                                              "indrnn", "rnnkit.GRU", "rnnkit.LSTM"),
    "the units of docs/new-units.md": ("slstm", "mlstm-chunkwise", "mlstm-loop", "lru-scan", "lru-loop",
                                       "rglru-scan", "rglru-loop", "s6-scan", "s6-loop", "qrnn-scan",
                                       "qrnn-loop", "sru"),
}
REFERENCE = "torch.nn.LSTM"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _training_step(layer: nn.Module, x: torch.Tensor) -> float:
    """Seconds of one forward + backward."""
    _sync(x.device)
    t0 = time.perf_counter()
    out, _ = layer(x)
    out.pow(2).mean().backward()
    _sync(x.device)
    return time.perf_counter() - t0


def measure(cfg: BenchConfig | None = None, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (sequence length, model): ms per training step (the fastest of
    at least ``cfg.rounds`` after a warm-up; the models take turns, so that a change in the
    machine's load hits all of them alike) and the ratio to torch.nn.LSTM."""
    cfg = cfg or BenchConfig()
    builders = _builders(cfg)
    unknown = [m for m in cfg.models if m not in builders]
    if unknown:
        raise ValueError(f"unknown models {unknown}; expected some of {sorted(builders)}")
    if cfg.rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {cfg.rounds}")
    device = torch.device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    rows = []
    for T in cfg.seq_lens:
        torch.manual_seed(cfg.seed)
        x = torch.randn(T, cfg.batch_size, cfg.input_size, device=device)
        layers = {name: builders[name]().to(device) for name in cfg.models}
        for layer in layers.values():
            _training_step(layer, x)  # warm-up: allocations, lazy initialisation
        best = {name: float("inf") for name in cfg.models}
        start, done = time.perf_counter(), 0
        while done < cfg.rounds or (time.perf_counter() - start < cfg.min_seconds and done < 100):
            for name, layer in layers.items():
                best[name] = min(best[name], _training_step(layer, x))
            done += 1
        ms = {name: 1e3 * sec for name, sec in best.items()}
        if progress is not None:
            progress(f"T={T}: " + ", ".join(f"{n} {v:.1f} ms" for n, v in ms.items()))
        ref = ms.get("torch.nn.LSTM")
        for name in cfg.models:
            rows.append({"seq_len": T, "model": name, "ms_per_step": ms[name],
                         "vs_torch_lstm": ms[name] / ref if ref else None})
    return rows


def _table(rows: list[dict], models: list[str]) -> list[str]:
    """One line per sequence length, one column per model (ms per forward + backward), then
    the loop/parallel ratio of every unit measured both ways."""
    lens = list(dict.fromkeys(r["seq_len"] for r in rows))
    ms = {(r["seq_len"], r["model"]): r["ms_per_step"] for r in rows}
    pairs = [(m.rsplit("-", 1)[0], m) for m in models
             if m.endswith(("-scan", "-chunkwise")) and f"{m.rsplit('-', 1)[0]}-loop" in models]
    head = ["T", *models, *(f"{u} loop/{m.rsplit('-', 1)[1]}" for u, m in pairs)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for T in lens:
        cells = [str(T), *(f"{ms[T, m]:.1f}" for m in models)]
        cells += [f"{ms[T, f'{u}-loop'] / ms[T, m]:.2f}×" for u, m in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict], cfg: BenchConfig | None = None) -> str:
    """The tables of the measured rows: one per group of :data:`GROUPS` that has any of its
    models measured (each with the torch.nn.LSTM column when that was measured), and one for
    models outside the groups."""
    cfg = cfg or BenchConfig()
    measured = list(dict.fromkeys(r["model"] for r in rows))
    grouped = {m for members in GROUPS.values() for m in members}
    parts = [(title, [m for m in measured if m in members]) for title, members in GROUPS.items()]
    parts.append(("other models", [m for m in measured if m not in grouped and m != REFERENCE]))
    ref = [REFERENCE] if REFERENCE in measured else []
    parts = [(title, models + ref) for title, models in parts if models] or [("", ref)]
    lines: list[str] = []
    for title, models in parts:
        if len(parts) > 1:
            lines += [f"{title}:", ""]
        lines += _table(rows, models) + [""]
    device = cfg.device if cfg.device != "cpu" else f"CPU ({platform.processor() or platform.machine()}, " \
        f"{torch.get_num_threads()} threads)"
    caption = (f"ms per training step (forward + backward of one layer), batch {cfg.batch_size}, "
               f"input {cfg.input_size}, hidden {cfg.hidden_size}, float32, {device}, torch {torch.__version__}.")
    return caption + "\n\n" + "\n".join(lines).rstrip("\n") + "\n"


def write_docs(path: Path, table: str) -> None:
    """Replace the text between the table markers in ``path`` by ``table``."""
    text = path.read_text(encoding="utf-8")
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise ValueError(f"{path} has no table markers {DOCS_BEGIN!r} ... {DOCS_END!r}")
    before, rest = text.split(DOCS_BEGIN, 1)
    _, after = rest.split(DOCS_END, 1)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(before + DOCS_BEGIN + "\n" + table + DOCS_END + after, encoding="utf-8")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=list(defaults.seq_lens))
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--input-size", type=int, default=defaults.input_size)
    parser.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    parser.add_argument("--models", nargs="+", default=list(defaults.models))
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="timed steps per model and length")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch intra-op threads")
    parser.add_argument("--docs", type=Path, help="rewrite the marked table in this Markdown file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    cfg = BenchConfig(seq_lens=tuple(args.seq_lens), batch_size=args.batch_size, input_size=args.input_size,
                      hidden_size=args.hidden_size, rounds=args.rounds, device=args.device, threads=args.threads,
                      models=tuple(args.models))
    rows = measure(cfg, progress=None if args.quiet else lambda s: print(s, flush=True))
    table = markdown(rows, cfg)
    print(table)
    if args.docs:
        write_docs(args.docs, table)
        print(f"wrote the table into {args.docs}")
    return 0


__all__ = ["BenchConfig", "asdict", "markdown", "measure", "write_docs"]

if __name__ == "__main__":
    raise SystemExit(main())
