"""benchmarks/charlm_compare.py: both runs happen, their final validation bpc reach the table."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_compare_runs_both_and_tabulates_their_results(tmp_path):
    corpus = tmp_path / "corpus.py"
    corpus.write_text("def f(x):\n    return x + 1\n\n" * 300, encoding="utf-8")
    results, output = tmp_path / "cmp.json", tmp_path / "charlm.md"
    output.write_text("# before\n<!-- charlm-compare:start -->\nold\n<!-- charlm-compare:end -->\n# after\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "charlm_compare.py"), "--seeds", "0,1", "--max-steps", "2",
           "--threads", "1", "--data", str(corpus), "--results", str(results), "--output", str(output)]
    subprocess.run([*cmd, "--keep-runs", str(tmp_path / "kept")], check=True, cwd=ROOT, capture_output=True,
                   timeout=600)
    runs = json.loads(results.read_text())
    # --keep-runs: each rnnkit run directory stays, with the metrics its result was read from
    for seed in (0, 1):
        rows = (tmp_path / "kept" / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()
        assert json.loads(rows[-1])["step"] == 2
    assert sorted((json.loads(k)[0], r["seed"]) for k, r in runs.items()) == [
        ("baseline", 0), ("baseline", 1), ("rnnkit", 0), ("rnnkit", 1)]
    assert all(r["steps"] == 2 and 0 < r["val_bpc"] < 10 for r in runs.values())
    doc = output.read_text()
    assert doc.startswith("# before\n") and doc.endswith("# after\n") and "\nold\n" not in doc
    for r in runs.values():
        assert f"{r['val_bpc']:.3f} (2," in doc
    # cached: a second call trains nothing and writes the same table
    again = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "seed 0: val" not in again.stdout and output.read_text() == doc


def test_a_cpu_clock_reaches_both_programs_and_the_table(tmp_path):
    corpus = tmp_path / "corpus.py"
    corpus.write_text("def f(x):\n    return x + 1\n\n" * 300, encoding="utf-8")
    results, output = tmp_path / "cmp.json", tmp_path / "charlm.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "charlm_compare.py"), "--seeds", "0", "--max-time", "1",
           "--clock", "cpu", "--threads", "1", "--data", str(corpus), "--results", str(results),
           "--output", str(output)]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=600)
    runs = json.loads(results.read_text())
    assert {json.loads(k)[-1] for k in runs} == {"cpu"}
    assert all("--clock cpu" in r["command"] and r["steps"] >= 1 for r in runs.values())
    assert "1 of CPU time" in output.read_text() and "--clock cpu" in output.read_text()
