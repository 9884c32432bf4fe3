"""The character language model, the trainer and the run directory (library level)."""

import importlib
import json
import logging
import math

import pytest
import torch

import rnnkit
from rnnkit.data.text import Vocabulary
from rnnkit.errors import CheckpointError, TrainingError
from rnnkit.models import CharLM, CharLMConfig
from rnnkit.train import TrainConfig, read_metrics, rundir

CELLS = rnnkit.layers.names()
TEXT = "".join(f"def f{i}(x):\n    return x * {i % 7} + {i % 3}\n\n" for i in range(120))


def tiny(cell="gru", **kw):
    torch.manual_seed(0)
    return CharLM(CharLMConfig(cell=cell, hidden_size=12, embed_size=6, **kw), Vocabulary.build(TEXT))


@pytest.mark.parametrize("cell", CELLS)
def test_forward_shapes_and_state_carry_equals_one_long_run(cell):
    model = tiny(cell, num_layers=2).eval()
    idx = torch.randint(len(model.vocab), (10, 3))
    logits, state = model(idx)
    assert logits.shape == (10, 3, len(model.vocab))
    first, s = model(idx[:4])
    second, _ = model(idx[4:], s)
    torch.testing.assert_close(torch.cat([first, second]), logits)


def test_unsupported_option_is_named():
    with pytest.raises(ValueError, match="peephole"):
        tiny("gru", peephole=True)
    with pytest.raises(ValueError, match="unknown cell 'nope'"):
        CharLMConfig(cell="nope")


def test_sample_streams_length_and_is_deterministic_with_seed():
    model = tiny()
    a = "".join(model.sample(50, seed=3))
    assert len(a) == 50
    assert a == "".join(model.sample(50, seed=3))
    assert a != "".join(model.sample(50, seed=4))


def test_argmax_sample_is_the_greedy_continuation_of_the_full_forward():
    model = tiny("lstm").eval()
    prime = "def f1"
    out = "".join(model.sample(20, prime=prime, argmax=True))
    ids, _ = model.vocab.encode(prime + out)
    logits, _ = model(ids.long().unsqueeze(1))  # (T, 1, V): re-read the whole text at once
    greedy = logits[len(prime) - 1: -1, 0].argmax(-1)
    assert model.vocab.decode(greedy) == out
    assert "".join(model.sample(20, prime=prime, top_k=1, seed=0)) == out


def test_sample_warns_on_unknown_prime_characters(caplog):
    with caplog.at_level(logging.WARNING):
        assert len("".join(tiny().sample(5, prime="ж€x", seed=0))) == 5
    assert "2 character(s) of the prime" in caplog.text


def test_sample_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        next(tiny().sample(5, temperature=0))
    with pytest.raises(ValueError, match="top_k"):
        next(tiny().sample(5, top_k=0))


def test_lr_schedule_values():
    c = TrainConfig(lr=1.0, max_steps=100, max_time=0, min_lr_ratio=0.1, warmup_steps=0)
    assert c.lr_at(0, 0) == pytest.approx(1.0)
    assert c.lr_at(50, 0) == pytest.approx(0.55)
    assert c.lr_at(100, 0) == pytest.approx(0.1)
    lin = TrainConfig(lr=1.0, lr_schedule="linear", max_steps=0, max_time=10, min_lr_ratio=0.0, warmup_steps=0)
    assert lin.lr_at(3, 2.5) == pytest.approx(0.75)  # time budget: a quarter spent
    assert TrainConfig(lr=1.0, warmup_steps=4).lr_at(1, 0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="budget"):
        TrainConfig(max_steps=0, max_time=0)


def _small_train(tmp_path, name, **kw):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    cfg = TrainConfig(**{"batch_size": 4, "seq_len": 16, "max_steps": 8, "max_time": 0, "eval_every": 3,
                         "sample_every": 0, "val_fraction": 0.1, "warmup_steps": 2, **kw})
    model = CharLMConfig(cell="lstm", hidden_size=16, embed_size=8, dropout=0.2, num_layers=2)
    return corpus, cfg, model, tmp_path / name


def test_interrupt_then_resume_gives_identical_losses(tmp_path):
    corpus, cfg, model, out = _small_train(tmp_path, "full")
    full = rnnkit.train(corpus, out, model, cfg)
    assert full.steps == 8 and not full.interrupted

    def interrupt_at_5(event):
        if event["kind"] == "step" and event["step"] == 5:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    first = rnnkit.train(corpus, part, model, cfg, callback=interrupt_at_5)
    assert first.interrupted and first.steps == 5
    resumed = rnnkit.train(corpus, part, resume=True)
    assert resumed.steps == 8
    a, b = read_metrics(out), read_metrics(part)
    assert [r["step"] for r in b] == list(range(1, 9))
    assert [r["train_bpc"] for r in a] == [r["train_bpc"] for r in b]
    assert [r.get("val_bpc") for r in a if r["step"] != 5] == [r.get("val_bpc") for r in b if r["step"] != 5]
    for name, t in rundir.read_tensors(out / "model.safetensors", "").items():
        assert torch.equal(t, rundir.read_tensors(part / "model.safetensors", "")[name])


