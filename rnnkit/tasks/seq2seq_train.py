"""Training, evaluating, saving and loading :class:`~rnnkit.models.Seq2Seq` models on the
demo tasks or on a user's TSV files (the engine of ``rnnkit seq2seq``)."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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
    level: str = "char"
    test_size: int = 500
    batch_size: int = 64
    model: Seq2SeqConfig = field(default_factory=lambda: Seq2SeqConfig(src_vocab_size=4, tgt_vocab_size=4))
    sampling: SamplingSchedule = field(default_factory=SamplingSchedule)
    lr: float = 3e-3
    clip_norm: float | None = 1.0
    max_steps: int | None = None
    max_time: float | None = 120.0
    eval_every: int = 100
    #: stop when exact-match accuracy on the test set reaches this (None: use the whole budget)
    target_exact_match: float | None = None
    beam_size: int = 1
    seed: int = 0


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
def save_run(run: Seq2SeqRun, directory: str | Path, train_config: Seq2SeqTrainConfig | None = None) -> Path:
    """Write the weights (safetensors) and the config and vocabularies (JSON), each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "rnnkit-seq2seq-1",
        "model": run.model.config.to_dict(),
        "src_vocab": {"symbols": run.src_vocab.symbols, "level": run.src_vocab.level},
        "tgt_vocab": {"symbols": run.tgt_vocab.symbols, "level": run.tgt_vocab.level},
        "train": asdict(train_config) if train_config is not None else None,
        "final": run.loop.final.metrics if run.loop.history else None,
    }
    tensors = {k: v.detach().contiguous() for k, v in run.model.state_dict().items()}
    for name, write in (("model.safetensors", lambda p: save_file(tensors, p)),
                        ("config.json", lambda p: Path(p).write_text(json.dumps(meta, indent=2)))):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, directory / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return directory


def load_run(directory: str | Path) -> tuple[Seq2Seq, Vocab, Vocab]:
    """Load a model saved by :func:`save_run`: (model in eval mode, source vocab, target vocab)."""
    directory = Path(directory)
    cfg_path, weights = directory / "config.json", directory / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{directory}: not a seq2seq run directory (needs config.json and model.safetensors)")
    try:
        meta = json.loads(cfg_path.read_text())
        if meta.get("format") != "rnnkit-seq2seq-1":
            raise CheckpointError(f"{cfg_path}: not an rnnkit seq2seq config (format {meta.get('format')!r})")
        model = Seq2Seq(Seq2SeqConfig(**meta["model"]))
        src_vocab = Vocab(**meta["src_vocab"])
        tgt_vocab = Vocab(**meta["tgt_vocab"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{cfg_path}: corrupt config ({e})") from None
    try:
        state = load_file(str(weights))
        model.load_state_dict(state)
    except Exception as e:  # safetensors raises its own types for corrupt files
        raise CheckpointError(f"{weights}: cannot load weights ({e})") from None
    model.eval()
    return model, src_vocab, tgt_vocab
