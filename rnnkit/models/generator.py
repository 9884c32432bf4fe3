"""Generator: one-to-many — a condition (e.g. a class) → a sequence, one symbol at a time.

    condition c ──► e = E_c[c] ──► s_0 = tanh(W_s e + b_s)        ("init": sets the state)
                         │
    input     <bos>      x_1        x_2     ...                 ("concat": [E_x[x_t]; e]
    state     s_0 ──► s_1 ──► s_2 ──► ...                          fed at every step)
    output    p(x_1)     p(x_2)     p(x_3)  ... p(<eos>)        softmax(W_o s_t + b_o)

Training is teacher-forced next-symbol prediction; :meth:`Generator.sample` draws
x_t ~ softmax(logits / temperature) and feeds it back until ``<eos>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .._config import option
from ..data.vocabulary import Vocabulary
from . import _common

BOS, EOS = "<bos>", "<eos>"
CONDITION_MODES = ("init", "concat", "both")


@dataclass
class GeneratorConfig:
    """Settings of a :class:`Generator` (symbols and conditions come from the data)."""

    cell: str = option("lstm", "recurrent cell: any registered name (e.g. lstm, gru, irnn, mlstm, lru, s6)")
    hidden_size: int = option(128, "hidden units per layer")
    num_layers: int = option(1, "stacked recurrent layers")
    embedding_dim: int = option(32, "token embedding size")
    condition_dim: int = option(16, "condition embedding size")
    condition_mode: str = option(
        "both", "init (the condition sets the initial state), concat (fed with every input) or both")
    dropout: float = option(0.1, "dropout on the recurrent output and between layers")

    def __post_init__(self) -> None:
        _common.check_config(self, positive=("hidden_size", "num_layers", "embedding_dim", "condition_dim"))
        if self.condition_mode not in CONDITION_MODES:
            raise ValueError(f"condition_mode must be one of {CONDITION_MODES}, got {self.condition_mode!r}")


@dataclass
class GeneratorBatch:
    inputs: Tensor  # (T, B) <bos> x_1 ... x_n
    targets: Tensor  # (T, B) x_1 ... x_n <eos>, -100 on padding
    lengths: Tensor  # (B,)
    conditions: Tensor  # (B,)


class Generator(nn.Module):
    """A condition-to-character-sequence model."""

    def __init__(self, config: GeneratorConfig, symbols: Vocabulary, conditions: Vocabulary):
        super().__init__()
        for special in (BOS, EOS):
            if special not in symbols:
                raise ValueError(f"the symbol vocabulary must contain {special!r}")
        c = config
        self.config, self.symbols, self.conditions = c, symbols, conditions
        self.bos, self.eos = symbols.index[BOS], symbols.index[EOS]
        self.embedding = nn.Embedding(len(symbols), c.embedding_dim, padding_idx=0)
        self.condition_embedding = nn.Embedding(len(conditions), c.condition_dim)
        concat = c.condition_mode in ("concat", "both")
        self.rnn = _common.recurrent_layer(c.cell, c.embedding_dim + (c.condition_dim if concat else 0),
                                           c.hidden_size, c.num_layers, False, c.dropout)
        if c.condition_mode in ("init", "both"):
            self.initial = nn.ModuleList(nn.Linear(c.condition_dim, c.num_layers * s)
                                         for s in self.rnn.cell.state_sizes())
        self.dropout = nn.Dropout(c.dropout)
        self.output = nn.Linear(_common.output_size(self.rnn), len(symbols))

    @classmethod
    def from_data(cls, texts: Sequence[str], conditions: Sequence[str], config: GeneratorConfig | None = None):
        if not texts:
            raise ValueError("no training texts")
        chars = sorted({ch for t in texts for ch in t})
        return cls(config or GeneratorConfig(), Vocabulary([BOS, EOS, *chars]),
                   Vocabulary(sorted(set(conditions)), specials=False))

    def batch(self, texts: Sequence[str], conditions: Sequence[str]) -> GeneratorBatch:
        if not texts or len(texts) != len(conditions):
            raise ValueError(f"need one condition per text, got {len(texts)} texts and {len(conditions)} conditions")
        ids = [self.symbols.encode(t) for t in texts]
        inputs, lengths = _common.pad([[self.bos, *s] for s in ids])
        targets, _ = _common.pad([[*s, self.eos] for s in ids], value=-100)
        return GeneratorBatch(inputs, targets, lengths, torch.tensor(self.conditions.encode(conditions)))

    # -- model --------------------------------------------------------------------------------
    def initial_state(self, conditions: Tensor):
        """The state s_0 for condition ids (B,): learned from the condition, or zeros."""
        if self.config.condition_mode == "concat":
            return None
        e = self.condition_embedding(conditions)  # (B, C)
        L, B = self.config.num_layers, conditions.shape[0]
        states = [torch.tanh(lin(e)).view(B, L, -1).transpose(0, 1).contiguous() for lin in self.initial]  # (L, B, S)
        return states[0] if len(states) == 1 else tuple(states)

    def _inputs(self, tokens: Tensor, conditions: Tensor) -> Tensor:
        x = self.embedding(tokens)  # (T, B, E)
        if self.config.condition_mode in ("concat", "both"):
            e = self.condition_embedding(conditions)  # (B, C)
            x = torch.cat([x, e.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=2)  # (T, B, E + C)
        return self.dropout(x)

    def forward(self, tokens: Tensor, conditions: Tensor, lengths: Tensor | None = None, state=None):
        """tokens (T, B), conditions (B,) → (logits (T, B, V), final state). ``state``
        continues from an earlier call (default: the condition's initial state)."""
        if state is None:
            state = self.initial_state(conditions)
        out, state = self.rnn(self._inputs(tokens, conditions), state, lengths=lengths)  # (T, B, R)
        return self.output(self.dropout(out)), state

    def loss(self, batch: GeneratorBatch) -> Tensor:
        """Mean next-symbol cross-entropy (nats) over real positions, <eos> included."""
        logits, _ = self(batch.inputs, batch.conditions, batch.lengths)
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)

    @torch.no_grad()
    def bits_per_symbol(self, texts: Sequence[str], conditions: Sequence[str], batch_size: int = 256) -> float:
        """Held-out cross-entropy in bits per symbol (<eos> counted as a symbol)."""
        was = self.training
        self.eval()
        total, count = 0.0, 0
        for i in range(0, len(texts), batch_size):
            b = self.batch(texts[i : i + batch_size], conditions[i : i + batch_size])
            logits, _ = self(b.inputs, b.conditions, b.lengths)
            total += nn.functional.cross_entropy(logits.flatten(0, 1), b.targets.flatten(), ignore_index=-100,
                                                 reduction="sum").item()
            count += int((b.targets != -100).sum())
        self.train(was)
        return total / count / math.log(2)

    @torch.no_grad()
    def sample(self, condition: str, n: int = 1, max_length: int = 40, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> list[str]:
        """Draw ``n`` sequences for ``condition``, one symbol per step, each ending at
        <eos> or after ``max_length`` symbols."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if condition not in self.conditions:
            raise ValueError(f"unknown condition {condition!r}; the model knows {self.conditions.symbols}")
        was = self.training
        self.eval()
        cond = torch.full((n,), self.conditions.index[condition], dtype=torch.int64)
        token = torch.full((1, n), self.bos, dtype=torch.int64)  # (1, B)
        never = torch.tensor([s in ("<pad>", "<unk>", BOS) for s in self.symbols.symbols])  # (V,)
        state, out, done = None, [[] for _ in range(n)], torch.zeros(n, dtype=torch.bool)
        for _ in range(max_length + 1):
            logits, state = self(token, cond, state=state)  # (1, B, V)
            logits = (logits[0] / temperature).masked_fill(never, float("-inf"))  # (B, V)
            nxt = torch.multinomial(logits.softmax(1), 1, generator=generator).squeeze(1)  # (B,)
            for b in range(n):
                if not done[b]:
                    if int(nxt[b]) == self.eos or len(out[b]) == max_length:
                        done[b] = True
                    else:
                        out[b].append(self.symbols.symbols[int(nxt[b])])
            if bool(done.all()):
                break
            token = nxt.unsqueeze(0)
        self.train(was)
        return ["".join(s) for s in out]

    # -- files --------------------------------------------------------------------------------
    def saved_fields(self) -> dict:
        """What config.json holds beside the config: the vocabularies."""
        return {"symbols": self.symbols.to_json(), "conditions": self.conditions.to_json()}

    @classmethod
    def from_saved(cls, config: GeneratorConfig, saved: _common.SavedFields) -> Generator:
        """An untrained generator with the config and the vocabularies of a saved one."""
        return cls(config, saved.vocabulary("symbols"), saved.vocabulary("conditions"))

    def save(self, directory: str | Path) -> Path:
        return _common.save_model(directory, "generator", self.config, self, self.saved_fields())

    @classmethod
    def load(cls, directory: str | Path) -> Generator:
        """A generator saved by :meth:`save` or trained into a run directory (its best
        weights); CheckpointError (one line) for anything wrong."""
        return _common.load_model(directory, "generator", GeneratorConfig, cls.from_saved)


def unigram_bits(train: Sequence[str], test: Sequence[str]) -> float:
    """The trivial baseline: bits per symbol of ``test`` under the training symbol
    frequencies (<eos> included, add-one smoothing), ignoring the condition."""
    counts: dict[str, int] = {EOS: len(train)}
    for t in train:
        for ch in t:
            counts[ch] = counts.get(ch, 0) + 1
    alphabet = set(counts) | {ch for t in test for ch in t}
    total = sum(counts.values()) + len(alphabet)
    bits, n = 0.0, 0
    for t in test:
        for ch in [*t, EOS]:
            bits -= math.log2((counts.get(ch, 0) + 1) / total)
            n += 1
    return bits / n
