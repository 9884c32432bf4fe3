"""Training, evaluating, saving and loading :class:`~rnnkit.models.Seq2Seq` models on the
demo tasks or on a user's TSV files (the engine of ``rnnkit seq2seq``).

Training runs on the one :class:`~rnnkit.train.Trainer` into a run directory of the one
format (``train_seq2seq(config, out=DIR)``, ``rnnkit seq2seq train --out DIR``):

    config.json   {"format_version", "model_type": "seq2seq", "model", "train", "seq2seq",
                   "data", "src_vocab", "tgt_vocab", "rnnkit_version"}
    model.safetensors / best.safetensors / trainer_state.* / metrics.jsonl   (the trainer's)
    probe.safetensors   a run on a file: its first 8 test pairs as one batch (src, src_lengths,
                        tgt_in, tgt_out), what `rnnkit report` measures the gradient flow on

:func:`load_run` reads these and the directories of the earlier format
(``{"format": "rnnkit-seq2seq-1", ...}`` + model.safetensors, as :func:`save_run` writes).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import checkpoint
from .._config import option
from .._version import __version__
from ..data.seq2seq_tasks import Pair, Seq2SeqBatch, Vocab, generate, make_batch, read_tsv, sequence_metrics
from ..errors import CheckpointError, DataError
from ..models.seq2seq import SamplingSchedule, Seq2Seq, Seq2SeqConfig, sequence_loss
from ..train import distributed, rundir
from ..train.config import ON_NAN, TrainConfig
from .loop import EvalPoint, LoopResult, run_trainer


@dataclass
class Seq2SeqTrainConfig:
    """A training run: the data, the model and the budget. Exactly one of ``task`` (a demo
    task, fresh batches every step) and ``train_file`` (a TSV file) is used."""

    task: str | None = "reverse"
    train_file: str | None = None
    #: TSV test file; without it 10% of train_file (at most 1000 lines) is held out
    test_file: str | None = None
    level: str = option("char", "symbols are characters or words (char, token)")
    test_size: int = option(500, "test pairs of a demo task")
    batch_size: int = option(64, "pairs per batch")
    model: Seq2SeqConfig = field(default_factory=lambda: Seq2SeqConfig(src_vocab_size=4, tgt_vocab_size=4))
    sampling: SamplingSchedule = field(default_factory=SamplingSchedule)
    lr: float = option(3e-3, "learning rate (Adam)")
    clip_norm: float | None = option(1.0, "gradient-norm clipping (0 or none: off)")
    max_steps: int | None = option(None, "step budget")
    max_time: float | None = option(120.0, "wall-clock budget, e.g. 2m (with only --max-steps: none)",
                                    type="positive_duration")
    eval_every: int = option(100, "evaluate on the test pairs every N steps")
    #: stop when exact-match accuracy on the test set reaches this (None: use the whole budget)
    target_exact_match: float | None = option(None, "stop when test exact match reaches this fraction")
    beam_size: int = option(1, "beam size of the evaluations")
    seed: int = option(0, "random seed")
    on_nan: str = option("stop", "NaN/Inf loss or gradient: stop (an error), or rollback to the last checkpoint "
                                 "with a lower learning rate")
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: at each evaluation only)")

    def __post_init__(self) -> None:
        if self.on_nan not in ON_NAN:
            raise ValueError(f"on_nan must be one of {ON_NAN}, got {self.on_nan!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be non-negative, got {self.checkpoint_every}")


@dataclass
class Seq2SeqRun:
    model: Seq2Seq
    src_vocab: Vocab
    tgt_vocab: Vocab
    test_pairs: list[Pair]
    loop: LoopResult


def translate(model: Seq2Seq, texts: Sequence[str], src_vocab: Vocab, tgt_vocab: Vocab, beam_size: int = 1,
              batch_size: int = 256, max_len: int | None = None) -> list[tuple[str, list[int], torch.Tensor | None]]:
    """Decode each text; returns (output text, output ids without EOS, attention (T_out, S) or None)."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        batch = make_batch([(t, "") for t in chunk], src_vocab, tgt_vocab)
        if beam_size == 1:
            dec = model.greedy(batch.src, batch.src_lengths, max_len)
        else:
            dec = model.beam_search(batch.src, batch.src_lengths, beam_size, max_len)
        for b in range(len(chunk)):
            ids = dec.tokens[b, : int(dec.lengths[b])].tolist()
            if ids and ids[-1] == model.config.eos_id:
                ids = ids[:-1]
            att = None
            if dec.attention is not None:
                att = dec.attention[b, : int(dec.lengths[b]), : int(batch.src_lengths[b])]
            out.append((tgt_vocab.decode(ids), ids, att))
    return out


