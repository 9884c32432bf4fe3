"""``rnnkit report`` on the run directory of every model type: the gradient flow through time
measured on the probe its model type gives (windows of the text for the char LM, the stored
validation sample for the fit models, fresh sequences of the task for tasks and seq2seq, the
stored test pairs for seq2seq on a file), deterministic, with the number of steps of the
probe's sequences; the text sections only for character models; a run without the stored
sample gets one line instead of the section."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rnnkit
from rnnkit import diagnostics as dg
from rnnkit.cli import main
from rnnkit.data.seq2seq_tasks import generate, make_batch
from rnnkit.models.seq2seq import SamplingSchedule, Seq2SeqConfig
from rnnkit.tasks import TaskRunConfig, run_task
from rnnkit.tasks.seq2seq_train import Seq2SeqTrainConfig, load_run, train_seq2seq
from rnnkit.train import rundir

from .test_fit_runs import TRAIN as FIT_TRAIN

TEXT = "def f(x):\n    return [x, (x + 1) * 2]  # 'q'\n" * 6
FIT_TYPES = ("tagger", "classifier", "forecaster", "generator")
TYPES = ("charlm", *FIT_TYPES, "task", "seq2seq", "seq2seq-parallel", "seq2seq-file")
#: the seq2seq-file run's test file: 10 pairs of different lengths, the first 8 stored with the run
TEST_PAIRS = [(w, w[::-1]) for w in ["abc", "ba", "cabbac", "b", "acca", "cbacba", "ab", "bca", "aab", "cc"]]


def _seq2seq(out: Path, **model) -> None:
    train_seq2seq(Seq2SeqTrainConfig(task="reverse", model=Seq2SeqConfig(4, 4, hidden_size=8, embedding_size=6,
                                                                         **model),
                                     sampling=SamplingSchedule("none"), batch_size=8, test_size=8, max_steps=3,
                                     max_time=None, eval_every=3), out=out)


def _train(name: str, out: Path) -> None:
    if name == "charlm":
        corpus = out.parent / "corpus.py"
        corpus.write_text(TEXT)
        assert main(["train", "--data", str(corpus), "--out", str(out), "--max-steps", "3", "--hidden-size", "8",
                     "--embed-size", "4", "--batch-size", "2", "--seq-len", "8", "--max-time", "0", "--eval-every",
                     "3", "--quiet"]) == 0
    elif name in FIT_TYPES:
        FIT_TRAIN[name](out=out)
    elif name == "task":
        run_task(TaskRunConfig(task="adding", seq_len=12, hidden_size=6, batch_size=8, test_size=16, max_steps=3,
                               eval_every=3), out=out)
    elif name == "seq2seq":  # additive attention: the decoder runs one step at a time
        _seq2seq(out, attention="additive")
    elif name == "seq2seq-parallel":  # dot attention without input feeding: the decoder runs over the whole target
        _seq2seq(out, attention="dot", input_feeding=False)
    else:  # on a file (its pairs are not in the run directory), the decoder drawn too
        train, test = out.parent / "train.tsv", out.parent / "test.tsv"
        train.write_text("".join(f"{w}\t{w[::-1]}\n" for w in ["abc", "ba", "cab", "bb", "acca", "c"] * 4),
                         encoding="utf-8")
        test.write_text("".join(f"{s}\t{t}\n" for s, t in TEST_PAIRS), encoding="utf-8")
        assert main(["seq2seq", "train", "--data", str(train), "--test-data", str(test), "--out", str(out),
                     "--attention", "dot", "--no-input-feeding", "--hidden-size", "8", "--embedding-size", "6",
                     "--batch-size", "8", "--max-steps", "3", "--eval-every", "3",
                     "--sampling", "none", "--quiet"]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-runs")
    out = {}
    for name in TYPES:
        (root / name).mkdir()
        out[name] = root / name / "run"
        _train(name, out[name])
    return out


def _report(run: Path, out: Path, *extra: str) -> str:
    assert main(["report", str(run), "--out", str(out), *extra]) == 0
    return out.read_text(encoding="utf-8")


def _json(page: str, element: str):
    m = re.search(rf'<script type="application/json" id="{element}">(.*?)</script>', page, re.S)
    return None if m is None else json.loads(m.group(1))


def _gradflow_image(page: str) -> str:
    section = re.search(r'<section id="gradflow">(.*?)</section>', page, re.S).group(1)
    return re.search(r'src="data:image/png;base64,([^"]*)"', section).group(1)


def _expected_steps(name: str, run: Path) -> dict[str, int]:
    """The layer keys the gradient flow is drawn for and their numbers of steps: those of the
    probe's sequences (the longest one), for each layer run over whole sequences."""
    if name == "charlm":
        return {"rnn.l0": 59}  # --chars 60: windows of min(grad_window 100, 60 - 1) characters
    if name in FIT_TYPES:
        probe = load_file(run / rundir.PROBE)
        T = probe["0"].shape[0] if name == "forecaster" else int(probe["lengths"].max())
        return {"rnn.l0": T, "rnn.l0_reverse": T} if name in ("tagger", "classifier") else {"rnn.l0": T}
    if name == "task":
        return {"rnn.l0": 12}
    _, sv, tv = load_run(run, "best")
    pairs = TEST_PAIRS[:8] if name == "seq2seq-file" else generate("reverse", 8, 0 + 3_000_003)
    batch = make_batch(pairs, sv, tv)
    encoder = {"encoder.l0": batch.src.shape[1], "encoder.l0_reverse": batch.src.shape[1]}  # bidirectional
    return encoder if name == "seq2seq" else {**encoder, "decoder.l0": batch.tgt_in.shape[1]}


