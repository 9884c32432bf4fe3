"""The classifier: every pooling learns, padding does not leak into any pooling,
numeric sequences, save/load."""

import random

import pytest
import torch

from rnnkit.models.classifier import POOLINGS, Classifier, ClassifierConfig, majority_baseline
from rnnkit.models.classifier_app import train_classifier
from rnnkit.train.fit import FitConfig


def _texts(n, seed):
    """Random lower-case words; label: does the text contain a 'q' (a single position
    decides, anywhere in the sequence)."""
    r = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        t = "".join(r.choice("abcdefghijklmnoprst") for _ in range(r.randint(3, 12)))
        if r.random() < 0.5:
            i = r.randrange(len(t))
            t = t[:i] + "q" + t[i + 1 :]
        texts.append(t)
        labels.append("has_q" if "q" in t else "no_q")
    return texts, labels


@pytest.mark.parametrize("pooling", POOLINGS)
def test_classifier_learns_with_every_pooling(pooling):
    x, y = _texts(600, 0)
    tx, ty = _texts(200, 1)
    config = ClassifierConfig(hidden_size=16, embedding_dim=8, pooling=pooling, cell="gru")
    model, _ = train_classifier(x, y, None, config, FitConfig(max_steps=120, lr=1e-2, eval_every=40))
    scores = model.evaluate(tx, ty)
    assert majority_baseline(y, ty).accuracy < 0.6
    assert scores.accuracy > 0.9
    assert scores.per_class["has_q"].f1 > 0.9


def test_classifier_learns_numeric_sequences():
    r = random.Random(0)

    def walk(n):
        xs, ys = [], []
        for _ in range(n):
            drift = r.choice([-0.5, 0.5])
            v, seq = r.gauss(0, 3), []
            for _ in range(r.randint(5, 15)):
                v += drift + r.gauss(0, 0.3)
                seq.append(100 + v)  # an offset the standardisation removes
            xs.append(seq)
            ys.append("up" if drift > 0 else "down")
        return xs, ys

    x, y = walk(400)
    tx, ty = walk(100)
    model, _ = train_classifier(x, y, (tx, ty), ClassifierConfig(hidden_size=16, pooling="mean"),
                                FitConfig(max_steps=120, lr=1e-2, eval_every=40))
    assert abs(model.scale[0] - 100) < 10
    assert model.evaluate(tx, ty).accuracy > 0.9


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["lstm", "jordan"])
def test_classifier_output_does_not_depend_on_padding(pooling, cell):
    x, y = _texts(8, 3)
    model = Classifier.from_data(x, y, ClassifierConfig(hidden_size=6, embedding_dim=5, pooling=pooling,
                                                        cell=cell)).eval()
    shortest = min(range(len(x)), key=lambda i: len(x[i]))
    alone = model(*_inputs(model, [x[shortest]]))[0]
    together = model(*_inputs(model, x))[shortest]
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)


def _inputs(model, texts):
    b = model.batch(texts)
    return b.inputs, b.lengths


def test_word_tokens_and_save_load(tmp_path):
    x = ["good film", "bad film", "very good", "very bad plot"]
    y = ["pos", "neg", "pos", "neg"]
    model = Classifier.from_data(x, y, ClassifierConfig(tokens="word", hidden_size=4, embedding_dim=3))
    assert model.vocab.symbols[2:] == ["good", "film", "bad", "very", "plot"]  # by count, ties first-seen
    model.save(tmp_path / "c")
    loaded = Classifier.load(tmp_path / "c")
    b = model.batch(x + ["unknown words"])
    torch.testing.assert_close(loaded(b.inputs, b.lengths), model.eval()(b.inputs, b.lengths))


def test_classifier_config_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="pooling must be one of"):
        ClassifierConfig(pooling="sum")
