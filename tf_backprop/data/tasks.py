"""Tasks: the task names, the task each loss implies, and inferring the task of a target.

`infer_task` resolves regression / binary / multiclass from the task flag, the loss and a
`TargetSummary` of the target, and raises `DataError` when they conflict.
"""

from __future__ import annotations

import dataclasses

from tf_backprop import losses, names, text
from tf_backprop.data.errors import DataError

TASKS = names.TASKS
# The task each supported loss implies, e.g. {"mse": "regression", ...}, in losses.LOSSES order.
LOSS_TASKS = {name: loss.task for name, loss in losses.LOSSES.items()}
DEFAULT_LOSSES = {
    "regression": "mse",
    "binary": "binary_crossentropy",
    "multiclass": "categorical_crossentropy",
}
CLASSIFICATION = ("binary", "multiclass")
TARGET_KINDS = ("real", "integer", "labels")

_MAX_LISTED = 10  # class names listed in an error message


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
    """The task the target suggests on its own: numbers regress, text labels classify.

    DataError for numbers with a stray text cell or two (`n/a` among 199 numbers): classifying
    them would train a 200-class model unasked."""
    if target.kind != "labels":
        return "regression"
    _check_not_numbers_with_strays(target)
    return "binary" if len(target.class_names or ()) <= 2 else "multiclass"


MIN_NUMERIC_VALUES = 10  # distinct numbers in a target, beside which a little text is a stray
MAX_STRAY_FRACTION = 0.05  # text values, as a fraction of the distinct values, counted as strays


def _check_not_numbers_with_strays(target: TargetSummary) -> None:
    names = target.class_names or []
    numbers = sum(is_number(name) for name in names)
    strays = len(names) - numbers
    if numbers < MIN_NUMERIC_VALUES or strays > MAX_STRAY_FRACTION * len(names):
        return
    raise DataError(
        f"{target.at_example()}: got text {target.example} in a target whose other values are numbers "
        f"({numbers} of {len(names)} distinct values); fix the cell, or set task "
        f'"multiclass" (--task=multiclass) to take every value as a class label'
    )


def is_number(cell: str) -> bool:
    """True if float() accepts the cell (nan and inf included: those are bad numbers, not labels)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


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
    """Up to _MAX_LISTED names, quoted and comma-separated, for a one-line message."""
    shown = ", ".join(text.quote(name) for name in names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")
