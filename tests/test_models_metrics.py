"""Span F1 (seqeval/conlleval rules), classification and regression metrics, checked
against hand-computed cases and against seqeval itself when it is installed."""

import math
import random

import pytest

from rnnkit.models.metrics import classification_scores, mae, rmse, span_f1, spans

from . import needs


@pytest.mark.parametrize("tags, expected", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    # I- without B- starts a span (conlleval, seqeval default)
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),
    (["I-PER"], [("PER", 0, 1)]),
    # a change of type splits: B-PER I-LOC is two spans
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
    # adjacent spans of the same type: B starts a new one
    (["B-LOC", "B-LOC", "I-LOC"], [("LOC", 0, 1), ("LOC", 1, 3)]),
    # a span running to the end of the sentence
    (["O", "B-MISC", "I-MISC"], [("MISC", 1, 3)]),
    # IOBES
    (["S-PER", "B-LOC", "E-LOC", "E-LOC"], [("PER", 0, 1), ("LOC", 1, 3), ("LOC", 3, 4)]),
    (["O", "O"], []),
])
def test_spans_hand_computed(tags, expected):
    assert spans(tags) == expected


def test_span_f1_hand_computed_counts():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "B-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"],  # PER right; LOC predicted as ORG (type mismatch)
            ["B-LOC", "I-LOC", "O"]]  # two adjacent LOC merged into one: wrong boundaries
    s = span_f1(true, pred)
    # true spans: PER, LOC, LOC, LOC (4); predicted: PER, ORG, LOC[0:2] (3); correct: PER only
    assert s.micro.precision == pytest.approx(1 / 3)
    assert s.micro.recall == pytest.approx(1 / 4)
    assert s.micro.f1 == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    assert s.per_type["PER"].f1 == 1.0 and s.per_type["PER"].support == 1
    assert s.per_type["LOC"].precision == 0.0 and s.per_type["LOC"].support == 3
    assert s.per_type["ORG"].f1 == 0.0 and s.per_type["ORG"].support == 0
    assert s.macro.f1 == pytest.approx(1 / 3)  # mean over PER, LOC, ORG of (1, 0, 0)


def test_span_f1_i_without_b_matches_b_start():
    # the prediction starts its span with I-: same span as the truth, so it counts
    s = span_f1([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert s.micro.f1 == 1.0


def test_spans_do_not_cross_sentences():
    # a sentence ending in I-PER and the next starting with I-PER are two spans
    s = span_f1([["I-PER"], ["I-PER"]], [["I-PER"], ["I-PER"]])
    assert s.micro.support == 2 and s.micro.f1 == 1.0


def test_span_f1_rejects_bad_input():
    with pytest.raises(ValueError, match="not O or B-"):
        span_f1([["PER"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0: 2 true tags but 1 predicted"):
        span_f1([["O", "O"]], [["O"]])


def _random_tags(r, n):
    return [r.choice(["O", "O", "B-A", "I-A", "B-B", "I-B", "I-C", "B-C"]) for _ in range(n)]


def test_span_f1_agrees_with_seqeval():
    seqeval = needs.module("seqeval.metrics", "pip install seqeval; the dev extra has it")
    r = random.Random(0)
    for _ in range(40):
        true = [_random_tags(r, r.randint(1, 9)) for _ in range(r.randint(1, 6))]
        pred = [[t if r.random() < 0.6 else r.choice(["O", "B-A", "I-B", "I-C"]) for t in s] for s in true]
        ours = span_f1(true, pred)
        if not ours.per_type:
            continue
        report = seqeval.classification_report(true, pred, output_dict=True, zero_division=0)
        assert ours.micro.f1 == pytest.approx(seqeval.f1_score(true, pred, zero_division=0))
        assert ours.micro.precision == pytest.approx(seqeval.precision_score(true, pred, zero_division=0))
        assert ours.micro.recall == pytest.approx(seqeval.recall_score(true, pred, zero_division=0))
        assert ours.macro.f1 == pytest.approx(report["macro avg"]["f1-score"])
        for kind, prf in ours.per_type.items():
            assert prf.f1 == pytest.approx(report[kind]["f1-score"])
            assert prf.support == report[kind]["support"]


def test_classification_scores_hand_computed():
    s = classification_scores(["a", "a", "b", "c"], ["a", "b", "b", "b"])
    assert s.accuracy == 0.5
    assert s.per_class["a"].precision == 1.0 and s.per_class["a"].recall == 0.5
    assert s.per_class["b"].precision == pytest.approx(1 / 3) and s.per_class["b"].recall == 1.0
    assert s.per_class["b"].f1 == pytest.approx(0.5)
    assert s.per_class["c"].f1 == 0.0
    assert s.macro_f1 == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)


def test_mae_rmse_hand_computed():
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    assert rmse([1, 2, 3], [2, 2, 5]) == pytest.approx(math.sqrt(5 / 3))
    with pytest.raises(ValueError, match="same length"):
        mae([1], [1, 2])
