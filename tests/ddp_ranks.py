"""``python tests/ddp_ranks.py DIR rnnkit-args...``: ``python -m rnnkit rnnkit-args...`` (for
torchrun), each rank also writing the weights its trainer ended with to DIR/rank<r>.safetensors
(how tests/test_distributed_apps.py sees the ranks other than 0, which write no run)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from rnnkit.cli import entry
from rnnkit.train.trainer import Trainer

if __name__ == "__main__":
    target = Path(sys.argv[1])
    sys.argv = ["rnnkit", *sys.argv[2:]]
    trained = Trainer.run

    def run_and_record(self):
        result = trained(self)
        weights = {k: v.detach().contiguous().clone() for k, v in self.model.state_dict().items()}
        save_file(weights, str(target / f"rank{os.environ.get('RANK', '0')}.safetensors"))
        return result

    Trainer.run = run_and_record
    entry()
