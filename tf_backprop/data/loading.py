"""Loading: `load()`, the one entry point from a source name to `Datasets`, and its argument checks."""

from __future__ import annotations

import math
import os

import numpy as np

from tf_backprop.data import shards, splits, synthetic
from tf_backprop.data.containers import Datasets
from tf_backprop.data.csv_source import load_csv
from tf_backprop.data.tasks import infer_task


def check_arguments(*, val_split: float, test_split: float, seed: int, n_samples: int, noise: float) -> None:
    """Checks the arguments of `load` that need no data; ValueError naming the first bad one.

    val_split and test_split must be fractions in [0, 1) with a sum below 1, seed an integer
    >= 0, n_samples an integer >= 1 (bools are not integers here) and noise a finite number >= 0.
    """
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
        raise ValueError(f"noise: expected a finite number ≥ 0, got {noise!r}")


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
      source: one of "regression", "xor", "spirals", "spirals:K", "random" or "csv:PATH" (PATH a
        file, .gz too, or a glob pattern of shards with the same header, read in sorted order).
      target: the CSV column to predict (required for CSV, not allowed for synthetic sources).
      task: "auto" or one of TASKS.
      loss: None or a name in LOSS_TASKS; it implies a task (DataError if `task` disagrees).
      val_split, test_split: fractions of the rows; the test rows are carved off first.
      seed: the same seed gives identical arrays.
      n_samples, noise: size and noise of synthetic sources (ignored for CSV).
      standardize: False keeps original units (identity statistics), as the article did.
    """
    check_arguments(val_split=val_split, test_split=test_split, seed=seed, n_samples=n_samples, noise=noise)
    infer_task(task, loss)  # a task/loss conflict fails before any data is read
    path = shards.csv_path(source)
    if path is not None:
        if not path:
            raise ValueError(f"source: {source!r} needs a file path after 'csv:'")
        raw = load_csv(path, target, task, loss)
        source, where = shards.CSV_PREFIX + os.path.abspath(os.path.expanduser(path)), path
    else:
        if target:
            synthetic.check_name(source)  # a CSV path without csv: says so first
            raise ValueError(
                f"target: only CSV sources take a target column, got target={target!r} for {source!r}"
            )
        raw = synthetic.generate(source, task, loss, seed, n_samples, noise)
        where = f"source {source!r}"
    return splits.make_datasets(raw, source, where, val_split, test_split, seed, standardize)
