"""End-to-end ``rnnkit train | sample | eval | info`` on a small generated text."""

import json

import pytest

from rnnkit.cli import main
from rnnkit.cli._common import duration

TEXT = "".join(f"class C{i}:\n    def m(self, x):\n        return x + {i % 10}\n\n" for i in range(150))
TINY = ["--hidden-size", "16", "--embed-size", "8", "--batch-size", "4", "--seq-len", "16",
        "--max-time", "0", "--val-fraction", "0.1", "--eval-every", "5", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.py"
    corpus.write_text(TEXT)
    run = root / "run"
    assert main(["train", "--data", str(corpus), "--out", str(run), "--max-steps", "10", *TINY]) == 0
    return corpus, run


def test_train_writes_the_run_directory(trained):
    _, run = trained
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "vocab.json", "model.safetensors", "best.safetensors", "metrics.jsonl",
            "trainer_state.json", "trainer_state.safetensors"} <= names
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["format_version"] == 1 and cfg["model"]["hidden_size"] == 16 and cfg["train"]["max_steps"] == 10
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 11))
    assert {"step", "time", "train_bpc", "lr", "chars_per_sec"} <= set(records[0])
    assert [r["step"] for r in records if "val_bpc" in r] == [5, 10]


def test_sample_length_seed_and_argmax(trained, capsys):
    _, run = trained

    def sample(*extra):
        assert main(["sample", str(run), "--length", "60", *extra]) == 0
        return capsys.readouterr().out

    a = sample("--seed", "1")
    assert len(a) == 61  # 60 characters and a final newline
    assert a == sample("--seed", "1")
    assert a != sample("--seed", "2")
    primed = sample("--argmax", "--prime", "class ")
    assert primed.startswith("class ") and len(primed) == 6 + 60 + 1
    assert primed == sample("--argmax", "--prime", "class ", "--seed", "9")


def test_eval_reproduces_the_trainers_validation_bpc(trained, capsys, tmp_path):
    corpus, run = trained
    final_val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]["val_bpc"]
    tail = tmp_path / "tail.py"
    tail.write_text(TEXT[-int(len(TEXT) * 0.1):])
    assert main(["eval", str(run), "--data", str(tail), "--checkpoint", "latest"]) == 0
    out = capsys.readouterr().out
    bpc = float(out.split("bits per character:")[1].split()[0])
    ppl = float(out.split("perplexity:")[1].split()[0])
    assert bpc == pytest.approx(final_val, abs=1e-4)
    assert ppl == pytest.approx(2 ** final_val, rel=1e-3)


def test_info(trained, capsys):
    _, run = trained
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    vals = [json.loads(x).get("val_bpc") for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert f"best val bpc: {min(v for v in vals if v is not None):.4f}" in out
    assert "steps: 10" in out and "vocabulary: " in out and "parameters: " in out
    assert f"corpus ids: corpus.ids, {(run / 'corpus.ids').stat().st_size:,} bytes" in out


def test_resume_continues_with_identical_losses(tmp_path):
    corpus = tmp_path / "c.py"
    corpus.write_text(TEXT)
    opts = [*TINY, "--lr-schedule", "constant", "--warmup-steps", "0", "--dropout", "0.1", "--data", str(corpus)]
    assert main(["train", "--out", str(tmp_path / "a"), "--max-steps", "8", *opts]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--max-steps", "4", *opts]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--max-steps", "8", "--quiet"]) == 0

    def losses(d):
        return [json.loads(x)["train_bpc"] for x in (d / "metrics.jsonl").read_text().splitlines()]

    assert len(losses(tmp_path / "b")) == 8
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


def test_bad_inputs_give_one_line_errors(tmp_path, capsys, trained):
    corpus, run = trained
    out = str(tmp_path / "o")
    assert "does not exist" in _error(capsys, ["train", "--data", str(tmp_path / "missing.txt"), "--out", out])
    (tmp_path / "empty.txt").write_text("")
    assert "empty" in _error(capsys, ["train", "--data", str(tmp_path / "empty.txt"), "--out", out])
    (tmp_path / "bin.dat").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert "byte offset" in _error(capsys, ["train", "--data", str(tmp_path / "bin.dat"), "--out", out])
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    assert "byte offset 3" in _error(capsys, ["train", "--data", str(tmp_path / "latin1.txt"), "--out", out])
    assert "already exists" in _error(capsys, ["train", "--data", str(corpus), "--out", str(run)])
    assert "does not exist" in _error(capsys, ["sample", str(tmp_path / "norun")])
    assert "does not exist" in _error(capsys, ["info", str(tmp_path / "norun")])
    assert "unknown cell 'nope'" in _error(capsys, ["train", "--data", str(corpus), "--out", out, "--cell", "nope"])
    assert not (tmp_path / "o").exists()  # failed runs leave nothing behind


@pytest.mark.parametrize("damage", ["truncate", "shapes"])
def test_corrupt_checkpoint_is_one_line_error(tmp_path, capsys, trained, damage):
    import shutil

    _, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if damage == "truncate":
        data = (copy / "best.safetensors").read_bytes()
        (copy / "best.safetensors").write_bytes(data[: len(data) // 2])
        expect = "corrupt or truncated"
    else:
        cfg = json.loads((copy / "config.json").read_text())
        cfg["model"]["embed_size"] = 9
        (copy / "config.json").write_text(json.dumps(cfg))
        expect = "the config needs"
    assert expect in _error(capsys, ["sample", str(copy), "--length", "5"])


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("1.5m", 90)])
def test_durations(text, seconds):
    assert duration(text) == seconds


def test_bad_duration_is_rejected():
    with pytest.raises(Exception, match="duration"):
        duration("5 minutes")


def test_report_on_a_real_run_directory(trained, tmp_path):
    """rnnkit report reads what rnnkit train wrote: curves, gradient flow, gates, units."""
    corpus, run = trained
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--text", str(corpus), "--chars", "300", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    for section in ('id="curves"', 'id="gradflow"', 'id="gates"', "act-data"):
        assert section in page, section
    assert "http://" not in page and "https://" not in page
