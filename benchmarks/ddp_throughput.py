"""Training throughput of the default character LM with 1 and N torchrun processes.

    python benchmarks/ddp_throughput.py --seconds 60 --procs 1 2

Each configuration trains the default model (``rnnkit train`` defaults, global batch 32) for
``--seconds`` on the default corpus and reads chars/s from the run's metrics.jsonl: the
median over steps (after the first 5, which include warm-up) and the mean (all characters
of the whole batch over the training time). ``--threads`` sets torch threads per process;
0 means the rnnkit default (cores / processes under torchrun, all cores otherwise).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rnnkit.train import read_metrics  # noqa: E402


def measure(procs: int, threads: int, seconds: float, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(var, None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        train = ["-m", "rnnkit", "train", "--out", str(out), "--max-time", f"{seconds}s", "--eval-every", "0",
                 "--sample-every", "0", "--val-fraction", "0.001", "--quiet", *extra]
        if procs == 1:
            cmd = [sys.executable, *train]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
                   *train]
        if threads and procs > 1:
            env["RNNKIT_THREADS"] = str(threads)
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=seconds * 3 + 300)
        rows = read_metrics(out)
    steady = [r["chars_per_sec"] for r in rows[5:] if r.get("chars_per_sec")]
    # every step has the same batch (B·T chars), so chars over training time is the harmonic mean
    return {"procs": procs, "threads": threads or "default", "steps": len(rows),
            "median": statistics.median(steady) if steady else float("nan"),
            "mean": statistics.harmonic_mean(steady) if steady else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: rnnkit default)")
    args, extra = p.parse_known_args()
    print("| processes | threads/process | steps | chars/s (median step) | chars/s (mean) |")
    print("|---|---|---|---|---|")
    for n in args.procs:
        r = measure(n, args.threads, args.seconds, extra)
        print(f"| {r['procs']} | {r['threads']} | {r['steps']} | {r['median']:,.0f} | {r['mean']:,.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
