"""Every recurrent unit as a character LM at equal time: the newer units against LSTM and GRU.

Each run is ``rnnkit train --cell NAME`` with the same model size, batch, chunk length,
schedule and time budget on the default corpus (the Python standard library's sources, or
``--data``); the table gives the final validation bpc (mean ± sd over the seeds), the steps
reached and the parameters. The budget is counted in CPU seconds of one thread
(``rnnkit train --clock cpu`` under ``OMP_NUM_THREADS=1``): on an idle core that is the wall
time, and on a shared machine every unit still gets the same amount of work done, so the
comparison is "at equal wall time on one idle core" whatever else runs. ``--jobs 2`` runs two
units side by side (one thread each). Finished runs are cached in a JSON file (an interrupted
comparison resumes); the table is written between the ``units-charlm`` markers::

    python benchmarks/units_charlm.py                               # every unit, 2 seeds, 2 min
    python benchmarks/units_charlm.py --cells lstm gru mlstm --seeds 0 --max-time 30s
    python benchmarks/units_charlm.py --render-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from charlm_compare import child_env, read_metrics, write_between  # (the benchmarks folder is on sys.path)
from safetensors import safe_open

ROOT = Path(__file__).resolve().parent.parent
MARKERS = ("<!-- units-charlm:start -->", "<!-- units-charlm:end -->")
#: the classic references first, then the newer units of docs/new-units.md
DEFAULT_CELLS = ("lstm", "gru", "rnn", "indrnn", "mingru", "minlstm", "slstm", "mlstm", "lru", "rglru",
                 "s6", "qrnn", "sru")
#: options every run pins, so the table does not move when `rnnkit train`'s defaults do (7e-3 was the
#: default learning rate when the table was started; the char LM's default became 5e-3 later)
PINNED = ["--lr", "7e-3"]


def settings(args) -> list[str]:
    """The `rnnkit train` options every unit shares (budget, size, data)."""
    budget = ["--max-steps", str(args.max_steps)] if args.max_steps else ["--max-time", args.max_time, "--clock", "cpu"]
    data = [a for path in args.data or [] for a in ("--data", path)]
    return [*budget, "--hidden-size", str(args.hidden_size), *data, *shlex.split(args.rnnkit_args)]


def key(cell: str, seed: int, args) -> str:
    return json.dumps([cell, seed, settings(args)])


def run_one(cell: str, seed: int, args) -> dict:
    env = child_env(1)
    with tempfile.TemporaryDirectory(prefix="units-charlm-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "rnnkit", "train", "--quiet", "--sample-every", "0", "--out", str(out),
               "--cell", cell, "--seed", str(seed), *PINNED, *settings(args)]
        t0 = time.monotonic()
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            return {"cell": cell, "seed": seed, "error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
        rows = read_metrics(out)
        with safe_open(out / "model.safetensors", "pt") as f:
            params = sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    vals = [r for r in rows if "val_bpc" in r]
    return {"cell": cell, "seed": seed, "steps": rows[-1]["step"], "cpu_seconds": rows[-1]["time"],
            "val_bpc": vals[-1]["val_bpc"] if vals else None, "parameters": params,
            "wall_seconds": round(time.monotonic() - t0, 1), "load": round(os.getloadavg()[0], 1),
            "commit": commit()}


def commit() -> str:
    """The checkout's commit (short hash), "+" when its tracked files have changes: the code a run ran."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def render(results: dict, cells: list[str], args) -> str:
    budget = f"{args.max_steps} steps" if args.max_steps else f"{args.max_time} of CPU time on one thread"
    command = ["python", "benchmarks/units_charlm.py", "--cells", *cells, "--seeds", args.seeds,
               *(["--max-steps", str(args.max_steps)] if args.max_steps else ["--max-time", args.max_time]),
               "--hidden-size", str(args.hidden_size), *[a for path in args.data or [] for a in ("--data", path)],
               *(["--rnnkit-args", args.rnnkit_args] if args.rnnkit_args else [])]
    lines = [f"Produced by `{shlex.join(command)}`: `rnnkit train --cell NAME` at hidden size {args.hidden_size} "
             f"and {shlex.join(PINNED)}, every other option at its default, {budget} per run (evaluations "
             "included); validation bpc on the corpus's held-out tail.", "",
             "| unit | val bpc, mean ± sd | per seed: val bpc (steps) | steps per CPU-second | parameters |",
             "|---|---|---|---|---|"]
    for cell in cells:
        rows = sorted((r for k, r in results.items() if (parts := json.loads(k))[0] == cell
                       and parts[2] == settings(args)), key=lambda r: r["seed"])
        good = [r for r in rows if r.get("val_bpc") is not None]
        if not rows:
            lines.append(f"| {cell} | not run | | | |")
            continue
        if not good:
            lines.append(f"| {cell} | failed: {'; '.join(' '.join(r.get('error', [])) for r in rows)} | | | |")
            continue
        vals = [r["val_bpc"] for r in good]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        per_seed = ", ".join(f"{r['val_bpc']:.3f} ({r['steps']})" for r in good)
        rate = statistics.mean(r["steps"] / r["cpu_seconds"] for r in good if r["cpu_seconds"])
        lines.append(f"| {cell} | {statistics.mean(vals):.3f} ± {sd:.3f} (n={len(vals)}) | {per_seed} | {rate:.2f} | "
                     f"{good[0]['parameters']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", default=list(DEFAULT_CELLS), help="registered names, in table order")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    p.add_argument("--max-time", default="2m", help="CPU time of each run on one thread (default 2m)")
    p.add_argument("--max-steps", type=int, default=0, help="a step budget instead (for quick checks)")
    p.add_argument("--hidden-size", type=int, default=256, help="hidden units of every unit (default 256)")
    p.add_argument("--rnnkit-args", default="", help="more `rnnkit train` options shared by every run")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side, one thread each (default 1)")
    p.add_argument("--data", action="append", help="corpus (default: the Python standard library sources)")
    p.add_argument("--results", default=str(ROOT / "docs" / "units_charlm.json"))
    p.add_argument("--output", default=str(ROOT / "docs" / "new-units.md"))
    p.add_argument("--render-only", action="store_true", help="train nothing; write the table from the results")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    # failed runs are tried again; finished ones are kept
    todo = [(cell, seed) for seed in seeds for cell in args.cells
            if key(cell, seed, args) not in results or "error" in results[key(cell, seed, args)]]
    if not args.render_only and todo:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(run_one, cell, seed, args): (cell, seed) for cell, seed in todo}
            for future in as_completed(futures):
                (cell, seed), result = futures[future], future.result()
                results[key(cell, seed, args)] = result
                shown = f"val {result['val_bpc']:.4f} bpc in {result['steps']} steps" if result.get("val_bpc") \
                    else f"failed: {result.get('error')}"
                print(f"{cell:8s} seed {seed}: {shown}", flush=True)
                results_path.write_text(json.dumps(results, indent=1) + "\n")
    table = render(results, args.cells, args)
    print(table)
    write_between(Path(args.output), table, MARKERS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
