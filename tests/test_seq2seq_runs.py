"""`rnnkit seq2seq train` trains on the one Trainer into the one run-directory format: the
same numbers as the task loop it replaced, exact resume (both random streams of the data
are in the checkpoint), Ctrl-C checkpoints, NaN handling, `rnnkit info` / `report` /
`rnnkit.load`; directories of the earlier format still load."""

from __future__ import annotations

import html
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import rnnkit
from rnnkit.cli import main
from rnnkit.data.seq2seq_tasks import Vocab, make_batch
from rnnkit.errors import TrainingError
from rnnkit.models.seq2seq import SamplingSchedule, Seq2Seq, Seq2SeqConfig, sequence_loss
from rnnkit.tasks import LoopConfig, train_loop
from rnnkit.tasks.seq2seq_train import (
    FORMAT,
    Seq2SeqTrainConfig,
    _data,
    evaluate_pairs,
    load_run,
    train_seq2seq,
    translate,
)
from rnnkit.train import rundir

from .runs import ctrl_c_after_three_steps, interrupt_at, weights

ROOT = Path(__file__).resolve().parent.parent


def _config(**kw) -> Seq2SeqTrainConfig:
    small = dict(task="reverse", model=Seq2SeqConfig(4, 4, hidden_size=8, embedding_size=6, attention="additive"),
                 sampling=SamplingSchedule("linear", epsilon_min=0.5, k=1.0, c=0.05), batch_size=8, test_size=12,
                 max_steps=14, max_time=None, eval_every=5)
    return Seq2SeqTrainConfig(**{**small, **kw})


def _old_train_seq2seq(config: Seq2SeqTrainConfig):
    """train_seq2seq as it was before the Trainer: the task loop with the same seeds."""
    draw, test, vocab_sample = _data(config)
    rng = random.Random(config.seed)
    sv = Vocab.build((s for s, _ in vocab_sample), config.level)
    tv = Vocab.build((t for _, t in vocab_sample), config.level)
    torch.manual_seed(config.seed)
    model = Seq2Seq(Seq2SeqConfig(**{**config.model.to_dict(), "src_vocab_size": len(sv), "tgt_vocab_size": len(tv)}))
    gen = torch.Generator().manual_seed(config.seed + 7)

    def step_loss(step):
        b = make_batch(draw(config.batch_size, rng), sv, tv)
        logits, _ = model(b.src, b.tgt_in, b.src_lengths, sampling_prob=config.sampling.sampling_prob(step),
                          generator=gen)
        return sequence_loss(logits, b.tgt_out, 0)

    def evaluate():
        m = evaluate_pairs(model, test, sv, tv, config.beam_size)
        return m, False, f"test exact match {m['exact_match']:.3f}, token accuracy {m['token_accuracy']:.3f}"

    loop = train_loop(model, step_loss, evaluate, LoopConfig(lr=config.lr, clip_norm=config.clip_norm,
                                                             max_steps=config.max_steps, max_time=None,
                                                             eval_every=config.eval_every))
    return model, loop


@pytest.mark.parametrize("options", [{}, {"model": Seq2SeqConfig(4, 4, hidden_size=8, embedding_size=6, cell="gru",
                                                                 attention="dot", dropout=0.3)}])
def test_the_trainer_gives_the_numbers_of_the_old_loop(options):
    config = _config(**options)
    old_model, old = _old_train_seq2seq(config)
    new = train_seq2seq(config)
    assert new.loop.steps == old.steps == 14 and [p.step for p in new.loop.history] == [5, 10, 14]
    assert [p.metrics for p in new.loop.history] == [p.metrics for p in old.history]
    assert [p.verdict for p in new.loop.history] == [p.verdict for p in old.history]
    assert [p.train_loss for p in new.loop.history] == pytest.approx([p.train_loss for p in old.history], rel=1e-12)
    a, b = old_model.state_dict(), new.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_run_stops_when_the_target_exact_match_is_reached():
    r = train_seq2seq(_config(target_exact_match=0.0, max_steps=40))
    assert r.loop.solved and r.loop.steps == 5


