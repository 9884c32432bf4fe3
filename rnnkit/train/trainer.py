"""The trainer: one loop for every model type, with truncated BPTT, clipping, schedules,
atomic checkpoints and exact resume.

The model-specific part is a *task* (duck-typed; :class:`LanguageModelTask` for the char
LM, :class:`~rnnkit.train.examples.ExampleTask` for models trained on a list of examples):

    batches(start, epoch) -> Iterator[batch]     the epoch's batches from position ``start``
                                                 (the same ones again on resume)
    loss(model, batch, carry) -> (loss, carry, n_items)    carry: the recurrent state carried
                                                 between batches (None for non-stateful tasks)
    evaluate(model) -> float | dict | None       the validation value that picks best.safetensors
                                                 (lower is better); None: no validation data. A
                                                 dict holds it under metric_keys["val"] and more
                                                 figures (numbers, booleans, short strings), all
                                                 recorded in metrics.jsonl and the "eval" event;
                                                 under torchrun rank 0's result is every rank's
    sample(model, seed) -> str | None            optional: text for the progress callback
    solved(metrics) -> bool                      optional: stop once an evaluation (its dict, or
                                                 {metric_keys["val"]: value}) says solved
    ddp_module(model) -> nn.Module               optional: the module DistributedDataParallel wraps
                                                 under torchrun (default: the model), e.g. one
                                                 whose forward computes the loss; ``loss`` then
                                                 receives the DDP wrapper of it
    make_optimizer(params) -> Optimizer          optional: the optimiser (default AdamW with
                                                 lr and weight_decay of the TrainConfig); the
                                                 trainer sets its learning rate every step
    state_dict() -> dict[str, Tensor]            optional, with load_state_dict(state): the
                                                 data position beyond (epoch, batch), e.g. the
                                                 state of a synthetic stream's torch.Generator;
                                                 saved with every checkpoint, restored on resume
    loss_scale: float                            optional: metrics record loss × this
                                                 (default 1/ln 2: nats → bits)
    metric_keys: dict                            optional: the metrics' names, default
                                                 {"train": "train_bpc", "val": "val_bpc",
                                                  "rate": "chars_per_sec"}

The trainer owns the optimiser, the budget, the schedule, the run directory and the RNG.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data.text import num_chunks, truncated_bptt_streams
from ..errors import CheckpointError, TrainingError
from . import distributed, rundir
from .config import TrainConfig

log = logging.getLogger(__name__)
LN2 = math.log(2.0)
#: the metrics' names of a task that does not name them (a language model: bits per character)
BPC_KEYS = {"train": "train_bpc", "val": "val_bpc", "rate": "chars_per_sec"}


def _detach(state):
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


def _state_tensors(state) -> list[Tensor]:
    if state is None:
        return []
    return [state] if isinstance(state, Tensor) else list(state)


@torch.no_grad()
def evaluate_bpc(model: nn.Module, ids: Tensor, batch_size: int, seq_len: int) -> float:
    """Bits per character of ``model`` on ``ids``: the mean over every predicted character of
    −log₂ p(x_{t+1} | x_≤t), streamed as in training (``batch_size`` streams, state carried
    across chunks of ``seq_len``). Under torchrun each rank evaluates its share of the streams
    and the sums are all-reduced, so every rank returns the single-process value."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    B = max(1, min(batch_size, len(ids) - 1))
    cols = distributed.current().shard(B)
    total, count, state = 0.0, 0, None
    try:
        if cols.stop > cols.start:
            for x, y in truncated_bptt_streams(ids, B, seq_len):
                x, y = x[:, cols], y[:, cols]  # this rank's streams
                logits, state = model(x.to(device), state)  # (T, b, V)
                total += float(nn.functional.cross_entropy(logits.flatten(0, 1), y.to(device).flatten(),
                                                           reduction="sum"))
                count += y.numel()
    finally:
        model.train(was_training)
    total, count = distributed.all_reduce_sum([total, float(count)], device)
    return total / count / LN2


