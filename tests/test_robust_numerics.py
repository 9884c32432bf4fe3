"""Non-finite losses and gradients (stop naming the parameter, or roll back with a lower
learning rate), gradient clipping by norm and by value, bf16 autocast and float64 training."""

from __future__ import annotations

import math

import pytest
import torch

import rnnkit
from rnnkit import CharLMConfig, TrainConfig
from rnnkit.data import Vocabulary
from rnnkit.errors import TrainingError
from rnnkit.models.charlm import CharLM
from rnnkit.train import rundir
from rnnkit.train.trainer import LanguageModelTask, Trainer

TEXT = "".join(f"for i in range({k}):\n    total += i * {k % 5}\n" for k in range(150))


class Poisoned(LanguageModelTask):
    """The language-model task whose loss is NaN on the given calls (counted from 1)."""

    def __init__(self, *args, nan_calls=()):
        super().__init__(*args)
        self.calls, self.nan_calls = 0, set(nan_calls)

    def loss(self, model, batch, carry):
        loss, state, n = super().loss(model, batch, carry)
        self.calls += 1
        if self.calls in self.nan_calls:
            loss = loss * float("nan")
        return loss, state, n


def _trainer(tmp_path, cell="gru", nan_calls=(), **kw) -> Trainer:
    vocab = Vocabulary.build(TEXT)
    ids, _ = vocab.encode(TEXT)
    cfg = TrainConfig(**{"batch_size": 4, "seq_len": 12, "max_steps": 8, "max_time": 0, "eval_every": 0,
                         "sample_every": 0, "warmup_steps": 0, "lr_schedule": "constant", "lr": 3e-3, **kw})
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(cell=cell, hidden_size=12, embed_size=6), vocab)
    if cfg.precision == "fp64":
        model = model.double()
    (tmp_path / "run").mkdir(parents=True)
    return Trainer(model, Poisoned(ids, None, cfg, nan_calls=nan_calls), cfg, tmp_path / "run")


def test_nan_loss_stops_naming_the_step(tmp_path):
    trainer = _trainer(tmp_path, nan_calls={3})
    with pytest.raises(TrainingError) as e:
        trainer.run()
    msg = str(e.value)
    assert "the loss is nan at step 3" in msg and "every weight is finite" in msg and "--on-nan rollback" in msg
    assert trainer.step == 2


def test_nan_gradient_stops_naming_the_parameter(tmp_path):
    trainer = _trainer(tmp_path)
    weight = dict(trainer.model.named_parameters())["rnn.weight_hh_l0"]
    calls = []

    def poison(grad):
        calls.append(1)
        return grad * float("inf") if len(calls) == 4 else grad

    weight.register_hook(poison)
    with pytest.raises(TrainingError) as e:
        trainer.run()
    msg = str(e.value)
    assert "the gradient is not finite at step 4 in rnn.weight_hh_l0" in msg, msg
    # only that parameter: the others' gradients do not depend on it
    assert "head.weight" not in msg and "embed.weight" not in msg
    assert trainer.step == 3


def test_rollback_restores_the_last_checkpoint_and_lowers_the_learning_rate(tmp_path):
    trainer = _trainer(tmp_path, nan_calls={6}, on_nan="rollback", checkpoint_every=2, nan_lr_factor=0.25)
    events = []
    trainer.callback = events.append
    result = trainer.run()
    assert result.steps == 8 and trainer.retries == 1 and trainer.lr_scale == 0.25
    rollbacks = [e for e in events if e["kind"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["step"] == 4 and "step 6" in rollbacks[0]["problem"]
    records = rundir.read_metrics(trainer.run_dir)
    assert [r["step"] for r in records] == list(range(1, 9))  # steps 5.. were logged again, once
    assert [r["lr"] for r in records] == [3e-3] * 4 + [3e-3 * 0.25] * 4
    # the rolled-back run is the run that had its learning rate cut at step 4: same losses
    ref = _trainer(tmp_path / "ref", max_steps=4)
    ref.run()
    ref_records = rundir.read_metrics(ref.run_dir)
    assert [r["train_bpc"] for r in ref_records] == [r["train_bpc"] for r in records[:4]]
    assert all(math.isfinite(r["train_bpc"]) for r in records)


def test_rollback_gives_up_after_the_retries(tmp_path):
    trainer = _trainer(tmp_path, nan_calls=set(range(3, 100)), on_nan="rollback", checkpoint_every=1,
                       nan_max_retries=2, max_steps=20)
    with pytest.raises(TrainingError, match=r"at step 3 .*after 2 rollback\(s\)"):
        trainer.run()
    assert trainer.retries == 2 and trainer.lr_scale == 0.25 and trainer.step == 2


def _grads_seen_by_the_optimizer(trainer: Trainer) -> list[list[torch.Tensor]]:
    seen = []
    step = trainer.optimizer.step

    def spy(*a, **k):
        seen.append([p.grad.clone() for p in trainer.model.parameters()])
        return step(*a, **k)

    trainer.optimizer.step = spy
    return seen


def test_clip_by_norm_gives_the_clipped_global_norm(tmp_path):
    trainer = _trainer(tmp_path, clip=0.05, max_steps=3)
    seen = _grads_seen_by_the_optimizer(trainer)
    trainer.run()
    assert len(seen) == 3
    for grads in seen:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        assert float(norm) == pytest.approx(0.05, rel=1e-4)  # the raw norms are far above 0.05


def test_clip_by_value_bounds_every_element(tmp_path):
    trainer = _trainer(tmp_path, clip=0, clip_value=1e-3, max_steps=3)
    seen = _grads_seen_by_the_optimizer(trainer)
    trainer.run()
    for grads in seen:
        biggest = max(float(g.abs().max()) for g in grads)
        assert biggest == pytest.approx(1e-3)  # reached, so clipping happened, and never exceeded
        small = [g for g in grads if float(g.abs().min()) < 1e-3]
        assert small  # elements below the bound are left alone


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_bf16_autocast_step_is_finite_and_close_to_fp32(tmp_path, cell):
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = _trainer(tmp_path / precision, cell=cell, precision=precision, max_steps=3)
        trainer.run()
        losses[precision] = [r["train_bpc"] for r in rundir.read_metrics(trainer.run_dir)]
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(math.isfinite(x) for x in losses["bf16"])
    assert losses["bf16"] != losses["fp32"]  # bf16 really ran
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)


def test_float64_training_end_to_end(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    result = rnnkit.train(corpus, tmp_path / "run", CharLMConfig(hidden_size=8, embed_size=4),
                          TrainConfig(batch_size=4, seq_len=12, max_steps=4, max_time=0, sample_every=0,
                                      precision="fp64"))
    assert math.isfinite(result.train_bpc)
    model = rnnkit.load(result.run_dir)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert rundir.read_tensors(result.run_dir / rundir.LATEST, "w")["head.weight"].dtype == torch.float64
    # float64 training takes the same steps as float32 up to rounding
    r32 = rnnkit.train(corpus, tmp_path / "run32", CharLMConfig(hidden_size=8, embed_size=4),
                       TrainConfig(batch_size=4, seq_len=12, max_steps=4, max_time=0, sample_every=0))
    a = [r["train_bpc"] for r in rundir.read_metrics(result.run_dir)]
    b = [r["train_bpc"] for r in rundir.read_metrics(r32.run_dir)]
    assert a == pytest.approx(b, rel=1e-4) and a != b
