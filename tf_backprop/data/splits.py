"""Splits: shuffle a source into train / validation / test and standardize with train statistics.

`make_datasets` turns a `RawSource` into `Datasets`; the `Preprocessing` it fits holds the
statistics of the train rows only, so new raw inputs can be treated the same way later.
"""

from __future__ import annotations

import math

import numpy as np
from absl import logging

from tf_backprop import text
from tf_backprop.data import checks, moments
from tf_backprop.data.containers import Datasets, Preprocessing, RawSource, Split
from tf_backprop.data.errors import DataError


def make_datasets(
    raw: RawSource, source: str, where: str, val_split: float, test_split: float, seed: int, standardize: bool
) -> Datasets:
    """Shuffles with default_rng(seed), carves off test then validation rows, standardizes.

    `source` names the source in the result and the log; `where` prefixes error messages.
    """
    m = raw.x.shape[0]
    n_train, n_val, n_test = _split_counts(m, val_split, test_split, where)
    order = np.random.default_rng(seed).permutation(m)
    test_rows, val_rows, train_rows = np.split(order, [n_test, n_test + n_val])
    prep = _fit_preprocessing(raw, train_rows, standardize, where)
    checks.warn_about(raw, train_rows, where, standardize)
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
        feature_abs_max=checks.abs_max_of(raw.x),
    )


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


def _column_stats(values: np.ndarray, names, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of [m, k]; a (near-)zero std becomes 1 so constants stay finite."""
    mean, std = moments.mean_and_std(values)
    return mean, scaling_std(mean, std, names, where)


def scaling_std(mean: np.ndarray, std: np.ndarray, names, where: str) -> np.ndarray:
    """The std standardization divides by: a (near-)zero one (a constant column) becomes 1
    (dividing by rounding noise would blow it up to O(1) values).

    DataError naming the column when its mean or std overflowed float64: every value is finite,
    but standardizing by an infinite std would turn the column into zeros, silently.
    """
    for name, column_mean, column_std in zip(names, mean, std):
        if not (np.isfinite(column_mean) and np.isfinite(column_std)):
            statistic = "standard deviation" if not np.isfinite(column_std) else "mean"
            raise DataError(
                f"{where} (column {text.quote(name)}): its {statistic} overflows float64 (values too large "
                "to standardize); rescale the column, e.g. divide it by a power of ten"
            )
    return np.where(checks.constant_std(mean, std), 1.0, std)


def _fit_preprocessing(
    raw: RawSource, train_rows: np.ndarray, standardize: bool, where: str
) -> Preprocessing:
    """Preprocessing with statistics of the train rows (identity statistics if not standardizing)."""
    n = raw.x.shape[1]
    mean, std = (
        _column_stats(raw.x[train_rows], raw.feature_names, where)
        if standardize
        else (np.zeros(n), np.ones(n))
    )
    target_mean = target_std = None
    if raw.task == "regression":
        k = raw.y.shape[1]
        target_mean, target_std = (
            _column_stats(raw.y[train_rows], [raw.target_name] * k, where)
            if standardize
            else (np.zeros(k), np.ones(k))
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
        fingerprint=raw.fingerprint,
    )


def _make_split(raw: RawSource, rows: np.ndarray, prep: Preprocessing) -> Split:
    """The rows of `raw` standardized with `prep`, targets in the task's layout."""
    y = raw.y[rows]
    if raw.task == "regression":
        y = prep.transform_targets(y)  # [m, k]
    elif raw.task == "binary":
        y = y.astype(np.float64)[:, None]  # [m, 1], what sigmoid cross-entropy takes
    else:
        y = y.astype(np.int32)  # [m] class ids
    return Split(prep.transform_features(raw.x[rows]), y)
