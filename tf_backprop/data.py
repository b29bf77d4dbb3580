"""Data: synthetic tasks, CSV loading, task inference, splits and standardization.

`load(source, ...)` returns a `Datasets`: train / validation / test `Split`s of standardized
features x [m, n] and targets y, plus the `Preprocessing` (statistics of the train split only)
that export and predict need to treat new raw inputs the same way.

Targets by task:

* regression: y [m, k] float64, standardized with the train split's mean and std;
* binary:     y [m, 1] float64 in {0, 1} (the id of `class_names[1]` is 1);
* multiclass: y [m] int32 class ids, indices into `class_names`.

Bad input raises `DataError`, whose message is one line naming the file, and the line and
column where they are known.  This module needs NumPy only, not TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os

import numpy as np
from absl import logging

TASKS = ("regression", "binary", "multiclass")
SYNTHETIC = ("regression", "xor", "spirals", "random")
# The task each supported loss implies.
LOSS_TASKS = {
    "mse": "regression",
    "half_mse": "regression",
    "binary_crossentropy": "binary",
    "categorical_crossentropy": "multiclass",
}
DEFAULT_LOSSES = {
    "regression": "mse",
    "binary": "binary_crossentropy",
    "multiclass": "categorical_crossentropy",
}
CLASSIFICATION = ("binary", "multiclass")
TARGET_KINDS = ("real", "integer", "labels")

_CSV_PREFIX = "csv:"
_SOURCES_HELP = "regression, xor, spirals, spirals:K, random, csv:PATH"
# Stream id mixed into the seed for synthetic generation, so that drawing the data and
# shuffling it (np.random.default_rng(seed)) do not consume the same random stream.
_GENERATION_STREAM = 1
# A std at or below this fraction of the column's scale is a constant column whose std is
# rounding noise; dividing by it would blow that noise up to O(1) values.
_CONSTANT_RTOL = 1e-12
_MAX_SHOWN = 40  # characters of a cell value quoted in an error message
_MAX_LISTED = 10  # class names listed in an error message


class DataError(ValueError):
    """Bad data input; str(e) is ONE line naming the file, line and column where known.

    For example 'data.csv:7:3 (column "x2"): expected a number, got "abc"'.
    """

    def __init__(self, message: str):
        # Callers log or print one line per error; a stray newline (from a file name, say)
        # must not split it.
        super().__init__(" ".join(str(message).splitlines()))


# --- containers --------------------------------------------------------------------------------


@dataclasses.dataclass
class Preprocessing:
    """Everything export and predict need; statistics come from the train split only."""

    task: str  # regression | binary | multiclass
    feature_names: list[str]  # CSV header names, or x1..xn for synthetic data
    feature_mean: list[float]  # [n]; zeros when not standardized
    feature_std: list[float]  # [n]; ones when not standardized (a zero std is replaced by 1)
    target_name: str
    target_mean: list[float] | None = None  # regression only: [k]
    target_std: list[float] | None = None  # regression only: [k]
    class_names: list[str] | None = None  # classification: label names in class-id order

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task: unknown name {self.task!r}; expected one of {', '.join(TASKS)}")
        n = len(self.feature_names)
        if len(self.feature_mean) != n or len(self.feature_std) != n:
            raise ValueError(f"feature_mean and feature_std: expected {n} values (one per feature)")
        # Plain floats and strs, so to_dict() is JSON-serializable whatever the caller passed.
        self.feature_names = [str(name) for name in self.feature_names]
        self.feature_mean = [float(v) for v in self.feature_mean]
        self.feature_std = [float(v) for v in self.feature_std]
        self.target_mean = None if self.target_mean is None else [float(v) for v in self.target_mean]
        self.target_std = None if self.target_std is None else [float(v) for v in self.target_std]
        self.class_names = None if self.class_names is None else [str(c) for c in self.class_names]

    @property
    def n_outputs(self) -> int:
        """Output units the model needs: k for regression, 1 for binary, the class count for multiclass."""
        if self.task == "regression":
            return len(self.target_mean)
        if self.task == "binary":
            return 1
        return len(self.class_names)

    def to_dict(self) -> dict:
        """A JSON-serializable dict; `from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        """Rebuilds a Preprocessing from `to_dict()` output; ValueError on missing or unknown keys."""
        names = {field.name for field in dataclasses.fields(cls)}
        required = {field.name for field in dataclasses.fields(cls) if field.default is dataclasses.MISSING}
        if not required <= set(d) <= names:
            raise ValueError(
                f"preprocessing: expected keys {sorted(names)}, got {sorted(d)} "
                f"(missing {sorted(required - set(d))}, unknown {sorted(set(d) - names)})"
            )
        return cls(**d)

    def transform_features(self, x: np.ndarray) -> np.ndarray:
        """Raw features [m, n] -> standardized float64 [m, n]."""
        x = np.asarray(x, dtype=np.float64)
        n = len(self.feature_names)
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(
                f"x: expected shape [batch, {n}] ({', '.join(self.feature_names)}), got {list(x.shape)}"
            )
        return (x - np.asarray(self.feature_mean)) / np.asarray(self.feature_std)

    def transform_targets(self, y: np.ndarray) -> np.ndarray:
        """Regression targets [m, k] in original units -> standardized; identity otherwise."""
        if self.task != "regression":
            return np.asarray(y)
        return (np.asarray(y, dtype=np.float64) - np.asarray(self.target_mean)) / np.asarray(self.target_std)

    def inverse_transform_targets(self, y: np.ndarray) -> np.ndarray:
        """Standardized regression targets or predictions [m, k] -> original units; identity otherwise."""
        if self.task != "regression":
            return np.asarray(y)
        return np.asarray(y, dtype=np.float64) * np.asarray(self.target_std) + np.asarray(self.target_mean)


@dataclasses.dataclass
class Split:
    """One split: standardized features and targets in the task's layout (module docstring)."""

    x: np.ndarray  # [m, n] float64, standardized
    y: np.ndarray  # regression [m, k] float64 standardized; binary [m, 1] float64; multiclass [m] int32

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclasses.dataclass
class Datasets:
    """The three splits of one source and the preprocessing that produced them."""

    train: Split
    validation: Split | None  # None when val_split == 0
    test: Split | None  # None when test_split == 0
    preprocessing: Preprocessing
    source: str  # e.g. "regression" or "csv:/abs/path.csv"

    @property
    def task(self) -> str:
        return self.preprocessing.task

    @property
    def n_features(self) -> int:
        return len(self.preprocessing.feature_names)

    @property
    def n_outputs(self) -> int:
        return self.preprocessing.n_outputs


# --- task inference ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TargetSummary:
    """What a target looks like, so `infer_task` can pick a task or explain a conflict."""

    kind: str  # "real" (non-integer numbers), "integer" (whole numbers) or "labels" (text classes)
    class_names: list[str] | None = None  # distinct values in class-id order (integer, labels)
    where: str = "data"  # message prefix for the whole target, e.g. 'data.csv (column "y")'
    # Prefix for the cell that fixed `kind`, e.g. 'data.csv:4:3 (column "y")'.
    example_where: str | None = None
    example: str | None = None  # that cell's value, quoted

    def at_example(self) -> str:
        """Message prefix locating the example cell, or the whole target when there is none."""
        return self.example_where or self.where


def default_loss(task: str) -> str:
    """The loss used when none is given: mse, binary_crossentropy or categorical_crossentropy."""
    if task not in DEFAULT_LOSSES:
        raise ValueError(f"task: unknown name {task!r}; expected one of {', '.join(TASKS)}")
    return DEFAULT_LOSSES[task]


def infer_task(task: str = "auto", loss: str | None = None, target: TargetSummary | None = None) -> str:
    """Resolves the task from the task flag, the loss and the target; DataError on a conflict.

    Returns one of TASKS, or "auto" when neither task nor loss decides and no target is given
    (so callers can check task against loss before any data is read).
    """
    requested = _requested_task(task, loss)
    if target is None:
        return requested or "auto"
    if target.kind not in TARGET_KINDS:
        raise ValueError(f"target.kind: unknown {target.kind!r}; expected one of {', '.join(TARGET_KINDS)}")
    chosen = requested or _natural_task(target)
    origin = _origin(task, loss, chosen)
    if chosen == "regression":
        _check_regression(target, origin)
    else:
        _check_classification(target, chosen, origin)
    return chosen


def _requested_task(task: str, loss: str | None) -> str | None:
    """The task that the task flag or the loss asks for (None if neither does); DataError if they disagree."""
    if task != "auto" and task not in TASKS:
        raise ValueError(f"task: unknown name {task!r}; expected auto or one of {', '.join(TASKS)}")
    if loss is not None and loss not in LOSS_TASKS:
        raise ValueError(f"loss: unknown name {loss!r}; expected one of {', '.join(LOSS_TASKS)}")
    from_loss = LOSS_TASKS.get(loss)
    if task != "auto" and from_loss is not None and task != from_loss:
        # task=binary with categorical_crossentropy also lands here: one softmax unit is
        # constant 1, so that loss needs the multiclass layout (2 outputs for 2 classes).
        raise DataError(
            f'task "{task}" conflicts with loss "{loss}", which needs task "{from_loss}"; '
            f"drop one of the two or make them agree"
        )
    return task if task != "auto" else from_loss


def _natural_task(target: TargetSummary) -> str:
    """The task the target suggests on its own: numbers regress, text labels classify."""
    if target.kind != "labels":
        return "regression"
    return "binary" if len(target.class_names or ()) <= 2 else "multiclass"


def _origin(task: str, loss: str | None, chosen: str) -> str:
    """Says where the task came from, for error messages."""
    if task != "auto":
        return f'task "{chosen}"'
    if loss is not None:
        return f'loss "{loss}" (task "{chosen}")'
    return f'task "{chosen}" (inferred from the target)'


def _check_regression(target: TargetSummary, origin: str) -> None:
    """DataError unless the target is numeric."""
    if target.kind != "labels":
        return
    if target.example:
        raise DataError(
            f"{target.at_example()}: {origin} needs a numeric target, got text label {target.example}"
        )
    names = _list(target.class_names or [])
    raise DataError(
        f"{target.where}: {origin} needs a numeric target, but the target holds class labels ({names})"
    )


def _check_classification(target: TargetSummary, task: str, origin: str) -> None:
    """DataError unless the target has whole-number or text classes, at least 2, and 2 for binary."""
    if target.kind == "real":
        got = f"got the non-integer number {target.example}" if target.example else "got non-integer numbers"
        raise DataError(f"{target.at_example()}: {origin} needs integer or text class labels, {got}")
    names = target.class_names or []
    if len(names) < 2:
        raise DataError(
            f"{target.where}: {origin} needs at least 2 classes, got {len(names)} ({_list(names)})"
        )
    if task == "binary" and len(names) > 2:
        raise DataError(
            f"{target.where}: {origin} needs 2 classes, got {len(names)} ({_list(names)}); "
            f'use task "multiclass" or loss "categorical_crossentropy"'
        )


def _list(names: list[str]) -> str:
    """Up to _MAX_LISTED names, comma-separated, for a one-line message."""
    shown = ", ".join(_show(name) for name in names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def _show(value: str) -> str:
    """A cell value quoted for an error message: escaped, on one line, truncated."""
    text = value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "..."
    return json.dumps(text, ensure_ascii=False)


# --- the task-independent form of a source -----------------------------------------------------


@dataclasses.dataclass
class _Raw:
    """A whole source before splitting: raw features and targets encoded for the task."""

    x: np.ndarray  # [m, n] float64, original units
    y: np.ndarray  # regression [m, k] float64; classification [m] int64 class ids
    task: str
    feature_names: list[str]
    target_name: str
    class_names: list[str] | None


# --- synthetic sources -------------------------------------------------------------------------


def _make_regression(rng: np.random.Generator, m: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """x uniform in [-2, 2]^2; y = sin(x1)·cos(x2) + x1·x2/4 + noise, all O(1)."""
    x = rng.uniform(-2.0, 2.0, size=(m, 2))
    y = np.sin(x[:, 0]) * np.cos(x[:, 1]) + 0.25 * x[:, 0] * x[:, 1]
    return x, (y + noise * rng.standard_normal(m))[:, None]  # [m, 2], [m, 1]


def _make_xor(rng: np.random.Generator, m: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """x uniform in [-1, 1]^2, label 1 where sign(x1)·sign(x2) > 0; noise jitters x after labelling."""
    x = rng.uniform(-1.0, 1.0, size=(m, 2))
    labels = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return x + noise * rng.standard_normal(x.shape), labels


def _make_spirals(rng: np.random.Generator, m: int, noise: float, arms: int) -> tuple[np.ndarray, np.ndarray]:
    """`arms` interleaved spirals of radius ≤ 1 (1.5 turns each), balanced; noise jitters x."""
    labels = np.arange(m) % arms  # balanced classes; the split shuffles them
    t = rng.uniform(0.0, 1.0, size=m)  # position along the arm: radius and turn
    theta = 2.0 * np.pi * labels / arms + 3.0 * np.pi * t
    x = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1)
    return x + noise * rng.standard_normal(x.shape), labels.astype(np.int64)


def _make_random(rng: np.random.Generator, m: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """The article's data: x and y uniform in [0, 1), unrelated, so nothing can be learned."""
    return rng.uniform(0.0, 1.0, size=(m, 2)), rng.uniform(0.0, 1.0, size=(m, 1))


def _parse_synthetic(source: str) -> tuple[str, int]:
    """'spirals:3' -> ('spirals', 3); other names have 0 arms.  ValueError for an unknown name."""
    name, _, arms = source.partition(":")
    if name not in SYNTHETIC or (arms and name != "spirals"):
        raise ValueError(f"source: unknown name {source!r}; expected one of {_SOURCES_HELP}")
    if name != "spirals":
        return name, 0
    if not arms:
        return name, 2
    if not arms.isdigit() or int(arms) < 2:
        raise ValueError(f"source: {source!r} needs an integer number of classes K >= 2 in spirals:K")
    return name, int(arms)


def _synthetic(source: str, task: str, loss: str | None, seed: int, n_samples: int, noise: float) -> _Raw:
    """Generates a synthetic source and resolves its task."""
    name, arms = _parse_synthetic(source)
    rng = np.random.default_rng([seed, _GENERATION_STREAM])
    if name == "spirals":
        x, y = _make_spirals(rng, n_samples, noise, arms)
    else:
        x, y = {"regression": _make_regression, "xor": _make_xor, "random": _make_random}[name](
            rng, n_samples, noise
        )
    classes = None if y.ndim == 2 else [str(c) for c in range(arms or 2)]
    summary = TargetSummary("real" if classes is None else "labels", classes, where=f"source {source!r}")
    resolved = infer_task(task, loss, summary)
    names = [f"x{j + 1}" for j in range(x.shape[1])]
    return _Raw(x, y, resolved, names, "y", classes)


# --- CSV sources -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Table:
    """A CSV file's header and data rows as text, with each row's 1-based line number."""

    path: str  # as the user gave it, for messages
    header: list[str]
    header_line: int
    rows: list[list[str]]
    lines: list[int]  # lines[i]: the file line where rows[i] starts

    def where(self, line: int, column: int) -> str:
        """'file:line:col (column "name")' for a cell; column is the 0-based field index."""
        return f"{self.path}:{line}:{column + 1} (column {_show(self.header[column])})"

    def column_where(self, column: int) -> str:
        """'file (column "name")' for a whole column."""
        return f"{self.path} (column {_show(self.header[column])})"


def _read_table(path: str) -> _Table:
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
    return _Table(path, header, header_line, [row for _, row in data], [line for line, _ in data])


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


def _read_records(path: str, text: str) -> list[tuple[int, list[str]]]:
    """(start line, fields) of every non-blank record; DataError on malformed CSV."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
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
                f"{path}:{line}:{j + 1} (column {_show(name)}): duplicate column name, also column {first[name] + 1}"
            )
        first[name] = j


def _target_column(table: _Table, target: str | None) -> int:
    """The target's field index; DataError if the flag is missing or names no column."""
    columns = ", ".join(table.header)
    if not target:
        raise DataError(
            f"{table.path}: a CSV source needs the flag 'target' naming the label column; columns: {columns}"
        )
    if target not in table.header:
        raise DataError(
            f"{table.path}:{table.header_line}: target column {_show(target)} is not in the header; columns: {columns}"
        )
    if len(table.header) < 2:
        raise DataError(
            f"{table.path}:{table.header_line}: no feature columns besides the target {_show(target)}"
        )
    return table.header.index(target)


def _parse_features(table: _Table, columns: list[int]) -> np.ndarray:
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


def _parse_number(table: _Table, i: int, j: int) -> float:
    """Cell (row i, field j) as a finite float; DataError naming the cell otherwise."""
    cell = table.rows[i][j].strip()
    where = table.where(table.lines[i], j)
    if not cell:
        raise DataError(f"{where}: expected a number, got an empty cell")
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where}: expected a number, got {_show(cell)}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: expected a finite number, got {_show(cell)}")
    return value


def _summarize_target(table: _Table, j: int) -> tuple[TargetSummary, np.ndarray | list[str]]:
    """Classifies the target column as real / integer / labels; returns it parsed accordingly."""
    cells = [row[j].strip() for row in table.rows]
    for i, cell in enumerate(cells):
        if not cell:
            raise DataError(f"{table.where(table.lines[i], j)}: expected a target value, got an empty cell")
    first_text = next((i for i, cell in enumerate(cells) if not _is_number(cell)), None)
    if first_text is not None:
        names = sorted(set(cells))
        return _summary(table, j, "labels", names, first_text, cells), cells
    values = np.array([_parse_number(table, i, j) for i in range(len(cells))])  # finite, checked per cell
    non_integer = np.flatnonzero(values != np.round(values))
    if non_integer.size:
        return _summary(table, j, "real", None, int(non_integer[0]), cells), values
    # Whole numbers sort numerically (2 before 10), so labels 0..K-1 keep their own ids.
    names = [_integer_name(v) for v in np.unique(values)]
    return _summary(table, j, "integer", names, None, cells), values


def _summary(
    table: _Table, j: int, kind: str, names: list[str] | None, i: int | None, cells: list[str]
) -> TargetSummary:
    """A TargetSummary for column j, with row i (if any) as the example cell."""
    example_where = None if i is None else table.where(table.lines[i], j)
    example = None if i is None else _show(cells[i])
    return TargetSummary(kind, names, table.column_where(j), example_where, example)


def _is_number(cell: str) -> bool:
    """True if float() accepts the cell (nan and inf included: those are bad numbers, not labels)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _integer_name(value: float) -> str:
    """3.0 -> '3': the class name of a whole-number label."""
    return str(int(value))


def _encode_targets(task: str, summary: TargetSummary, parsed: np.ndarray | list[str]) -> np.ndarray:
    """Targets for the task: regression [m, 1] float64, classification [m] int64 ids into class_names."""
    if task == "regression":
        return np.asarray(parsed, dtype=np.float64)[:, None]
    names = summary.class_names
    labels = parsed if summary.kind == "labels" else [_integer_name(v) for v in parsed]
    index = {name: k for k, name in enumerate(names)}
    return np.array([index[label] for label in labels], dtype=np.int64)


def _load_csv(path: str, target: str | None, task: str, loss: str | None) -> _Raw:
    """Reads a CSV source, resolves its task and encodes its targets."""
    table = _read_table(path)
    j = _target_column(table, target)
    features = [c for c in range(len(table.header)) if c != j]
    x = _parse_features(table, features)
    summary, parsed = _summarize_target(table, j)
    resolved = infer_task(task, loss, summary)
    classes = summary.class_names if resolved in CLASSIFICATION else None
    y = _encode_targets(resolved, summary, parsed)
    return _Raw(x, y, resolved, [table.header[c] for c in features], table.header[j], classes)


# --- splits and standardization ----------------------------------------------------------------


def _split_counts(m: int, val_split: float, test_split: float, where: str) -> tuple[int, int, int]:
    """(train, validation, test) row counts; DataError if a split that was asked for would be empty."""
    # Round half up rather than floor: 0.29 * 100 is 28.999999999999996 in floating point.
    n_test = math.floor(m * test_split + 0.5)
    n_val = math.floor(m * val_split + 0.5)
    n_train = m - n_test - n_val
    for name, fraction, count in (("test_split", test_split, n_test), ("val_split", val_split, n_val)):
        if fraction > 0 and count == 0:
            raise DataError(f"{where}: too few rows ({m}) for {name}={fraction:g}: that split would be empty")
    if n_train <= 0:
        raise DataError(f"{where}: too few rows ({m}) for a non-empty train split after val/test")
    return n_train, n_val, n_test


def _column_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of [m, k]; a (near-)zero std becomes 1 so constants stay finite."""
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    constant = std <= _CONSTANT_RTOL * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, std)


def _fit_preprocessing(raw: _Raw, train_rows: np.ndarray, standardize: bool) -> Preprocessing:
    """Preprocessing with statistics of the train rows (identity statistics if not standardizing)."""
    n = raw.x.shape[1]
    mean, std = _column_stats(raw.x[train_rows]) if standardize else (np.zeros(n), np.ones(n))
    target_mean = target_std = None
    if raw.task == "regression":
        k = raw.y.shape[1]
        target_mean, target_std = (
            _column_stats(raw.y[train_rows]) if standardize else (np.zeros(k), np.ones(k))
        )
        target_mean, target_std = list(target_mean), list(target_std)
    return Preprocessing(
        task=raw.task,
        feature_names=raw.feature_names,
        feature_mean=list(mean),
        feature_std=list(std),
        target_name=raw.target_name,
        target_mean=target_mean,
        target_std=target_std,
        class_names=raw.class_names,
    )


def _make_split(raw: _Raw, rows: np.ndarray, prep: Preprocessing) -> Split:
    """The rows of `raw` standardized with `prep`, targets in the task's layout."""
    y = raw.y[rows]
    if raw.task == "regression":
        y = prep.transform_targets(y)  # [m, k]
    elif raw.task == "binary":
        y = y.astype(np.float64)[:, None]  # [m, 1], what sigmoid cross-entropy takes
    else:
        y = y.astype(np.int32)  # [m] class ids
    return Split(prep.transform_features(raw.x[rows]), y)


# --- entry point -------------------------------------------------------------------------------


def _check_arguments(val_split: float, test_split: float, seed: int, n_samples: int, noise: float) -> None:
    """ValueError naming the first bad argument."""
    for name, fraction in (("val_split", val_split), ("test_split", test_split)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name}: expected a fraction in [0, 1), got {fraction!r}")
    if val_split + test_split >= 1.0:
        raise ValueError(
            f"val_split + test_split: must be < 1 to leave train rows, got {val_split} + {test_split}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples <= 0:
        raise ValueError(f"n_samples: expected a positive integer, got {n_samples!r}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise: expected a finite number >= 0, got {noise!r}")


def load(
    source: str,
    *,
    target: str | None = None,
    task: str = "auto",
    loss: str | None = None,
    val_split: float = 0.1,
    test_split: float = 0.1,
    seed: int = 0,
    n_samples: int = 1000,
    noise: float = 0.05,
    standardize: bool = True,
) -> Datasets:
    """Loads a source, resolves its task, splits it and standardizes with train statistics.

    Args:
      source: one of "regression", "xor", "spirals", "spirals:K", "random" or "csv:PATH".
      target: the CSV column to predict (required for CSV, not allowed for synthetic sources).
      task: "auto" or one of TASKS.
      loss: None or a name in LOSS_TASKS; it implies a task (DataError if `task` disagrees).
      val_split, test_split: fractions of the rows; the test rows are carved off first.
      seed: the same seed gives identical arrays.
      n_samples, noise: size and noise of synthetic sources (ignored for CSV).
      standardize: False keeps original units (identity statistics), as the article did.
    """
    _check_arguments(val_split, test_split, seed, n_samples, noise)
    infer_task(task, loss)  # a task/loss conflict fails before any data is read
    if source.startswith(_CSV_PREFIX):
        path = source[len(_CSV_PREFIX) :]
        if not path:
            raise ValueError(f"source: {source!r} needs a file path after 'csv:'")
        raw = _load_csv(path, target, task, loss)
        source, where = _CSV_PREFIX + os.path.abspath(os.path.expanduser(path)), path
    else:
        if target:
            raise ValueError(
                f"target: only CSV sources take a target column, got target={target!r} for {source!r}"
            )
        raw = _synthetic(source, task, loss, seed, n_samples, noise)
        where = f"source {source!r}"
    return _split(raw, source, where, val_split, test_split, seed, standardize)


def _split(
    raw: _Raw, source: str, where: str, val_split: float, test_split: float, seed: int, standardize: bool
) -> Datasets:
    """Shuffles with default_rng(seed), carves off test then validation rows, standardizes."""
    m = raw.x.shape[0]
    n_train, n_val, n_test = _split_counts(m, val_split, test_split, where)
    order = np.random.default_rng(seed).permutation(m)
    test_rows, val_rows, train_rows = np.split(order, [n_test, n_test + n_val])
    prep = _fit_preprocessing(raw, train_rows, standardize)
    logging.info(
        "Loaded %s: %d rows, %d features, task %s; train/validation/test = %d/%d/%d rows",
        source, m, raw.x.shape[1], raw.task, n_train, n_val, n_test,
    )  # fmt: skip
    return Datasets(
        train=_make_split(raw, train_rows, prep),
        validation=_make_split(raw, val_rows, prep) if n_val else None,
        test=_make_split(raw, test_rows, prep) if n_test else None,
        preprocessing=prep,
        source=source,
    )