@pytest.mark.parametrize("name", TYPES)
def test_every_model_type_has_a_deterministic_gradient_flow_with_the_probes_steps(name, runs, tmp_path):
    extra = ("--chars", "60") if name == "charlm" else ()
    page = _report(runs[name], tmp_path / "a.html", *extra)
    again = _report(runs[name], tmp_path / "b.html", *extra)
    assert 'id="gradflow"' in page and 'id="curves"' in page and 'id="config"' in page
    numbers = _json(page, "gradflow-data")
    expected = _expected_steps(name, runs[name])
    assert {k: len(v) for k, v in numbers["grad_norms"].items()} == expected
    assert {k: len(v) for k, v in numbers["jacobian_norms"].items()} == {k: T - 1 for k, T in expected.items()}
    for values in [*numbers["grad_norms"].values(), *numbers["jacobian_norms"].values()]:
        assert all(v is not None and math.isfinite(v) and v >= 0 for v in values)
    for key, values in numbers["grad_norms"].items():
        assert values[-1 if not key.endswith("_reverse") else 0] > 0  # the gradient reaches the layer
    assert numbers["measured_on"]
    # the probe is a fixed batch: a second report draws the same numbers and the same figure
    assert _json(again, "gradflow-data") == numbers and _gradflow_image(again) == _gradflow_image(page)
    assert ('id="units"' in page) == (name in ("charlm", "generator"))  # text colouring: character models
    assert ('id="attention"' in page) == name.startswith("seq2seq")
    assert 'id="gates"' in page  # every run here has LSTM gates


def test_the_report_holds_the_gradient_norms_of_the_stored_batch(runs, tmp_path):
    """The tagger's numbers are ‖∂L/∂h_t‖ of its loss on probe.safetensors with the best
    weights, averaged at each step over the sentences long enough to reach it."""
    from rnnkit.models.tagger import TaggerBatch

    page = _report(runs["tagger"], tmp_path / "r.html")
    model = rnnkit.load(runs["tagger"])
    t = load_file(runs["tagger"] / rundir.PROBE)
    batch = TaggerBatch(t["words"], t.get("chars"), t["lengths"], t["tags"])
    assert len(set(batch.lengths.tolist())) > 1  # sentences of different lengths: the mask matters
    record = dg.gradient_flow(model, lambda: model.loss(batch))
    mask = (torch.arange(batch.words.shape[0]).unsqueeze(1) < batch.lengths).double()  # (T, B)
    for key, values in _json(page, "gradflow-data")["grad_norms"].items():
        want = (record.norms[key].double() * mask).sum(1) / mask.sum(1)
        np.testing.assert_allclose(values, want.numpy(), rtol=1e-5)


