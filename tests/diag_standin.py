"""A stand-in for the char language model (the agreed interface of rnnkit.load's CharLM):
``.embed``, ``.rnn``, ``.head``, ``.vocab`` and ``forward(idx (T, B), state) -> (logits, state)``."""

import torch
from torch import nn

import rnnkit


class TinyVocab:
    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: k for k, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> torch.Tensor:
        return torch.tensor([self.index[c] for c in s], dtype=torch.long)

    def decode(self, idx) -> str:
        return "".join(self.chars[int(k)] for k in idx)


class TinyCharLM(nn.Module):
    def __init__(self, text: str, cell: str = "lstm", hidden: int = 12, layers: int = 2, embed: int = 8):
        super().__init__()
        self.vocab = TinyVocab(text)
        V = len(self.vocab)
        self.embed = nn.Embedding(V, embed)
        self.rnn = rnnkit.make_layer(cell, embed, hidden, num_layers=layers)
        self.head = nn.Linear(hidden, V)
        self.config = {"model": {"cell": cell, "hidden_size": hidden, "num_layers": layers}}

    def forward(self, idx, state=None):
        out, state = self.rnn(self.embed(idx), state)  # (T, B, H)
        return self.head(out), state


SAMPLE_TEXT = '''def area(shape, scale=1.0):
    """Area of a shape (a "square" or a "circle")."""
    if shape == "square":
        return [scale * scale, (1, 2)]
    return {"pi": 3.14159 * (scale ** 2)}
'''
