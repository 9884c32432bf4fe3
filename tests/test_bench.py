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


def _training_step(layer, x):
    def step():
        out, _ = layer(x)
        out.sum().backward()

    return step


@pytest.mark.parametrize("variant", list(bench.VARIANTS))
@pytest.mark.parametrize("training", [True, False])
def test_step_gemms_are_the_products_the_engine_runs_shape_by_shape(variant, training):
    """Every product of :func:`step_gemms` with the (m, k, n) and the count the engine (and
    its native loops, whose C++ products go through the dispatcher) runs: the per-step
    products at B rows, each weight gradient and dx one product over all T·B rows."""
    v = bench.VARIANTS[variant]
    torch.manual_seed(0)
    layer, _, _ = bench.build(v, SMALL)
    x = torch.randn(SMALL.seq, SMALL.batch, SMALL.input, requires_grad=training)
    if training:
        ran = bench.recorded_gemms(_training_step(layer, x))
    else:
        layer.eval()
        with torch.no_grad():
            ran = bench.recorded_gemms(lambda: layer(x))
    assert bench.as_counts(ran) == bench.as_counts(bench.step_gemms(v, SMALL, training=training))


def test_weight_gradients_are_one_product_over_all_steps():
    """The Jordan output weights and the LSTM projection get their gradient in one product
    over all T·B rows, not T products of B rows (the count that made the roofline 113%)."""
    T, B, I, H = 7, 3, 4, 8
    shape = bench.Shape(T, B, I, H)
    jordan = bench.as_counts(bench.step_gemms(bench.VARIANTS["jordan"], shape))
    assert jordan[(H, T * B, H)] == 2 and jordan[(H, B, H)] == 0  # dW_hh and dW_ho
    proj = bench.as_counts(bench.step_gemms(bench.VARIANTS["lstm-proj"], shape))
    assert proj[(H // 2, T * B, H)] == 1 and proj[(H // 2, B, H)] == 0  # dW_hr


def _fake_seconds(m, k, n):
    """A machine where a product of few rows runs slower per FLOP, plus a per-call cost."""
    return 2 * m * k * n / (1e9 * min(m, 64)) + 2e-6


@pytest.mark.parametrize("variant", list(bench.VARIANTS))
@pytest.mark.parametrize("elementwise_s", [0.0, 1e-3])
def test_gemm_bound_never_exceeds_a_step_made_of_the_products_it_runs(variant, elementwise_s):
    """With a fake timing of each product, a step's time is at least that of the products it
    ran (recorded from a real step); the bound of step_gemms never exceeds it, and equals it
    for a step that is nothing but products — no roofline over 100%."""
    v = bench.VARIANTS[variant]
    torch.manual_seed(0)
    layer, _, _ = bench.build(v, SMALL)
    x = torch.randn(SMALL.seq, SMALL.batch, SMALL.input, requires_grad=True)
    ran = bench.recorded_gemms(_training_step(layer, x))
    step_s = sum(_fake_seconds(m, k, n) * c for m, k, n, c in ran) + elementwise_s
    bound = bench.gemm_bound(bench.step_gemms(v, SMALL), _fake_seconds)
    fraction = bench.roofline_fraction(bound, [step_s, 2 * step_s])
    assert fraction <= 1.0 + 1e-12  # (summation order)
    if elementwise_s == 0:
        assert fraction == pytest.approx(1.0)


def test_gemm_timer_subtracts_the_call_overhead_and_caches():
    calls = []

    def measure(m, k, n):
        calls.append((m, k, n))
        return 5e-6 if (m, k, n) == (1, 1, 1) else 2e-6 * m

    timer = bench.GemmTimer(measure)
    assert timer.overhead == 5e-6
    assert timer(10, 2, 3) == pytest.approx(15e-6)
    assert timer(1, 2, 3) == 0.0  # never negative
    assert timer(10, 2, 3) == pytest.approx(15e-6) and calls.count((10, 2, 3)) == 1


def test_generation_twin_has_the_same_weights_and_draws_the_same_characters():

    lm, twin = bench.generation_pair("gru", 16)
    start = lm.vocab.id("\n")
    ids = twin.sample(20, 3, start, torch.Generator().manual_seed(4))  # (20, 3)
    texts = ["".join(lm.vocab.chars[i] for i in col) for col in ids.t().tolist()]
    assert lm.sample_many(3, 20, seed=4) == texts
    assert "".join(lm.sample(20, seed=4)) == "".join(lm.vocab.chars[i] for i in twin.sample(
        20, 1, start, torch.Generator().manual_seed(4))[:, 0].tolist())


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


def _row(variant, shape, vs_native, vs_lstm, speedup, roof, mem_ratio, gflop=1.0, worst=None, infer=None):
    """A result row as bench_one writes it; ``worst`` overrides the worst round's ratios
    (by default the median's), ``infer`` is the inference ratio (median, worst)."""
    ratios = {"train_vs_native": vs_native, "train_vs_lstm": vs_lstm, "loop_speedup": speedup}
    if infer is not None:
        ratios["inference_vs_native"] = infer[1]
    return {"variant": variant, "shape": shape, "train_ms": {"rnnkit": 10.0, "native": 12.0, "loop": 50.0},
            "train_ms_range": {"rnnkit": [9.5, 11.0], "native": [11.9, 13.0], "loop": [48.0, 52.5]},
            "inference_ms": {"rnnkit": 3.0, "native": 2.5, "loop": 9.0},
            "inference_ms_range": {"rnnkit": [2.9, 3.2], "native": [2.4, 2.6], "loop": [8.0, 9.9]},
            "train_vs_native": vs_native, "train_vs_lstm": vs_lstm, "loop_speedup": speedup,
            "inference_vs_native": None if infer is None else infer[0],
            "worst": {k: v for k, v in {**ratios, **(worst or {})}.items() if v is not None},
            "gflop": gflop, "gemm_ms": 8.0, "roofline": {"rnnkit": roof, "native": 0.9},
            "activation_mb": {"rnnkit": 2.0, "native": 3.0}, "memory_vs_lstm": mem_ratio}


def _results(rows, generation=()):
    return {"environment": {"processor": "cpu", "machine": "x86_64", "threads": 2, "torch": "2", "dtype": "float32",
                            "device": "cpu"},
            "config": {"rounds": 5, "warmup": 1}, "peak_gemm_gflops": 100.0, "seconds": 12.0, "results": rows,
            "sampling": {"hidden": 8, "steps": 30, "rows": list(generation)}}


def _generation(family, batch, rnnkit_cps, nn_cps, worst):
    return {"family": family, "batch": batch, "chars_per_s": {"rnnkit": rnnkit_cps, "torch.nn": nn_cps},
            "range": {"rnnkit": [rnnkit_cps - 10, rnnkit_cps + 10], "torch.nn": [nn_cps - 5, nn_cps + 5]},
            "ratio": rnnkit_cps / nn_cps, "worst": worst}


def test_targets_name_each_miss():
    rows = [_row("lstm", "big", 1.10, 1.10, 5.0, 0.85, 0.9, gflop=9.0, infer=(0.9, 0.95)),
            _row("lstm", "mid", 0.95, 0.95, 5.0, 0.70, 1.2, gflop=5.0, infer=(1.2, 1.3)),
            _row("lstm", "small", 0.95, 0.95, 5.0, 0.10, 0.9, gflop=0.1, infer=(0.8, 0.9)),
            _row("lstm-zoneout", "big", None, 1.30, 2.0, 0.9, 0.9, gflop=9.0)]
    misses = bench.check_targets(_results(rows, [_generation("lstm", 1, 1000.0, 900.0, 1.05),
                                                 _generation("gru", 64, 500.0, 1000.0, 0.45)]))
    assert misses["native"] == ["lstm @ big: 1.10×"]
    assert misses["variants"] == ["lstm-zoneout @ big: 1.30× torch.nn.LSTM", "lstm-zoneout @ big: only 2.0× the loop"]
    assert misses["inference"] == ["lstm @ mid: 1.30×"]
    assert misses["generation"] == ["gru batch 64: 0.45× torch.nn's chars/s"]
    assert misses["roofline"] == ["lstm @ mid: 70%"]  # small is not one of the two largest shapes
    assert misses["memory"] == ["lstm @ mid: 1.20×"]


def test_targets_are_judged_by_the_worst_round_not_the_median():
    """Medians that meet every target, worst rounds that miss: the worst rounds are listed."""
    rows = [_row("gru", "s", 0.95, 0.9, 5.0, 0.9, 0.9, worst={"train_vs_native": 1.04}, infer=(0.97, 1.08)),
            _row("jordan", "s", None, 1.05, 3.5, 0.9, 0.9, worst={"train_vs_lstm": 1.15, "loop_speedup": 2.7})]
    misses = bench.check_targets(_results(rows, [_generation("lstm", 64, 1100.0, 1000.0, 0.93)]))
    assert misses["native"] == ["gru @ s: 1.04×"]
    assert misses["inference"] == ["gru @ s: 1.08×"]
    assert misses["variants"] == ["jordan @ s: 1.15× torch.nn.LSTM", "jordan @ s: only 2.7× the loop"]
    assert misses["generation"] == ["lstm batch 64: 0.93× torch.nn's chars/s"]


def test_markdown_table_shows_ranges_worst_rounds_and_the_new_target_rows():
    md = bench.to_markdown(_results(
        [_row("lstm", "T5-B3-I4-H6", 0.9, 0.9, 5.0, 0.85, 0.5, worst={"train_vs_native": 0.97}, infer=(1.2, 1.25)),
         _row("jordan", "T5-B3-I4-H6", None, 1.1, 4.0, 1.13, 0.7)],
        [_generation("lstm", 1, 1000.0, 900.0, 1.02), _generation("lstm", 64, 20000.0, 25000.0, 0.7)]))
    assert ("| lstm | 10.0 (9.5–11.0) | 12.0 (11.9–13.0) | 50.0 (48.0–52.5) | 0.90 (0.97) | 0.90 (0.90) | "
            "5.0 (5.0) | 85% / 90% | 2.0 (0.50×) | 3.0 (2.9–3.2) / 2.5 (2.4–2.6) |") in md
    # a GEMM-bound time above the fastest step is marked, never printed as 113%
    assert "| jordan | 10.0 (9.5–11.0) | 12.0 (11.9–13.0) |" in md and "| ≥100%† / 90% |" in md
    assert "113%" not in md and "† the GEMM-bound time came out above the fastest measured step" in md
    assert "| lstm | 1 | 1000 (990–1010) | 900 (895–905) | 1.11 (1.02) |" in md
    assert "| lstm | 64 | 20000 (19990–20010) | 25000 (24995–25005) | 0.80 (0.70) |" in md
    assert "Each judged by the worst of the 5 rounds" in md
    assert "Machine: cpu (x86_64), 2 threads, torch 2, float32 on cpu." in md  # no load recorded: none shown
    busy = _results([_row("lstm", "s", 0.9, 0.9, 5.0, 0.85, 0.5)])
    busy["environment"]["cpus"], busy["load_average"] = 2, [6.8, 7.3]
    assert ("2 threads on 2 CPUs (1-minute load average 6.8 at the start, 7.3 at the end — other jobs shared the "
            "machine: compare ratios, not times), torch 2") in bench.to_markdown(busy)
    assert ("- rnnkit.RNN/LSTM/GRU inference (forward only, eval mode, no grad) no slower than torch.nn "
            "(ratio ≤ 1.0): **missed**: lstm @ T5-B3-I4-H6: 1.25×") in md
    assert "at least torch.nn's with the same weights (ratio ≥ 1.0): **missed**: lstm batch 64: 0.70×" in md
    assert "activation memory of a training step ≤ torch.nn.LSTM's: met" in md


def test_cli_bench_writes_markdown_and_json(tmp_path):
    md, js = tmp_path / "B.md", tmp_path / "B.json"
    code = main(["bench", "--shapes", "3x2x4", "--cells", "lstm", "lstm-proj", "--rounds", "3",
                 "--sample-chars", "2", "--no-scan", "--out", str(md), "--json", str(js)])
    assert code == 0
    results = json.loads(js.read_text())
    assert [(r["variant"], r["shape"]) for r in results["results"]] == [("lstm", "T3-B2-I4-H4"),
                                                                        ("lstm-proj", "T3-B2-I4-H4")]
    assert results["results"][0]["gflop"] == pytest.approx(3 * 2 * 3 * 2 * 16 * 8 / 1e9)
    for r in results["results"]:
        assert r["gemms_as_counted"]
        for phase in ("train", "inference"):
            rounds = r[f"{phase}_rounds_ms"]["rnnkit"]
            assert len(rounds) == 3 and r[f"{phase}_ms_range"]["rnnkit"] == [min(rounds), max(rounds)]
        ratios = [a / b for a, b in zip(r["train_rounds_ms"]["rnnkit"], r["train_rounds_ms"]["native"])]
        assert r["worst"]["train_vs_native"] == pytest.approx(max(ratios))
    assert [(g["family"], g["batch"]) for g in results["sampling"]["rows"]] == [("lstm", 1), ("lstm", 64)]
    assert all(g["worst"] <= g["ratio"] for g in results["sampling"]["rows"])
    assert len(results["load_average"]) == 2 and results["environment"]["cpus"] >= 1
    assert results["command"] == ("rnnkit bench --shapes 3x2x4 --cells lstm lstm-proj --rounds 3 --sample-chars 2 "
                                  "--no-scan")
    assert f"Generated by `{results['command']}`" in md.read_text()
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
    # the JSON of a run from before the rounds were kept: judged, and said to be judged, by the medians
    old = _results([_row("lstm", "big", 1.10, 1.10, 5.0, 0.85, 0.9, gflop=9.0)])
    del old["results"][0]["worst"], old["results"][0]["train_ms_range"]
    js.write_text(json.dumps(old))
    assert main(["bench", "--render", str(js), "--out", str(md)]) == 0
    text = md.read_text()
    assert "Judged by the medians: the JSON of this run predates the per-round figures." in text
    assert "**missed**: lstm @ big: 1.10×" in text and "| lstm | 10.0 | 12.0 | 50.0 |" in text
    assert not (tmp_path / "x.md").exists()


def test_cli_bench_device_cuda_without_cuda_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["bench", "--device", "cuda", "--quick", "--out", str(tmp_path / "a.md"),
                 "--json", str(tmp_path / "a.json")])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["rnnkit bench: error: --device cuda: torch.cuda.is_available() is False (no CUDA device or a "
                   "CPU-only torch)"]
    assert not (tmp_path / "a.md").exists() and not (tmp_path / "a.json").exists()


def test_a_miss_on_cuda_names_the_cuda_limit():
    results = _results([_row("lstm", "big", 1.5, 1.5, 5.0, 0.85, 0.9, gflop=9.0)])
    results["environment"]["device"] = "cuda (NVIDIA H200)"
    md = bench.to_markdown(results)
    assert "float32 on cuda (NVIDIA H200)" in md
    assert f"**missed**: lstm @ big: 1.50×. *What limits it:* {bench.CUDA_LIMIT}" in md
    assert "oneDNN" not in md.split("## Targets")[1].split("GEMM roofline")[0]
