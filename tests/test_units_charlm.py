"""benchmarks/units_charlm.py: every unit trains, its figures reach the table, failures are retried."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_units_train_tabulate_and_cache(tmp_path):
    corpus = tmp_path / "corpus.py"
    corpus.write_text("def f(x):\n    return x + 1\n\n" * 300, encoding="utf-8")
    results, output = tmp_path / "units.json", tmp_path / "units.md"
    output.write_text("# before\n<!-- units-charlm:start -->\nold\n<!-- units-charlm:end -->\n# after\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "units_charlm.py"), "--cells", "lstm", "mingru", "nosuchcell",
           "--seeds", "0", "--max-steps", "2", "--hidden-size", "16", "--jobs", "2", "--data", str(corpus),
           "--results", str(results), "--output", str(output)]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=600)
    runs = {json.loads(k)[0]: r for k, r in json.loads(results.read_text()).items()}
    assert runs["lstm"]["steps"] == 2 and runs["mingru"]["steps"] == 2
    assert 0 < runs["lstm"]["val_bpc"] < 10 and runs["lstm"]["parameters"] > runs["mingru"]["parameters"] > 0
    assert "unknown cell" in " ".join(runs["nosuchcell"]["error"])
    doc = output.read_text()
    assert doc.startswith("# before\n") and doc.endswith("# after\n") and "\nold\n" not in doc
    assert f"| lstm | {runs['lstm']['val_bpc']:.3f} ± 0.000 (n=1) |" in doc and "| nosuchcell | failed:" in doc
    # cached: a second call trains only what failed, and writes the same table
    again = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "lstm     seed 0" not in again.stdout and "nosuchcell seed 0" in again.stdout
    assert output.read_text() == doc
