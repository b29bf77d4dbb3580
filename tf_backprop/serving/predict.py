"""Batch prediction from a CSV with an export (`tf_backprop.export`).

Feature columns are matched by header name, other columns are copied through (with a warning), and the
CSV is streamed in batches through `data.csv_table`, the reader training uses, so memory stays
flat whatever the file's size.  The input may be a glob pattern of shards with the same header
(`data.shards`), read in sorted order into one output with one header.  The output CSV is the
input's columns followed by the prediction columns.  Its location is checked before anything is
scored: an existing file is refused unless `overwrite` (as export does), a folder always; the
file is written to a temporary sibling and renamed into place, so an existing output file is
replaced only by a complete one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import operator
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO

import numpy as np
from absl import logging

from tf_backprop import data as data_lib
from tf_backprop import files, names
from tf_backprop.data import checks, csv_table, shards
from tf_backprop.serving.export import SERVING_SIGNATURE
from tf_backprop.serving.served import ServedModel

PREDICT_BATCH_SIZE = names.PREDICT_BATCH_SIZE  # CSV rows per call of the serving signature
_MAX_LISTED = 10  # column names listed in one message


def prediction_columns(served: ServedModel) -> list[str]:
    """Column names predict_csv appends, e.g. predicted_y, or predicted_label, probability_cat, ..."""
    target = served.target_name
    if served.task == "regression":
        k = served.metadata["signatures"][SERVING_SIGNATURE]["outputs"]["predictions"]["shape"][-1]
        return [f"predicted_{target}"] if k == 1 else [f"predicted_{target}_{i + 1}" for i in range(k)]
    shown = served.class_names[1:] if served.task == "binary" else served.class_names
    return [f"predicted_{target}"] + [f"probability_{name}" for name in shown]


def _prediction_cells(served: ServedModel, outputs: dict[str, np.ndarray]) -> list[list[str]]:
    """The signature's outputs for m rows as m lists of CSV cells (float32 round-trips with %.9g)."""
    if served.task == "regression":
        values = outputs["predictions"]  # [m, k]
        return [[f"{v:.9g}" for v in row] for row in values.tolist()]
    names = np.asarray(served.class_names, dtype=object)[outputs["class_ids"]]  # [m]
    probabilities = outputs["probabilities"]  # [m, k]; binary: [m, 1] = P(class_names[1])
    return [[name] + [f"{p:.9g}" for p in row] for name, row in zip(names.tolist(), probabilities.tolist())]


# --- CSV prediction -----------------------------------------------------------------------------


@dataclasses.dataclass
class _Columns:
    """Where the model's features sit in a CSV's header."""

    path: str
    header: list[str]
    header_line: int
    indices: list[int]  # indices[i]: the field holding feature i

    def where(self, line: int, field: int) -> str:
        """'file:line:col (column "name")', col 1-based as in editors."""
        return f'{self.path}:{line}:{field + 1} (column "{self.header[field]}")'


