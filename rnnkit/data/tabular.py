"""CSV/TSV readers: labelled text, labelled numeric sequences, and time-series columns.

The delimiter is a tab for ``.tsv``/``.tab`` files and a comma otherwise (or given).
Columns are chosen by header name or by integer index (negative counts from the end).
Every malformed line raises :class:`DataError` naming the file and line number.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ._files import read_text, short


def _delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter is not None:
        if len(delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {delimiter!r}")
        return delimiter
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _rows(path: str | Path, delimiter: str | None) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line."""
    path = Path(path)
    lines = read_text(path)
    delim = _delimiter(path, delimiter)
    rows = []
    try:
        for lineno, line in enumerate(lines, 1):
            if line.strip():
                rows.append((lineno, next(csv.reader([line], delimiter=delim, strict=True))))
    except csv.Error as e:
        raise DataError(f"{path}:{lineno}: malformed CSV line ({e}): {short(line)}") from None
    return rows


def _column(spec: int | str, header: list[str] | None, width: int, path: Path, what: str) -> int:
    """Resolve a column given by name (needs a header) or index."""
    if isinstance(spec, str) and spec.lstrip("-").isdigit():
        spec = int(spec)
    if isinstance(spec, int):
        if not -width <= spec < width:
            raise DataError(f"{path}: {what} column {spec} is out of range for {width} column(s)")
        return spec % width
    if header is None:
        raise DataError(f"{path}: {what} column {spec!r} is a name but the file has no header; give an index")
    if spec not in header:
        raise DataError(f"{path}: no {what} column {spec!r}; the header has {header}")
    return header.index(spec)


@dataclass
class LabelledText:
    texts: list[str]
    labels: list[str]


def read_labelled_text(path: str | Path, text_column: int | str = 0, label_column: int | str = -1,
                       header: bool = True, delimiter: str | None = None) -> LabelledText:
    """Read ``text,label`` rows (quoted fields may contain the delimiter). Every row
    must have as many fields as the first; texts and labels must not be empty."""
    path = Path(path)
    rows = _rows(path, delimiter)
    names = None
    if header:
        names = [n.strip() for n in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: only a header line, no data")
    width = len(names) if names is not None else len(rows[0][1])
    ti = _column(text_column, names, width, path, "text")
    li = _column(label_column, names, width, path, "label")
    if ti == li:
        raise DataError(f"{path}: text and label columns are the same column ({ti})")
    texts, labels = [], []
    for lineno, fields in rows:
        if len(fields) != width:
            raise DataError(f"{path}:{lineno}: expected {width} fields, got {len(fields)}: {short(fields)}")
        text, label = fields[ti], fields[li].strip()
        if not text.strip():
            raise DataError(f"{path}:{lineno}: empty text")
        if not label:
            raise DataError(f"{path}:{lineno}: empty label")
        texts.append(text)
        labels.append(label)
    return LabelledText(texts, labels)


@dataclass
class LabelledSequences:
    sequences: list[list[float]]
    labels: list[str]


def _number(text: str, path: Path, lineno: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: {what} {short(text)} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{lineno}: {what} is {short(text)}; missing or infinite values are not allowed")
    return value


def read_labelled_sequences(path: str | Path, label_column: int = -1, header: bool = False,
                            delimiter: str | None = None) -> LabelledSequences:
    """Read one univariate sequence per row: numbers plus a label in ``label_column``
    (0 for the UCR archive layout, -1 for last). Rows may differ in length; trailing
    empty fields end a shorter sequence."""
    path = Path(path)
    rows = _rows(path, delimiter)
    if header:
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: only a header line, no data")
    sequences, labels = [], []
    for lineno, fields in rows:
        fields = [f.strip() for f in fields]
        if not -len(fields) <= label_column < len(fields) or len(fields) < 2:
            raise DataError(f"{path}:{lineno}: needs a label and at least one value, got {len(fields)} field(s)")
        li = label_column % len(fields)
        label = fields[li]
        values = fields[:li] + fields[li + 1 :]
        while values and values[-1] == "":
            values.pop()
        if not label:
            raise DataError(f"{path}:{lineno}: empty label")
        if not values:
            raise DataError(f"{path}:{lineno}: no values, only a label")
        sequences.append([_number(v, path, lineno, f"value {k + 1}") for k, v in enumerate(values)])
        labels.append(label)
    return LabelledSequences(sequences, labels)


def read_columns(path: str | Path, columns: list[str], delimiter: str | None = None) -> dict[str, list[float]]:
    """Read named numeric columns of a CSV file with a header row (a time series, one
    row per time step)."""
    path = Path(path)
    rows = _rows(path, delimiter)
    names = [n.strip() for n in rows[0][1]]
    if len(rows) < 2:
        raise DataError(f"{path}: only a header line, no data")
    index = {}
    for c in columns:
        if c not in names:
            raise DataError(f"{path}: no column {c!r}; the header has {names}")
        index[c] = names.index(c)
    out: dict[str, list[float]] = {c: [] for c in columns}
    for lineno, fields in rows[1:]:
        if len(fields) != len(names):
            raise DataError(f"{path}:{lineno}: expected {len(names)} fields like the header, got {len(fields)}")
        for c, i in index.items():
            out[c].append(_number(fields[i].strip(), path, lineno, f"column {c!r} value"))
    return out


def read_numeric_rows(path: str | Path, delimiter: str | None = None) -> tuple[list[list[float]], list[str]]:
    """Rows of numbers, one example per non-blank line, without a label (what a numeric
    classifier predicts on); the delimiter as for the other readers. Returns the rows and
    their lines; DataError naming the example for a field that is not a number."""
    path = Path(path)
    lines = [line for line in read_text(path) if line.strip()]
    delim = _delimiter(path, delimiter)
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            rows.append([float(v) for v in line.split(delim) if v.strip()])
        except ValueError:
            name = {",": "comma", "\t": "tab", ";": "semicolon"}.get(delim, repr(delim))
            raise DataError(f"{path}: example {i}: not a {name}-separated row of numbers: {line!r}") from None
    return rows, lines
