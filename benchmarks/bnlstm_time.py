"""Training-step time of the batch-normalized LSTM against torch.nn.LSTM and rnnkit.LSTM:
``python benchmarks/bnlstm_time.py [--lengths 1024 4096]``. One layer, B = 8, I = H = 128,
float32, one thread, forward + backward, the fastest of ``--rounds`` rounds with the three
layers taking turns; batch_norm_max_steps = T."""

from __future__ import annotations

import argparse
import time

import torch

import rnnkit


def _ms(layer: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    out, _ = layer(x)
    out.sum().backward()
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    B, I, H = 8, 128, 128
    for T in args.lengths:
        x = torch.randn(T, B, I)
        layers = {"torch.nn.LSTM": torch.nn.LSTM(I, H), "rnnkit.LSTM": rnnkit.LSTM(I, H),
                  "rnnkit.LSTM(batch_norm=True)": rnnkit.LSTM(I, H, batch_norm=True, batch_norm_max_steps=T)}
        best = dict.fromkeys(layers, float("inf"))
        for _ in range(args.rounds):
            for name, layer in layers.items():
                best[name] = min(best[name], _ms(layer, x))
        ratio = best["rnnkit.LSTM(batch_norm=True)"] / best["torch.nn.LSTM"]
        print(f"T={T}: " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in best.items())
              + f" ({ratio:.1f}x torch.nn.LSTM)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
