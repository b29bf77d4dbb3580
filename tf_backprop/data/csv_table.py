"""CSV table: the one CSV reader, streaming (start line, fields) records for training and prediction.

A file whose name ends in .gz is read through gzip.  Bytes are decoded one line at a time, so a
byte that is not UTF-8 is reported with its line and file offset however deep into a stream it
sits; a quoted field may span lines, and each record carries the line where it starts.  Blank lines are skipped and a byte-order mark before
the header is dropped.  Training reads a whole `Table` (`read_source`: every shard of a glob
pattern, one after the other); predict pulls `records` in batches.

Bad input raises `DataError` naming the file and the line (and the column, for a header name).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

from tf_backprop import text
from tf_backprop.data import fingerprint, shards
from tf_backprop.data.errors import DataError

STDIN = "-"  # the path that `open_input` reads as standard input
# Text mode with newline="" (what csv needs) also ends a line at a lone \r; binary lines end
# only at \n, so they are split after every \r that no \n follows.
_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")

# What reading a damaged .gz file raises besides OSError (gzip.BadGzipFile is one).
_READ_ERRORS = (OSError, EOFError, zlib.error)

Record = tuple[int, list[str]]  # (the line where the record starts, its fields)


@dataclasses.dataclass
class Table:
    """A CSV file's header and data rows as text, with each row's 1-based line number.

    A table of several shards (`read_source`) has the first shard's path and header line, and
    names each row's own file in `files`.
    """

    path: str  # as the user gave it, for messages
    header: list[str]
    header_line: int
    rows: list[list[str]]
    lines: list[int]  # lines[i]: the file line where rows[i] starts
    files: list[str] | None = None  # files[i]: the shard holding rows[i] (None: all in `path`)
    source: str | None = None  # the glob pattern of several shards, for whole-column messages
    size: int = 0  # the file's length in bytes
    sha256: str = ""  # hex digest of the file's bytes, as read

    def cell(self, row: int, column: int) -> str:
        """'file:line:col (column "name")' for field `column` (0-based) of rows[row], in its own shard."""
        path = self.path if self.files is None else self.files[row]
        return f"{path}:{self.lines[row]}:{column + 1} (column {text.quote(self.header[column])})"

    def column_where(self, column: int) -> str:
        """'file (column "name")' for a whole column (the pattern, for several shards)."""
        return f"{self.source or self.path} (column {text.quote(self.header[column])})"


def read_table(path: str) -> Table:
    """Reads a whole CSV file with a header row; DataError for a missing/empty file or a ragged row."""
    with open_file(path) as handle:
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
    return Table(
        path,
        header,
        header_line,
        rows,
        lines,
        size=hashed.digest.size,
        sha256=hashed.digest.sha256.hexdigest(),
    )


class _Hashed:
    """A binary handle's lines, hashed (SHA-256) and counted as they are read."""

    def __init__(self, handle: IO[bytes]):
        self.handle, self.digest = handle, shards.Digest()

    def __iter__(self) -> Iterator[bytes]:
        for line in self.handle:
            self.digest.update(line)
            yield line


def read_source(path: str) -> Table:
    """Every shard `path` names (one file or a glob pattern's matches, sorted) as one Table.

    DataError as read_table's for each shard, in order, and naming the first shard whose header
    differs from the first one's.
    """
    paths = shards.expand(path)
    tables = [read_table(paths[0])]
    for shard in paths[1:]:
        tables.append(read_table(shard))
        check_same_header(tables[0].path, tables[0].header, shard, tables[-1].header_line, tables[-1].header)
    if len(tables) == 1:
        return tables[0]
    first = tables[0]
    files = [table.path for table in tables for _ in table.rows]
    rows = [row for table in tables for row in table.rows]
    lines = [line for table in tables for line in table.lines]
    identity = fingerprint.of_shards([t.size for t in tables], [t.sha256 for t in tables], len(rows))
    size, digest = identity["bytes"], identity["sha256"]
    return Table(first.path, first.header, first.header_line, rows, lines, files, path, size, digest)


def check_same_header(first: str, header: list[str], path: str, line: int, other: list[str]) -> None:
    """DataError naming `path` and `line` when its header is not the first shard's."""
    if other != header:
        names = ", ".join(map(text.quote, other))
        expected = ", ".join(map(text.quote, header))
        raise DataError(
            f"{path}:{line}: header {names} differs from {first}'s ({expected}); every shard needs "
            f"the same columns in the same order"
        )


@contextlib.contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """The CSV's bytes: standard input for "-", else the file; DataError if it cannot be opened."""
    if path == STDIN:
        yield sys.stdin.buffer
        return
    with open_file(path) as handle:
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
def open_file(path: str) -> Iterator[IO[bytes]]:
    """The file opened for binary reading (through gzip for .gz); DataError if it cannot be."""
    try:
        handle = shards.open_binary(path)
    except OSError as error:
        raise unreadable(path, error) from error
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
    except _READ_ERRORS as error:
        raise unreadable(path, error) from error


def _decode(path: str, line: bytes, number: int, offset: int) -> str:
    """One line's bytes (starting at file offset `offset`) as text; DataError if not UTF-8."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        at = offset + error.start
        raise DataError(
            f"{path}:{number}: not UTF-8 text ({error.reason} at byte {at} of the file)"
        ) from None


def _split_lone_cr(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Binary lines (ending at \\n) split after any lone \\r, as text mode with newline="" splits them."""
    for chunk in chunks:
        first_cr = chunk.find(b"\r")
        if first_cr < 0 or (first_cr == len(chunk) - 2 and chunk.endswith(b"\n")):  # none, or only \r\n
            yield chunk
        else:
            yield from (part for part in _LONE_CR.split(chunk) if part)


def unreadable(path: str, error: Exception) -> DataError:
    return DataError(f"{path}: cannot read the file ({getattr(error, 'strerror', None) or error})")


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


def separator_hint(header: list[str]) -> str:
    """' (the file seems to separate fields by ";": only commas do)' for a one-column header
    holding a ; or a tab, else ''."""
    if len(header) != 1:
        return ""
    found = next((s for s in (";", "\t", "|") if s in header[0]), None)
    name = {"\t": "tabs"}.get(found, text.quote(found) if found else "")
    return f" (the file seems to separate fields by {name}: only commas do)" if found else ""
