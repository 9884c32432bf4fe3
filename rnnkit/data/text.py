"""Text corpora for character-level models: reading, vocabulary, truncated-BPTT streams.

A corpus is a list of UTF-8 files (or stdin), read strictly, with line endings normalised
to ``\\n`` and a leading byte-order mark removed, then concatenated in sorted path order.
With no paths the corpus is the Python standard library's own ``.py`` sources (tests and
site-packages excluded): every machine that runs rnnkit has it, so nothing is downloaded.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

log = logging.getLogger(__name__)

#: directory names that mark test code in the standard library (excluded from the default corpus)
_TEST_DIRS = frozenset({"test", "tests", "idle_test"})
#: the character that stands for every character outside the vocabulary
UNKNOWN = "\ufffd"


@dataclass
class Corpus:
    """A text corpus: its text and where it came from."""

    text: str
    files: list[str]  # the files read, in order ("-" for stdin)
    skipped: list[str] = field(default_factory=list)  # files skipped in a directory walk (not UTF-8)

    def describe(self) -> dict:
        """A JSON-able summary for the run directory's config.json."""
        return {"files": len(self.files), "chars": len(self.text), "skipped": len(self.skipped)}


def default_corpus_files() -> list[Path]:
    """The standard library's ``.py`` files, sorted, without tests and site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"the default corpus needs the standard library sources, but {root} is not a directory")
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if any(p in _TEST_DIRS or p.startswith("test_") or p == "site-packages" for p in parts):
            continue
        if path.is_file():
            files.append(path)
    if not files:
        raise DataError(f"no .py files found under the standard library directory {root}")
    return sorted(files)


def _decode(raw: bytes, name: str) -> str:
    """Strict UTF-8 → str with LF line endings and no BOM; DataError names file and byte offset."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{name} looks binary (NUL byte at byte offset {nul}); expected UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{name} is not valid UTF-8 (byte offset {e.start}: {e.reason})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror or e}") from None
    return _decode(raw, str(path))


def _walk(directory: Path, glob: str | None) -> list[Path]:
    """Every file under ``directory`` (hidden files and directories skipped) whose name
    matches ``glob`` (all files when None), sorted."""
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if n.startswith(".") or (glob is not None and not fnmatch.fnmatch(n, glob)):
                continue
            found.append(Path(root) / n)
    return sorted(found)


def read_corpus(paths: Sequence[str | os.PathLike] | None = None, glob: str | None = None) -> Corpus:
    """Read a corpus from files, directories (recursive) and ``"-"`` (stdin).

    Args:
        paths: files or directories; empty/None reads the default corpus (the standard
            library's ``.py`` sources).
        glob: file-name pattern (``"*.py"``) a file inside a directory must match; files
            named explicitly are always read.

    A named file that is not UTF-8 text raises :class:`DataError`; inside a directory such
    files are skipped with a warning and listed in ``Corpus.skipped``. An empty corpus
    raises :class:`DataError`.
    """
    parts: list[str] = []
    files: list[str] = []
    skipped: list[str] = []
    if not paths:
        for path in default_corpus_files():
            try:
                parts.append(_read_file(path))
                files.append(str(path))
            except DataError as e:
                log.warning("skipping %s", e)
                skipped.append(str(path))
        where = "the default corpus (Python standard library sources)"
    else:
        for p in paths:
            if str(p) == "-":
                parts.append(_decode(sys.stdin.buffer.read(), "<stdin>"))
                files.append("-")
                continue
            path = Path(p)
            if path.is_dir():
                matched = _walk(path, glob)
                if not matched:
                    raise DataError(f"data directory {path} has no files" + (f" matching {glob!r}" if glob else ""))
                for f in matched:
                    try:
                        parts.append(_read_file(f))
                        files.append(str(f))
                    except DataError as e:
                        log.warning("skipping %s", e)
                        skipped.append(str(f))
            else:
                parts.append(_read_file(path))
                files.append(str(path))
        where = ", ".join(str(p) for p in paths)
    if skipped:
        log.warning("skipped %d file(s) that are not UTF-8 text", len(skipped))
    text = "".join(parts)
    if not text:
        raise DataError(f"the corpus is empty ({where}: {len(files)} file(s), no characters)")
    return Corpus(text, files, skipped)


#: characters per chunk when counting and encoding a corpus (bounds the temporaries' memory)
CHUNK_CHARS = 1 << 20


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (N,)


