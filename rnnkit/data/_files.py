"""Reading text files with errors that name the file (and line) at fault."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError


def short(value, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for quoting input in error messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}…{text[-15:]} ({len(text)} characters)"


def split_lines(text: str) -> list[str]:
    """Lines split at ``\n``, ``\r\n`` or a lone ``\r`` only (unlike ``str.splitlines``,
    which also splits at form feeds, ``\x1c``–``\x1e``, U+0085, U+2028 and U+2029, characters
    that may well occur inside a field), so line numbers are those an editor shows."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_text(path: str | Path, allow_empty: bool = False) -> list[str]:
    """The lines of a UTF-8 text file (without line ends; a BOM is dropped, see
    :func:`split_lines`); DataError if it is missing, unreadable, not UTF-8 (naming the line
    of the first bad byte) or empty."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = len(split_lines(raw[: e.start].decode("utf-8-sig") + "?"))
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    if not text.strip() and not allow_empty:
        raise DataError(f"{path}: file is empty")
    return split_lines(text)
