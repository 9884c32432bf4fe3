"""Vocabularies: symbol ↔ index maps that are saved as JSON next to a model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK = "<pad>", "<unk>"


class Vocabulary:
    """An ordered list of symbols; index 0 is padding and index 1 unknown (for inputs).

    ``Vocabulary.build(symbols, min_count=1)`` counts symbols and keeps those seen at
    least ``min_count`` times, most frequent first (ties in first-seen order, so the
    result is deterministic). With ``specials=False`` (label sets) there is no padding
    or unknown entry and :meth:`encode` rejects unseen symbols.
    """

    def __init__(self, symbols: Sequence[str], specials: bool = True):
        self.specials = specials
        self.symbols: list[str] = ([PAD, UNK] if specials else []) + [s for s in symbols if s not in (PAD, UNK)]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        if len(self.index) != len(self.symbols):
            raise ValueError("vocabulary symbols must be distinct")

    @classmethod
    def build(cls, symbols: Iterable[str], min_count: int = 1, specials: bool = True) -> Vocabulary:
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counts = Counter(symbols)
        kept = [s for s, n in counts.most_common() if n >= min_count]
        return cls(kept, specials)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.index

    def encode(self, symbols: Iterable[str]) -> list[int]:
        if self.specials:
            return [self.index.get(s, 1) for s in symbols]
        out = []
        for s in symbols:
            if s not in self.index:
                raise ValueError(f"unknown label {s!r}; the model knows {self.symbols}")
            out.append(self.index[s])
        return out

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.symbols[int(i)] for i in indices]

    def to_json(self) -> dict:
        return {"symbols": self.symbols[2:] if self.specials else self.symbols, "specials": self.specials}

    @classmethod
    def from_json(cls, obj: dict) -> Vocabulary:
        return cls(obj["symbols"], obj["specials"])

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} symbols, specials={self.specials})"
