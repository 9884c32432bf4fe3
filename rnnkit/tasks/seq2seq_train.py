"""Training, evaluating, saving and loading :class:`~rnnkit.models.Seq2Seq` models on the
demo tasks or on a user's TSV files (the engine of ``rnnkit seq2seq``)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import checkpoint
from .._config import option
from ..data.seq2seq_tasks import Pair, Vocab, generate, make_batch, read_tsv, sequence_metrics
from ..errors import CheckpointError, DataError
from ..models.seq2seq import SamplingSchedule, Seq2Seq, Seq2SeqConfig, sequence_loss
from .loop import EvalPoint, LoopConfig, LoopResult, train_loop


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
    """(draw a training batch of pairs, test pairs, vocabulary sample)."""
    if (config.task is None) == (config.train_file is None):
        raise ValueError("give exactly one of a demo task (--task) and a training file (--data)")
    rng = random.Random(config.seed)
    if config.task is not None:
        test = generate(config.task, config.test_size, config.seed + 1_000_003)
        sample = generate(config.task, 5000, config.seed + 2_000_003)

        def draw(n: int) -> list[Pair]:
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

    def draw_file(n: int) -> list[Pair]:
        return [train[rng.randrange(len(train))] for _ in range(n)]

    return draw_file, test, train + test


def train_seq2seq(config: Seq2SeqTrainConfig, on_eval: Callable[[EvalPoint], None] | None = None) -> Seq2SeqRun:
    """Train a model; the test set is fresh data (another random stream, or held-out lines)."""
    draw, test, vocab_sample = _data(config)
    src_vocab = Vocab.build((s for s, _ in vocab_sample), config.level)
    tgt_vocab = Vocab.build((t for _, t in vocab_sample), config.level)
    model_config = Seq2SeqConfig(**{**asdict(config.model), "src_vocab_size": len(src_vocab),
                                    "tgt_vocab_size": len(tgt_vocab)})
    torch.manual_seed(config.seed)
    model = Seq2Seq(model_config)
    sampling_gen = torch.Generator().manual_seed(config.seed + 7)

    def train_step_loss(step: int):
        batch = make_batch(draw(config.batch_size), src_vocab, tgt_vocab)
        logits, _ = model(batch.src, batch.tgt_in, batch.src_lengths,
                          sampling_prob=config.sampling.sampling_prob(step), generator=sampling_gen)
        return sequence_loss(logits, batch.tgt_out, model_config.pad_id)

    def evaluate():
        m = evaluate_pairs(model, test, src_vocab, tgt_vocab, config.beam_size)
        solved = config.target_exact_match is not None and m["exact_match"] >= config.target_exact_match
        text = f"test exact match {m['exact_match']:.3f}, token accuracy {m['token_accuracy']:.3f}"
        return m, solved, text

    loop_config = LoopConfig(lr=config.lr, clip_norm=config.clip_norm, max_steps=config.max_steps,
                             max_time=config.max_time, eval_every=config.eval_every,
                             stop_when_solved=config.target_exact_match is not None)
    loop = train_loop(model, train_step_loss, evaluate, loop_config, on_eval)
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


def read_run_info(directory: str | Path) -> checkpoint.SavedModel:
    """The checked config object (and weight header) of a run directory written by
    :func:`save_run`; its ``train`` entry, when present, is an object whose ``task`` is a
    string or null."""
    saved = checkpoint.read_saved_model(directory, lambda m: m.get("format"), FORMAT,
                                        "a seq2seq run directory (written by `rnnkit seq2seq train`)")
    train = saved.config.get("train")
    if train is not None and not (isinstance(train, dict) and isinstance(train.get("task"), (str, type(None)))):
        raise CheckpointError(f"{saved.config_path}: train must be an object whose task is a string or null, got "
                              f"{checkpoint.short(train)}")
    return saved


def load_run(directory: str | Path) -> tuple[Seq2Seq, Vocab, Vocab]:
    """Load a model saved by :func:`save_run`: (model in eval mode, source vocab, target vocab).

    The config is checked field by field and against the weight file's header before the
    model is built (see :mod:`rnnkit.checkpoint`); anything wrong is a one-line CheckpointError."""
    saved = read_run_info(directory)
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
