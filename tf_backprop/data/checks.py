"""Data checks: warnings about data that trains but probably not as its user meant.

Each is one absl warning line naming the source, never an error:

* a class with fewer than two training rows (the model can hardly learn it);
* more classes than a tenth of the rows (a numeric id or a measurement taken for a label?);
* a constant regression target (nothing to learn; its scale is taken as 1);
* a constant feature column (it carries no information);
* a feature value beyond float32's range (the export's float32 signature cannot take it).

"Constant" is one test for the warnings and the standardization alike: a std at or below
1e-12 of the column's scale is rounding noise, not spread.  One check is an error instead
(`check_features_fit`, made once the model's dtype is known): unstandardized features beyond
the model dtype's range, which would train as infinities.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from tf_backprop import text
from tf_backprop.data import moments
from tf_backprop.data.containers import Datasets, RawSource
from tf_backprop.data.errors import DataError
from tf_backprop.data.tasks import CLASSIFICATION

_CONSTANT_RTOL = 1e-12
_ROWS_PER_CLASS = 10  # fewer rows per class than this: warn
_MAX_LISTED = 10  # names listed in one warning
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the export's signature takes float32 features


@dataclasses.dataclass
class SourceSummary:
    """What a streamed pass knows of its rows, for the checks: the training rows' moments, each
    feature's largest |value| over every split, and per class the training rows."""

    feature_names: list[str]
    features: moments.Moments  # of the training rows
    abs_max: np.ndarray  # [k]
    rows: int  # in every split
    target_name: str
    target: moments.Moments | None = None  # a regression target's, of the training rows
    class_names: list[str] | None = None
    class_counts: np.ndarray | None = None  # [K] training rows of each class (a classifier)
    standardized: bool = True  # whether the features are standardized for training


def constant_columns(values: np.ndarray) -> np.ndarray:
    """[k] bool: which columns of [m, k] are constant (their std is rounding noise)."""
    return constant_std(*moments.mean_and_std(values))


