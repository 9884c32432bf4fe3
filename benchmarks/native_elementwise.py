"""The native loops of the element-wise units against the paths they replace, side by side in
one process: minGRU/minLSTM's native loop vs their parallel scan, QRNN's and the linear SRU's
native fo-pooling vs their scan, the SRU's native loop vs its Python step loop, S6's native
loop vs its parallel scan.

    python benchmarks/native_elementwise.py --threads 1 --rounds 5 --seq-lens 128 1024 4096

One training step is ``out, _ = layer(x); out.pow(2).mean().backward()`` (as
rnnkit/bench/scan.py), batch 8, input and hidden 128, float32. After a warm-up, every round
runs each pair's two paths once in turn (the old path first), so that a change of the
machine's load hits both alike; the table gives each path's median ms and the new/old
ratio as the median of the per-round ratios with the worst (largest) round in parentheses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import rnnkit

#: pair → (builder, the old path as (backend, RNNKIT_NATIVE), the new path likewise)
PAIRS = {
    "mingru": (lambda I, H: rnnkit.MinGRU(I, H), ("scan", "1"), ("bptt", "1")),
    "minlstm": (lambda I, H: rnnkit.MinLSTM(I, H), ("scan", "1"), ("bptt", "1")),
    "qrnn": (lambda I, H: rnnkit.QRNN(I, H), ("scan", "1"), ("bptt", "1")),
    "sru-linear": (lambda I, H: rnnkit.SRU(I, H, gate_recurrence=False), ("scan", "1"), ("bptt", "1")),
    "sru": (lambda I, H: rnnkit.SRU(I, H), ("bptt", "0"), ("bptt", "1")),
    "s6": (lambda I, H: rnnkit.S6(I, H), ("scan", "1"), ("bptt", "1")),
}


def _step(layer, x, backend: str, native: str) -> float:
    os.environ["RNNKIT_NATIVE"] = native
    layer.backend = backend
    t0 = time.perf_counter()
    out, _ = layer(x)
    out.pow(2).mean().backward()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[128, 1024, 4096])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    H = args.hidden_size
    print(f"ms per training step, batch {args.batch_size}, input = hidden = {H}, float32, "
          f"{torch.get_num_threads()} thread(s); ratio new/old: median of rounds (worst round)\n")
    print("| unit | T | old path | ms | new path | ms | new/old |")
    print("|---|---:|---|---:|---|---:|---:|")
    for T in args.seq_lens:
        torch.manual_seed(0)
        x = torch.randn(T, args.batch_size, H)
        layers = {name: PAIRS[name][0](H, H) for name in args.pairs}
        for name, layer in layers.items():  # warm-up (and the build, on a first run)
            for backend, native in PAIRS[name][1:]:
                _step(layer, x, backend, native)
        times = {name: ([], []) for name in layers}
        for _ in range(args.rounds):
            for name, layer in layers.items():
                old, new = PAIRS[name][1:]
                times[name][0].append(_step(layer, x, *old))
                times[name][1].append(_step(layer, x, *new))
        for name, (old_t, new_t) in times.items():
            ratios = [n / o for n, o in zip(new_t, old_t)]
            (ob, on), (nb, nn) = PAIRS[name][1:]
            label = {("scan", "1"): "scan", ("bptt", "0"): "Python loop", ("bptt", "1"): "native loop"}
            print(f"| {name} | {T} | {label[ob, on]} | {1e3 * statistics.median(old_t):.1f} | {label[nb, nn]} | "
                  f"{1e3 * statistics.median(new_t):.1f} | {statistics.median(ratios):.2f} ({max(ratios):.2f}) |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
