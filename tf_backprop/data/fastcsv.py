"""Fast CSV parsing: a shard's data lines decoded by TensorFlow's C++ CSV decoder, chunks in parallel.

`batches(path, ...)` reads the file (through gzip for .gz) in chunks of whole lines, checks each
chunk for what the fast path would read differently from `csv_table` — a lone carriage return
(TensorFlow's line readers drop every \\r), bytes that are not UTF-8, hexadecimal numbers
(`0x10`, which C's strtod accepts and Python's float does not), Unicode whitespace Python
strips and C does not — and parses it with `tf.io.decode_csv` (features float64, the target as
text) on a pool of threads.  Anything it cannot take (such a chunk, a cell decode_csv rejects,
a quoted field spanning lines) raises `NeedsExactReader`: the caller then reads the shard with
the exact Python reader, which either reports the error as the in-memory loader does or parses
the shard itself.

Target cells are classified as numbers with Python's float() syntax (a regular expression:
digits with underscores, inf, nan), so a column's task is decided as `csv_source` decides it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import re
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from tf_backprop.data import shards

CHUNK_BYTES = 4 << 20  # bytes read and parsed at a time (~20k rows of 20 numbers)
PARSE_THREADS = 2
_DIGITS = r"[0-9](?:_?[0-9])*"
# What Python's float() accepts, stripped: [+-] digits[.digits][e[+-]digits], .digits, inf, nan.
NUMBER = (
    rf"[+-]?(?:(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?|(?i:inf|infinity|nan))"
)
# Whitespace that str.strip() and float() drop but C's isspace does not (besides \x1c-\x1f).
_UNICODE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_ASCII_SEPARATORS = (b"\x1c", b"\x1d", b"\x1e", b"\x1f")
_READ_ERRORS = (OSError, EOFError, zlib.error)


class NeedsExactReader(Exception):
    """The shard holds something only the exact reader reads right (or can report)."""


@dataclasses.dataclass
class Batch:
    """Consecutive data rows of a shard, parsed.

    lines [m] int64 (each row's 1-based line), x [m, n] float64 (every column but the target),
    cells: the target cells, stripped (text), numeric [m] (float() would take the cell), value
    [m] float64 (the number, NaN where not numeric), labels (the batch's distinct cells) and
    index [m] int32 (each row's cell in labels).
    """

    lines: np.ndarray
    x: np.ndarray
    cells: np.ndarray | list[str]
    numeric: np.ndarray
    value: np.ndarray
    labels: list[str]
    index: np.ndarray

    def cell(self, i: int) -> str:
        cell = self.cells[i]
        return cell.decode("utf-8") if isinstance(cell, bytes) else cell


def batches(
    path: str, header_line: int, n_fields: int, target: int, digest: shards.Digest | None = None
) -> Iterator[Batch]:
    """The data rows after line `header_line`, in file order; NeedsExactReader when the fast
    path cannot take the shard (raised before or after some batches were yielded).  `digest`,
    if given, is fed every byte read: complete once the batches are exhausted."""
    parse = _parser(n_fields, target)
    with concurrent.futures.ThreadPoolExecutor(PARSE_THREADS) as pool:
        pending = collections.deque()
        for chunk, first_line in _chunks(path, header_line, digest):
            pending.append(pool.submit(parse, tf.constant(chunk), tf.constant(first_line, tf.int64)))
            if len(pending) > PARSE_THREADS:
                yield _batch(pending.popleft())
        while pending:
            yield _batch(pending.popleft())


def _batch(future: concurrent.futures.Future) -> Batch:
    try:
        lines, x, cells, numeric, value, labels, index = future.result()
    except tf.errors.OpError as error:  # a cell decode_csv rejects, a ragged or multi-line record
        raise NeedsExactReader(error.message.splitlines()[0]) from None
    if not np.isfinite(x.numpy()).all():  # nan, inf: the exact reader names the cell
        raise NeedsExactReader("a feature that is not a finite number")
    return Batch(
        lines.numpy(),
        x.numpy(),
        cells.numpy(),
        numeric.numpy(),
        value.numpy(),
        [label.decode("utf-8") for label in labels.numpy()],
        index.numpy(),
    )


def _chunks(path: str, header_line: int, digest: shards.Digest | None) -> Iterator[tuple[bytes, int]]:
    """(bytes of whole lines, the first one's number) after the header, checked by `_check`."""
    try:
        with shards.open_binary(path) as handle:
            data, line = b"", 1
            while True:
                block = handle.read(CHUNK_BYTES)
                if digest is not None:
                    digest.update(block)
                data += block
                while line <= header_line and (end := data.find(b"\n")) >= 0:  # the header and above
                    if b"\r" in data[: max(end - 1, 0)]:
                        raise NeedsExactReader("a carriage return that ends a line on its own")
                    data, line = data[end + 1 :], line + 1
                if not block and line <= header_line and b"\r" in data:  # no \n at all: lone \r ends?
                    raise NeedsExactReader("a carriage return that ends a line on its own")
                cut = data.rfind(b"\n") + 1 if block else len(data)
                if line > header_line and cut:
                    chunk, data = data[:cut], data[cut:]
                    chunk = _check(chunk if chunk.endswith(b"\n") else chunk + b"\n")
                    yield chunk, line
                    line += chunk.count(b"\n")
                if not block:
                    return
    except _READ_ERRORS as error:
        raise NeedsExactReader(f"cannot read the file ({error})") from None


def _check(chunk: bytes) -> bytes:
    """The chunk with \\r\\n line ends as \\n; NeedsExactReader for what decode_csv would read
    differently from csv_table and float()."""
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n")
        if b"\r" in chunk:
            raise NeedsExactReader("a carriage return that ends a line on its own")
    if (b"x" in chunk and b"0x" in chunk) or (b"X" in chunk and b"0X" in chunk):
        raise NeedsExactReader("a hexadecimal number")
    if any(separator in chunk for separator in _ASCII_SEPARATORS):
        raise NeedsExactReader("an ASCII separator character")
    if not chunk.isascii():
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise NeedsExactReader("bytes that are not UTF-8") from None
        if _UNICODE_SPACE.search(text):
            raise NeedsExactReader("Unicode whitespace")
    return chunk


@functools.lru_cache(maxsize=8)
def _parser(n_fields: int, target: int):
    """The compiled parse of one chunk for rows of n_fields fields, the target at `target`."""
    defaults = [tf.constant([], tf.float64)] * n_fields
    defaults[target] = tf.constant([], tf.string)  # required: an empty cell is an error

    @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64)])
    def parse(chunk, first_line):
        lines = tf.strings.split(chunk, "\n")[:-1]  # the chunk ends with \n
        numbers = first_line + tf.range(tf.size(lines, out_type=tf.int64))
        keep = tf.strings.length(tf.strings.strip(lines)) > 0  # blank lines are skipped
        lines, numbers = tf.boolean_mask(lines, keep), tf.boolean_mask(numbers, keep)
        fields = tf.io.decode_csv(lines, defaults)
        x = tf.stack([f for j, f in enumerate(fields) if j != target], axis=1)  # [m, n]
        cells = tf.strings.strip(fields[target])
        numeric = tf.strings.regex_full_match(cells, NUMBER)
        digits = tf.where(numeric, tf.strings.regex_replace(cells, "_", ""), "0")
        value = tf.where(numeric, tf.strings.to_number(digits, tf.float64), np.nan)
        labels, index = tf.unique(cells)
        return numbers, x, cells, numeric, value, labels, index

    return parse
