"""Run the benchmark grid of ``rnnkit bench`` as a script: ``python benchmarks/bench.py [options]``
(the same options as ``rnnkit bench --help``)."""

import sys

from rnnkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
