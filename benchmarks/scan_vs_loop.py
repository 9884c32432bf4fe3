"""Training-step time against sequence length, parallel scan vs sequential loop:
``python benchmarks/scan_vs_loop.py [--docs docs/new-units.md]`` (see rnnkit/bench/scan.py)."""

from rnnkit.bench.scan import main

if __name__ == "__main__":
    raise SystemExit(main())