def test_resume_rejects_a_changed_architecture(tmp_path):
    corpus, cfg, model, out = _small_train(tmp_path, "run", max_steps=2)
    rnnkit.train(corpus, out, model, cfg)
    with pytest.raises(ValueError, match="hidden_size"):
        rnnkit.train(corpus, out, CharLMConfig(cell="lstm", hidden_size=32), resume=True)


def test_nan_loss_raises_naming_the_step_and_writes_no_weights(tmp_path):
    from rnnkit.train.trainer import LanguageModelTask, Trainer

    _, cfg, _, out = _small_train(tmp_path, "nan", max_steps=5)
    out.mkdir()
    model = tiny()
    ids, _ = model.vocab.encode(TEXT)
    with torch.no_grad():
        model.head.bias[3] = float("nan")
    trainer = Trainer(model, LanguageModelTask(ids, None, cfg), cfg, out)
    with pytest.raises(TrainingError, match="at step 1"):
        trainer.run()
    assert not (out / "model.safetensors").exists()


def test_load_returns_trained_weights_and_best_is_best(tmp_path):
    corpus, cfg, model, out = _small_train(tmp_path, "run")
    result = rnnkit.train(corpus, out, model, cfg)
    vals = [r["val_bpc"] for r in read_metrics(out) if "val_bpc" in r]
    assert result.best_val_bpc == pytest.approx(min(vals))
    net = rnnkit.load(out, "best")
    assert isinstance(net, CharLM) and net.config == model and not net.training
    assert json.loads((out / "config.json").read_text())["model_type"] == "charlm"


@pytest.mark.parametrize("damage, message", [
    ("truncate", "corrupt or truncated"),
    ("shapes", "the config needs"),
    ("version", "format_version"),
    ("model_type", "model_type"),
    ("missing", "is missing"),
])
def test_load_rejects_damaged_runs(tmp_path, damage, message):
    corpus, cfg, model, out = _small_train(tmp_path, "run", max_steps=2)
    rnnkit.train(corpus, out, model, cfg)
    weights = out / "best.safetensors"
    config = json.loads((out / "config.json").read_text())
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:200])
    elif damage == "shapes":
        config["model"]["hidden_size"] = 20
    elif damage == "version":
        config["format_version"] = 99
    elif damage == "model_type":
        config["model_type"] = "transformer"
    else:
        weights.unlink()
        (out / "model.safetensors").unlink()
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        rnnkit.load(out)


def test_validation_bpc_is_the_mean_negative_log2_likelihood(tmp_path):
    from rnnkit.train.trainer import evaluate_bpc

    model = tiny().eval()
    ids, _ = model.vocab.encode(TEXT[:301])
    logits, _ = model(ids[:-1].long().unsqueeze(1))
    nll = torch.nn.functional.cross_entropy(logits[:, 0], ids[1:].long()).item()
    assert evaluate_bpc(model, ids, batch_size=1, seq_len=37) == pytest.approx(nll / math.log(2), rel=1e-5)


def test_sampling_leaves_the_global_rng_alone():
    model = tiny()
    before = torch.get_rng_state()
    "".join(model.sample(10))
    "".join(model.sample(10, seed=1))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_the_time_budget_counts_the_chosen_clock(tmp_path, monkeypatch, clock):
    # each reading of the chosen clock advances it by one second and the other clock stands
    # still, so a 5-second budget stops after a fixed number of steps on that clock only
    trainer_mod = importlib.import_module("rnnkit.train.trainer")

    ticks = {"t": 0.0}

    def tick():
        ticks["t"] += 1.0
        return ticks["t"]

    fake_time = type("T", (), {"monotonic": staticmethod(lambda: 0.0), "process_time": staticmethod(lambda: 0.0),
                               "time": staticmethod(__import__("time").time)})
    setattr(fake_time, "process_time" if clock == "cpu" else "monotonic", staticmethod(tick))
    monkeypatch.setattr(trainer_mod, "time", fake_time)
    corpus, cfg, model, out = _small_train(tmp_path, clock, max_steps=0, max_time=5, eval_every=0, clock=clock)
    result = rnnkit.train(corpus, out, model, cfg)
    rows = read_metrics(out)
    assert result.steps == 5 and [r["time"] for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_an_unknown_clock_is_named():
    with pytest.raises(ValueError, match="clock must be one of"):
        TrainConfig(clock="gpu")
