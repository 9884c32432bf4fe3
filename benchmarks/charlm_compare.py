"""``rnnkit train``'s default against the plain-PyTorch baseline at the same budget and threads.

Each seed runs ``rnnkit train`` (its defaults, plus ``--rnnkit-args``) and then
``benchmarks/charlm_baseline.py`` one after the other — never side by side, so that both
see the same machine — with the same time budget and the same number of threads, and
records the final validation bpc of each (the same held-out tail of the same corpus).
Finished runs are cached in a JSON file, so an interrupted comparison resumes; the table
(mean ± sd over the seeds and the difference) is written between the ``charlm-compare``
markers of the output file::

    python benchmarks/charlm_compare.py                       # 3 seeds, 5 min, 2 threads
    python benchmarks/charlm_compare.py --seeds 0 --max-time 1m --rnnkit-args "--cell lstm"
    python benchmarks/charlm_compare.py --render-only
    python benchmarks/charlm_compare.py --keep-runs runs/compare   # keep metrics.jsonl, checkpoints
    python benchmarks/charlm_compare.py --threads 1 --clock cpu   # a busy machine: CPU seconds

The machine should be otherwise idle: a time budget measures throughput as much as
learning. The load average at the start of each run is recorded next to its result.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKERS = ("<!-- charlm-compare:start -->", "<!-- charlm-compare:end -->")
BASELINE_LINE = re.compile(r"baseline .*?: (\d+) steps, .*?val ([0-9.]+) bpc")


def child_env(threads: int | None = None) -> dict:
    """The environment of a child run: this checkout first on PYTHONPATH, and ``threads`` BLAS/OpenMP threads."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def read_metrics(run: Path) -> list[dict]:
    """The rows of a run directory's ``metrics.jsonl`` (one per step; evaluations carry ``val_bpc``)."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def run_rnnkit(args, seed: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="charlm-compare-") as tmp:
        out = Path(tmp) / "run"
        if args.keep_runs:
            options = re.sub(r"[^A-Za-z0-9.]+", "_", args.rnnkit_args).strip("_")
            out = Path(args.keep_runs) / (f"seed{seed}-{options}" if options else f"seed{seed}")
            if out.exists():
                shutil.rmtree(out)
        cmd = [sys.executable, "-m", "rnnkit", "train", "--quiet", "--out", str(out), "--seed", str(seed),
               *budget_args(args), *data_args(args), *shlex.split(args.rnnkit_args)]
        subprocess.run(cmd, env=env, check=True, cwd=ROOT)
        rows = read_metrics(out)
    vals = [r for r in rows if "val_bpc" in r]
    if not vals:
        raise RuntimeError(f"rnnkit train wrote no validation bpc: {shlex.join(cmd)}")
    return {"steps": rows[-1]["step"], "train_seconds": rows[-1]["time"], "val_bpc": vals[-1]["val_bpc"],
            "command": shlex.join(cmd[1:])}


def run_baseline(args, seed: int, env: dict) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "charlm_baseline.py"), "--seed", str(seed),
           *budget_args(args), *data_args(args)]
    done = subprocess.run(cmd, env=env, check=True, cwd=ROOT, capture_output=True, text=True)
    match = BASELINE_LINE.search(done.stdout)
    if match is None:
        raise RuntimeError(f"the baseline printed no result line:\n{done.stdout[-2000:]}")
    return {"steps": int(match[1]), "val_bpc": float(match[2]), "command": shlex.join(cmd[1:])}


def budget_args(args) -> list[str]:
    budget = ["--max-steps", str(args.max_steps)] if args.max_steps else ["--max-time", args.max_time]
    return budget + (["--clock", args.clock] if getattr(args, "clock", "wall") != "wall" else [])


def data_args(args) -> list[str]:
    return [a for path in args.data or [] for a in ("--data", path)]


def defaults() -> str:
    """What `rnnkit train` with no options trains (cell, width, depth, learning rate): results are keyed by it, so
    a changed default never inherits the figures of the one before."""
    from rnnkit.models import CharLMConfig  # noqa: PLC0415
    from rnnkit.train import TrainConfig  # noqa: PLC0415

    d = CharLMConfig()
    return f"--cell {d.cell} --hidden-size {d.hidden_size} --num-layers {d.num_layers} --lr {TrainConfig().lr:g}"


def key(kind: str, args, seed: int) -> str:
    extra = (args.rnnkit_args or f"(defaults: {defaults()})") if kind == "rnnkit" else ""
    return json.dumps([kind, extra, seed, args.max_time, args.max_steps, args.threads, args.data or [], args.clock])


def render(results: dict, args) -> str:
    def column(kind):
        want = json.loads(key(kind, args, 0))  # the same settings, any seed
        rows = [r for k, r in results.items() if (parts := json.loads(k))[:2] == want[:2] and parts[3:] == want[3:]]
        return sorted(rows, key=lambda r: r["seed"])

    rn, base = column("rnnkit"), column("baseline")

    def stat(rows):
        vals = [r["val_bpc"] for r in rows]
        if not vals:
            return "–"
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.3f} ± {sd:.3f} (n={len(vals)})"

    budget = f"{args.max_steps} steps" if args.max_steps else f"{args.max_time} of training"
    if args.clock == "cpu" and not args.max_steps:
        budget = f"{args.max_time} of CPU time"
    command = ["python", "benchmarks/charlm_compare.py", *budget_args(args), "--threads", str(args.threads),
               *data_args(args), *(["--rnnkit-args", args.rnnkit_args] if args.rnnkit_args else [])]
    lines = [f"Produced by `{shlex.join(command)}` "
             f"({budget} each, {args.threads} thread(s), runs one after the other; load average at each start "
             "in brackets).", "",
             "| | val bpc, mean ± sd | per seed: val bpc (steps, load) |", "|---|---|---|"]
    for name, rows in (("`rnnkit train` " + (args.rnnkit_args or f"(defaults: `{defaults()}`)"), rn),
                       ("baseline `torch.nn.LSTM` 2×256", base)):
        per_seed = ", ".join(f"{r['val_bpc']:.3f} ({r['steps']}, {r['load']:.1f})" for r in rows)
        lines.append(f"| {name} | {stat(rows)} | {per_seed} |")
    if rn and base:
        diff = statistics.mean(r["val_bpc"] for r in base) - statistics.mean(r["val_bpc"] for r in rn)
        who = f"`rnnkit train {args.rnnkit_args}`" if args.rnnkit_args else "The default"
        lines += ["", f"{who} is {diff:+.3f} bpc better than the baseline (target: at least +0.10)."]
    return "\n".join(lines)


def write_between(path: Path, text: str, markers: tuple[str, str] = MARKERS) -> None:
    """Put ``text`` between the two markers of ``path`` (appended with them when absent)."""
    doc = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = markers
    block = f"{start}\n{text}\n{end}"
    if start in doc and end in doc:
        doc = doc[:doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--max-time", default="5m", help="training budget of each run (default 5m)")
    p.add_argument("--max-steps", type=int, default=0, help="a step budget instead (for quick checks)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each run (default 2)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what --max-time counts in both programs: wall seconds (default) or the process's CPU "
                        "seconds (with --threads 1: the time on an idle core, fair on a busy machine)")
    p.add_argument("--data", action="append", help="corpus (default: the Python standard library sources)")
    p.add_argument("--rnnkit-args", default="", help="extra `rnnkit train` options, e.g. \"--cell lstm\"")
    p.add_argument("--results", default=str(ROOT / "docs" / "charlm_compare.json"))
    p.add_argument("--output", default=str(ROOT / "docs" / "charlm.md"))
    p.add_argument("--keep-runs", metavar="DIR",
                   help="keep each rnnkit run directory under DIR (seed and options in its name) to look at it later")
    p.add_argument("--render-only", action="store_true", help="train nothing; write the table from the results")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    env = child_env(args.threads)
    if not args.render_only:
        for seed in seeds:
            for kind, run in (("rnnkit", run_rnnkit), ("baseline", run_baseline)):
                k = key(kind, args, seed)
                if k in results:
                    continue
                load = os.getloadavg()[0]
                t0 = time.monotonic()
                results[k] = {**run(args, seed, env), "seed": seed, "load": load,
                              "wall_seconds": round(time.monotonic() - t0, 1)}
                print(f"{kind:8s} seed {seed}: val {results[k]['val_bpc']:.4f} bpc in {results[k]['steps']} steps "
                      f"(load {load:.1f})", flush=True)
                results_path.write_text(json.dumps(results, indent=1) + "\n")
    table = render(results, args)
    print(table)
    write_between(Path(args.output), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
