"""Text corpora for character-level models: reading, vocabulary, truncated-BPTT streams.

A corpus is a list of UTF-8 files (or stdin), read strictly, with line endings normalised
to ``\\n`` and a leading byte-order mark removed, then concatenated in sorted path order.
With no paths the corpus is the Python standard library's own ``.py`` sources (tests and
site-packages excluded): every machine that runs rnnkit has it, so nothing is downloaded.

:func:`read_corpus` holds the whole text in memory. :func:`scan_corpus` reads the same
corpus as a stream of chunks, twice (count, then encode into an id file that
:func:`memory_map_ids` maps), so a corpus larger than memory can be trained on.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import json
import logging
import os
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

T = TypeVar("T")

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
    with _open(path) as f:
        raw = _read(f, -1, str(path))
    return _decode(raw, str(path))


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror or e}") from None


def _read(f: BinaryIO, size: int, name: str) -> bytes:
    try:
        return f.read(size)
    except OSError as e:
        raise DataError(f"cannot read data file {name}: {e.strerror or e}") from None


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


def _corpus_inputs(paths: Sequence[str | os.PathLike] | None, glob: str | None
                   ) -> Iterator[tuple[Path | str, bool]]:
    """The inputs of a corpus in reading order, as (path or ``"-"``, skippable): a skippable
    file (inside a directory, or of the default corpus) that is not UTF-8 text is skipped with
    a warning, the others are an error. Directories are walked when their turn comes."""
    if not paths:
        for path in default_corpus_files():
            yield path, True
        return
    for p in paths:
        if str(p) == "-":
            yield "-", False
            continue
        path = Path(p)
        if path.is_dir():
            matched = _walk(path, glob)
            if not matched:
                raise DataError(f"data directory {path} has no files" + (f" matching {glob!r}" if glob else ""))
            for f in matched:
                yield f, True
        else:
            yield path, False


def _read_inputs(paths: Sequence[str | os.PathLike] | None, glob: str | None, read: Callable[[Path | str], T],
                 skipped: list[str]) -> Iterator[tuple[str, T]]:
    """(name, read(input)) for each input of the corpus in reading order. A DataError from a
    skippable input (see :func:`_corpus_inputs`) skips it with a warning and appends its name
    to ``skipped``; from any other input it is raised."""
    for source, skippable in _corpus_inputs(paths, glob):
        try:
            value = read(source)
        except DataError as e:
            if not skippable:
                raise
            log.warning("skipping %s", e)
            skipped.append(str(source))
            continue
        yield str(source), value
    if skipped:
        log.warning("skipped %d file(s) that are not UTF-8 text", len(skipped))


def _describe_inputs(paths: Sequence[str | os.PathLike] | None) -> str:
    return ", ".join(str(p) for p in paths) if paths else "the default corpus (Python standard library sources)"


def _empty_corpus(paths: Sequence[str | os.PathLike] | None, n_files: int) -> DataError:
    return DataError(f"the corpus is empty ({_describe_inputs(paths)}: {n_files} file(s), no characters)")


def read_corpus(paths: Sequence[str | os.PathLike] | None = None, glob: str | None = None) -> Corpus:
    """Read a corpus from files, directories (recursive) and ``"-"`` (stdin).

    Args:
        paths: files or directories; empty/None reads the default corpus (the standard
            library's ``.py`` sources).
        glob: file-name pattern (``"*.py"``) a file inside a directory must match; files
            named explicitly are always read.

    A named file that is not UTF-8 text raises :class:`DataError`; inside a directory such
    files are skipped with a warning and listed in ``Corpus.skipped``. An empty corpus
    raises :class:`DataError`. The whole text is held in memory; :func:`scan_corpus` reads
    the same corpus as a stream.
    """
    def read(source: Path | str) -> str:
        return _decode(sys.stdin.buffer.read(), "<stdin>") if source == "-" else _read_file(source)

    parts: list[str] = []
    files: list[str] = []
    skipped: list[str] = []
    for name, part in _read_inputs(paths, glob, read, skipped):
        files.append(name)
        parts.append(part)
    text = "".join(parts)
    if not text:
        raise _empty_corpus(paths, len(files))
    return Corpus(text, files, skipped)


#: characters per chunk when counting and encoding a corpus (bounds the temporaries' memory)
CHUNK_CHARS = 1 << 20


def _codepoints(text: str) -> np.ndarray:
    """The code points of ``text``, (N,): uint8 when they are all below 256 (CPython then
    stores 1 byte per character and encoding to Latin-1 is a copy), else uint32."""
    try:
        return np.frombuffer(text.encode("latin-1"), dtype=np.uint8)
    except UnicodeEncodeError:
        return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _add_counts(total: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``total + counts`` for two count vectors indexed by code point, of any lengths."""
    if len(counts) > len(total):
        total = np.pad(total, (0, len(counts) - len(total)))
    total[:len(counts)] += counts
    return total


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
        cps = np.array([ord(c) for c in chars], dtype=np.int64)
        # code point → id; the extra last entry, 0, is where every larger code point lands
        self._lookup = np.zeros(int(cps.max()) + 2, dtype=self.numpy_dtype)  # (max code point + 2,)
        self._lookup[cps] = np.arange(len(chars))

    @classmethod
    def build(cls, text: str, min_count: int = 1, chunk_chars: int = CHUNK_CHARS) -> Vocabulary:
        """The vocabulary of ``text``: characters seen at least ``min_count`` times. The text
        is counted ``chunk_chars`` characters at a time, so the extra memory is a few bytes
        per character of one chunk, not of the whole corpus."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counts = np.zeros(0, dtype=np.int64)  # (max code point + 1,)
        for start in range(0, len(text), chunk_chars):
            counts = _add_counts(counts, np.bincount(_codepoints(text[start:start + chunk_chars])))
        return cls.from_counts(counts, min_count)

    @classmethod
    def from_counts(cls, counts: np.ndarray, min_count: int = 1) -> Vocabulary:
        """The vocabulary of a corpus whose code point ``cp`` occurs ``counts[cp]`` times
        (the counts of :func:`scan_corpus`): characters seen at least ``min_count`` times."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
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

    @property
    def numpy_dtype(self) -> type[np.integer]:
        """:attr:`dtype` as a numpy type."""
        return np.uint8 if len(self) <= 256 else np.int16 if len(self) <= 32767 else np.int32

    def encode(self, text: str, chunk_chars: int = CHUNK_CHARS) -> tuple[Tensor, int]:
        """Ids of ``text`` as a (N,) tensor of :attr:`dtype`, and how many characters were
        not in the vocabulary (mapped to the unknown id 0). Encoded ``chunk_chars`` at a
        time into the compact output, so the temporaries are those of one chunk."""
        out = np.empty(len(text), dtype=self.numpy_dtype)  # (N,)
        n_unknown = 0
        for start in range(0, len(text), chunk_chars):
            ids, unknown = self._encode_chunk(text[start:start + chunk_chars])
            out[start:start + len(ids)] = ids
            n_unknown += unknown
        return torch.from_numpy(out), n_unknown

    def _encode_chunk(self, text: str) -> tuple[np.ndarray, int]:
        """Ids of ``text`` as a (C,) array of :attr:`numpy_dtype`, and the number of unknown
        characters (id 0 other than the unknown symbol itself)."""
        ids = np.take(self._lookup, _codepoints(text), mode="clip")  # (C,); beyond the table → 0
        return ids, int(np.count_nonzero(ids == 0)) - text.count(UNKNOWN)

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


#: bytes read at a time when a corpus is streamed: counting and encoding hold about 25 bytes
#: per byte of one chunk (the text, its code points, numpy's int64 indices), whatever the
#: size of the corpus; larger chunks are no faster
CHUNK_BYTES = 1 << 20


def _text_chunks(f: BinaryIO, name: str, chunk_bytes: int = CHUNK_BYTES,
                 spool: BinaryIO | None = None) -> Iterator[str]:
    """The text of one file read ``chunk_bytes`` at a time: pieces whose concatenation is
    ``_decode(whole file)``, with the same errors. ``spool`` gets a copy of the bytes read.

    The pieces are decoded by an incremental UTF-8 decoder, which keeps the bytes of a
    character split between two reads until the next one, and a trailing ``"\\r"`` is held
    back until the next piece shows whether a ``"\\n"`` follows it.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes read so far
    at_start = True  # no character yet: a byte-order mark may come
    held_cr = ""
    while True:
        raw = _read(f, chunk_bytes, name)
        if spool is not None:
            spool.write(raw)
        nul = raw.find(b"\x00")
        if nul >= 0:
            raise DataError(f"{name} looks binary (NUL byte at byte offset {offset + nul}); expected UTF-8 text")
        pending = len(decoder.getstate()[0])  # bytes of an unfinished character from the last read
        try:
            text = decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as e:
            bad = offset - pending + e.start
            # as for a whole file, a NUL byte anywhere makes it "binary" rather than "not UTF-8"
            nul = _find_nul(f, name, chunk_bytes)
            if nul >= 0:
                where = offset + len(raw) + nul
                raise DataError(f"{name} looks binary (NUL byte at byte offset {where}); expected UTF-8 text") from None
            raise DataError(f"{name} is not valid UTF-8 (byte offset {bad}: {e.reason})") from None
        offset += len(raw)
        if at_start and text:
            at_start = False
            if text[0] == "\ufeff":
                text = text[1:]
        text = held_cr + text
        held_cr = ""
        if raw and text.endswith("\r"):
            text, held_cr = text[:-1], "\r"
        if text:
            yield text.replace("\r\n", "\n").replace("\r", "\n")
        if not raw:
            return


def _find_nul(f: BinaryIO, name: str, chunk_bytes: int) -> int:
    """Offset of the first NUL byte in the rest of ``f`` from where it stands (-1: none)."""
    seen = 0
    while raw := _read(f, chunk_bytes, name):
        nul = raw.find(b"\x00")
        if nul >= 0:
            return seen + nul
        seen += len(raw)
    return -1


class CorpusStream:
    """A corpus read as a stream of text chunks, never whole (see :func:`scan_corpus`).

    It knows the files to read (those that were valid UTF-8 when counted), how many
    characters each holds, and how often each character occurs; :meth:`chunks` reads the
    text again. Stdin, which can be read only once, was copied to an anonymous temporary
    file (in ``$TMPDIR``) by the first reading; :meth:`close` removes it.
    """

    def __init__(self, files: list[str], file_chars: list[int], skipped: list[str], counts: np.ndarray,
                 spools: dict[int, BinaryIO], chunk_bytes: int):
        self.files, self.file_chars, self.skipped = files, file_chars, skipped
        self.counts = counts  # (max code point + 1,) int64
        self.chars = sum(file_chars)
        self.chunk_bytes = chunk_bytes
        self._spools = spools  # file index → the copy of stdin read there

    def describe(self) -> dict:
        """A JSON-able summary for the run directory's config.json (as :meth:`Corpus.describe`)."""
        return {"files": len(self.files), "chars": self.chars, "skipped": len(self.skipped)}

    def vocabulary(self, min_count: int = 1) -> Vocabulary:
        """The corpus vocabulary: the same as ``Vocabulary.build(text, min_count)``."""
        return Vocabulary.from_counts(self.counts, min_count)

    def chunks(self) -> Iterator[str]:
        """The text again, chunk by chunk; DataError if a file changed since it was counted."""
        for i, (name, expected) in enumerate(zip(self.files, self.file_chars)):
            if i in self._spools:
                spool = self._spools[i]
                spool.seek(0)
                opened, label = contextlib.nullcontext(spool), "<stdin>"
            else:
                opened, label = _open(Path(name)), name
            n = 0
            with opened as f:
                for text in _text_chunks(f, label, self.chunk_bytes):
                    n += len(text)
                    yield text
            if n != expected:
                raise DataError(f"{label} changed while the corpus was read: {expected} characters when "
                                f"counted, {n} when read again")

    def id_chunks(self, vocab: Vocabulary) -> Iterator[tuple[np.ndarray, int]]:
        """The ids of the text chunk by chunk, as (ids of the vocabulary's dtype, number of
        characters not in the vocabulary)."""
        for text in self.chunks():
            yield vocab._encode_chunk(text)

    def encode(self, vocab: Vocabulary) -> tuple[Tensor, int]:
        """The ids of the whole corpus in memory (as :meth:`Vocabulary.encode` of its text,
        without ever holding the text), and the number of unknown characters."""
        out = np.empty(self.chars, dtype=vocab.numpy_dtype)  # (N,)
        n, n_unknown = 0, 0
        for ids, unknown in self.id_chunks(vocab):
            out[n:n + len(ids)] = ids
            n += len(ids)
            n_unknown += unknown
        return torch.from_numpy(out), n_unknown

    def write_ids(self, vocab: Vocabulary, f: BinaryIO) -> int:
        """Write the ids of the corpus to the binary file ``f``, raw little-endian integers of
        the vocabulary's dtype (what :func:`memory_map_ids` reads); returns the number of
        characters that are not in the vocabulary (written as the unknown id 0)."""
        n_unknown = 0
        for ids, unknown in self.id_chunks(vocab):
            f.write(ids.astype(ids.dtype.newbyteorder("<"), copy=False).data)
            n_unknown += unknown
        return n_unknown

    def close(self) -> None:
        """Remove the temporary copy of stdin, if any."""
        for spool in self._spools.values():
            spool.close()
        self._spools = {}

    def __enter__(self) -> CorpusStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scan_corpus(paths: Sequence[str | os.PathLike] | None = None, glob: str | None = None,
                chunk_bytes: int = CHUNK_BYTES) -> CorpusStream:
    """Read a corpus once as a stream, ``chunk_bytes`` at a time, counting its characters.

    The files, their order, the text and the errors are those of :func:`read_corpus` (an
    incremental decoder handles characters and ``\\r\\n`` split between two reads), but only
    a chunk is in memory at a time. Stdin is copied to a temporary file on the way, so
    that :meth:`CorpusStream.chunks` can read it again.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    files: list[str] = []
    file_chars: list[int] = []
    skipped: list[str] = []
    counts = np.zeros(0, dtype=np.int64)  # (max code point + 1,)
    spools: dict[int, BinaryIO] = {}
    created: list[BinaryIO] = []  # closed again if the scan fails

    def count(source: Path | str) -> tuple[np.ndarray, int, BinaryIO | None]:
        """One input's character counts and length (and the copy of stdin it made)."""
        file_counts, n = np.zeros(0, dtype=np.int64), 0
        if source == "-":
            spool = tempfile.TemporaryFile(prefix="rnnkit-stdin-")
            created.append(spool)
            opened, label = contextlib.nullcontext(sys.stdin.buffer), "<stdin>"
        else:
            spool, opened, label = None, _open(source), str(source)
        with opened as f:
            for text in _text_chunks(f, label, chunk_bytes, spool):
                n += len(text)
                file_counts = _add_counts(file_counts, np.bincount(_codepoints(text)))
        return file_counts, n, spool

    try:
        for name, (file_counts, n, spool) in _read_inputs(paths, glob, count, skipped):
            if spool is not None:
                spools[len(files)] = spool
            counts = _add_counts(counts, file_counts)
            files.append(name)
            file_chars.append(n)
        if not sum(file_chars):
            raise _empty_corpus(paths, len(files))
    except BaseException:
        for spool in created:
            spool.close()
        raise
    return CorpusStream(files, file_chars, skipped, counts, spools, chunk_bytes)


def memory_map_ids(path: str | os.PathLike, vocab: Vocabulary, n: int) -> Tensor:
    """The (N,) id tensor of an id file written by :meth:`CorpusStream.write_ids`, memory-mapped.

    Nothing is read up front: a page of the file is read when an id on it is first used,
    and it belongs to the page cache, which the kernel can reclaim. The mapping is private
    (copy-on-write) and the file is opened read-only, so it is never modified.
    DataError when the file is missing or does not hold ``n`` ids of the vocabulary's dtype.
    """
    path = Path(path)
    dtype = np.dtype(vocab.numpy_dtype).newbyteorder("<")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"id file {path} cannot be read: {e.strerror or e}") from None
    if size != n * dtype.itemsize:
        raise DataError(f"id file {path} has {size} bytes, expected {n} ids of {dtype.itemsize} byte(s)")
    # a little-endian dtype on a big-endian machine: torch.from_numpy refuses it by name
    return torch.from_numpy(np.memmap(path, dtype=dtype, mode="c", shape=(n,)))


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
    if ids.stride(0) != 1:
        ids = ids.contiguous()
    # the streams as a view: streams[t, b] = ids[b·L + t]; nothing is copied but the chunk, so
    # memory-mapped ids are read a chunk at a time
    streams = ids.as_strided((L + 1, batch_size), (1, L))  # (L+1, B)
    for i in range(start * seq_len, L, seq_len):
        chunk = streams[i: min(i + seq_len, L) + 1].to(torch.int64, memory_format=torch.contiguous_format)  # (T+1, B)
        yield chunk[:-1], chunk[1:]
