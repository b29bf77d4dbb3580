"""Loading: `load()`, the one entry point from a source name to `Datasets`, and its argument checks."""

from __future__ import annotations

import os

from tf_backprop import arguments
from tf_backprop.data import shards, splits, synthetic
from tf_backprop.data.containers import Datasets
from tf_backprop.data.csv_source import load_csv
from tf_backprop.data.tasks import infer_task


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
    arguments.check_data_arguments(
        val_split=val_split, test_split=test_split, seed=seed, n_samples=n_samples, noise=noise
    )
    infer_task(task, loss)  # a task/loss conflict fails before any data is read
    path = arguments.csv_path(source)
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