def constant_std(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[k] bool: which columns of this mean and std are constant (the std is rounding noise)."""
    return std <= _CONSTANT_RTOL * np.maximum(1.0, np.abs(mean))


def warn_about(raw: RawSource, train_rows: np.ndarray, where: str, standardize: bool = True) -> list[str]:
    """Logs one warning line per finding about `raw` and its training rows; returns them."""
    messages = _feature_warnings(raw, train_rows, where, standardize)
    if raw.task in CLASSIFICATION:
        messages += _class_warnings(raw, train_rows, where)
    else:
        messages += _target_warnings(raw, train_rows, where)
    return _logged(messages)


def check_features_fit(datasets: Datasets, dtype: str, standardize: bool) -> None:
    """DataError when unstandardized features hold values a model of `dtype` cannot represent
    (they would train as infinities; standardized in float64, any finite value fits)."""
    limit = float(np.finfo(dtype).max)
    if standardize or datasets.feature_abs_max is None or limit >= np.finfo(np.float64).max:
        return
    beyond = np.flatnonzero(np.asarray(datasets.feature_abs_max) > limit)
    if beyond.size:
        names = _listed([datasets.preprocessing.feature_names[j] for j in beyond])
        where = datasets.source.removeprefix("csv:")
        shown = f"{limit:.1e}".replace("e+", "e")  # 3.4e38, as the warning writes it
        raise DataError(
            f"{where}: feature(s) {names} hold values beyond {dtype}'s range (±{shown}), and "
            f"without standardization a {dtype} model cannot take them; standardize (drop "
            f"--nostandardize), rescale the column(s), or train in float64 (--dtype=float64)"
        )


def _listed(names: list[str]) -> str:
    shown = ", ".join(text.quote(name) for name in names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def warn_about_summary(summary: SourceSummary, where: str) -> list[str]:
    """Logs the checks of `warn_about` made from a streamed pass's summary of its rows, in the
    same words; returns them."""
    messages = _constant_features(
        summary.feature_names, constant_std(summary.features.mean, summary.features.std), where
    )
    messages += _beyond_float32(summary.feature_names, summary.abs_max, where, summary.standardized)
    if summary.class_counts is not None:
        messages += _class_messages(
            summary.class_names, summary.class_counts, summary.rows, summary.target_name, where
        )
    elif summary.target is not None:
        constant = constant_std(summary.target.mean, summary.target.std)
        messages += _constant_target(summary.target_name, summary.target.shift[constant], where)
    return _logged(messages)


def _logged(messages: list[str]) -> list[str]:
    for message in messages:
        logging.warning("%s", message)
    return messages


def _constant_features(names, constant: np.ndarray, where: str) -> list[str]:
    """The warning for the columns of `names` flagged in `constant` [k] bool, if any."""
    if not constant.any():
        return []
    listed = _listed([name for name, flag in zip(names, constant) if flag])
    return [f"{where}: feature(s) {listed} constant in the training rows; they carry no information"]


def _constant_target(name: str, values: np.ndarray, where: str) -> list[str]:
    """The warning for a regression target whose columns in `values` (one value each) are constant."""
    if not len(values):
        return []
    shown = ", ".join(f"{v:g}" for v in values[:_MAX_LISTED])
    return [
        f"{where}: the target {text.quote(name)} is constant in the training rows ({shown}); "
        f"there is nothing to learn, and its scale is taken as 1"
    ]


def _feature_warnings(raw: RawSource, train_rows: np.ndarray, where: str, standardize: bool) -> list[str]:
    messages = _constant_features(raw.feature_names, constant_columns(raw.x[train_rows]), where)
    return messages + _beyond_float32(raw.feature_names, abs_max_of(raw.x), where, standardize)


def abs_max_of(x: np.ndarray) -> np.ndarray:
    """[k]: each column's largest |value| of x [m, k] (0 for no rows)."""
    return np.abs(x).max(axis=0, initial=0.0)


def _beyond_float32(names, abs_max: np.ndarray, where: str, standardized: bool) -> list[str]:
    """The warning for the columns whose largest |value| (`abs_max` [k]) float32 cannot hold."""
    beyond = np.flatnonzero(np.asarray(abs_max) > FLOAT32_MAX)
    if not beyond.size:
        return []
    listed = _listed([names[j] for j in beyond])
    how = (
        "the model trains on them standardized"
        if standardized
        else "a float64 model takes them as they are (not standardized; a float32 one cannot)"
    )
    return [
        f"{where}: feature(s) {listed} hold values beyond float32's range (±3.4e38): {how}, "
        "but its export takes float32 features and cannot score these rows; rescale the column(s) "
        "to serve the model"
    ]


def _target_warnings(raw: RawSource, train_rows: np.ndarray, where: str) -> list[str]:
    y = raw.y[train_rows]  # [m, k]
    return _constant_target(raw.target_name, y[0][constant_columns(y)], where)


def _class_warnings(raw: RawSource, train_rows: np.ndarray, where: str) -> list[str]:
    counts = np.bincount(raw.y[train_rows], minlength=len(raw.class_names))  # [K] training rows per class
    return _class_messages(raw.class_names, counts, len(raw.y), raw.target_name, where)


def _class_messages(names, counts: np.ndarray, rows: int, target: str, where: str) -> list[str]:
    """The warnings about classes `names` with `counts` [K] training rows each, in `rows` rows."""
    messages = []
    rare = np.flatnonzero(np.asarray(counts) < 2)
    if rare.size:
        listed = _listed([names[k] for k in rare])
        messages.append(
            f"{where}: {rare.size} of {len(names)} classes have fewer than two training rows "
            f"({listed}); the model can hardly learn them"
        )
    if len(names) * _ROWS_PER_CLASS > rows:
        messages.append(
            f"{where}: {len(names)} classes in {rows} rows (fewer than {_ROWS_PER_CLASS} rows per "
            f"class); is {text.quote(target)} really a class label? (--task=regression "
            f"for a numeric target)"
        )
    return messages