class LanguageModelTask:
    """Next-token prediction on one long id sequence, by truncated BPTT: ``batch_size``
    parallel streams, chunks of ``seq_len``, the recurrent state carried from chunk to chunk
    (detached, so gradients flow back ``seq_len`` steps at most) and reset each epoch."""

    def __init__(self, train_ids: Tensor, val_ids: Tensor | None, cfg: TrainConfig):
        if num_chunks(len(train_ids), cfg.batch_size, cfg.seq_len) < 1:
            raise ValueError(f"the training text ({len(train_ids)} chars) is too short for batch_size "
                             f"{cfg.batch_size}")
        world = distributed.current().world_size
        if cfg.batch_size % world:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} processes of the "
                             f"torchrun job; each rank takes batch_size / {world} of the streams")
        self.train_ids, self.val_ids, self.cfg = train_ids, val_ids, cfg
        self.batches_per_epoch = num_chunks(len(train_ids), cfg.batch_size, cfg.seq_len)

    def batches(self, start: int, epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """(input, target) chunks from chunk ``start`` on (every epoch reads the text in the
        same order); under torchrun only this rank's contiguous share of the ``batch_size``
        streams (the same global layout)."""
        cols = distributed.current().shard(self.cfg.batch_size)
        for x, y in truncated_bptt_streams(self.train_ids, self.cfg.batch_size, self.cfg.seq_len, start):
            yield x[:, cols], y[:, cols]  # (T, B/N)

    def loss(self, model: nn.Module, batch, carry):
        """Mean cross-entropy (nats) of one chunk, the new carry, and the number of targets."""
        x, y = batch
        device = next(model.parameters()).device
        if carry is not None and _state_tensors(carry)[0].device != device:
            carry = tuple(s.to(device) for s in carry) if isinstance(carry, tuple) else carry.to(device)
        logits, state = model(x.to(device), carry)  # (T, B, V)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())
        return loss, _detach(state), y.numel()

    def evaluate(self, model: nn.Module) -> float | None:
        if self.val_ids is None:
            return None
        return evaluate_bpc(model, self.val_ids, self.cfg.batch_size, self.cfg.seq_len)

    def sample(self, model: nn.Module, seed: int) -> str | None:
        if not hasattr(model, "sample"):
            return None
        return "".join(model.sample(self.cfg.sample_length, temperature=0.8, seed=seed))


@dataclass
class TrainResult:
    """What a training run ended with."""

    run_dir: Path
    steps: int
    elapsed: float  # seconds, over every session of the run
    train_bpc: float | None  # of the last step
    val_bpc: float | None  # of the last evaluation
    best_val_bpc: float | None
    interrupted: bool = False
    solved: bool = False  # stopped because an evaluation said solved (task.solved)
    metrics: dict | None = None  # the figures of the last evaluation


class Trainer:
    """Train ``model`` on ``task`` into ``run_dir`` (which already holds config.json and
    vocab.json). ``callback(event)`` receives dicts with ``kind`` ∈ {"native", "start", "step",
    "eval", "sample", "checkpoint"}; it is how the CLI shows progress (library code does not
    print). "native" events come before "start", while the native loops are compiled or
    another process's build is waited for (:func:`rnnkit.engine.native.load`)."""

    def __init__(self, model: nn.Module, task, cfg: TrainConfig, run_dir: Path,
                 callback: rundir.Callback | None = None):
        self.model, self.task, self.cfg, self.run_dir = model, task, cfg, Path(run_dir)
        self.keys = {**BPC_KEYS, **getattr(task, "metric_keys", {})}
        self.loss_scale = getattr(task, "loss_scale", 1.0 / LN2)
        self.callback = callback or (lambda event: None)
        self._progress = callback  # None: the native build, if any, logs instead
        if hasattr(task, "make_optimizer"):
            self.optimizer = task.make_optimizer(model.parameters())
        else:
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.epoch = 0
        self.chunk = 0  # position in the epoch's batches
        self.elapsed = 0.0
        self.best_val: float | None = None
        self.last_val: float | None = None
        self.carry = None
        self.solved = False  # an evaluation said solved (task.solved): training stops
        self.last_metrics: dict | None = None  # of the last evaluation
        self._stop = False
        self._abort = False
        self.lr_scale = 1.0  # lowered by each on_nan="rollback"
        self.retries = 0
        self._good: dict | None = None
        self.dist = distributed.current()
        self._stop_requested = False  # under torchrun: Ctrl-C seen here, not yet agreed by all ranks
        self._sigint_at = 0.0
        # the module that trains: DDP all-reduces the gradients in buckets during backward
        # (the hand-written BPTT layers produce ordinary autograd gradients, so its hooks fire)
        self.train_model: nn.Module = model
        if self.dist.enabled:
            device = next(model.parameters()).device
            self.train_model = nn.parallel.DistributedDataParallel(
                task.ddp_module(model) if hasattr(task, "ddp_module") else model,
                device_ids=[device] if device.type == "cuda" else None)
        if self.dist.enabled and cfg.on_nan == "rollback":
            raise ValueError("--on-nan rollback is not available under torchrun (every rank would have to roll "
                             "back together); use --on-nan stop")

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, val_bpc: float | None = None) -> None:
        """Write the checkpoint: the latest weights (and best when ``val_bpc`` is a new best),
        then the resume file, which commits the checkpoint.

        The resume file (trainer_state.safetensors) is self-contained: the weights (``model.*``),
        the optimizer tensors, the RNG and carry tensors, and the JSON state in its metadata, so
        one atomic rename commits a consistent resume point. A kill after the weights and
        before it leaves model.safetensors one checkpoint ahead; resume never reads that file.
        trainer_state.json is a readable copy of the state, written last."""
        meta = {"step": str(self.step)}
        opt = self.optimizer.state_dict()
        tensors: dict[str, Tensor] = {"rng.torch": torch.get_rng_state()}
        scalars: dict[str, dict] = {}
        for idx, st in opt["state"].items():
            for k, v in st.items():
                if isinstance(v, Tensor):
                    tensors[f"optim.{idx}.{k}"] = v
                else:
                    scalars.setdefault(str(idx), {})[k] = v
        for i, s in enumerate(_state_tensors(self.carry)):
            tensors[f"carry.{i}"] = distributed.all_gather_batch(s, 1)  # (L, B, H): every rank's streams
        for k, t in self._task_state().items():
            tensors[f"task.{k}"] = t
        if not self.dist.is_main:  # rank 0 writes; the others wait for it to finish
            distributed.barrier()
            return
        weights = self.model.state_dict()
        for name, w in weights.items():
            tensors[f"model.{name}"] = w
        py_state = random.getstate()
        np_state = np.random.get_state()
        state = {
            "step": self.step, "epoch": self.epoch, "chunk": self.chunk, "elapsed": self.elapsed,
            "best_val_bpc": self.best_val, "last_val_bpc": self.last_val, "lr_scale": self.lr_scale,
            "carry": None if self.carry is None else len(_state_tensors(self.carry)),
            "carry_is_tuple": isinstance(self.carry, tuple), "solved": self.solved,
            "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
            "rng": {"python": [py_state[0], list(py_state[1]), py_state[2]],
                    "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]},
        }
        rundir.save_tensors(self.run_dir / rundir.LATEST, weights, meta)
        if val_bpc is not None and (self.best_val is None or val_bpc <= self.best_val):
            rundir.save_tensors(self.run_dir / rundir.BEST, weights, {**meta, "val_bpc": repr(val_bpc)})
        rundir.save_tensors(self.run_dir / rundir.STATE_TENSORS, tensors, {**meta, "state": json.dumps(state)})
        rundir.write_json(self.run_dir / rundir.STATE_JSON, state)
        self._snapshot()
        distributed.barrier()
        self.callback({"kind": "checkpoint", "step": self.step})

    def restore(self) -> None:
        """Load the latest checkpoint of ``run_dir`` for an exact resume."""
        d = self.run_dir
        tensors, meta = rundir.read_safetensors(d / rundir.STATE_TENSORS, "trainer state")
        if "state" in meta:  # self-contained resume file
            try:
                state = json.loads(meta["state"])
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{d / rundir.STATE_TENSORS}: the state metadata is not JSON ({e})") from None
            if not isinstance(state, dict) or meta.get("step") != str(state.get("step")):
                raise CheckpointError(f"{d / rundir.STATE_TENSORS}: the state metadata is inconsistent")
            weights = {k[len("model."):]: t for k, t in tensors.items() if k.startswith("model.")}
            rundir.load_checked(self.model, weights, d / rundir.STATE_TENSORS)
        else:  # older layout: weights in model.safetensors, state in trainer_state.json
            state = rundir.read_json(d / rundir.STATE_JSON, "trainer state")
            wmeta = rundir.load_state_into(self.model, d / rundir.LATEST)
            steps = {rundir.LATEST: wmeta.get("step"), rundir.STATE_TENSORS: meta.get("step"),
                     rundir.STATE_JSON: str(state.get("step"))}
            if len(set(steps.values())) != 1:
                raise CheckpointError(f"the checkpoint files in {d} are from different steps ({steps}): "
                                      f"a crash interrupted a checkpoint write; cannot resume exactly")
        try:
            opt_state: dict = {}
            for key, t in tensors.items():
                if key.startswith("optim."):
                    _, idx, k = key.split(".", 2)
                    opt_state.setdefault(int(idx), {})[k] = t
            for idx, sc in state["optimizer"]["scalars"].items():
                opt_state.setdefault(int(idx), {}).update(sc)
            groups = state["optimizer"]["param_groups"]
            for g in groups:
                if "betas" in g:
                    g["betas"] = tuple(g["betas"])
            self.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
            torch.set_rng_state(tensors["rng.torch"])
            py = state["rng"]["python"]
            random.setstate((py[0], tuple(py[1]), py[2]))
            npst = state["rng"]["numpy"]
            np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), *npst[2:]))
            n = state["carry"]
            if n is None:
                self.carry = None
            else:
                cols = self.dist.shard(self.cfg.batch_size)
                parts = [tensors[f"carry.{i}"][:, cols] for i in range(n)]  # this rank's streams
                self.carry = tuple(parts) if state["carry_is_tuple"] else parts[0]
            self.step, self.epoch, self.chunk = int(state["step"]), int(state["epoch"]), int(state["chunk"])
            self.elapsed = float(state["elapsed"])
            self.best_val, self.last_val = state["best_val_bpc"], state["last_val_bpc"]
            self.lr_scale = float(state.get("lr_scale", 1.0))
            self.solved = bool(state.get("solved", False))
            if hasattr(self.task, "load_state_dict"):
                self.task.load_state_dict({k[len("task."):]: t for k, t in tensors.items() if k.startswith("task.")})
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError, OverflowError) as e:
            raise CheckpointError(f"{d / rundir.STATE_TENSORS} (with {rundir.STATE_JSON}): the trainer state is "
                                  f"invalid or does not match the model: {e}") from None
        self._snapshot()
        if not self.dist.is_main:
            # the checkpoint holds rank 0's torch RNG; the others draw from their own stream
            torch.manual_seed(self.cfg.seed + 1_000_003 * self.dist.rank + self.step)
            distributed.barrier()
            return
        self._truncate_metrics()
        distributed.barrier()

    def _truncate_metrics(self) -> None:
        """Drop metrics logged after the current step: the resumed run logs those steps again."""
        d = self.run_dir
        kept = [r for r in rundir.read_metrics(d)
                if isinstance(r.get("step", 0), (int, float)) and r.get("step", 0) <= self.step]
        rundir.atomic_write(d / rundir.METRICS, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def _autocast(self):
        """bfloat16 autocast of the forward pass for ``precision="bf16"`` (the weights, the
        gradients and the optimizer stay float32; the loss is computed in float32)."""
        if self.cfg.precision != "bf16":
            return contextlib.nullcontext()
        device = next(self.model.parameters()).device
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def _task_state(self) -> dict[str, Tensor]:
        """A copy of the task's data position (its ``state_dict()``; empty without one)."""
        if not hasattr(self.task, "state_dict"):
            return {}
        return {k: t.detach().clone() for k, t in self.task.state_dict().items()}

    # -- non-finite values -----------------------------------------------------------------
    def _snapshot(self) -> None:
        """Keep the last good state in memory for ``on_nan="rollback"``."""
        if self.cfg.on_nan != "rollback":
            return
        self._good = {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "pos": (self.step, self.epoch, self.chunk, self.elapsed),
            "carry": self.carry,
            "task": self._task_state(),
        }

    def _rollback(self, problem: str) -> None:
        """Go back to the last good state with a lower learning rate, or raise when the
        retries are spent."""
        cfg = self.cfg
        if cfg.on_nan != "rollback" or self._good is None or self.retries >= cfg.nan_max_retries:
            spent = f" (after {self.retries} rollback(s))" if cfg.on_nan == "rollback" else ""
            raise TrainingError(f"{problem}{spent}; try a lower --lr, a smaller --clip, or --on-nan rollback")
        self.retries += 1
        self.lr_scale *= cfg.nan_lr_factor
        good = self._good
        self.model.load_state_dict(good["model"])
        self.optimizer.load_state_dict(copy.deepcopy(good["optimizer"]))
        self.step, self.epoch, self.chunk, _ = good["pos"]
        self.carry = good["carry"]
        if hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(good["task"])
        log.warning("%s: rolled back to step %d, learning rate ×%g (rollback %d of %d)", problem, self.step,
                    self.lr_scale, self.retries, cfg.nan_max_retries)
        self.callback({"kind": "rollback", "step": self.step, "problem": problem, "lr_scale": self.lr_scale,
                       "retry": self.retries})

    def _nonfinite_grads(self) -> list[str]:
        """Names of the parameters whose gradient has a NaN or an Inf."""
        return [name for name, p in self.model.named_parameters()
                if p.grad is not None and not bool(torch.isfinite(p.grad).all())]

    def _nonfinite_params(self) -> list[str]:
        return [name for name, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]

    # -- the loop --------------------------------------------------------------------------
    def _budget_left(self) -> bool:
        return self.cfg.progress(self.step, self.elapsed) < 1.0

    def _on_sigint(self, signum, frame) -> None:
        if self.dist.enabled:
            # every rank must stop after the same step: the request is agreed on at the next
            # step's all-reduce. torchrun forwards the terminal's Ctrl-C to the ranks, so a
            # second SIGINT within a second is the same Ctrl-C.
            now = time.monotonic()
            if self._stop_requested and now - self._sigint_at > 1.0:
                self._abort = True
                raise KeyboardInterrupt
            if not self._stop_requested:
                self._sigint_at = now
                if self.dist.is_main:
                        log.warning("interrupted: finishing this step and writing a checkpoint "
                                "(Ctrl-C again to abort)")
            self._stop_requested = True
            return
        if self._stop:  # a second Ctrl-C: abort now, without a checkpoint
            self._abort = True
            raise KeyboardInterrupt
        self._stop = True
        log.warning("interrupted: finishing this step and writing a checkpoint (Ctrl-C again to abort)")

    def run(self) -> TrainResult:
        """Train until the budget is spent or Ctrl-C; always ends with a checkpoint."""
        cfg, model = self.cfg, self.model
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        model.train()
        if self._good is None:
            self._snapshot()
        # only rank 0 logs metrics; the other ranks write to the null device
        metrics = open(self.run_dir / rundir.METRICS if self.dist.is_main else os.devnull, "a", encoding="utf-8")

        def write_record(record: dict, sync: bool = False) -> None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            if sync and self.dist.is_main:
                os.fsync(metrics.fileno())

        train_bpc = None
        evaluated_at = -1
        self._load_native_loops()
        self.callback({"kind": "start", "step": self.step, "elapsed": self.elapsed,
                       "progress": cfg.progress(self.step, self.elapsed)})
        clock = time.process_time if cfg.clock == "cpu" else time.monotonic
        t_last = clock()
        try:
            while self._budget_left() and not self._stop and not self.solved:
                for batch in self.task.batches(self.chunk, self.epoch):
                    lr = cfg.lr_at(self.step, self.elapsed) * self.lr_scale
                    for g in self.optimizer.param_groups:
                        g["lr"] = lr
                    with self._autocast():
                        loss, carry, n = self.task.loss(self.train_model, batch, self.carry)
                    problem = None
                    if self.dist.enabled:
                        # under torchrun a rank must not leave the step alone: the finite check is
                        # made on the all-reduced loss (see _agree), which every rank sees
                        self.optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                    elif not torch.isfinite(loss):
                        bad = self._nonfinite_params()
                        where = (f"non-finite weights in {', '.join(bad[:5])}" if bad
                                 else "every weight is finite, so the forward pass overflowed")
                        problem = f"the loss is {float(loss.detach())} at step {self.step + 1} ({where})"
                    else:
                        self.optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        bad = self._nonfinite_grads()
                        if bad:
                            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
                            problem = (f"the gradient is not finite at step {self.step + 1} in "
                                       f"{', '.join(bad[:5])}{more}")
                    if problem is not None:
                        self._rollback(problem)  # raises TrainingError unless it can roll back
                        metrics.close()
                        self._truncate_metrics()
                        metrics = open(self.run_dir / rundir.METRICS, "a", encoding="utf-8")
                        break  # restart the batches from the rolled-back position
                    if cfg.clip_value:
                        nn.utils.clip_grad_value_(model.parameters(), cfg.clip_value)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip if cfg.clip else math.inf)
                    self.optimizer.step()
                    self.carry = carry
                    self.step += 1
                    self.chunk += 1
                    now = clock()
                    dt, t_last = now - t_last, now
                    self.elapsed += dt
                    train_bpc = float(loss.detach()) * self.loss_scale
                    if self.dist.enabled:
                        train_bpc, n, dt = self._agree(train_bpc, n, dt)
                    keys = self.keys  # (the same dict every step)
                    record = {"step": self.step, "time": round(self.elapsed, 3), keys["train"]: train_bpc,
                              "lr": lr, keys["rate"]: n / dt if dt > 0 else None}
                    # the step's metrics line is written before its checkpoint: a resume from
                    # that checkpoint then never lacks it (lines after it are dropped on resume)
                    if cfg.eval_every and self.step % cfg.eval_every == 0 or not self._budget_left():
                        record.update(self._evaluate_and_save(
                            lambda figures, rec=record: write_record({**rec, **figures}, sync=True)))
                        evaluated_at = self.step
                        t_last = clock()  # evaluation time is not training time...
                        self.elapsed += t_last - now  # ...but it is spent from the budget
                        self.elapsed = distributed.broadcast_float(self.elapsed, self._device())
                    elif cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        write_record(record, sync=True)
                        self.save()
                        t_last = clock()
                        self.elapsed += t_last - now
                        self.elapsed = distributed.broadcast_float(self.elapsed, self._device())
                    else:
                        write_record(record)
                    self.callback({"kind": "step", **record, "progress": cfg.progress(self.step, self.elapsed),
                                   "epoch": self.epoch})
                    if cfg.sample_every and self.step % cfg.sample_every == 0 and hasattr(self.task, "sample"):
                        text = self.task.sample(model, cfg.seed + self.step) if self.dist.is_main else None
                        if text is not None:
                            self.callback({"kind": "sample", "step": self.step, "text": text})
                        t_last = clock()
                        self.elapsed += t_last - now
                        self.elapsed = distributed.broadcast_float(self.elapsed, self._device())
                    if not self._budget_left() or self._stop or self.solved:
                        break
                else:
                    self.epoch += 1
                    self.chunk = 0
                    self.carry = None  # a new epoch starts each stream from its beginning
        except KeyboardInterrupt:
            if self._abort:
                raise
            self._stop = True
        finally:
            metrics.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        if self._stop:
            self.save()  # interrupted: checkpoint at once, no validation pass
        elif evaluated_at != self.step:
            self._evaluate_and_save()
        return TrainResult(self.run_dir, self.step, self.elapsed, train_bpc, self.last_val, self.best_val,
                           interrupted=self._stop, solved=self.solved, metrics=self.last_metrics)

    def _load_native_loops(self) -> None:
        """Build or load the native loops now, before the clock starts, when the model will
        run them: a first run's compile (up to a minute) must not eat the budget. The
        build reports through the callback ("native" events, see :func:`rnnkit.engine.native.load`)."""
        from ..engine import native, uses_native_loops

        if uses_native_loops(self.model, torch.bfloat16 if self.cfg.precision == "bf16" else None):
            native.load(progress=self._progress)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _agree(self, train_bpc: float, n: int, dt: float) -> tuple[float, int, float]:
        """Under torchrun, once per step: the mean loss over the ranks, the characters of the
        whole batch, rank 0's clock (so every rank sees the same budget) and whether any rank
        was interrupted — one all-reduce, after which every rank takes the same decisions."""
        me = self.dist
        clock = [self.elapsed, dt] if me.is_main else [0.0, 0.0]
        s = distributed.all_reduce_sum([train_bpc, float(n), float(self._stop_requested), *clock],
                                       self._device())
        train_bpc = s[0] / me.world_size
        self.elapsed, dt = s[3], s[4]
        if s[2] > 0:
            self._stop = True
        if not math.isfinite(train_bpc):
            raise TrainingError(f"the loss is {train_bpc / self.loss_scale} at step {self.step}; "
                                f"try a lower --lr or a smaller --clip")
        return train_bpc, int(s[1]), dt

    def _evaluate_and_save(self, before_save=None) -> dict:
        """Validate, then checkpoint; ``before_save(figures)`` runs in between. Returns the
        evaluation's figures for the metrics record: ``{metric_keys["val"]: value, ...}``
        (the value None without validation data)."""
        result = self.task.evaluate(self.model)
        if self.dist.enabled:  # every rank takes rank 0's figures: the same best weights, the same solved
            result = distributed.broadcast_object(result)
        figures = dict(result) if isinstance(result, dict) else {self.keys["val"]: result}
        val = figures.get(self.keys["val"])
        if val is not None and not math.isfinite(val):
            raise TrainingError(f"the validation {self.keys['val']} is {val} at step {self.step}")
        self.last_val = val
        if val is not None:
            self.last_metrics = figures
            self.callback({"kind": "eval", "step": self.step, **figures})
            if hasattr(self.task, "solved") and self.task.solved(figures):
                self.solved = True
        if before_save is not None:
            before_save(figures)
        self.save(val)
        if val is not None and (self.best_val is None or val < self.best_val):
            self.best_val = val
        return figures
