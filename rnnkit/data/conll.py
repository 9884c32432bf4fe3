"""CoNLL-style tagged text: one token per line with whitespace-separated columns
(token first, the tag in a chosen column, by default the last), a blank line between
sentences, ``-DOCSTART-`` lines skipped.

    I          O
    would      O
    like       O
    to         O
    arrive     O
    in         O
    Taipei     B-arrive_city
    on         O
    November   B-arrive_date
    2nd        I-arrive_date
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ._files import read_text, short


@dataclass
class TaggedSentence:
    """One sentence: its tokens and their tags, of equal length."""

    tokens: list[str]
    tags: list[str]


def read_conll(path: str | Path, token_column: int = 0, tag_column: int = -1) -> list[TaggedSentence]:
    """Read a CoNLL file into sentences.

    ``token_column`` and ``tag_column`` index the whitespace-separated columns
    (negative counts from the end). Every token line must have the same number of
    columns as the first one, and at least enough for both indices; otherwise
    :class:`DataError` names the file and line. ``-DOCSTART-`` lines end a sentence and
    are skipped.
    """
    return [TaggedSentence(t, g) for t, g in _read(path, token_column, tag_column)]


def read_tokens(path: str | Path, token_column: int = 0) -> list[list[str]]:
    """Read the tokens of a CoNLL-style file whose lines may have only one column
    (text to be tagged); same rules as :func:`read_conll`."""
    return [t for t, _ in _read(path, token_column, None)]


def _read(path: str | Path, token_column: int, tag_column: int | None) -> list[tuple[list[str], list[str]]]:
    lines = read_text(path)
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    width: int | None = None

    def flush() -> None:
        if tokens:
            sentences.append((list(tokens), list(tags)))
            tokens.clear()
            tags.clear()

    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            flush()
            continue
        if fields[0] == "-DOCSTART-":
            flush()
            continue
        if width is None:
            width = len(fields)
            if tag_column is not None and width < 2:
                raise DataError(f"{path}:{lineno}: expected a token and a tag column, got one column: {short(line)}")
            for name, col in (("token_column", token_column), ("tag_column", tag_column)):
                if col is not None and not -width <= col < width:
                    raise DataError(f"{path}:{lineno}: {name}={col} but the line has {width} column(s): {short(line)}")
        elif len(fields) != width:
            raise DataError(f"{path}:{lineno}: expected {width} columns like the first token line, "
                            f"got {len(fields)}: {short(line)}")
        tokens.append(fields[token_column])
        if tag_column is not None:
            tags.append(fields[tag_column])
    flush()
    if not sentences:
        raise DataError(f"{path}: no sentences (only blank or -DOCSTART- lines)")
    return sentences


def write_conll(path: str | Path, sentences: Iterable[TaggedSentence],
                extra: Sequence[Sequence[str]] | None = None) -> None:
    """Write sentences as ``token tag`` lines (plus one more column per sentence from
    ``extra``, e.g. predicted tags), a blank line after each sentence."""
    with open(path, "w", encoding="utf-8") as f:
        for i, s in enumerate(sentences):
            for j, (tok, tag) in enumerate(zip(s.tokens, s.tags)):
                if any(c.isspace() for c in tok) or not tok:
                    raise ValueError(f"token {tok!r} of sentence {i} is empty or contains whitespace")
                f.write(f"{tok} {tag}" + (f" {extra[i][j]}" if extra is not None else "") + "\n")
            f.write("\n")
