"""CSV source: a CSV table as raw features, a summary of its target, and targets encoded for the task.

`load_csv` returns a `RawSource`: features float64 [m, n] in original units, and targets
encoded for the task that the target column, the task flag and the loss resolve to.
"""

from __future__ import annotations

import decimal
import math

import numpy as np

from tf_backprop import text
from tf_backprop.data import fingerprint
from tf_backprop.data.containers import RawSource
from tf_backprop.data.csv_table import Table, read_source, separator_hint
from tf_backprop.data.errors import DataError
from tf_backprop.data.tasks import CLASSIFICATION, TargetSummary, infer_task, is_number


def load_csv(path: str, target: str | None, task: str, loss: str | None) -> RawSource:
    """Reads a CSV source (one file, or every shard of a glob pattern), resolves its task and
    encodes its targets."""
    table = read_source(path)
    j = target_column(table, target)
    features = [c for c in range(len(table.header)) if c != j]
    x = parse_features(table, features)
    summary, parsed, cells = _summarize_target(table, j)
    resolved = infer_task(task, loss, summary)
    classes = summary.class_names if resolved in CLASSIFICATION else None
    y = _encode_targets(resolved, summary, parsed, cells)
    names = [table.header[c] for c in features]
    identity = fingerprint.of_csv(table.size, table.sha256, len(table.rows))
    return RawSource(x, y, resolved, names, table.header[j], classes, identity)


def target_column(table: Table, target: str | None) -> int:
    """The target's field index; DataError if the flag is missing or names no column."""
    columns = ", ".join(table.header)
    if not target:
        raise DataError(
            f"{table.path}: a CSV source needs the flag 'target' naming the label column; columns: {columns}"
        )
    if target not in table.header:
        raise DataError(
            f"{table.path}:{table.header_line}: target column {text.quote(target)} is not in the header; "
            f"columns: {columns}{separator_hint(table.header)}"
        )
    if len(table.header) < 2:
        raise DataError(
            f"{table.path}:{table.header_line}: no feature columns besides the target {text.quote(target)}"
        )
    return table.header.index(target)


def parse_features(table: Table, columns: list[int]) -> np.ndarray:
    """The feature columns as float64 [m, n]; DataError at the first cell that is not a finite number."""
    try:
        x = np.array([[float(row[j]) for j in columns] for row in table.rows], dtype=np.float64)
    except ValueError:
        x = None
    if x is None or not np.all(np.isfinite(x)):
        # Rescan in file order, so the error names the first bad cell a reader would meet.
        for i in range(len(table.rows)):
            for j in columns:
                _parse_number(table, i, j)
    return x


def _parse_number(table: Table, i: int, j: int) -> float:
    """Cell (row i, field j) as a finite float; DataError naming the cell otherwise."""
    cell = table.rows[i][j].strip()
    where = table.cell(i, j)
    if not cell:
        raise DataError(f"{where}: expected a number, got an empty cell")
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where}: expected a number, got {text.quote(cell)}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: expected a finite number, got {text.quote(cell)}")
    return value


def target_cells(table: Table, j: int) -> list[str]:
    """The target column's cells, stripped; DataError at the first empty one."""
    cells = [row[j].strip() for row in table.rows]
    for i, cell in enumerate(cells):
        if not cell:
            raise DataError(f"{table.cell(i, j)}: expected a target value, got an empty cell")
    return cells


def _summarize_target(table: Table, j: int) -> tuple[TargetSummary, np.ndarray | list[str], list[str]]:
    """Classifies the target column as real / integer / labels; returns it parsed accordingly,
    and its cells."""
    cells = target_cells(table, j)
    first_text = next((i for i, cell in enumerate(cells) if not is_number(cell)), None)
    if first_text is not None:
        names = sorted(set(cells))
        return _summary(table, j, "labels", names, first_text, cells), cells, cells
    values = np.array([_parse_number(table, i, j) for i in range(len(cells))])  # finite, checked per cell
    non_integer = np.flatnonzero(values != np.round(values))
    if non_integer.size:
        return _summary(table, j, "real", None, int(non_integer[0]), cells), values, cells
    return _summary(table, j, "integer", integer_names(cells), None, cells), values, cells


def integer_names(cells) -> list[str]:
    """The classes of whole-number label cells, in numeric order (2 before 10, so labels
    0..K-1 keep their own ids)."""
    return sorted({integer_name(cell) for cell in cells}, key=int)


def _summary(
    table: Table, j: int, kind: str, names: list[str] | None, i: int | None, cells: list[str]
) -> TargetSummary:
    """A TargetSummary for column j, with row i (if any) as the example cell."""
    example_where = None if i is None else table.cell(i, j)
    example = None if i is None else text.quote(cells[i])
    return TargetSummary(kind, names, table.column_where(j), example_where, example)


def integer_name(cell: str) -> str:
    """'3', '3.0', '03', '3e0' -> '3': the class name of a whole-number label cell, exact at any
    size (in float64, 12345678901234567890 and 12345678901234567891 are one number)."""
    try:
        value = decimal.Decimal(cell.strip())
    except decimal.InvalidOperation:  # a form float() reads and Decimal does not
        return str(int(float(cell)))
    if value == value.to_integral_value():
        return str(int(value))
    return str(int(float(cell)))  # whole only once rounded to float64 (1.00000000000000000001)


def _encode_targets(task: str, summary: TargetSummary, parsed, cells: list[str]) -> np.ndarray:
    """Targets for the task: regression [m, 1] float64, classification [m] int64 ids into class_names."""
    if task == "regression":
        return np.asarray(parsed, dtype=np.float64)[:, None]
    index = {name: k for k, name in enumerate(summary.class_names)}
    if summary.kind != "labels":  # each distinct cell named once
        index = {cell: index[integer_name(cell)] for cell in set(cells)}
    return np.array([index[cell] for cell in cells], dtype=np.int64)
