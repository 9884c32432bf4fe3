"""The pure logic of ``rnnkit bench``: shapes, GEMM/FLOP counting, ratios, the table, and
that each Python-loop baseline computes what the rnnkit layer computes."""

import json
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rnnkit.bench import grid as bench
from rnnkit.cli import main

from . import needs

SMALL = bench.Shape(5, 3, 4, 6)


def test_shape_parse_fills_input_with_hidden():
    assert bench.Shape.parse("100x64x512") == bench.Shape(100, 64, 512, 512)
    assert bench.Shape.parse("128x32x64x256") == bench.Shape(128, 32, 64, 256)
    assert bench.Shape(128, 32, 64, 256).name == "T128-B32-I64-H256"


@pytest.mark.parametrize("text", ["100x64", "axbxc", "10x0x5", "1x2x3x4x5"])
def test_shape_parse_rejects_bad_text(text):
    with pytest.raises(ValueError, match="SEQxBATCHxHIDDEN"):
        bench.Shape.parse(text)


def test_lstm_flops_formula():
    """One LSTM training step: forward 2·T·B·4H·(I+H) FLOPs in GEMMs, backward twice that."""
    T, B, I, H = 128, 32, 64, 256
    gemms = bench.step_gemms(bench.VARIANTS["lstm"], bench.Shape(T, B, I, H))
    assert bench.gemm_flops(gemms) == 3 * 2 * T * B * 4 * H * (I + H)
    assert bench.gemm_flops(bench.step_gemms(bench.VARIANTS["lstm"], bench.Shape(T, B, I, H), training=False)) \
        == 2 * T * B * 4 * H * (I + H)