@pytest.mark.parametrize("name", FIT_TYPES)
def test_a_fit_run_stores_its_first_validation_examples_as_the_probe(name, runs):
    """probe.safetensors is plain safetensors: the collated batch of the first validation
    examples of the run's data (tests/test_fit_runs.py), with the run's own vocabularies."""
    probe = load_file(runs[name] / rundir.PROBE)
    model = rnnkit.load(runs[name])
    if name == "tagger":
        from rnnkit.data.slots import slot_filling_data

        valid = slot_filling_data(40, seed=0)[32:40]
        want = model.batch([s.tokens for s in valid], [s.tags for s in valid])
        assert probe["words"].shape == (max(len(s.tokens) for s in valid), 8) and probe["lengths"].shape == (8,)
        assert torch.equal(probe["words"], want.words) and torch.equal(probe["tags"], want.tags)
    elif name == "classifier":
        texts = [("ab" * (i % 5 + 1)) if i % 2 else ("zq" * (i % 4 + 1)) for i in range(48)][40:]
        labels = ["a" if i % 2 else "z" for i in range(48)][40:]
        want = model.batch(texts, labels)
        assert probe["inputs"].shape == (max(map(len, texts)), 8) and probe["labels"].shape == (8,)  # characters
        assert torch.equal(probe["inputs"], want.inputs) and torch.equal(probe["labels"], want.labels)
    elif name == "forecaster":
        assert probe["0"].shape == (6, 8, 1) and probe["1"].shape == (8, model.config.horizon)
        # the validation windows of train_forecaster (test fraction 0.2, validation 0.15 of the origins)
        origins = model.origins(120, 0, 96)
        valid = origins[len(origins) - int(len(origins) * 0.15) :][:8]
        x, y = model.windows(model.table({"y": [math.sin(t / 3) for t in range(120)]}), valid)
        assert torch.equal(probe["0"], x) and torch.equal(probe["1"], y)
    else:
        assert probe["inputs"].shape == (4, 4) and probe["conditions"].shape == (4,)  # <bos> + 3 symbols, 4 pairs
        assert ["".join(model.symbols.decode(probe["inputs"][1:, b].tolist())) for b in range(4)] == [
            "abc", "abd", "xyz", "xyw"]
        assert model.conditions.decode(probe["conditions"].tolist()) == ["a", "a", "x", "x"]


def test_the_generators_text_is_its_stored_sequences_one_line_each(runs, tmp_path):
    """Each character shows the state after reading it; the line break the state at the
    line's end (the model reads no line break)."""
    page = _report(runs["generator"], tmp_path / "r.html")
    data = _json(page, "act-data")
    assert data["text"] == "abc\nabd\nxyz\nxyw"
    block = next(b for b in data["blocks"] if b["name"] == "rnn.l0 h")
    q = np.frombuffer(base64.b64decode(block["b64"]), dtype=np.uint8).reshape(len(data["text"]), block["units"])
    for newline in (3, 7, 11):
        assert np.array_equal(q[newline], q[newline - 1])
    model = rnnkit.load(runs["generator"])
    with torch.no_grad(), dg.observe(model) as obs:  # the third line from its own condition, alone
        model(torch.tensor([model.bos, *model.symbols.encode("xyz")]).view(-1, 1),
              torch.tensor(model.conditions.encode(["x"])))
    h = obs.states["rnn.l0"]["h"][1:, 0].double().numpy()  # (3, H): after x, y, z
    scale = np.array(block["scale"])
    np.testing.assert_allclose((q[8:11].astype(np.float64) - 127) / 127 * scale, h, atol=scale.max() / 127 + 1e-9)


def test_a_fit_run_without_the_stored_sample_says_so_in_one_line(runs, tmp_path, capsys):
    """A run directory of an earlier rnnkit (no probe.safetensors): the report is made with
    its curves and configuration, and the gradient-flow section is one line saying why."""
    old = tmp_path / "old"
    shutil.copytree(runs["classifier"], old)
    (old / rundir.PROBE).unlink()
    capsys.readouterr()
    page = _report(old, tmp_path / "r.html")
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "needs a run trained by rnnkit" in notes[0] and rundir.PROBE in notes[0]
    section = re.search(r'<section id="gradflow">(.*?)</section>', page, re.S).group(1)
    assert "needs a run trained by rnnkit" in section and "<img" not in section
    assert _json(page, "gradflow-data") is None and 'id="curves"' in page and 'id="config"' in page
    (old / rundir.PROBE).write_bytes(b"not safetensors")  # a damaged sample: the same, not a failed report
    assert "does not hold a batch" in _report(old, tmp_path / "r2.html")


