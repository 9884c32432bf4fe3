"""benchmarks/charlm_tune.py: candidates train on a CPU-time budget, finished ones are kept, the table is theirs."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_candidates_train_once_and_reach_the_table(tmp_path):
    corpus = tmp_path / "corpus.py"
    corpus.write_text("def f(x):\n    return x + 1\n\n" * 300, encoding="utf-8")
    output = tmp_path / "charlm.md"
    output.write_text("# before\n<!-- charlm-tune:start -->\nold\n<!-- charlm-tune:end -->\n# after\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "charlm_tune.py"), "--max-time", "1", "--jobs", "2",
           "--candidate", "--cell lstm --hidden-size 8 --eval-every 5", "--candidate", "--cell gru --hidden-size 8",
           "--data", str(corpus), "--runs", str(tmp_path / "runs"), "--output", str(output)]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=600)
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["cell_gru_hidden_size_8", "cell_lstm_hidden_size_8_eval_every_5"]
    config = json.loads((runs[1] / "config.json").read_text())
    assert config["train"]["clock"] == "cpu" and config["model"]["cell"] == "lstm"
    finals = {}
    for run in runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        # the budget is spent at the last row, or by the evaluation after it (a row's time does not
        # include the evaluation made at its step: with --eval-every 5 that can end the budget)
        evaluated = run.name.endswith("eval_every_5") and rows[-1]["step"] % 5 == 0
        assert (rows[-1]["time"] >= 1.0 or evaluated) and "val_bpc" in rows[-1]
        finals[run.name] = rows[-1]
    doc = output.read_text()
    assert doc.startswith("# before\n") and doc.endswith("# after\n") and "\nold\n" not in doc
    row = finals["cell_gru_hidden_size_8"]
    assert f"| `--cell gru --hidden-size 8` | {row['step']} |" in doc and f"| {row['val_bpc']:.3f} |" in doc
    # finished candidates are not trained again
    stamp = (runs[0] / "metrics.jsonl").stat().st_mtime_ns
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=600)
    assert (runs[0] / "metrics.jsonl").stat().st_mtime_ns == stamp and output.read_text() == doc
