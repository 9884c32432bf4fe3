"""Tagger: many-to-many, synchronous — one tag per input token.

    tokens   w_1      w_2      ...  w_T
               ↓        ↓             ↓        word embedding ⊕ char-CNN features
    forward  →h_1  →  →h_2  →  ... →h_T
    backward ←h_1  ←  ←h_2  ←  ... ←h_T       any rnnkit cell, bidirectional by default
               ↓        ↓             ↓
    tags     y_1      y_2      ...  y_T       softmax(W [→h_t; ←h_t] + b)

Character features (Ma & Hovy 2016 style): each token's characters are embedded, a
width-3 convolution runs over them and the max over positions is the token's
character vector, so unseen words still get informative features (capitals, digits,
suffixes like "2nd").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .._config import option
from ..data.conll import TaggedSentence
from ..data.vocabulary import Vocabulary
from . import _common
from .metrics import SpanScores, span_f1

MAX_WORD_CHARS = 20


@dataclass
class TaggerConfig:
    """Settings of a :class:`Tagger` (the vocabularies come from the data)."""

    cell: str = option("lstm", "recurrent cell: any registered name (e.g. lstm, gru, irnn, mlstm, lru, s6)")
    hidden_size: int = option(128, "hidden units per layer")
    num_layers: int = option(1, "stacked recurrent layers")
    bidirectional: bool = option(True, "a backward layer too (outputs of both directions concatenated)")
    embedding_dim: int = option(64, "token embedding size")
    char_channels: int = option(32, "channels of the character CNN (0 = no character features)")
    char_embedding_dim: int = option(16, "character embedding size of the character CNN")
    dropout: float = option(0.2, "dropout on the token features and between layers")
    word_dropout: float = option(
        0.05, "probability of replacing a training word by <unk>, so the <unk> vector is learnt")
    lowercase: bool = option(True, "lowercase the tokens")
    min_count: int = option(1, "words seen fewer times in the training data become <unk>")

    def __post_init__(self) -> None:
        _common.check_config(self, positive=("hidden_size", "num_layers", "embedding_dim", "char_embedding_dim",
                                             "min_count"),
                             non_negative=("char_channels",), rates=("dropout", "word_dropout"))


@dataclass
class TaggerBatch:
    words: Tensor  # (T, B) int64
    chars: Tensor | None  # (T, B, C) int64
    lengths: Tensor  # (B,)
    tags: Tensor | None  # (T, B) int64, -100 on padding


class Tagger(nn.Module):
    """A sequence tagger; build with :meth:`from_data`, use :meth:`predict`,
    :meth:`evaluate`, :meth:`save` / :meth:`load`."""

    def __init__(self, config: TaggerConfig, words: Vocabulary, tags: Vocabulary, chars: Vocabulary | None):
        super().__init__()
        if config.char_channels and chars is None:
            raise ValueError("char_channels > 0 needs a character vocabulary")
        self.config, self.words, self.tags, self.chars = config, words, tags, chars
        c = config
        self.embedding = nn.Embedding(len(words), c.embedding_dim, padding_idx=0)
        features = c.embedding_dim
        if c.char_channels:
            self.char_embedding = nn.Embedding(len(chars), c.char_embedding_dim, padding_idx=0)
            self.char_conv = nn.Conv1d(c.char_embedding_dim, c.char_channels, kernel_size=3, padding=1)
            features += c.char_channels
        self.dropout = nn.Dropout(c.dropout)
        self.rnn = _common.recurrent_layer(c.cell, features, c.hidden_size, c.num_layers, c.bidirectional, c.dropout)
        self.output = nn.Linear(_common.output_size(self.rnn), len(tags))

    @classmethod
    def from_data(cls, sentences: Sequence[TaggedSentence], config: TaggerConfig | None = None) -> Tagger:
        """A new (untrained) tagger with vocabularies built from training sentences."""
        config = config or TaggerConfig()
        if not sentences:
            raise ValueError("no training sentences")
        words = Vocabulary.build((cls._norm(config, t) for s in sentences for t in s.tokens), config.min_count)
        tags = Vocabulary.build((t for s in sentences for t in s.tags), specials=False)
        chars = Vocabulary.build(ch for s in sentences for t in s.tokens for ch in t) if config.char_channels else None
        return cls(config, words, tags, chars)

    @staticmethod
    def _norm(config: TaggerConfig, token: str) -> str:
        return token.lower() if config.lowercase else token

    # -- batches ----------------------------------------------------------------------------
    def batch(self, tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None = None) -> TaggerBatch:
        """Encode token lists (and their tags) into padded time-major tensors."""
        if not tokens or any(len(t) == 0 for t in tokens):
            raise ValueError("batch needs at least one sentence, each with at least one token")
        words, lengths = _common.pad([self.words.encode(self._norm(self.config, w) for w in s) for s in tokens])
        chars = None
        if self.config.char_channels:
            T, B = words.shape
            C = min(MAX_WORD_CHARS, max(len(w) for s in tokens for w in s))
            chars = torch.zeros(T, B, C, dtype=torch.int64)  # (T, B, C)
            for b, s in enumerate(tokens):
                for t, w in enumerate(s):
                    ids = self.chars.encode(w[:C])
                    chars[t, b, : len(ids)] = torch.tensor(ids)
        tag_ids = None
        if tags is not None:
            tag_ids, _ = _common.pad([self.tags.encode(s) for s in tags], value=-100)
        return TaggerBatch(words, chars, lengths, tag_ids)

    # -- model --------------------------------------------------------------------------------
    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor | None = None) -> Tensor:
        """words (T, B), lengths (B,), chars (T, B, C) → tag logits (T, B, K)."""
        if self.training and self.config.word_dropout:
            drop = torch.rand(words.shape, device=words.device) < self.config.word_dropout
            words = words.masked_fill(drop & (words > 0), 1)
        x = self.embedding(words)  # (T, B, E)
        if self.config.char_channels:
            if chars is None:
                raise ValueError("this tagger uses character features: pass chars (T, B, C)")
            T, B, C = chars.shape
            ce = self.char_embedding(chars.reshape(T * B, C)).transpose(1, 2)  # (T·B, Ec, C)
            conv = self.char_conv(ce).masked_fill((chars.reshape(T * B, 1, C) == 0), -1e4)  # (T·B, F, C)
            feats = conv.max(dim=2).values.clamp_min(-1.0).reshape(T, B, -1)  # (T, B, F); empty → -1
            x = torch.cat([x, feats], dim=2)
        out, _ = self.rnn(self.dropout(x), lengths=lengths)  # (T, B, D·R)
        return self.output(self.dropout(out))  # (T, B, K)

    def loss(self, batch: TaggerBatch) -> Tensor:
        """Mean cross-entropy over the real (unpadded) tokens."""
        logits = self(batch.words, batch.lengths, batch.chars)  # (T, B, K)
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch.tags.flatten(), ignore_index=-100)

    @torch.no_grad()
    def predict(self, tokens: Sequence[Sequence[str]], batch_size: int = 256) -> list[list[str]]:
        """The most likely tag of every token (per-token argmax)."""
        was = self.training
        self.eval()
        out: list[list[str]] = []
        for i in range(0, len(tokens), batch_size):
            chunk = tokens[i : i + batch_size]
            b = self.batch(chunk)
            best = self(b.words, b.lengths, b.chars).argmax(2)  # (T, B)
            out += [self.tags.decode(best[: len(s), j].tolist()) for j, s in enumerate(chunk)]
        self.train(was)
        return out

    def evaluate(self, sentences: Sequence[TaggedSentence]) -> SpanScores:
        """Span-level precision/recall/F1 on tagged sentences."""
        return span_f1([s.tags for s in sentences], self.predict([s.tokens for s in sentences]))

    # -- files --------------------------------------------------------------------------------
    def saved_fields(self) -> dict:
        """What config.json holds beside the config: the vocabularies."""
        return {"words": self.words.to_json(), "tags": self.tags.to_json(),
                "chars": self.chars.to_json() if self.chars is not None else None}

    @classmethod
    def from_saved(cls, config: TaggerConfig, saved: _common.SavedFields) -> Tagger:
        """An untrained tagger with the config and the vocabularies of a saved one."""
        return cls(config, saved.vocabulary("words"), saved.vocabulary("tags"),
                   saved.vocabulary("chars", optional=True))

    def save(self, directory: str | Path) -> Path:
        return _common.save_model(directory, "tagger", self.config, self, self.saved_fields())

    @classmethod
    def load(cls, directory: str | Path) -> Tagger:
        """A tagger saved by :meth:`save` or trained into a run directory (its best weights);
        CheckpointError (one line) for anything wrong."""
        return _common.load_model(directory, "tagger", TaggerConfig, cls.from_saved)


def majority_baseline(train: Sequence[TaggedSentence], test: Sequence[TaggedSentence]) -> SpanScores:
    """The trivial tagger: every token gets the tag it had most often in training
    (unseen tokens get ``O``, or the most frequent tag)."""
    counts: dict[str, dict[str, int]] = {}
    overall: dict[str, int] = {}
    for s in train:
        for w, t in zip(s.tokens, s.tags):
            counts.setdefault(w.lower(), {}).setdefault(t, 0)
            counts[w.lower()][t] += 1
            overall[t] = overall.get(t, 0) + 1
    default = "O" if "O" in overall else max(overall, key=overall.get)
    pred = [[max(counts[w.lower()], key=counts[w.lower()].get) if w.lower() in counts else default for w in s.tokens]
            for s in test]
    return span_f1([s.tags for s in test], pred)
