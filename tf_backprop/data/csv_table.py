"""CSV table: the one CSV reader, streaming (start line, fields) records for training and prediction.

Bytes are decoded one line at a time, so a byte that is not UTF-8 is reported with its line
and file offset however deep into a stream it sits; a quoted field may span lines, and each
record carries the line where it starts.  Blank lines are skipped and a byte-order mark before
the header is dropped.  Training reads a whole `Table`; predict pulls `records` in batches.

Bad input raises `DataError` naming the file and the line (and the column, for a header name).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import hashlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

from tf_backprop import text
from tf_backprop.data.errors import DataError

STDIN = "-"  # the path that `open_input` reads as standard input
# Text mode with newline="" (what csv needs) also ends a line at a lone \r; binary lines end
# only at \n, so they are split after every \r that no \n follows.
_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")

Record = tuple[int, list[str]]  # (the line where the record starts, its fields)


@dataclasses.dataclass
class Table:
    """A CSV file's header and data rows as text, with each row's 1-based line number."""

    path: str  # as the user gave it, for messages
    header: list[str]
    header_line: int
    rows: list[list[str]]
    lines: list[int]  # lines[i]: the file line where rows[i] starts
    size: int = 0  # the file's length in bytes
    sha256: str = ""  # hex digest of the file's bytes, as read

    def where(self, line: int, column: int) -> str:
        """'file:line:col (column "name")' for a cell; column is the 0-based field index."""
        return f"{self.path}:{line}:{column + 1} (column {text.quote(self.header[column])})"

    def column_where(self, column: int) -> str:
        """'file (column "name")' for a whole column."""
        return f"{self.path} (column {text.quote(self.header[column])})"


def read_table(path: str) -> Table:
    """Reads a whole CSV file with a header row; DataError for a missing/empty file or a ragged row."""
    with _open_file(path) as handle:
        # Every record first (training needs them all anyway), so that a malformed or non-UTF-8
        # line anywhere is reported ahead of a bad header, as when the file was decoded whole.
        hashed = _Hashed(handle)
        every = iter(list(records(path, hashed)))
    header_line, header = read_header(path, every)
    data = list(every)
    if not data:
        raise DataError(f"{path}:{header_line}: no data rows after the header")
    lines, rows = [line for line, _ in data], [row for _, row in data]
    check_widths(path, len(header), lines, rows)
    return Table(path, header, header_line, rows, lines, hashed.size, hashed.digest.hexdigest())


class _Hashed:
    """A binary handle's lines, hashed (SHA-256) and counted as they are read."""

    def __init__(self, handle: IO[bytes]):
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self.handle:
            self.digest.update(line)
            self.size += len(line)
            yield line


@contextlib.contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """The CSV's bytes: standard input for "-", else the file; DataError if it cannot be opened."""
    if path == STDIN:
        yield sys.stdin.buffer
        return
    with _open_file(path) as handle:
        yield handle


def records(path: str, handle: Iterable[bytes]) -> Iterator[Record]:
    """(start line, fields) of every non-blank record, read from `handle` only as they are pulled.

    `path` names the file in messages.  DataError for malformed CSV, a failed read, or bytes
    that are not UTF-8.
    """
    reader = csv.reader(_text_lines(path, handle), strict=True)
    next_line = 1
    try:
        for row in reader:
            if len(row) > 1 or (row and row[0].strip()):  # skip blank lines
                yield next_line, row
            next_line = reader.line_num + 1  # a quoted field may span several lines
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None


def read_header(path: str, rows: Iterator[Record], allow_empty: bool = False) -> tuple[int, list[str]]:
    """Takes the first record as the header: (its line, names stripped of spaces).

    DataError if there is no record, or for a duplicate column name, or an empty one unless
    `allow_empty` (prediction copies such a column through, e.g. the unnamed index column
    pandas writes).
    """
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path}: empty file; expected a header row, then data rows")
    line, header = first[0], [name.strip() for name in first[1]]
    _check_header(path, line, header, allow_empty)
    return line, header


def check_widths(path: str, width: int, lines: Sequence[int], rows: Sequence[list[str]]) -> None:
    """DataError at the first row whose field count is not `width`, the header's."""
    if set(map(len, rows)) <= {width}:
        return
    line, row = next((line, row) for line, row in zip(lines, rows) if len(row) != width)
    raise DataError(f"{path}:{line}: expected {width} fields as in the header, got {len(row)}")


@contextlib.contextmanager
def _open_file(path: str) -> Iterator[IO[bytes]]:
    """The file opened for binary reading; DataError if it cannot be."""
    try:
        handle = open(os.path.expanduser(path), "rb")
    except OSError as error:
        raise _unreadable(path, error) from error
    with handle:
        yield handle


def _text_lines(path: str, handle: Iterable[bytes]) -> Iterator[str]:
    """The handle's lines decoded as UTF-8, endings kept; DataError naming a bad byte's line and offset."""
    number, offset = 0, 0  # the current line's 1-based number and the file offset of its first byte
    try:
        for line in _split_lone_cr(handle):
            number += 1
            # Drop the byte-order mark that spreadsheet exports put before the header.
            start = len(codecs.BOM_UTF8) if number == 1 and line.startswith(codecs.BOM_UTF8) else 0
            decoded = _decode(path, line[start:], number, offset + start)
            offset += len(line)
            yield decoded
    except OSError as error:
        raise _unreadable(path, error) from error


def _decode(path: str, line: bytes, number: int, offset: int) -> str:
    """One line's bytes (starting at file offset `offset`) as text; DataError if not UTF-8."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        at = offset + error.start
        raise DataError(f"{path}:{number}: not UTF-8 text ({error.reason} at byte {at})") from None


def _split_lone_cr(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Binary lines (ending at \\n) split after any lone \\r, as text mode with newline="" splits them."""
    for chunk in chunks:
        first_cr = chunk.find(b"\r")
        if first_cr < 0 or (first_cr == len(chunk) - 2 and chunk.endswith(b"\n")):  # none, or only \r\n
            yield chunk
        else:
            yield from (part for part in _LONE_CR.split(chunk) if part)


def _unreadable(path: str, error: OSError) -> DataError:
    return DataError(f"{path}: cannot read the file ({error.strerror or error})")


def _check_header(path: str, line: int, header: list[str], allow_empty: bool = False) -> None:
    """DataError for a duplicate column name, or an empty one unless allow_empty."""
    first: dict[str, int] = {}
    for j, name in enumerate(header):
        if not name and allow_empty:
            continue
        if not name:
            raise DataError(f"{path}:{line}:{j + 1}: empty column name in the header")
        if name in first:
            raise DataError(
                f"{path}:{line}:{j + 1} (column {text.quote(name)}): duplicate column name, "
                f"also column {first[name] + 1}"
            )
        first[name] = j
