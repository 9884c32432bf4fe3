"""rnnkit/bench/scan.py (benchmarks/scan_vs_loop.py) as a library: rows, the Markdown table, the docs rewrite
(structure only; speed is never asserted)."""

import pytest

from rnnkit.bench import scan as bench


def _tiny():
    return bench.BenchConfig(seq_lens=(8, 40), batch_size=2, input_size=3, hidden_size=4, rounds=1,
                             min_seconds=0.0, models=("mingru-scan", "mingru-loop", "torch.nn.LSTM"))


def test_measure_returns_one_row_per_length_and_model():
    rows = bench.measure(_tiny())
    assert [(r["seq_len"], r["model"]) for r in rows] == [
        (8, "mingru-scan"), (8, "mingru-loop"), (8, "torch.nn.LSTM"),
        (40, "mingru-scan"), (40, "mingru-loop"), (40, "torch.nn.LSTM")]
    for r in rows:
        assert r["ms_per_step"] > 0
        assert r["vs_torch_lstm"] == pytest.approx(
            r["ms_per_step"] / next(x["ms_per_step"] for x in rows
                                    if x["seq_len"] == r["seq_len"] and x["model"] == "torch.nn.LSTM"))


def test_markdown_table_and_docs_rewrite(tmp_path):
    cfg = _tiny()
    rows = [{"seq_len": T, "model": m, "ms_per_step": ms, "vs_torch_lstm": None}
            for T, m, ms in [(8, "mingru-scan", 2.0), (8, "mingru-loop", 5.0), (8, "torch.nn.LSTM", 4.0)]]
    table = bench.markdown(rows, cfg)
    assert "| T | mingru-scan | mingru-loop | torch.nn.LSTM | mingru loop/scan |" in table
    assert "| 8 | 2.0 | 5.0 | 4.0 | 2.50× |" in table
    doc = tmp_path / "units.md"
    doc.write_text(f"intro\n{bench.DOCS_BEGIN}\nold table\n{bench.DOCS_END}\noutro\n")
    bench.write_docs(doc, table)
    text = doc.read_text()
    assert "old table" not in text and "| 8 | 2.0 |" in text
    assert text.startswith("intro\n") and text.endswith("outro\n")


def test_bad_configuration_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown models"):
        bench.measure(bench.BenchConfig(seq_lens=(4,), models=("gru-scan",)))
    doc = tmp_path / "plain.md"
    doc.write_text("no markers here\n")
    with pytest.raises(ValueError, match="no table markers"):
        bench.write_docs(doc, "table")
