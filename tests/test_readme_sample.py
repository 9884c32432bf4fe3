"""benchmarks/readme_sample.py writes what `rnnkit sample` prints, with the run's figures."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_block_is_the_sample_of_the_run(tmp_path):
    corpus = tmp_path / "corpus.py"
    corpus.write_text("def f(x):\n    return `x` + 1\n\n" * 300, encoding="utf-8")
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "rnnkit", "train", "--quiet", "--data", str(corpus), "--out", str(run),
                    "--max-steps", "3", "--eval-every", "3", "--hidden-size", "16"], check=True, cwd=ROOT,
                   capture_output=True, timeout=300)
    readme = tmp_path / "README.md"
    readme.write_text("# top\n<!-- readme-sample:start -->\nold\n<!-- readme-sample:end -->\n# bottom\n")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "readme_sample.py"), "--run", str(run), "--output",
                    str(readme)], check=True, cwd=ROOT, capture_output=True, timeout=300)
    sample = subprocess.run([sys.executable, "-m", "rnnkit", "sample", str(run), "--prime", "def ", "--length", "600",
                             "--temperature", "0.7", "--seed", "0"], check=True, cwd=ROOT, capture_output=True,
                            text=True, timeout=300).stdout
    doc = readme.read_text()
    assert doc.startswith("# top\n") and doc.endswith("# bottom\n") and "\nold\n" not in doc
    assert sample.rstrip() in doc and sample.startswith("def ")
    assert "LSTM 16, 3 steps in" in doc and "best validation" in doc
