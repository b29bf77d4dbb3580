"""CSV table: reads a CSV file's header and rows as text, with the line where each row starts.

Bad input raises `DataError` naming the file and the line (and column, for a header name).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

from tf_backprop import text
from tf_backprop.data.errors import DataError


@dataclasses.dataclass
class Table:
    """A CSV file's header and data rows as text, with each row's 1-based line number."""

    path: str  # as the user gave it, for messages
    header: list[str]
    header_line: int
    rows: list[list[str]]
    lines: list[int]  # lines[i]: the file line where rows[i] starts

    def where(self, line: int, column: int) -> str:
        """'file:line:col (column "name")' for a cell; column is the 0-based field index."""
        return f"{self.path}:{line}:{column + 1} (column {text.quote(self.header[column])})"

    def column_where(self, column: int) -> str:
        """'file (column "name")' for a whole column."""
        return f"{self.path} (column {text.quote(self.header[column])})"


def read_table(path: str) -> Table:
    """Reads a CSV with a header row; DataError for a missing/empty file or a ragged row."""
    records = _read_records(path, _read_text(path))
    if not records:
        raise DataError(f"{path}: empty file; expected a header row, then data rows")
    (header_line, header), data = records[0], records[1:]
    header = [name.strip() for name in header]
    _check_header(path, header_line, header)
    if not data:
        raise DataError(f"{path}:{header_line}: no data rows after the header")
    for line, row in data:
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: expected {len(header)} fields as in the header, got {len(row)}")
    return Table(path, header, header_line, [row for _, row in data], [line for line, _ in data])


def _read_text(path: str) -> str:
    """The file's text; DataError if it cannot be read or is not UTF-8."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from e
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet exports put before the header.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # Decoding the whole file at once (not streamed) makes e.start a file offset, so the line is exact.
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _read_records(path: str, content: str) -> list[tuple[int, list[str]]]:
    """(start line, fields) of every non-blank record; DataError on malformed CSV."""
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    records, next_line = [], 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row) or len(row) > 1:
                records.append((next_line, row))
            next_line = reader.line_num + 1  # a quoted field may span several lines
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return records


def _check_header(path: str, line: int, header: list[str]) -> None:
    """DataError for an empty or duplicate column name."""
    first: dict[str, int] = {}
    for j, name in enumerate(header):
        if not name:
            raise DataError(f"{path}:{line}:{j + 1}: empty column name in the header")
        if name in first:
            raise DataError(
                f"{path}:{line}:{j + 1} (column {text.quote(name)}): duplicate column name, "
                f"also column {first[name] + 1}"
            )
        first[name] = j
