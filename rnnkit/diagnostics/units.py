"""Hidden units over text: per-character activations and the units that track a signal
(the "interpretable cells" of Karpathy, Johnson & Fei-Fei 2015)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .observe import Observation, observe

# -- built-in per-character signals -----------------------------------------------------------
# Each maps a text of N characters to N floats; value i is what is known after reading char i
# (the hidden state at step i has read exactly the characters 0..i).

_OPEN, _CLOSE = "([{", ")]}"


def inside_quote(text: str) -> list[float]:
    """1 while inside a '...' or "..." string (Python rules: backslash escapes, triple quotes
    span lines, single quotes end at a newline), else 0. The opening quote counts as inside,
    the closing one as outside."""
    out: list[float] = []
    quote: str | None = None  # the delimiter of the string we are in: ', ", ''' or \"\"\"
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quote is None:
            if ch in "'\"":
                quote = ch * 3 if text[i : i + 3] == ch * 3 else ch
                out.extend([1.0] * len(quote))
                i += len(quote)
                continue
            out.append(0.0)
        elif ch == "\\" and i + 1 < n:
            out.extend([1.0, 1.0])
            i += 2
            continue
        elif text.startswith(quote, i):
            out.extend([0.0] * len(quote))
            i += len(quote)
            quote = None
            continue
        elif ch == "\n" and len(quote) == 1:
            quote = None
            out.append(0.0)
        else:
            out.append(1.0)
        i += 1
    return out


def indentation(text: str) -> list[float]:
    """Leading whitespace of the current line read so far (a tab counts as 4 spaces): while
    in the indentation it grows with each blank, afterwards it stays at the line's depth."""
    out: list[float] = []
    depth, leading = 0, True
    for ch in text:
        if ch == "\n":
            depth, leading = 0, True
            out.append(0.0)
            continue
        if leading and ch in " \t":
            depth += 4 if ch == "\t" else 1
        else:
            leading = False
        out.append(float(depth))
    return out


def position_in_line(text: str) -> list[float]:
    """Column of the character: 0 for the first character of a line (the newline itself
    ends its line and has the column after the last character)."""
    out: list[float] = []
    col = 0
    for ch in text:
        out.append(float(col))
        col = 0 if ch == "\n" else col + 1
    return out


def bracket_depth(text: str) -> list[float]:
    """Nesting depth of (), [] and {} after reading the character, ignoring brackets inside
    strings (see :func:`inside_quote`); an unmatched closing bracket does not go below 0."""
    quoted = inside_quote(text)
    out: list[float] = []
    depth = 0
    for k, ch in enumerate(text):
        if not quoted[k]:
            if ch in _OPEN:
                depth += 1
            elif ch in _CLOSE:
                depth = max(depth - 1, 0)
        out.append(float(depth))
    return out


#: the built-in signals by name
SIGNALS: dict[str, Callable[[str], list[float]]] = {
    "inside_quote": inside_quote,
    "indentation": indentation,
    "position_in_line": position_in_line,
    "bracket_depth": bracket_depth,
}


# -- activations and correlation ------------------------------------------------------------------


def encode_text(model: nn.Module, text: str) -> Tensor:
    """``model.vocab.encode(text)`` as a (N,) int64 tensor, with a clear error for characters
    the model's vocabulary does not have."""
    from ..errors import DataError

    vocab = getattr(model, "vocab", None)
    if vocab is None or not hasattr(vocab, "encode"):
        raise TypeError(f"{type(model).__name__} has no .vocab with encode(); expected a character model")
    try:
        idx = vocab.encode(text)
    except (KeyError, ValueError, IndexError) as e:
        raise DataError(f"the text cannot be encoded with the model's vocabulary: {e!r}") from None
    if isinstance(idx, tuple):  # rnnkit's Vocabulary: (ids, number of unknown characters)
        idx, n_unknown = idx
        if n_unknown:
            logging.getLogger(__name__).warning(
                "%d character(s) of the text are not in the model's vocabulary (shown as unknown)", n_unknown)
    idx = idx if isinstance(idx, Tensor) else torch.as_tensor(idx)
    if len(idx) != len(text):
        raise DataError(f"the model's vocabulary encoded {len(text)} characters as {len(idx)} tokens; "
                        "the per-character analysis needs one token per character")
    return idx.long().flatten()


def text_activations(model: nn.Module, text: str) -> Observation:
    """Run a character model over ``text`` (one sequence) and observe every rnnkit layer.

    ``model`` has the char-LM interface: ``model.vocab.encode(str) -> LongTensor`` and
    ``model(idx (T, B)) -> (logits, state)``. Runs in eval mode without gradients; returns
    the :class:`Observation` (states (N, 1, S) per layer for N characters).
    """
    if not text:
        raise ValueError("text is empty: give at least one character")
    idx = encode_text(model, text).view(-1, 1)  # (N, 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), observe(model) as obs:
            model(idx)
    finally:
        model.train(was_training)
    return obs


@dataclass
class UnitCorrelation:
    """One unit and its Pearson correlation r with a signal."""

    layer: str
    state: str
    unit: int
    r: float


def pearson_per_unit(acts: Tensor, signal: Tensor) -> Tensor:
    """Pearson r between every column of ``acts`` (N, U) and ``signal`` (N,): (U,).

        r_u = Σ_i (a_iu - ā_u)(s_i - s̄) / sqrt(Σ_i (a_iu - ā_u)² Σ_i (s_i - s̄)²)

    A constant unit (or a constant signal) has r = 0.
    """
    if acts.dim() != 2 or signal.dim() != 1 or acts.shape[0] != signal.shape[0]:
        raise ValueError(f"acts must be (N, U) and signal (N,), got {tuple(acts.shape)} and {tuple(signal.shape)}")
    a = acts.double() - acts.double().mean(0)
    s = signal.double() - signal.double().mean()
    denom = (a.pow(2).sum(0) * s.pow(2).sum()).sqrt()
    cov = s @ a  # (U,)
    return torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))


def correlated_units(obs: Observation, signal: Tensor | list[float], top_k: int = 5,
                     batch_index: int = 0) -> list[UnitCorrelation]:
    """The ``top_k`` units, over every observed layer and state entry, whose activation along
    the sequence ``batch_index`` is most correlated (largest |r|) with ``signal`` (T,)."""
    signal = torch.as_tensor(signal, dtype=torch.float64)
    found: list[UnitCorrelation] = []
    for key, states in obs.states.items():
        for sname, s in states.items():
            if s.shape[0] != signal.shape[0]:
                raise ValueError(f"signal has {signal.shape[0]} values but layer {key} ran {s.shape[0]} steps")
            r = pearson_per_unit(s[:, batch_index], signal)
            found.extend(UnitCorrelation(key, sname, u, float(v)) for u, v in enumerate(r))
    found.sort(key=lambda c: -abs(c.r))
    return found[:top_k]