class Vocabulary:
    """Characters ↔ integer ids. Id 0 is the unknown symbol (U+FFFD), the rest are the
    corpus characters by decreasing frequency (ties by code point). Characters seen fewer
    than ``min_count`` times are folded into the unknown symbol."""

    FORMAT_VERSION = 1

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if not chars or chars[0] != UNKNOWN:
            raise ValueError(f"a vocabulary's first symbol must be the unknown symbol {UNKNOWN!r}")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("a vocabulary must be a list of distinct single characters")
        self.chars = chars
        self._index = {c: i for i, c in enumerate(chars)}
        cps = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._order = np.argsort(cps)
        self._sorted_cps = cps[self._order]

    @classmethod
    def build(cls, text: str, min_count: int = 1, chunk_chars: int = CHUNK_CHARS) -> Vocabulary:
        """The vocabulary of ``text``: characters seen at least ``min_count`` times. The text
        is counted ``chunk_chars`` characters at a time, so the extra memory is a few bytes
        per character of one chunk, not of the whole corpus."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counts = np.zeros(0, dtype=np.int64)  # (max code point + 1,)
        for start in range(0, len(text), chunk_chars):
            chunk = np.bincount(_codepoints(text[start:start + chunk_chars]))
            if len(chunk) > len(counts):
                counts = np.pad(counts, (0, len(chunk) - len(counts)))
            counts[:len(chunk)] += chunk
        totals = {int(cp): int(counts[cp]) for cp in np.flatnonzero(counts)}
        order = sorted(totals, key=lambda cp: (-totals[cp], cp))
        chars = [chr(cp) for cp in order if totals[cp] >= min_count and chr(cp) != UNKNOWN]
        return cls([UNKNOWN, *chars])

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return ch in self._index

    @property
    def dtype(self) -> torch.dtype:
        """The smallest integer dtype that holds every id (the encoded corpus is compact)."""
        return torch.uint8 if len(self) <= 256 else torch.int16 if len(self) <= 32767 else torch.int32

    def encode(self, text: str, chunk_chars: int = CHUNK_CHARS) -> tuple[Tensor, int]:
        """Ids of ``text`` as a (N,) tensor of :attr:`dtype`, and how many characters were
        not in the vocabulary (mapped to the unknown id 0). Encoded ``chunk_chars`` at a
        time into the compact output, so the temporaries are those of one chunk."""
        np_dtype = {torch.uint8: np.uint8, torch.int16: np.int16, torch.int32: np.int32}[self.dtype]
        out = np.empty(len(text), dtype=np_dtype)  # (N,)
        n_unknown = 0
        for start in range(0, len(text), chunk_chars):
            cps = _codepoints(text[start:start + chunk_chars])  # (C,)
            pos = np.searchsorted(self._sorted_cps, cps)
            pos = np.minimum(pos, len(self._sorted_cps) - 1)
            known = self._sorted_cps[pos] == cps
            out[start:start + len(cps)] = np.where(known, self._order[pos], 0)
            n_unknown += int((~known).sum())
        return torch.from_numpy(out), n_unknown

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The text of a sequence of ids."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        try:
            return "".join(self.chars[i] for i in ids)
        except IndexError:
            raise ValueError(f"ids must be in 0..{len(self) - 1}") from None

    def id(self, ch: str) -> int:
        """The id of one character (0, the unknown id, when it is not in the vocabulary)."""
        return self._index.get(ch, 0)

    def to_json(self) -> dict:
        return {"format_version": self.FORMAT_VERSION, "unknown": UNKNOWN, "chars": self.chars}

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:  # temporary file, fsync, rename: never half written
            f.write(json.dumps(self.to_json(), ensure_ascii=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Load a vocabulary saved by :meth:`save`; a bad file raises DataError."""
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"vocabulary file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"vocabulary file {path} is not valid JSON ({e})") from None
        if not isinstance(obj, dict) or obj.get("format_version") != cls.FORMAT_VERSION or "chars" not in obj:
            raise DataError(f"vocabulary file {path} has an unknown format")
        try:
            return cls(obj["chars"])
        except (ValueError, TypeError) as e:
            raise DataError(f"vocabulary file {path} is invalid: {e}") from None


def encode_corpus(corpus: Corpus, vocab: Vocabulary) -> Tensor:
    """The corpus as a compact (N,) id tensor, warning when characters were unknown."""
    ids, n_unknown = vocab.encode(corpus.text)
    if n_unknown:
        log.warning("%d character(s) are not in the vocabulary and were mapped to the unknown symbol", n_unknown)
    return ids


def split_train_val(ids: Tensor, val_fraction: float) -> tuple[Tensor, Tensor | None]:
    """Split ids into the training head and the held-out validation tail (the last
    ``val_fraction`` of the corpus); no validation set when ``val_fraction`` is 0."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(len(ids) * val_fraction)
    if val_fraction > 0 and n_val < 2:
        raise DataError(f"the corpus ({len(ids)} chars) is too small for a validation fraction of {val_fraction}")
    if len(ids) - n_val < 2:
        raise DataError(f"the corpus ({len(ids)} chars) is too small to train on")
    if n_val == 0:
        return ids, None
    return ids[:-n_val], ids[-n_val:]


def num_chunks(n: int, batch_size: int, seq_len: int) -> int:
    """How many (T, B) chunks :func:`truncated_bptt_streams` yields for ``n`` ids."""
    L = (n - 1) // batch_size  # steps per stream
    return -(-L // seq_len)


def truncated_bptt_streams(ids: Tensor, batch_size: int, seq_len: int, start: int = 0
                           ) -> Iterator[tuple[Tensor, Tensor]]:
    """The corpus as ``batch_size`` parallel streams, read ``seq_len`` steps at a time.

    Stream b is ids[b·L : (b+1)·L + 1] with L = (N − 1) // B, so the streams are
    contiguous, do not overlap and cover the corpus except for the last (N − 1) mod B ids.
    Yields (input, target), both (T, B) int64, target[t] = input[t + 1] along each stream;
    the last chunk may be shorter than ``seq_len``. ``start`` skips that many chunks (resume).
    A model carries its state from one chunk to the next (truncated BPTT).
    """
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    L = (len(ids) - 1) // batch_size
    if L < 1:
        raise DataError(f"{len(ids)} characters are too few for {batch_size} parallel streams")
    streams = torch.stack([ids[b * L: b * L + L + 1] for b in range(batch_size)], 1)  # (L+1, B)
    for i in range(start * seq_len, L, seq_len):
        chunk = streams[i: min(i + seq_len, L) + 1].long()  # (T+1, B)
        yield chunk[:-1], chunk[1:]
