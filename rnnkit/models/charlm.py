"""Character-level language model: embedding → recurrent stack → dropout → linear head.

    e_t = E[x_t]                       (embedding, (T, B, E))
    h_t = RNN(e_t, h_{t-1})            (any registered rnnkit layer, (T, B, H))
    p(x_{t+1} | x_≤t) = softmax(W h_t + b)

Trained with truncated BPTT by :mod:`rnnkit.train`; :meth:`CharLM.sample` generates text
one character at a time, carrying the recurrent state.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor, nn

from .._config import option
from ..data.text import Vocabulary
from ..layers import make_layer, registry

log = logging.getLogger(__name__)


@dataclass
class CharLMConfig:
    """Architecture of a :class:`CharLM` (the vocabulary size comes from its vocabulary).

    ``cell`` is any registered name (:func:`rnnkit.layers.registry.names`). The layer options
    (``layer_norm``, ``batch_norm``, ``peephole``, ``recurrent_dropout``, ``zoneout``, ``init``,
    ``forget_bias``, ``reset_after``) are passed to the layer only when they differ from
    the default, so a cell that lacks an option rejects it by name.
    """

    cell: str = option("lstm", "recurrent layer type (any registered name, e.g. lstm, gru, irnn, mlstm, lru, s6)")
    hidden_size: int = option(384, "hidden units per layer")
    num_layers: int = option(1, "stacked recurrent layers")
    embed_size: int = option(64, "character embedding size")
    dropout: float = option(0.0, "dropout on the recurrent output and between layers")
    layer_norm: bool = option(False, "layer-normalised cell (LSTM, GRU)")
    batch_norm: bool = option(False, "recurrent batch normalization (LSTM; Cooijmans et al. 2017)")
    peephole: bool = option(False, "LSTM peephole connections")
    reset_after: bool = option(True, "GRU: the reset gate after the recurrent product (the cuDNN form)")
    recurrent_dropout: float = option(0.0, "variational dropout on the recurrent input")
    zoneout: float = option(0.0, "zoneout rate")
    init: str = option("pytorch", "weight initialisation: pytorch, orthogonal, identity, xavier")
    forget_bias: float | None = option(None, "LSTM forget-gate bias")

    def __post_init__(self) -> None:
        known = registry.names()
        if self.cell not in known:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {known}")
        for name in ("hidden_size", "num_layers", "embed_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def layer_options(self) -> dict:
        """The keyword arguments for :func:`rnnkit.make_layer` that differ from the defaults."""
        options = {}
        for f in fields(self):
            if f.name in ("cell", "hidden_size", "num_layers", "embed_size", "dropout"):
                continue
            value = getattr(self, f.name)
            if value != f.default:
                options[f.name] = value
        return options

    @classmethod
    def from_dict(cls, d: dict) -> CharLMConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown CharLMConfig field(s) {unknown}")
        return cls(**d)


class CharLM(nn.Module):
    """A character language model over a :class:`~rnnkit.data.Vocabulary`.

    Attributes: ``embed`` (V → E), ``rnn`` (the rnnkit recurrent stack), ``head`` (H → V),
    ``vocab``, ``config``.
    """

    def __init__(self, config: CharLMConfig, vocab: Vocabulary):
        super().__init__()
        self.config = config
        self.vocab = vocab
        V, E, H = len(vocab), config.embed_size, config.hidden_size
        options = config.layer_options()
        if config.cell == "jordan":
            options["output_size"] = H  # the Jordan output (and recurrent state) is H wide
        try:
            self.rnn = make_layer(config.cell, E, H, num_layers=config.num_layers,
                                  dropout=config.dropout if config.num_layers > 1 else 0.0, **options)
        except TypeError as e:
            raise ValueError(f"cell {config.cell!r} does not accept the options {sorted(options)}: {e}") from None
        self.embed = nn.Embedding(V, E)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, V)

    def forward(self, idx: Tensor, state=None):
        """idx: (T, B) int64 ids → (logits (T, B, V), final state of the recurrent stack)."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (T, B) character ids, got shape {tuple(idx.shape)}")
        x = self.embed(idx)  # (T, B, E)
        out, state = self.rnn(x, state)  # (T, B, H)
        return self.head(self.drop(out)), state  # (T, B, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _sampling_start(self, length: int, temperature: float, top_k: int | None, prime: str, seed: int | None,
                        argmax: bool) -> tuple[torch.Generator, Tensor]:
        """The checked options' random generator and the prime's ids (T,) (see :meth:`sample`)."""
        if length < 0:
            raise ValueError(f"length must be non-negative, got {length}")
        if not argmax and not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k}")
        gen = torch.Generator(device=self.head.weight.device)
        gen.manual_seed(int(seed) if seed is not None else secrets.randbits(63))  # leaves the global RNG alone
        if prime:
            ids, n_unknown = self.vocab.encode(prime)
            if n_unknown:
                log.warning("%d character(s) of the prime are not in the vocabulary; using the unknown symbol",
                            n_unknown)
        else:
            ids = torch.tensor([self.vocab.id("\n")])
        return gen, ids.long().to(self.head.weight.device)

    @staticmethod
    def _draw(last: Tensor, temperature: float, top_k: int | None, gen: torch.Generator, argmax: bool) -> Tensor:
        """The next character of each sequence from its logits ``last`` (N, V) → (N,) ids."""
        if argmax:
            return last.argmax(1)
        scaled = last / temperature
        if top_k is not None and top_k < scaled.shape[1]:
            kth = scaled.topk(top_k, dim=1).values[:, -1:]  # (N, 1)
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        return torch.multinomial(scaled.softmax(1), 1, generator=gen).view(-1)

    def _native_step(self, state):
        """The native one-step runner of embedding → recurrent stack → head from ``state``
        (:meth:`rnnkit.layers.Recurrent.native_step`), or None: then every step runs the
        module's forward. Generation is exact either way (the same logits to rounding)."""
        native_step = getattr(self.rnn, "native_step", None)
        if native_step is None or self.training:
            return None
        return native_step(state, self.embed.weight, self.head.weight, self.head.bias)

    @torch.no_grad()
    def sample(self, length: int, temperature: float = 1.0, top_k: int | None = None, prime: str = "",
               seed: int | None = None, argmax: bool = False) -> Iterator[str]:
        """Generate ``length`` characters after ``prime``, one at a time (a generator).

        The network runs one step per character and carries its state, so the cost of each
        character is constant. Each character is drawn from softmax(logits / temperature),
        restricted to the ``top_k`` most likely when given, or is the most likely with
        ``argmax``. ``seed`` makes the draw reproducible (the global RNG is not touched).
        Characters of ``prime`` outside the vocabulary become the unknown symbol (warned).
        With no prime, generation starts as after a newline.
        """
        gen, ids = self._sampling_start(length, temperature, top_k, prime, seed, argmax)
        was_training = self.training
        self.eval()
        try:
            logits, state = self(ids.unsqueeze(1))  # (T, 1, V)
            last = logits[-1]  # (1, V)
            runner = self._native_step(state) if length > 1 else None  # one native call per step
            for _ in range(length):
                nxt = self._draw(last, temperature, top_k, gen, argmax)  # (1,)
                yield self.vocab.chars[int(nxt)]
                if runner is not None:
                    last = runner.step(nxt)  # (1, V)
                else:
                    logits, state = self(nxt.view(1, 1), state)
                    last = logits[0]
        finally:
            self.train(was_training)

    @torch.no_grad()
    def sample_many(self, num_samples: int, length: int, temperature: float = 1.0, top_k: int | None = None,
                    prime: str = "", seed: int | None = None, argmax: bool = False) -> list[str]:
        """``num_samples`` texts of ``length`` characters after ``prime``, generated together as
        one batch (one step of the whole batch per character, state carried): the batched
        form of :meth:`sample`, with the same options. With one sample and the same seed it
        returns exactly what :meth:`sample` yields; with more, the draws of the samples
        interleave, so sample 1 of N differs from the single sample of that seed."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        gen, ids = self._sampling_start(length, temperature, top_k, prime, seed, argmax)
        N = num_samples
        drawn = torch.empty(length, N, dtype=torch.long)  # (length, N) character ids
        was_training = self.training
        self.eval()
        try:
            logits, state = self(ids.unsqueeze(1).expand(-1, N).contiguous())  # (T, N, V)
            last = logits[-1]  # (N, V)
            runner = self._native_step(state) if length > 1 else None  # one native call per step
            for t in range(length):
                nxt = self._draw(last, temperature, top_k, gen, argmax)  # (N,)
                drawn[t] = nxt
                if t + 1 < length:
                    if runner is not None:
                        last = runner.step(nxt)  # (N, V)
                    else:
                        logits, state = self(nxt.view(1, N), state)
                        last = logits[0]
        finally:
            self.train(was_training)
        chars = self.vocab.chars
        return ["".join(chars[i] for i in row) for row in drawn.t().tolist()]

    def describe(self) -> dict:
        return {"config": asdict(self.config), "vocab_size": len(self.vocab), "parameters": self.num_parameters()}