def test_an_old_model_save_directory_is_a_one_line_error_pointing_to_info(tmp_path, capsys):
    from rnnkit.models.classifier import Classifier, ClassifierConfig

    Classifier.from_data(["ab", "ba"], ["x", "y"], ClassifierConfig(hidden_size=4, embedding_dim=4)).save(
        tmp_path / "old")
    assert main(["report", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "rnnkit info" in err and "before run directories" in err


def test_a_layer_run_one_step_at_a_time_is_left_out(runs, tmp_path):
    """The additive-attention decoder runs once per output step: it has no time axis of its
    own in the forward pass, so only the encoder is drawn (and its gates)."""
    page = _report(runs["seq2seq"], tmp_path / "r.html")
    assert set(_json(page, "gradflow-data")["grad_norms"]) == {"encoder.l0", "encoder.l0_reverse"}


def test_a_seq2seq_run_without_attention_gets_the_gradient_flow_and_no_attention(tmp_path):
    """(Before the probe the report of such a run was the error "there is nothing to draw".)"""
    _seq2seq(tmp_path / "run", attention="none")
    page = _report(tmp_path / "run", tmp_path / "r.html")
    assert 'id="attention"' not in page and 'id="curves"' in page
    assert set(_json(page, "gradflow-data")["grad_norms"]) == {"encoder.l0", "encoder.l0_reverse", "decoder.l0"}


def test_a_seq2seq_run_on_a_file_stores_its_first_test_pairs_and_draws_attention_from_them(runs, tmp_path):
    """probe.safetensors of a run on a file: the batch of the first 8 test pairs (of 10),
    plain safetensors; the report measures on it and decodes its first sources for the
    attention maps. A run of a demo task stores none (it draws fresh pairs of the task)."""
    run = runs["seq2seq-file"]
    _, sv, tv = load_run(run, "best")
    probe, want = load_file(run / rundir.PROBE), make_batch(TEST_PAIRS[:8], sv, tv)
    assert set(probe) == {"src", "src_lengths", "tgt_in", "tgt_out"}
    for key in probe:
        assert torch.equal(probe[key], getattr(want, key)), key
    assert probe["src"].shape == (8, 6) and probe["src_lengths"].tolist() == [3, 2, 6, 1, 4, 6, 2, 3]
    assert [sv.decode(row[:n]) for row, n in zip(probe["src"], probe["src_lengths"].tolist())] == [
        s for s, _ in TEST_PAIRS[:8]]
    assert not (runs["seq2seq"] / rundir.PROBE).exists()
    page = _report(run, tmp_path / "r.html")
    assert "first 8 test pairs" in _json(page, "gradflow-data")["measured_on"]
    attention = re.search(r'<section id="attention">(.*?)</section>', page, re.S).group(1)
    assert attention.count("<img") == 4  # the sources of the first 4 stored pairs


def test_a_seq2seq_run_on_a_file_without_the_stored_pairs_says_so_in_one_line(runs, tmp_path, capsys):
    """A run on a file from before the pairs were stored: the report is made with its curves,
    the gradient-flow section is one line saying why (no attention maps without --text);
    with --text the attention maps are back. A damaged file: the same line's kind, a report."""
    old = tmp_path / "old"
    shutil.copytree(runs["seq2seq-file"], old)
    (old / rundir.PROBE).unlink()
    capsys.readouterr()
    page = _report(old, tmp_path / "r.html")
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "needs a run trained by rnnkit" in notes[0] and rundir.PROBE in notes[0]
    section = re.search(r'<section id="gradflow">(.*?)</section>', page, re.S).group(1)
    assert "needs a run trained by rnnkit" in section and "<img" not in section
    assert _json(page, "gradflow-data") is None and 'id="curves"' in page and 'id="attention"' not in page
    (tmp_path / "src.txt").write_text("abc\nba\n", encoding="utf-8")
    page = _report(old, tmp_path / "r2.html", "--text", str(tmp_path / "src.txt"))
    assert re.search(r'<section id="attention">(.*?)</section>', page, re.S).group(1).count("<img") == 2
    (old / rundir.PROBE).write_bytes(b"not safetensors")
    assert "does not hold a batch" in _report(old, tmp_path / "r3.html")
