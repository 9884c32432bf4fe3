"""The README's sample: a default ``rnnkit train`` run (5 minutes, the standard library's
source), then ``rnnkit sample`` with the README's options, written between the
``readme-sample`` markers of README.md with the run's figures and the load average the
machine had during training (a time budget measures the machine as much as the model)::

    python benchmarks/readme_sample.py                  # train (5 min) and sample
    python benchmarks/readme_sample.py --run runs/stdlib  # sample an existing run instead
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from charlm_compare import child_env, read_metrics  # (the benchmarks folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
MARKERS = ("<!-- readme-sample:start -->", "<!-- readme-sample:end -->")
SAMPLE_OPTIONS = ["--prime", "def ", "--length", "600", "--temperature", "0.7", "--seed", "0"]


def rnnkit(*args: str, env: dict) -> str:
    return subprocess.run([sys.executable, "-m", "rnnkit", *args], env=env, check=True, cwd=ROOT,
                          capture_output=True, text=True).stdout


def describe(run: Path, load: tuple[float, float] | None) -> str:
    rows = read_metrics(run)
    val = min(r["val_bpc"] for r in rows if "val_bpc" in r)
    cfg = json.loads((run / "config.json").read_text())
    model = cfg.get("model", {})
    where = f"{os.cpu_count()} CPUs, {platform.machine()}"
    if load is not None:
        where += f", load average {load[0]:.1f} at the start and {load[1]:.1f} at the end of training"
    return (f"{model.get('cell', '?').upper()} {model.get('hidden_size', '?')}, {rows[-1]['step']} steps in "
            f"{rows[-1]['time']:.0f} s of training ({where}), best validation {val:.3f} bpc")


def _longest_backtick_run(text: str) -> int:
    longest = current = 0
    for ch in text:
        current = current + 1 if ch == "`" else 0
        longest = max(longest, current)
    return longest


def write_between(path: Path, text: str) -> None:
    doc = path.read_text(encoding="utf-8")
    start, end = MARKERS
    if start not in doc or end not in doc:
        raise SystemExit(f"{path} has no {start} … {end} markers")
    path.write_text(doc[:doc.index(start) + len(start)] + "\n" + text + "\n" + doc[doc.index(end):], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="sample this run directory instead of training one")
    p.add_argument("--max-time", default=None, help="training budget (default: rnnkit train's, 5 minutes)")
    p.add_argument("--output", type=Path, default=ROOT / "README.md")
    args = p.parse_args(argv)
    env = child_env()
    with tempfile.TemporaryDirectory(prefix="readme-sample-") as tmp:
        load = None
        run = args.run
        if run is None:
            run = Path(tmp) / "stdlib"
            before = os.getloadavg()[0]
            rnnkit("train", "--quiet", "--out", str(run), *(["--max-time", args.max_time] if args.max_time else []),
                   env=env)
            load = (before, os.getloadavg()[0])
        text = rnnkit("sample", str(run), *SAMPLE_OPTIONS, env=env)
        figures = describe(run, load)
    command = "rnnkit sample RUN " + shlex.join(SAMPLE_OPTIONS)
    fence = "`" * max(3, 1 + _longest_backtick_run(text))  # a fence longer than any run of backticks in it
    block = (f"A sample from a default run ({figures}; `{command}`, written here by "
             f"`python benchmarks/readme_sample.py`):\n\n{fence}python\n{text.rstrip()}\n{fence}")
    write_between(args.output, block)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