@pytest.mark.parametrize("variant", list(bench.VARIANTS))
def test_counted_gemm_flops_match_the_products_rnnkit_runs(variant):
    """The FLOPs of :func:`step_gemms` equal those PyTorch's flop counter sees in a real
    training step of the rnnkit layer (forward and hand-written backward)."""
    v = bench.VARIANTS[variant]
    torch.manual_seed(0)
    layer, _, _ = bench.build(v, SMALL)
    x = torch.randn(SMALL.seq, SMALL.batch, SMALL.input, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        out, _ = layer(x)
        out.sum().backward()
    assert counter.get_total_flops() == bench.gemm_flops(bench.step_gemms(v, SMALL))


def test_median_ratio_takes_the_median_of_per_round_ratios():
    assert bench.median_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


@pytest.mark.parametrize("variant", list(bench.VARIANTS))
@pytest.mark.parametrize("training", [False, True])
def test_loop_baseline_computes_the_same_as_rnnkit(variant, training):
    """Same weights (and, in training, the same random masks from the same seed) → the
    same outputs and the same weight gradients, in float64."""
    torch.manual_seed(0)
    layer, native, loop = bench.build(bench.VARIANTS[variant], SMALL)
    x = torch.randn(SMALL.seq, SMALL.batch, SMALL.input, dtype=torch.float64)
    results = []
    for m in (layer, loop) if native is None else (layer, loop, native):
        m.double().train(training)
        torch.manual_seed(5)
        out, _ = m(x)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        grads = torch.autograd.grad((out * weight).sum(), [m.weight_ih_l0, m.weight_hh_l0])
        results.append((out.detach(), grads))
    for out, grads in results[1:]:
        torch.testing.assert_close(out, results[0][0])
        torch.testing.assert_close(grads[0], results[0][1][0])
        torch.testing.assert_close(grads[1], results[0][1][1])


def test_activation_memory_counts_at_least_the_output():
    if bench._IN_USE is None:  # CI runs on glibc Linux, where a missing mallinfo2 is a failure
        reason = "activation memory needs glibc's mallinfo2 (glibc 2.33 or newer)"
        if sys.platform.startswith("linux"):
            needs.missing(reason)
        pytest.skip(reason)
    torch.manual_seed(0)
    shape = bench.Shape(64, 16, 32, 128)
    layer, _, _ = bench.build(bench.VARIANTS["lstm"], shape)
    held = bench.activation_bytes(layer, torch.randn(64, 16, 32))
    out_bytes = 64 * 16 * 128 * 4
    assert out_bytes <= held < 100 * out_bytes


def _row(variant, shape, vs_native, vs_lstm, speedup, roof, mem_ratio, gflop=1.0):
    return {"variant": variant, "shape": shape, "train_ms": {"rnnkit": 10.0, "native": 12.0, "loop": 50.0},
            "inference_ms": {"rnnkit": 3.0, "native": 2.5, "loop": 9.0}, "train_vs_native": vs_native,
            "train_vs_lstm": vs_lstm, "loop_speedup": speedup, "inference_vs_native": None, "gflop": gflop,
            "gemm_ms": 8.0, "roofline": {"rnnkit": roof, "native": 0.9},
            "activation_mb": {"rnnkit": 2.0, "native": 3.0}, "memory_vs_lstm": mem_ratio}


def _results(rows):
    return {"environment": {"processor": "cpu", "machine": "x86_64", "threads": 2, "torch": "2", "dtype": "float32",
                            "device": "cpu"},
            "config": {"rounds": 5, "warmup": 1}, "peak_gemm_gflops": 100.0, "seconds": 12.0, "results": rows,
            "sampling": {"hidden": 8, "chars_per_s": {"lstm": {"rnnkit": 1000.0, "torch.nn": 900.0}}}}


def test_targets_name_each_miss():
    rows = [_row("lstm", "big", 1.10, 1.10, 5.0, 0.85, 0.9, gflop=9.0),
            _row("lstm", "mid", 0.95, 0.95, 5.0, 0.70, 1.2, gflop=5.0),
            _row("lstm", "small", 0.95, 0.95, 5.0, 0.10, 0.9, gflop=0.1),
            _row("lstm-zoneout", "big", None, 1.30, 2.0, 0.9, 0.9, gflop=9.0)]
    misses = bench.check_targets(_results(rows))
    assert misses["native"] == ["lstm @ big: 1.10×"]
    assert misses["variants"] == ["lstm-zoneout @ big: 1.30× torch.nn.LSTM", "lstm-zoneout @ big: only 2.0× the loop"]
    assert misses["roofline"] == ["lstm @ mid: 70%"]  # small is not one of the two largest shapes
    assert misses["memory"] == ["lstm @ mid: 1.20×"]


def test_markdown_table_has_a_row_per_cell_and_the_targets():
    md = bench.to_markdown(_results([_row("lstm", "T5-B3-I4-H6", 0.9, 0.9, 5.0, 0.85, 0.5),
                                     _row("jordan", "T5-B3-I4-H6", None, 1.1, 4.0, 0.5, 0.7)]))
    assert "| lstm | 10.0 | 12.0 | 50.0 | 0.90 | 0.90 | 5.0 | 85% / 90% | 2.0 (0.50×) | 3.0 / 2.5 |" in md
    assert "| jordan | 10.0 | 12.0 | 50.0 | – | 1.10 | 4.0 | 50% / 90% | 2.0 (0.70×) | 3.0 / 2.5 |" in md
    assert "| lstm | 1000 | 900 |" in md
    assert "activation memory of a training step ≤ torch.nn.LSTM's: met" in md


def test_cli_bench_writes_markdown_and_json(tmp_path):
    md, js = tmp_path / "B.md", tmp_path / "B.json"
    code = main(["bench", "--shapes", "3x2x4", "--cells", "lstm", "lstm-proj", "--rounds", "1",
                 "--sample-chars", "0", "--out", str(md), "--json", str(js)])
    assert code == 0
    results = json.loads(js.read_text())
    assert [(r["variant"], r["shape"]) for r in results["results"]] == [("lstm", "T3-B2-I4-H4"),
                                                                        ("lstm-proj", "T3-B2-I4-H4")]
    assert results["results"][0]["gflop"] == pytest.approx(3 * 2 * 3 * 2 * 16 * 8 / 1e9)
    assert "## T3-B2-I4-H4" in md.read_text() and "| lstm-proj |" in md.read_text()


def test_cli_bench_rejects_unknown_cell(tmp_path, capsys):
    code = main(["bench", "--cells", "lstmm", "--out", str(tmp_path / "a.md"), "--json", str(tmp_path / "a.json")])
    assert code == 2
    assert "unknown cell(s) ['lstmm']" in capsys.readouterr().err
    assert not (tmp_path / "a.md").exists()


def test_render_rewrites_the_table_from_the_json_and_says_what_limits_a_miss(tmp_path, capsys):
    js, md = tmp_path / "B.json", tmp_path / "B.md"
    js.write_text(json.dumps(_results([_row("lstm", "big", 1.10, 1.10, 5.0, 0.85, 0.9, gflop=9.0)])))
    assert main(["bench", "--render", str(js), "--out", str(md)]) == 0
    text = md.read_text()
    assert "**missed**: lstm @ big: 1.10×. *What limits it:* the per-step recurrent GEMM" in text
    assert "activation memory of a training step ≤ torch.nn.LSTM's: met" in text
    (tmp_path / "bad.json").write_text('{"results": 3}')
    assert main(["bench", "--render", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x.md")]) == 2
    assert "bad.json is not the JSON of an rnnkit bench run" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()