def evaluate_pairs(model: Seq2Seq, pairs: Sequence[Pair], src_vocab: Vocab, tgt_vocab: Vocab,
                   beam_size: int = 1) -> dict[str, float]:
    """Exact-match and per-token accuracy of decoding each source against its target."""
    decoded = translate(model, [s for s, _ in pairs], src_vocab, tgt_vocab, beam_size)
    refs = [tgt_vocab.encode(t) for _, t in pairs]
    return sequence_metrics([ids for _, ids, _ in decoded], refs)


def _data(config: Seq2SeqTrainConfig):
    """(draw(n, rng) → a training batch of pairs, test pairs, vocabulary sample)."""
    if (config.task is None) == (config.train_file is None):
        raise ValueError("give exactly one of a demo task (--task) and a training file (--data)")
    if config.task is not None:
        test = generate(config.task, config.test_size, config.seed + 1_000_003)
        sample = generate(config.task, 5000, config.seed + 2_000_003)

        def draw(n: int, rng: random.Random) -> list[Pair]:
            return generate(config.task, n, rng.getrandbits(62))

        return draw, test, sample + test
    pairs = read_tsv(config.train_file)
    if config.test_file is not None:
        test = read_tsv(config.test_file)
    else:
        if len(pairs) < 2:
            raise DataError(f"{config.train_file}: need at least 2 lines to hold out a test set")
        shuffled = pairs[:]
        random.Random(config.seed + 1).shuffle(shuffled)
        n_test = min(max(1, len(pairs) // 10), 1000)
        test, pairs = shuffled[:n_test], shuffled[n_test:]
    train = pairs

    def draw_file(n: int, rng: random.Random) -> list[Pair]:
        return [train[rng.randrange(len(train))] for _ in range(n)]

    return draw_file, test, train + test


#: TrainConfig-like fields of Seq2SeqTrainConfig a resumed run may change (its budget and reporting)
RESUMABLE = ("max_steps", "max_time", "eval_every", "checkpoint_every", "on_nan", "target_exact_match")


class Seq2SeqStream:
    """The :class:`~rnnkit.train.Trainer`'s task (see rnnkit/train/trainer.py) for a seq2seq
    run: an endless stream of batches of pairs drawn by ``draw`` with a ``random.Random``
    seeded with ``seed`` (the demo task's fresh pairs, or lines of the file), teacher
    forcing with scheduled sampling (its own ``torch.Generator``), an evaluation on the test
    pairs (exact match and token accuracy; ``val_score`` = 1 − exact match picks
    best.safetensors) and a stop once the exact match reaches ``target_exact_match``. Both
    random streams are saved with every checkpoint (``state_dict``), so a resumed run draws
    the batches the uninterrupted one would have."""

    loss_scale = 1.0
    metric_keys = {"train": "train_loss", "val": "val_score", "rate": "pairs_per_sec"}

    def __init__(self, model: Seq2Seq, config: Seq2SeqTrainConfig, draw, test: list[Pair], src_vocab: Vocab,
                 tgt_vocab: Vocab):
        self.config, self.draw, self.test = config, draw, test
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.pad_id = model.config.pad_id
        env = distributed.current()
        if config.batch_size % env.world_size:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the {env.world_size} processes of "
                             f"the torchrun job; each rank draws batch_size / {env.world_size} pairs")
        self.rank, self.world = env.rank, env.world_size
        # under torchrun each rank draws from streams of its own (rank 0's are the single process's)
        self.rng = random.Random(config.seed + env.rank)
        self.sampling_gen = torch.Generator().manual_seed(config.seed + 7 + 1_000_003 * env.rank)

    def batches(self, start: int, epoch: int = 0) -> Iterator[tuple[int, object]]:
        """(step, batch) without end; ``start`` is the step of the first (the stream has one
        epoch), which sets the scheduled-sampling probability. Under torchrun rank r draws
        batch_size / N pairs of every batch from its own streams (seeded with seed + r)."""
        step = start
        while True:
            pairs = self.draw(self.config.batch_size // self.world, self.rng)
            yield step, make_batch(pairs, self.src_vocab, self.tgt_vocab)
            step += 1

    def loss(self, model: nn.Module, batch, carry):
        step, b = batch
        logits, _ = model(b.src, b.tgt_in, b.src_lengths, sampling_prob=self.config.sampling.sampling_prob(step),
                          generator=self.sampling_gen)
        return sequence_loss(logits, b.tgt_out, self.pad_id), None, b.src.shape[1]

    def evaluate(self, model: nn.Module) -> dict:
        was = model.training
        try:
            with torch.no_grad():
                m = evaluate_pairs(model, self.test, self.src_vocab, self.tgt_vocab, self.config.beam_size)
        finally:
            model.train(was)
        target = self.config.target_exact_match
        solved = target is not None and m["exact_match"] >= target
        text = f"test exact match {m['exact_match']:.3f}, token accuracy {m['token_accuracy']:.3f}"
        return {"val_score": 1.0 - m["exact_match"], **{f"test_{k}": v for k, v in m.items()},
                "test_solved": solved, "test_verdict": text}

    def solved(self, figures: dict) -> bool:
        return bool(figures.get("test_solved"))

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.config.lr)

    def state_dict(self) -> dict[str, Tensor]:
        """Both streams' positions; under torchrun every rank's (one row per rank, with the
        suffix ``s``: ``rngs``...), gathered on each rank (rank 0 writes them)."""
        version, words, gauss = self.rng.getstate()
        state = {"rng": torch.tensor([version, *words], dtype=torch.int64),
                 "rng_gauss": torch.tensor([math.nan if gauss is None else gauss], dtype=torch.float64),
                 "sampling_generator": self.sampling_gen.get_state()}
        if self.world == 1:
            return state
        return {k + "s": distributed.all_gather_batch(t.unsqueeze(0), 0) for k, t in state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        ranks = state["rngs"].shape[0] if "rngs" in state else 1
        if ranks != self.world:
            how = f"torchrun --nproc_per_node {ranks}" if ranks > 1 else "one process (no torchrun)"
            raise CheckpointError(f"cannot resume: the run's batches were drawn by {ranks} process(es), this is "
                                  f"{self.world}; resume it with {how}")
        if ranks > 1:
            state = {k[:-1]: t[self.rank].clone() for k, t in state.items()
                     if k in ("rngs", "rng_gausss", "sampling_generators")}
        try:
            rng, gauss = state["rng"].tolist(), float(state["rng_gauss"][0])
            self.rng.setstate((int(rng[0]), tuple(int(w) for w in rng[1:]), None if math.isnan(gauss) else gauss))
            self.sampling_gen.set_state(state["sampling_generator"])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"the trainer state holds no valid seq2seq data position: {e}") from None


def train_config(config: Seq2SeqTrainConfig) -> TrainConfig:
    """The trainer's configuration of a run: Adam at a constant learning rate (no warm-up,
    no decay), the run's norm clipping and budget."""
    return TrainConfig(lr=config.lr, lr_schedule="constant", min_lr_ratio=1.0, warmup_steps=0, weight_decay=0.0,
                       clip=config.clip_norm or 0.0, clip_value=0.0, batch_size=config.batch_size, seq_len=1,
                       max_steps=config.max_steps or 0, max_time=config.max_time or 0.0,
                       eval_every=config.eval_every, sample_every=0, seed=config.seed,
                       checkpoint_every=config.checkpoint_every, on_nan=config.on_nan)


def _config_from_json(obj, path: Path) -> Seq2SeqTrainConfig:
    """The Seq2SeqTrainConfig of config.json's ``seq2seq`` section (its nested model and
    sampling sections checked too)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: 'seq2seq' must be a JSON object, got {checkpoint.json_type(obj)}")
    model = checkpoint.config_from_json(Seq2SeqConfig, obj.get("model"), path, "seq2seq.model")
    sampling = checkpoint.config_from_json(SamplingSchedule, obj.get("sampling", {}), path, "seq2seq.sampling")
    return checkpoint.config_from_json(Seq2SeqTrainConfig, {**obj, "model": model, "sampling": sampling}, path,
                                       "seq2seq")


def _resumed_config(run: Path, config: Seq2SeqTrainConfig | None) -> Seq2SeqTrainConfig:
    cfg = rundir.read_config(run)
    if cfg["model_type"] != "seq2seq":
        raise CheckpointError(f"cannot resume: {run} holds a {cfg['model_type']!r} run, not a seq2seq run")
    stored = _config_from_json(cfg.get("seq2seq"), run / rundir.CONFIG)
    if config is not None:  # a config given on resume changes the budget only
        stored = replace(stored, **{k: getattr(config, k) for k in RESUMABLE})
    return stored


def train_seq2seq(config: Seq2SeqTrainConfig | None, on_eval: Callable[[EvalPoint], None] | None = None, *,
                  out: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
                  callback: Callable[[dict], None] | None = None) -> Seq2SeqRun:
    """Train a model on the one :class:`~rnnkit.train.Trainer`; the test set is fresh data
    (another random stream, or held-out lines). Returns the run with the final weights
    (best.safetensors of the run directory holds those of the best evaluation).

    ``out``: the run directory (see the module docstring); with ``resume`` the run in ``out``
    goes on exactly where its last checkpoint (or Ctrl-C) left it, with the same data;
    ``config`` may then change only the budget (max_steps, max_time, eval_every,
    checkpoint_every, on_nan, target_exact_match; None keeps the run's). Without ``out`` the
    run uses a temporary directory, removed afterwards. ``callback`` receives the trainer's
    events; after a Ctrl-C ``run.loop.interrupted`` is true.

    Under torchrun (``WORLD_SIZE`` in the environment) this joins the process group and
    trains data-parallel: rank r draws batch_size / N pairs of every batch from its own
    streams (seed + r), every rank takes rank 0's evaluation, rank 0 writes the run and calls
    ``on_eval`` and ``callback``; every rank returns rank 0's weights and result. A run
    resumes with the number of processes it was trained with."""
    if config is None and not resume:
        raise ValueError("give a Seq2SeqTrainConfig (None only with resume)")
    stored = None
    if resume:
        if out is None:
            raise ValueError("resume needs the run directory (out)")
        stored = rundir.read_config(out)
        config = _resumed_config(Path(out), config)
    # the data is read before the run directory is made: bad data leaves nothing behind
    draw, test, vocab_sample = _data(config)
    src_vocab = Vocab.build((s for s, _ in vocab_sample), config.level)
    tgt_vocab = Vocab.build((t for _, t in vocab_sample), config.level)
    with distributed.session() as (env, _), distributed.run_directory(out, resume, overwrite) as run_dir:
        if stored is not None and (stored.get("src_vocab"), stored.get("tgt_vocab")) != (
                asdict(src_vocab), asdict(tgt_vocab)):
            raise CheckpointError(f"cannot resume: the data now gives other vocabularies than the run's in {run_dir} "
                                  f"(did the data change?)")
        model_config = Seq2SeqConfig(**{**asdict(config.model), "src_vocab_size": len(src_vocab),
                                        "tgt_vocab_size": len(tgt_vocab)})
        if resume:
            rundir.check_resume(run_dir, model_config, None, "fp32", stored["model"], stored)
        torch.manual_seed(config.seed)
        model = Seq2Seq(model_config)
        stream = Seq2SeqStream(model, config, draw, test, src_vocab, tgt_vocab)
        tc = train_config(config)
        data = {"task": config.task, "train_file": config.train_file, "test_file": config.test_file,
                "test_pairs": len(test)}
        if env.is_main:  # under torchrun rank 0 writes the run
            rundir.write_json(run_dir / rundir.CONFIG, {
                "format_version": rundir.FORMAT_VERSION, "model_type": "seq2seq", "model": model_config.to_dict(),
                "train": asdict(tc), "seq2seq": asdict(config), "data": data, "src_vocab": asdict(src_vocab),
                "tgt_vocab": asdict(tgt_vocab), "rnnkit_version": __version__})
        if env.is_main and config.task is None and not (run_dir / rundir.PROBE).exists():
            # the file is not in the run directory: `rnnkit report` measures on these pairs
            rundir.write_probe(run_dir, test, lambda pairs: make_batch(pairs, src_vocab, tgt_vocab), "test")
        loop = run_trainer(model, stream, tc, run_dir, resume, on_eval if env.is_main else None,
                           callback if env.is_main else None)
        # every rank returns rank 0's weights and result (rank 0 read the run's history)
        distributed.broadcast_module(model)
        loop = distributed.broadcast_object(loop if env.is_main else None)
    model.eval()
    return Seq2SeqRun(model, src_vocab, tgt_vocab, test, loop)


# -- run directories: model.safetensors + config.json ------------------------------------------------
FORMAT = "rnnkit-seq2seq-1"


def save_run(run: Seq2SeqRun, directory: str | Path, train_config: Seq2SeqTrainConfig | None = None) -> Path:
    """Write the weights (safetensors) and the config and vocabularies (JSON), switched from
    any previous save in one atomic rename (see :func:`rnnkit.checkpoint.save_model_files`)."""
    meta = {
        "format": FORMAT,
        "model": run.model.config.to_dict(),
        "src_vocab": {"symbols": run.src_vocab.symbols, "level": run.src_vocab.level},
        "tgt_vocab": {"symbols": run.tgt_vocab.symbols, "level": run.tgt_vocab.level},
        "train": asdict(train_config) if train_config is not None else None,
        "final": run.loop.final.metrics if run.loop.history else None,
    }
    return checkpoint.save_model_files(directory, meta, run.model)


def _vocab(meta: dict, key: str, path: Path) -> Vocab:
    value = meta.get(key)
    if not (isinstance(value, dict) and set(value) == {"symbols", "level"} and isinstance(value["symbols"], list)
            and all(isinstance(s, str) for s in value["symbols"]) and isinstance(value["level"], str)):
        raise CheckpointError(f"{path}: {key} must be an object {{\"symbols\": [strings], \"level\": string}}, "
                              f"got {checkpoint.short(value)}")
    try:
        return Vocab(**value)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {key}: {e}") from None


def report_probe(model: Seq2Seq | None, run_dir: Path, cfg: dict, text: str | None, n: int = 4):
    """What ``rnnkit report`` measures a seq2seq run on (of either format; the run's own
    weights are read here, the best ones where the run has them): the teacher-forced
    sequence loss, for the gradient flow, of 8 fresh pairs of its demo task drawn with the
    run's seed + 3 000 003 (a stream neither training nor the test set used), or for a run
    on a file of the first 8 test pairs it stored (probe.safetensors; a run without it gets
    one line saying why); attention maps of ``n`` sources: the lines of ``text``, else fresh
    examples of the task, else the stored pairs' sources (none without them)."""
    from ..diagnostics.report import AttentionExample, Probe

    model, src_vocab, tgt_vocab = load_run(run_dir, "best")
    train = read_run_info(run_dir).config.get("train") or {}
    task, seed = train.get("task"), train.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):  # (an earlier format's config: unchecked there)
        seed = 0
    probe, sources = Probe(model), None
    if task is not None:
        batch = make_batch(generate(task, 8, seed + 3_000_003), src_vocab, tgt_vocab)
        what = f"8 fresh pairs of the task {task!r} (seed {seed} + 3000003)"
        sources = [src for src, _ in generate(task, n, seed=12345)]
    else:
        def stored(tensors: dict[str, Tensor], source: str):
            batch = Seq2SeqBatch(**{k: tensors[k] for k in ("src", "src_lengths", "tgt_in", "tgt_out")})
            with torch.no_grad():  # a batch of another model fails here, not in the report
                model(batch.src, batch.tgt_in, batch.src_lengths)
            return batch, f"the first {batch.src.shape[0]} {source} pairs of the run's data ({rundir.PROBE})"

        batch, what = rundir.use_probe(run_dir, stored, lambda why: (None, why))
        if batch is None:
            probe.missing = what
        else:
            sources = [src_vocab.decode(row[: int(length)].tolist())
                       for row, length in zip(batch.src[:n], batch.src_lengths[:n])]
    if batch is not None:
        probe.loss = lambda m: sequence_loss(m(batch.src, batch.tgt_in, batch.src_lengths)[0], batch.tgt_out,
                                             m.config.pad_id)
        probe.what = f"the teacher-forced cross-entropy of {what}; the encoder's steps are source positions"
    if model.config.attention == "none":
        return probe
    if text is not None:
        sources = [line for line in text.splitlines() if line.strip()][:n]
    elif sources is None:  # a run on a file without its stored pairs: the gradient flow's line says so
        probe.missing += "; attention maps: pass --text with source lines to decode"
        return probe
    for src, (_, ids, weights) in zip(sources, translate(model, sources, src_vocab, tgt_vocab)):
        src_symbols = [src_vocab.symbols[i] for i in src_vocab.encode(src)]
        out_symbols = [tgt_vocab.symbols[i] for i in ids]
        if len(out_symbols) < weights.shape[0]:  # the EOS step
            out_symbols.append("<eos>")
        probe.attention.append(AttentionExample(weights.detach(), src_symbols, out_symbols))
    return probe


rundir.register_model_type("seq2seq", Seq2Seq, Seq2SeqConfig, lambda config, cfg, run: Seq2Seq(config),
                           probe=report_probe)


def is_run_directory(directory: str | Path) -> bool:
    """Whether ``directory`` holds a seq2seq run of the one run-directory format (config.json
    with ``"model_type": "seq2seq"``; the earlier format has ``"format"`` instead)."""
    try:
        return checkpoint.read_json_object(Path(directory) / rundir.CONFIG, "").get("model_type") == "seq2seq"
    except CheckpointError:
        return False


def read_run_info(directory: str | Path, checkpoint_name: str = "latest") -> checkpoint.SavedModel:
    """The checked config object (and weight header) of a seq2seq run directory: of the one
    format (``train_seq2seq(out=...)``; its ``checkpoint_name`` weights, "latest" or "best")
    or of the earlier one written by :func:`save_run`. The object has the earlier format's
    layout (``model``, ``src_vocab``, ``tgt_vocab``, ``train``: the run's
    Seq2SeqTrainConfig as JSON, an object whose ``task`` is a string or null)."""
    if is_run_directory(directory):
        run = Path(directory)
        cfg = rundir.read_config(run)
        _config_from_json(cfg.get("seq2seq"), run / rundir.CONFIG)
        path = run / rundir.CHECKPOINTS[checkpoint_name]
        if not path.exists() and checkpoint_name == "best":
            path = run / rundir.LATEST
        header, _ = checkpoint.read_header(path, "model weights")
        return checkpoint.SavedModel({**cfg, "format": FORMAT, "train": cfg["seq2seq"]}, run / rundir.CONFIG, path,
                                     header)
    saved = checkpoint.read_saved_model(directory, lambda m: m.get("format"), FORMAT,
                                        "a seq2seq run directory (written by `rnnkit seq2seq train`)")
    train = saved.config.get("train")
    if train is not None and not (isinstance(train, dict) and isinstance(train.get("task"), (str, type(None)))):
        raise CheckpointError(f"{saved.config_path}: train must be an object whose task is a string or null, got "
                              f"{checkpoint.short(train)}")
    return saved


def load_run(directory: str | Path, checkpoint_name: str = "latest") -> tuple[Seq2Seq, Vocab, Vocab]:
    """Load a seq2seq model: (model in eval mode, source vocab, target vocab), from a run
    directory of ``train_seq2seq(out=...)`` (its ``checkpoint_name`` weights: "latest", the
    final ones, or "best", those of the best evaluation) or one written by :func:`save_run`.

    The config is checked field by field and against the weight file's header before the
    model is built (see :mod:`rnnkit.checkpoint`); anything wrong is a one-line CheckpointError."""
    if checkpoint_name not in rundir.CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {sorted(rundir.CHECKPOINTS)}, got {checkpoint_name!r}")
    saved = read_run_info(directory, checkpoint_name)
    path = saved.config_path
    config = checkpoint.config_from_json(Seq2SeqConfig, saved.config.get("model"), path, "model")
    src_vocab, tgt_vocab = _vocab(saved.config, "src_vocab", path), _vocab(saved.config, "tgt_vocab", path)
    for key, vocab, size in (("src_vocab", src_vocab, config.src_vocab_size),
                             ("tgt_vocab", tgt_vocab, config.tgt_vocab_size)):
        if len(vocab.symbols) != size:
            raise CheckpointError(f"{path}: {key} has {len(vocab.symbols)} symbols, the model's "
                                  f"{key}_size is {size}")
    model = checkpoint.build_checked(Seq2Seq, config, saved.header, path, saved.weights_path,
                                     present=saved.config.get("model"))
    tensors, _ = checkpoint.read_safetensors(saved.weights_path, "model weights")
    checkpoint.load_checked(model, tensors, saved.weights_path)
    model.eval()
    return model, src_vocab, tgt_vocab