def _tsv(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{w}\t{w[::-1]}\n" for w in ["abc", "ba", "cab", "bb", "acca", "cc", "abba", "b"] * 4),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("source", ["task", "file"])
def test_resume_after_an_interrupt_is_bit_identical(source, tmp_path):
    data = {} if source == "task" else {"task": None, "train_file": str(_tsv(tmp_path))}
    full = train_seq2seq(_config(**data), out=tmp_path / "full")
    part = train_seq2seq(_config(**data), out=tmp_path / "part", callback=interrupt_at(7))
    assert part.loop.interrupted and part.loop.steps == 7
    resumed = train_seq2seq(None, out=tmp_path / "part", resume=True)
    assert resumed.loop.steps == 14 and not resumed.loop.interrupted
    a, b = rundir.read_metrics(tmp_path / "full"), rundir.read_metrics(tmp_path / "part")
    assert [r["step"] for r in b] == list(range(1, 15))
    for key in ("train_loss", "val_score", "test_token_accuracy"):
        assert [r.get(key) for r in a] == [r.get(key) for r in b]
    for file in (rundir.LATEST, rundir.BEST):
        wa, wb = weights(tmp_path / "full" / file), weights(tmp_path / "part" / file)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [p.metrics for p in resumed.loop.history] == [p.metrics for p in full.loop.history]


def test_resume_needs_the_same_data(tmp_path):
    tsv = _tsv(tmp_path)
    train_seq2seq(_config(task=None, train_file=str(tsv)), out=tmp_path / "run", callback=interrupt_at(3))
    tsv.write_text("xyz\tzyx\n" * 20, encoding="utf-8")
    with pytest.raises(rnnkit.errors.CheckpointError, match="other vocabularies"):
        train_seq2seq(None, out=tmp_path / "run", resume=True)


def test_a_nan_loss_stops_or_rolls_back(monkeypatch, tmp_path):
    import rnnkit.tasks.seq2seq_train as module

    calls = []

    def nan_once(logits, target, pad_id):
        calls.append(1)
        loss = sequence_loss(logits, target, pad_id)
        return loss * float("nan") if len(calls) == 8 else loss

    monkeypatch.setattr(module, "sequence_loss", nan_once)
    with pytest.raises(TrainingError, match="the loss is nan at step 8"):
        train_seq2seq(_config())
    calls.clear()
    events = []
    r = train_seq2seq(_config(on_nan="rollback"), out=tmp_path / "run", callback=events.append)
    assert [e["step"] for e in events if e["kind"] == "rollback"] == [5]
    assert r.loop.steps == 14 and len(calls) == 17  # steps 6-8 ran twice
    assert [m["step"] for m in rundir.read_metrics(tmp_path / "run")] == list(range(1, 15))


def test_info_report_and_the_loaders_read_a_run(tmp_path, capsys):
    run = train_seq2seq(_config(), out=tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / rundir.CONFIG).read_text())
    assert (cfg["format_version"], cfg["model_type"]) == (rundir.FORMAT_VERSION, "seq2seq")
    assert cfg["seq2seq"]["max_steps"] == 14 and cfg["train"]["eval_every"] == 5
    latest, best = weights(tmp_path / "run" / rundir.LATEST), weights(tmp_path / "run" / rundir.BEST)
    model, sv, tv = load_run(tmp_path / "run")
    assert all(torch.equal(model.state_dict()[k], latest[k]) for k in latest)  # the final weights, as before
    assert all(torch.equal(run.model.state_dict()[k], latest[k]) for k in latest)
    loaded = rnnkit.load(tmp_path / "run")
    assert type(loaded) is Seq2Seq and all(torch.equal(loaded.state_dict()[k], best[k]) for k in best)
    assert main(["info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "model: seq2seq " in out and "steps: 14 " in out
    vals = [m["val_score"] for m in rundir.read_metrics(tmp_path / "run") if "val_score" in m]
    assert f"best val score: {min(vals):.4f}" in out and vals[-1] == 1 - run.loop.final.metrics["exact_match"]
    assert main(["report", str(tmp_path / "run")]) == 0
    page = html.unescape((tmp_path / "run" / "report.html").read_text(encoding="utf-8"))
    assert "Training curves" in page and "Attention" in page
    assert main(["seq2seq", "translate", str(tmp_path / "run"), "abc"]) == 0
    expected = translate(model, ["abc"], sv, tv)[0][0]
    assert capsys.readouterr().out.splitlines()[-1] == f"abc\t{expected}"
    assert main(["sample", str(tmp_path / "run")]) == 2  # a clear one-line error, not a crash in the char LM's code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds a seq2seq model" in err and "rnnkit seq2seq eval/translate" in err


def test_a_directory_of_the_earlier_format_still_loads(tmp_path, capsys):
    """config.json {"format": "rnnkit-seq2seq-1", ...} + model.safetensors, as written before."""
    torch.manual_seed(0)
    sv = Vocab(["<pad>", "<bos>", "<eos>", "<unk>", "1", "2", "3"])
    config = Seq2SeqConfig(len(sv.symbols), len(sv.symbols), hidden_size=8, embedding_size=6, attention="additive")
    model = Seq2Seq(config)
    old = tmp_path / "old"
    old.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, old / "model.safetensors")
    (old / "config.json").write_text(json.dumps({
        "format": FORMAT, "model": config.to_dict(), "src_vocab": {"symbols": sv.symbols, "level": "char"},
        "tgt_vocab": {"symbols": sv.symbols, "level": "char"}, "train": {"task": "reverse"},
        "final": {"exact_match": 0.0}}))
    again, src, tgt = load_run(old)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    assert src.symbols == sv.symbols and tgt.level == "char"
    assert main(["seq2seq", "eval", str(old), "--task", "reverse", "--n", "4"]) == 0
    assert "4 pairs, beam 1: exact match" in capsys.readouterr().out
    assert main(["report", str(old)]) == 0
    assert "Attention" in html.unescape((old / "report.html").read_text(encoding="utf-8"))
    capsys.readouterr()
    assert main(["info", str(old)]) == 0
    out = capsys.readouterr().out
    assert "format: earlier" in out and "model: seq2seq " in out and '"hidden_size": 8' in out


def test_the_cli_resume_options_are_checked(tmp_path, capsys):
    out = str(tmp_path / "run")
    small = ["--hidden-size", "8", "--embedding-size", "6", "--batch-size", "4", "--test-size", "6"]
    assert main(["seq2seq", "train", "--task", "reverse", "--out", out, *small, "--max-steps", "4",
                 "--eval-every", "2"]) == 0
    capsys.readouterr()
    assert main(["seq2seq", "train", "--task", "reverse", "--out", out, "--max-steps", "4"]) == 2
    assert "already holds a model; pass --overwrite" in capsys.readouterr().err
    assert main(["seq2seq", "train", "--out", out, "--resume", "--hidden-size", "16"]) == 2
    assert "only budget options, not --hidden-size" in capsys.readouterr().err
    assert main(["seq2seq", "train", "--out", out, "--resume", "--max-steps", "6"]) == 0
    assert "after 6 steps" in capsys.readouterr().out
    assert [m["step"] for m in rundir.read_metrics(out)] == list(range(1, 7))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_in_seq2seq_train_leaves_a_loadable_checkpoint_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "rnnkit", "seq2seq", "train", "--task", "reverse", "--hidden-size", "8",
            "--embedding-size", "6", "--batch-size", "4", "--test-size", "6", "--eval-every", "100000",
            "--out", str(run), "--max-steps", "1000000"]
    step, env = ctrl_c_after_three_steps(argv, run)
    assert type(load_run(run)[0]) is Seq2Seq
    res = subprocess.run([sys.executable, "-m", "rnnkit", "seq2seq", "train", "--out", str(run), "--resume",
                          "--max-steps", str(step + 2)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"after {step + 2} steps" in res.stdout
    assert [r["step"] for r in rundir.read_metrics(run)] == list(range(1, step + 3))
