"""Evaluation metrics of the models: span-level precision/recall/F1 for tagging,
accuracy and per-class F1 for classification, MAE/RMSE for forecasting.

Span F1 follows seqeval's default mode (the conlleval rules): a chunk starts at
``B-x``, at ``S-x``, at ``I-x``/``E-x`` after ``O`` or after a chunk of another type,
and ends before ``O``, ``B``, ``S`` or a change of type. An ``I-x`` without a
preceding ``B-x`` therefore *starts* a span of type x (it is not dropped), and
``B-x I-y`` is two spans. A predicted span counts as correct only if its type, start
and end all match a true span.

    precision = |pred ∩ true| / |pred|     recall = |pred ∩ true| / |true|
    F1 = 2·P·R / (P + R)                   (0 where a denominator is 0)

micro averages pool the counts of all types; macro averages are the unweighted mean
of the per-type scores over every type seen in the true or the predicted tags.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_PREFIXES = ("B", "I", "E", "S")


def _split_tag(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in _PREFIXES or not kind:
        raise ValueError(f"tag {tag!r} is not O or B-/I-/E-/S- followed by a type")
    return prefix, kind


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The chunks of one sentence as (type, start, end) with ``end`` exclusive."""
    chunks = []
    prev_prefix, prev_kind, start = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = _split_tag(tag)
        ends = prev_prefix in "ES" or (prev_prefix in "BI" and (prefix in "BSO" or kind != prev_kind))
        starts = prefix in "BS" or (prefix in "IE" and (prev_prefix in "ESO" or kind != prev_kind))
        if ends and prev_prefix != "O":
            chunks.append((prev_kind, start, i))
        if starts:
            start = i
        prev_prefix, prev_kind = (prefix, kind) if prefix != "O" else ("O", "")
    return chunks


@dataclass
class PRF:
    """Precision, recall, F1 and support (number of true spans/items)."""

    precision: float
    recall: float
    f1: float
    support: int


def _prf(correct: int, predicted: int, true: int) -> PRF:
    p = correct / predicted if predicted else 0.0
    r = correct / true if true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return PRF(p, r, f, true)


@dataclass
class SpanScores:
    """Span-level scores: ``per_type[type]``, ``micro`` and ``macro``."""

    per_type: dict[str, PRF]
    micro: PRF
    macro: PRF


def span_f1(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> SpanScores:
    """Span-level P/R/F1 of predicted tag sequences against the true ones (one list of
    tags per sentence; BIO/IOB2, IOB1 and IOBES tags are all read by the rules above)."""
    if len(true) != len(pred):
        raise ValueError(f"true and pred must have the same number of sentences, got {len(true)} and {len(pred)}")
    true_spans: set[tuple[int, str, int, int]] = set()
    pred_spans: set[tuple[int, str, int, int]] = set()
    for n, (t, p) in enumerate(zip(true, pred)):
        if len(t) != len(p):
            raise ValueError(f"sentence {n}: {len(t)} true tags but {len(p)} predicted")
        true_spans |= {(n, *s) for s in spans(t)}
        pred_spans |= {(n, *s) for s in spans(p)}
    correct = true_spans & pred_spans
    kinds = sorted({s[1] for s in true_spans | pred_spans})
    per_type = {}
    for k in kinds:
        per_type[k] = _prf(sum(s[1] == k for s in correct), sum(s[1] == k for s in pred_spans),
                           sum(s[1] == k for s in true_spans))
    micro = _prf(len(correct), len(pred_spans), len(true_spans))
    if kinds:
        mean = [sum(getattr(v, a) for v in per_type.values()) / len(kinds) for a in ("precision", "recall", "f1")]
        macro = PRF(*mean, len(true_spans))
    else:
        macro = PRF(0.0, 0.0, 0.0, 0)
    return SpanScores(per_type, micro, macro)


@dataclass
class ClassScores:
    """Accuracy, per-class P/R/F1 and their macro average."""

    accuracy: float
    per_class: dict[str, PRF]
    macro_f1: float


def classification_scores(true: Sequence[str], pred: Sequence[str]) -> ClassScores:
    """Accuracy and per-class F1 over the classes seen in ``true`` or ``pred``."""
    if len(true) != len(pred):
        raise ValueError(f"true and pred must have the same length, got {len(true)} and {len(pred)}")
    if not true:
        raise ValueError("no items to score")
    classes = sorted(set(true) | set(pred))
    per_class = {}
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(true, pred))
        per_class[c] = _prf(tp, sum(p == c for p in pred), sum(t == c for t in true))
    accuracy = sum(t == p for t, p in zip(true, pred)) / len(true)
    return ClassScores(accuracy, per_class, sum(v.f1 for v in per_class.values()) / len(classes))


def mae(true: Sequence[float], pred: Sequence[float]) -> float:
    """Mean absolute error, (1/n) Σ |y - ŷ|."""
    _check_same(true, pred)
    return sum(abs(float(a) - float(b)) for a, b in zip(true, pred)) / len(true)


def rmse(true: Sequence[float], pred: Sequence[float]) -> float:
    """Root mean squared error, √((1/n) Σ (y - ŷ)²)."""
    _check_same(true, pred)
    return math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(true, pred)) / len(true))


def _check_same(true, pred) -> None:
    if len(true) != len(pred):
        raise ValueError(f"true and pred must have the same length, got {len(true)} and {len(pred)}")
    if len(true) == 0:
        raise ValueError("no values to score")
