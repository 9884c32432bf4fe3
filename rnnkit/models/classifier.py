"""Classifier: many-to-one — one class for a whole sequence.

    inputs   x_1 → x_2 → ... → x_T        tokens (embedded) or numbers, any rnnkit cell
    states   h_1   h_2   ...   h_T
               ╲    │         ╱
                pooling                   last: the final state (both directions)
                   ↓                      mean / max over t ≤ length
                softmax(W z + b)          attention: z = Σ_t α_t h_t, α = softmax_t(vᵀ tanh(U h_t))

Attention pooling is the additive form of Bahdanau et al. (2015) with a learned query
(as in Yang et al. 2016); padded steps get α = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .._config import option
from ..data.vocabulary import Vocabulary
from ..errors import CheckpointError
from . import _common
from .metrics import ClassScores, classification_scores

POOLINGS = ("last", "mean", "max", "attention")
TOKENIZATIONS = ("char", "word")


@dataclass
class ClassifierConfig:
    """Settings of a :class:`Classifier` (vocabulary and labels come from the data)."""

    cell: str = option("lstm", "recurrent cell: any registered name (e.g. lstm, gru, irnn, mlstm, lru, s6)")
    hidden_size: int = option(128, "hidden units per layer")
    num_layers: int = option(1, "stacked recurrent layers")
    bidirectional: bool = option(True, "a backward layer too (outputs of both directions concatenated)")
    pooling: str = option("last", "pooling over time: last, mean, max or attention")
    tokens: str = option("char", "text units: char (every character a token) or word (whitespace-separated)")
    embedding_dim: int = option(64, "token embedding size")
    dropout: float = option(0.1, "dropout on the recurrent output and between layers")
    lowercase: bool = option(False, "lowercase the tokens")
    min_count: int = option(1, "tokens seen fewer times in the training data become <unk>")

    def __post_init__(self) -> None:
        _common.check_config(self, positive=("hidden_size", "num_layers", "embedding_dim", "min_count"))
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.tokens not in TOKENIZATIONS:
            raise ValueError(f"tokens must be one of {TOKENIZATIONS}, got {self.tokens!r}")


@dataclass
class ClassifierBatch:
    inputs: Tensor  # (T, B) int64 tokens, or (T, B, 1) float values
    lengths: Tensor  # (B,)
    labels: Tensor | None  # (B,)


class Classifier(nn.Module):
    """A sequence classifier over text (``vocab`` given) or numeric sequences
    (``vocab=None``; values are standardised by the training mean and deviation)."""

    def __init__(self, config: ClassifierConfig, labels: Vocabulary, vocab: Vocabulary | None = None,
                 scale: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        c = config
        self.config, self.labels, self.vocab, self.scale = c, labels, vocab, scale
        if vocab is not None:
            self.embedding = nn.Embedding(len(vocab), c.embedding_dim, padding_idx=0)
            features = c.embedding_dim
        else:
            features = 1
        self.dropout = nn.Dropout(c.dropout)
        self.rnn = _common.recurrent_layer(c.cell, features, c.hidden_size, c.num_layers, c.bidirectional, c.dropout)
        width = _common.output_size(self.rnn)
        if c.pooling == "attention":
            self.attention = nn.Linear(width, width)  # U
            self.query = nn.Linear(width, 1, bias=False)  # v
        self.output = nn.Linear(width, len(labels))

    # -- data -------------------------------------------------------------------------------
    @property
    def is_text(self) -> bool:
        return self.vocab is not None

    def tokenize(self, text: str) -> list[str]:
        text = text.lower() if self.config.lowercase else text
        return list(text) if self.config.tokens == "char" else text.split()

    @classmethod
    def from_data(cls, examples: Sequence[str] | Sequence[Sequence[float]], labels: Sequence[str],
                  config: ClassifierConfig | None = None) -> Classifier:
        """A new classifier for texts (a list of str) or numeric sequences (lists of numbers)."""
        config = config or ClassifierConfig()
        if not examples:
            raise ValueError("no training examples")
        label_vocab = Vocabulary(sorted(set(labels)), specials=False)
        if isinstance(examples[0], str):
            probe = cls(config, label_vocab, Vocabulary([]))
            vocab = Vocabulary.build((t for e in examples for t in probe.tokenize(e)), config.min_count)
            return cls(config, label_vocab, vocab)
        values = torch.tensor([v for e in examples for v in e], dtype=torch.float64)
        std = float(values.std()) if values.numel() > 1 else 1.0
        return cls(config, label_vocab, None, (float(values.mean()), std if std > 0 else 1.0))

    def batch(self, examples: Sequence, labels: Sequence[str] | None = None) -> ClassifierBatch:
        if not examples:
            raise ValueError("batch needs at least one example")
        if self.is_text:
            ids = [self.vocab.encode(self.tokenize(e)) or [1] for e in examples]  # empty after split → <unk>
            inputs, lengths = _common.pad(ids)
        else:
            if any(len(e) == 0 for e in examples):
                raise ValueError("numeric sequences must have at least one value")
            lengths = torch.tensor([len(e) for e in examples])
            mean, std = self.scale
            inputs = torch.zeros(int(lengths.max()), len(examples), 1)  # (T, B, 1)
            for b, e in enumerate(examples):
                inputs[: len(e), b, 0] = (torch.tensor(e, dtype=torch.float64) - mean).float() / std
        y = torch.tensor(self.labels.encode(labels)) if labels is not None else None
        return ClassifierBatch(inputs, lengths, y)

    # -- model --------------------------------------------------------------------------------
    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """inputs (T, B) token ids or (T, B, 1) values, lengths (B,) → logits (B, C)."""
        x = self.embedding(inputs) if self.is_text else inputs  # (T, B, E)
        out, h_n = self.rnn(self.dropout(x), lengths=lengths)  # (T, B, W)
        pooling = self.config.pooling
        if pooling == "last":
            z = _common.final_hidden(h_n, self.rnn)  # (B, W)
        else:
            valid = _common.valid_mask(lengths.to(out.device), out.shape[0]).unsqueeze(2)  # (T, B, 1)
            if pooling == "mean":
                z = (out * valid).sum(0) / lengths.to(out).unsqueeze(1)
            elif pooling == "max":
                z = out.masked_fill(~valid, float("-inf")).max(0).values
            else:
                scores = self.query(torch.tanh(self.attention(out)))  # (T, B, 1)
                alpha = scores.masked_fill(~valid, float("-inf")).softmax(0)  # (T, B, 1)
                z = (alpha * out).sum(0)  # (B, W)
        return self.output(self.dropout(z))  # (B, C)

    def loss(self, batch: ClassifierBatch) -> Tensor:
        return nn.functional.cross_entropy(self(batch.inputs, batch.lengths), batch.labels)

    @torch.no_grad()
    def predict(self, examples: Sequence, batch_size: int = 256) -> list[str]:
        was = self.training
        self.eval()
        out: list[str] = []
        for i in range(0, len(examples), batch_size):
            b = self.batch(examples[i : i + batch_size])
            out += self.labels.decode(self(b.inputs, b.lengths).argmax(1).tolist())
        self.train(was)
        return out

    def evaluate(self, examples: Sequence, labels: Sequence[str]) -> ClassScores:
        return classification_scores(list(labels), self.predict(examples))

    # -- files --------------------------------------------------------------------------------
    def saved_fields(self) -> dict:
        """What config.json holds beside the config: labels, vocabulary, input scaling."""
        return {"labels": self.labels.to_json(), "vocab": self.vocab.to_json() if self.vocab else None,
                "scale": list(self.scale)}

    @classmethod
    def from_saved(cls, config: ClassifierConfig, saved: _common.SavedFields) -> Classifier:
        """An untrained classifier with the config, labels, vocabulary and scaling of a saved one."""
        scale = saved.numbers("scale")
        if len(scale) != 2 or not scale[1] > 0:
            raise CheckpointError(f"{saved.path}: scale must be [mean, standard deviation > 0], got {scale}")
        return cls(config, saved.vocabulary("labels"), saved.vocabulary("vocab", optional=True), tuple(scale))

    def save(self, directory: str | Path) -> Path:
        return _common.save_model(directory, "classifier", self.config, self, self.saved_fields())

    @classmethod
    def load(cls, directory: str | Path) -> Classifier:
        """A classifier saved by :meth:`save` or trained into a run directory (its best
        weights); CheckpointError (one line) for anything wrong."""
        return _common.load_model(directory, "classifier", ClassifierConfig, cls.from_saved)


def majority_baseline(train_labels: Sequence[str], test_labels: Sequence[str]) -> ClassScores:
    """The trivial classifier: always the most frequent training label."""
    counts: dict[str, int] = {}
    for y in train_labels:
        counts[y] = counts.get(y, 0) + 1
    top = max(counts, key=counts.get)
    return classification_scores(list(test_labels), [top] * len(test_labels))
