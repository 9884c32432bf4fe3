"""The tagger: learns the synthetic slot-filling task, respects padding, saves and loads."""

import pytest
import torch

from rnnkit.data.conll import TaggedSentence
from rnnkit.data.slots import slot_filling_data
from rnnkit.errors import CheckpointError
from rnnkit.models.tagger import Tagger, TaggerConfig, majority_baseline
from rnnkit.models.tagger_app import train_tagger
from rnnkit.train.fit import FitConfig


def test_tagger_learns_slot_filling_far_above_baseline():
    train, test = slot_filling_data(800, seed=0), slot_filling_data(200, seed=1)
    config = TaggerConfig(hidden_size=48, embedding_dim=32, char_channels=16)
    model, result = train_tagger(train, None, config, FitConfig(max_steps=150, lr=1e-2, eval_every=50))
    scores, base = model.evaluate(test), majority_baseline(train, test)
    assert result.train_loss[-1] < 0.25 * result.train_loss[0]
    assert scores.micro.f1 > 0.8
    assert base.micro.f1 < 0.5  # context is needed: the word-by-word baseline fails
    # the context-only distinction is learnt: both city roles are mostly right
    assert scores.per_type["depart_city"].f1 > 0.7 and scores.per_type["arrive_city"].f1 > 0.7


@pytest.mark.parametrize("cell", ["gru", "jordan", "rnn"])
@pytest.mark.parametrize("char_channels", [0, 8])
def test_tagger_prediction_does_not_depend_on_padding(cell, char_channels):
    sentences = slot_filling_data(6, seed=5)
    model = Tagger.from_data(sentences, TaggerConfig(cell=cell, hidden_size=8, embedding_dim=6,
                                                      char_channels=char_channels)).eval()
    short = min(sentences, key=lambda s: len(s.tokens))
    b_alone = model.batch([short.tokens])
    b_all = model.batch([s.tokens for s in sentences])
    k = sentences.index(short)
    alone = model(b_alone.words, b_alone.lengths, b_alone.chars)[:, 0]  # (T, K)
    padded = model(b_all.words, b_all.lengths, b_all.chars)[: len(short.tokens), k]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_tagger_loss_ignores_padding_positions():
    sentences = [TaggedSentence(["a", "b", "c"], ["O", "B-x", "I-x"]), TaggedSentence(["d"], ["B-x"])]
    model = Tagger.from_data(sentences, TaggerConfig(hidden_size=4, embedding_dim=4, char_channels=0,
                                                     dropout=0.0, word_dropout=0.0))
    batch = model.batch([s.tokens for s in sentences], [s.tags for s in sentences])
    logits = model(batch.words, batch.lengths)
    logp = logits.log_softmax(2)
    expected = -(logp[0, 0, batch.tags[0, 0]] + logp[1, 0, batch.tags[1, 0]] + logp[2, 0, batch.tags[2, 0]]
                 + logp[0, 1, batch.tags[0, 1]]) / 4
    torch.testing.assert_close(model.loss(batch), expected)


def test_tagger_save_load_gives_same_predictions(tmp_path):
    sentences = slot_filling_data(30, seed=2)
    model = Tagger.from_data(sentences, TaggerConfig(hidden_size=8, embedding_dim=6, char_channels=4))
    model.save(tmp_path / "m")
    loaded = Tagger.load(tmp_path / "m")
    tokens = [s.tokens for s in sentences] + [["unseen", "Zyxville"]]
    assert loaded.predict(tokens) == model.predict(tokens)
    assert loaded.config == model.config and loaded.words.symbols == model.words.symbols
    assert not list(tmp_path.glob("m/*.tmp"))
    with pytest.raises(CheckpointError, match="expected 'classifier'"):
        from rnnkit.models.classifier import Classifier
        Classifier.load(tmp_path / "m")
    with pytest.raises(CheckpointError, match="no config.json"):
        Tagger.load(tmp_path)