def _quoted(names: list[str]) -> str:
    shown = ", ".join(f'"{name}"' for name in names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _match_columns(
    served: ServedModel, path: str, header_line: int, header: list[str], warn: Callable[[str], None]
) -> _Columns:
    """Feature indices by header name; DataError for missing or clashing columns.

    `header` comes from csv_table.read_header, which strips the names and rejects duplicate
    ones (empty ones are copied through).
    """
    missing = [name for name in served.feature_names if name not in header]
    if missing:
        raise data_lib.DataError(
            f"{path}:{header_line}: missing column(s) {_quoted(missing)} that the model needs "
            f"(its features: {_quoted(served.feature_names)}){csv_table.separator_hint(header)}"
        )
    clashing = [name for name in prediction_columns(served) if name in header]
    if clashing:
        raise data_lib.DataError(
            f"{path}:{header_line}: column(s) {_quoted(clashing)} would be written as predictions; "
            f"rename or drop them"
        )
    extra = [name for name in header if name not in served.feature_names]
    if extra:
        warn(f"{path}: copying column(s) {_quoted(extra)} through unchanged (not features of the model)")
    return _Columns(path, header, header_line, [header.index(name) for name in served.feature_names])


def _parse_batch(columns: _Columns, lines: list[int], rows: list[list[str]]) -> np.ndarray:
    """The feature cells of `rows` as float32 [m, n]; DataError naming the first bad cell."""
    csv_table.check_widths(columns.path, len(columns.header), lines, rows)
    try:
        cells = list(map(operator.itemgetter(*columns.indices), rows))  # a tuple per row (one feature: a str)
        x = np.array(cells, dtype=np.float64).reshape(len(rows), len(columns.indices))  # [m, n]
    except ValueError:
        x = None
    if x is not None and np.all(np.abs(x) <= checks.FLOAT32_MAX):  # also False for nan
        return x.astype(np.float32)
    for line, row in zip(lines, rows):  # in file order, so the error names the first bad cell
        for j in sorted(columns.indices):
            _check_cell(columns.where(line, j), row[j])
    # Every cell passed float(): NumPy's parser was stricter than Python's (it should not be).
    return np.array([[float(row[j]) for j in columns.indices] for row in rows], dtype=np.float32)


def _check_cell(where: str, cell: str) -> None:
    """DataError unless the cell is a finite number within float32 range."""
    text = cell.strip()
    if not text:
        raise data_lib.DataError(f"{where}: expected a number, got an empty cell")
    try:
        value = float(text)
    except ValueError:
        raise data_lib.DataError(f'{where}: expected a number, got "{text[:40]}"') from None
    if not abs(value) <= checks.FLOAT32_MAX:  # nan, inf, or inf once cast to float32
        raise data_lib.DataError(f'{where}: expected a finite float32 number, got "{text[:40]}"')


def _batches(
    records: Iterator[tuple[int, list[str]]], size: int
) -> Iterator[tuple[list[int], list[list[str]]]]:
    """(lines, rows) in groups of at most `size` records."""
    lines, rows = [], []
    for line, row in records:
        lines.append(line)
        rows.append(row)
        if len(rows) == size:
            yield lines, rows
            lines, rows = [], []
    if rows:
        yield lines, rows


class OutputError(ValueError):
    """The output path may not be written: a folder, or an existing file without overwrite."""


def check_output(output: str, overwrite: bool = False) -> None:
    """OutputError unless `output` ("-": stdout) may be written as a new (or, with overwrite,
    replaced) file."""
    refusal = None if output == "-" else files.output_refusal(output, overwrite)
    if refusal == files.FOLDER:
        raise OutputError(f"{output}: is a folder; give the path of the CSV file to write")
    if refusal == files.EXISTS:
        raise OutputError(f"{output}: already exists; pass overwrite=True (--overwrite) to replace it")


def _check_not_an_input(output: str, paths: list[str]) -> None:
    """OutputError when `output` is one of the input files (by any name, a link's too): even
    with overwrite, the user's data would be replaced by its predictions."""
    if output == "-" or not os.path.exists(output):
        return
    for path in paths:
        if path != csv_table.STDIN and os.path.samefile(output, path):
            raise OutputError(f"{output}: is the input file {path}; give another path to write")


@contextlib.contextmanager
def _atomic_output(output: str, overwrite: bool) -> Iterator[IO[str]]:
    """A text handle for `output` ("-": stdout); a file appears only once complete."""
    if output == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = os.path.abspath(os.path.expanduser(output))
    with contextlib.ExitStack() as stack:
        try:
            handle = stack.enter_context(
                files.atomic_text(path, overwrite=overwrite, compress=shards.is_gzip(path))
            )
        except OSError as error:
            files.unless_out_of_room(error, output)
            raise data_lib.DataError(f"{output}: cannot write the file ({error.strerror or error})") from None
        yield handle  # without overwrite, a file that appeared meanwhile: FileExistsError here


def predict_csv(
    served: ServedModel,
    input_path: str,
    output: str = "-",
    *,
    batch_size: int = PREDICT_BATCH_SIZE,
    warn: Callable[[str], None] = logging.warning,
    overwrite: bool = False,
) -> int:
    """Appends the model's predictions to every row of a CSV; returns the number of rows.

    Features are matched by header name (any order); other columns are copied unchanged and
    reported once through `warn`, as is an input of no data rows.  Rows are read, predicted
    and written `batch_size` at a time.  `output` "-" is stdout; a file is written to a
    temporary sibling and renamed at the end, so a failure never leaves a half-written output.
    An existing output file is replaced only with `overwrite`.

    Raises OutputError before reading anything when `output` is a folder, or exists and
    overwrite is False; data.DataError (one line naming file, line and column) for a missing
    column, a ragged row or a cell that is not a finite number, or an output folder that
    cannot be written.  No output file is created then.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    check_output(output, overwrite)
    paths = [input_path] if input_path == csv_table.STDIN else shards.expand(input_path)
    _check_not_an_input(output, paths)
    try:
        return _predict_stream(served, paths, output, batch_size, warn, overwrite)
    except FileExistsError:  # appeared while we were scoring
        raise OutputError(
            f"{output}: appeared while predicting; pass overwrite=True (--overwrite) to replace it"
        ) from None


def _predict_stream(
    served: ServedModel,
    paths: list[str],
    output: str,
    batch_size: int,
    warn: Callable[[str], None],
    overwrite: bool,
) -> int:
    """predict_csv's work over its input's shards, once the output location is checked."""
    name = "<stdin>" if paths[0] == csv_table.STDIN else paths[0]
    with csv_table.open_input(paths[0]) as source, _atomic_output(output, overwrite) as sink:
        records = csv_table.records(name, source)  # streamed: read only as batches are pulled
        first = next(records, None)
        header_line, header = csv_table.read_header(name, iter([first] if first else []), allow_empty=True)
        columns = _match_columns(served, name, header_line, header, warn)
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(first[1] + prediction_columns(served))  # the names as written: copied unchanged
        count = 0
        for shard, lines, rows in _shard_batches(columns, records, paths[1:], batch_size):
            outputs = served.predict(_parse_batch(shard, lines, rows))
            _check_finite_predictions(shard.path, lines, outputs)
            cells = _prediction_cells(served, outputs)
            writer.writerows(row + predicted for row, predicted in zip(rows, cells))
            count += len(rows)
    if not count:  # a header alone: the output is its header too; say so rather than exit silently
        inputs = ", ".join(paths) if len(paths) < 4 else f"{name}, ..."
        warn(f"{inputs}: no data rows; the output holds the header only")
    logging.info("predicted %d rows of %s with %s", count, ", ".join(paths), served.path)
    return count


class PredictionError(RuntimeError):
    """The model's prediction for a row is not finite (its features far outside the data's range)."""


def _check_finite_predictions(path: str, lines: list[int], outputs: dict[str, np.ndarray]) -> None:
    """PredictionError naming the first row whose prediction overflowed: `inf` in the CSV,
    with exit 0, said nothing of it (3e38 in a feature is finite, its prediction not)."""
    for name in ("predictions", "probabilities"):
        values = outputs.get(name)
        if values is None:
            continue
        bad = ~np.all(np.isfinite(np.asarray(values, np.float64)), axis=-1)
        if bad.any():
            row = int(np.argmax(bad))
            raise PredictionError(
                f"{path}:{lines[row]}: the model's prediction is {values[row].tolist()}, not finite: the "
                "row's features are far outside the range the model was trained on"
            )


def _shard_batches(
    columns: _Columns, records: Iterator[tuple[int, list[str]]], more: list[str], size: int
) -> Iterator[tuple[_Columns, list[int], list[list[str]]]]:
    """(columns, lines, rows) batches of the first shard's records, then of each further shard,
    whose header must be the first one's (a batch never spans two shards)."""
    for lines, rows in _batches(records, size):
        yield columns, lines, rows
    for path in more:
        with csv_table.open_input(path) as source:
            records = csv_table.records(path, source)
            header_line, header = csv_table.read_header(path, records, allow_empty=True)
            csv_table.check_same_header(columns.path, columns.header, path, header_line, header)
            shard = dataclasses.replace(columns, path=path, header_line=header_line)
            for lines, rows in _batches(records, size):
                yield shard, lines, rows
