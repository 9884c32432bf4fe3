"""A word-level language model written the way PyTorch's word_language_model example writes
one (embedding → recurrent stack → decoder with tied weights; batchify, get_batch,
repackage_hidden, clip_grad_norm_ and a manual SGD update; the whole model saved with
torch.save and loaded with torch.load), with rnnkit layers in place of torch.nn's: the same
losses as torch.nn step for step, and the same outputs after the whole model is saved and
loaded."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnkit

from .cases import use_path


class WordLM(nn.Module):
    """Embedding → ``layers.<rnn_type>`` → linear decoder (tied to the embedding)."""

    def __init__(self, layers, rnn_type: str, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float):
        super().__init__()
        self.ntoken, self.rnn_type, self.nhid, self.nlayers = ntoken, rnn_type, nhid, nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = getattr(layers, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.decoder.weight = self.encoder.weight  # weight tying (Press & Wolf 2016)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int):
        weight = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


def corpus(n_sentences: int = 300, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Word ids of sentences from a small grammar (learnable structure, no download)."""
    r = random.Random(seed)
    nouns, verbs = ["cat", "dog", "bird", "child", "teacher"], ["sees", "likes", "follows", "hears"]
    words = []
    for _ in range(n_sentences):
        words += ["the", r.choice(nouns), r.choice(verbs), "the", r.choice(nouns), ".", "<eos>"]
    vocab = {w: i for i, w in enumerate(sorted(set(words)))}
    return torch.tensor([vocab[w] for w in words]), len(vocab)


def batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()  # (T, bsz)


def get_batch(source: torch.Tensor, i: int, bptt: int):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)


def repackage_hidden(h):
    return h.detach() if isinstance(h, torch.Tensor) else tuple(repackage_hidden(v) for v in h)


def train(model: WordLM, data: torch.Tensor, steps: int, bptt: int = 12, lr: float = 3.0, clip: float = 0.25):
    """The example's train loop; returns the loss of every step."""
    model.train()
    hidden = model.init_hidden(data.size(1))
    losses = []
    for i in range(0, steps * bptt, bptt):
        x, targets = get_batch(data, i % (data.size(0) - bptt - 1), bptt)
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(x, hidden)
        loss = F.nll_loss(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
    return losses


def evaluate(model: WordLM, data: torch.Tensor, bptt: int = 12):
    model.eval()
    hidden = model.init_hidden(data.size(1))
    outputs = []
    with torch.no_grad():
        for i in range(0, data.size(0) - 1, bptt):
            x, _ = get_batch(data, i, bptt)
            output, hidden = model(x, hidden)
            outputs.append(output)
    return torch.cat(outputs)


@pytest.mark.parametrize("path", ["native", "python", "autograd"])
@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU", "RNN"])
def test_word_language_model_trains_like_torch_nn_and_saves_whole(monkeypatch, tmp_path, rnn_type, path):
    backend = use_path(monkeypatch, path).get("backend")
    ids, ntoken = corpus()
    train_data, val_data = batchify(ids[:1600], 8), batchify(ids[1600:], 4)
    torch.manual_seed(1111)
    model = WordLM(rnnkit, rnn_type, ntoken, 16, 16, 2, dropout=0.0)
    if backend:
        model.rnn.backend = backend
    reference = WordLM(nn, rnn_type, ntoken, 16, 16, 2, dropout=0.0)
    reference.load_state_dict(model.state_dict())

    losses = train(model, train_data, steps=150)
    torch.testing.assert_close(losses, train(reference, train_data, steps=150), rtol=1e-4, atol=1e-4)
    assert sum(losses[-10:]) < 0.45 * sum(losses[:10])  # it learns the grammar (ln 12 → about 0.7)

    with open(tmp_path / "model.pt", "wb") as f:
        torch.save(model, f)
    with open(tmp_path / "model.pt", "rb") as f:
        loaded = torch.load(f, weights_only=False)
    loaded.rnn.flatten_parameters()
    # or, as the example loads it, with weights_only=True and the classes allowlisted
    with open(tmp_path / "model.pt", "rb") as f, torch.serialization.safe_globals(
            [*rnnkit.safe_globals(), WordLM, nn.Dropout, nn.Embedding, nn.Linear]):
        safely = torch.load(f, weights_only=True)
    torch.testing.assert_close(evaluate(safely, val_data), evaluate(model, val_data), rtol=0, atol=0)
    assert type(loaded.rnn) is type(model.rnn) and loaded.rnn.backend == model.rnn.backend
    torch.testing.assert_close(evaluate(loaded, val_data), evaluate(model, val_data), rtol=0, atol=0)
    # training goes on from the loaded model exactly as from the original
    torch.testing.assert_close(train(loaded, train_data, 3), train(model, train_data, 3), rtol=0, atol=0)
