"""The tuning log of ``rnnkit train``'s default: candidate settings at an equal CPU-time budget.

Each candidate is ``rnnkit train`` with the given options on the default corpus (or
``--data``), one thread, ``--clock cpu --max-time 5m`` (the 5 minutes of an idle core,
whatever else the machine runs), seed 0. A candidate whose run directory is complete is not
run again, so the log grows by adding candidates. The table (steps reached, validation bpc
along the way and at the end) is written between the ``charlm-tune`` markers of
docs/charlm.md::

    python benchmarks/charlm_tune.py                                   # the candidates below
    python benchmarks/charlm_tune.py --candidate "--cell lstm --hidden-size 320" --jobs 2
    python benchmarks/charlm_tune.py --render-only

The wall-clock comparison at two threads against the plain-PyTorch baseline is
``benchmarks/charlm_compare.py``; this is where its candidate comes from.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from charlm_compare import child_env, read_metrics, write_between  # (the benchmarks folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
MARKERS = ("<!-- charlm-tune:start -->", "<!-- charlm-tune:end -->")
#: what was tried for the 5-minute default (the first: the previous default)
CANDIDATES = (
    "--cell gru --hidden-size 512",
    "--cell gru --hidden-size 512 --batch-size 16 --lr 5e-3",
    "--cell gru --hidden-size 384",
    "--cell gru --hidden-size 256",
    "--cell lstm --hidden-size 256",
    "--cell lstm --hidden-size 384",
    "--cell lstm --hidden-size 256 --num-layers 2",
)


def slug(options: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", options).strip("_") or "defaults"


def run(options: str, args) -> None:
    out = Path(args.runs) / slug(options)
    if (out / "metrics.jsonl").exists() and _final(out) is not None:
        return
    shutil.rmtree(out, ignore_errors=True)  # an unfinished candidate starts again
    env = child_env(1)
    data = [a for path in args.data or [] for a in ("--data", path)]
    cmd = [sys.executable, "-m", "rnnkit", "train", "--quiet", "--sample-every", "0", "--clock", "cpu",
           "--max-time", args.max_time, "--seed", "0", "--out", str(out), *data, *shlex.split(options)]
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)


def _final(out: Path) -> dict | None:
    rows = read_metrics(out)
    vals = [r for r in rows if "val_bpc" in r]
    return vals[-1] if vals and vals[-1]["step"] == rows[-1]["step"] else None


def render(args) -> str:
    lines = [f"Produced by `python benchmarks/charlm_tune.py` (`rnnkit train OPTIONS --clock cpu --max-time "
             f"{args.max_time}`, one thread, seed 0; every option not shown at its default; validation on the "
             "held-out 1 % every 250 steps and at the end, its time included in the budget).", "",
             "| options | steps | val bpc at 1/3, 2/3 of the steps | final val bpc |", "|---|---|---|---|"]
    for options in args.candidate:
        out = Path(args.runs) / slug(options)
        final = _final(out) if (out / "metrics.jsonl").exists() else None
        if final is None:
            lines.append(f"| `{options}` | not run | | |")
            continue
        vals = [row for row in read_metrics(out) if "val_bpc" in row]

        def near(frac, vals=vals, final=final):
            return min(vals, key=lambda r: abs(r["step"] - frac * final["step"]))

        third, two = near(1 / 3), near(2 / 3)
        lines.append(f"| `{options}` | {final['step']} | {third['val_bpc']:.3f} @{third['step']}, "
                     f"{two['val_bpc']:.3f} @{two['step']} | {final['val_bpc']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", action="append", help="`rnnkit train` options of one candidate (repeatable; "
                   "default: the built-in list)")
    p.add_argument("--max-time", default="5m", help="CPU time of each run on one thread (default 5m)")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side, one thread each")
    p.add_argument("--data", action="append", help="corpus (default: the Python standard library sources)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "charlm-tune"), help="where the run directories go")
    p.add_argument("--output", default=str(ROOT / "docs" / "charlm.md"))
    p.add_argument("--render-only", action="store_true", help="train nothing; write the table from the runs")
    args = p.parse_args(argv)
    args.candidate = args.candidate or list(CANDIDATES)
    if not args.render_only:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(lambda options: run(options, args), args.candidate))
    table = render(args)
    print(table)
    write_between(Path(args.output), table, MARKERS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
