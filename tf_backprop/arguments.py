"""Checks of the package's arguments that need no TensorFlow: a name among its choices, a net's
layer sizes, the data loader's numbers, and which sources are CSV files.

`model`, `data` and the training config use them; the config runs them at construction, which
a command does before TensorFlow loads (`--val_split=1.5` is refused at once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CSV_PREFIX = "csv:"  # a source --data=csv:PATH


def check_name(what: str, name: object, valid: tuple[str, ...]) -> None:
    """ValueError "what: unknown name 'x'; expected one of a, b" unless name is one of valid."""
    if name not in valid:
        raise ValueError(f"{what}: unknown name {name!r}; expected one of {', '.join(valid)}")


def validate_layer_sizes(layer_sizes: Sequence[int], name: str = "layer_sizes") -> tuple[int, ...]:
    """Returns layer_sizes as a tuple of ints; ValueError naming `name` if any is not positive."""
    if isinstance(layer_sizes, str):  # tuple("2,3,1") would be its characters
        raise ValueError(f"{name}: expected a list of positive integers like (2, 3, 1), got {layer_sizes!r}")
    sizes = tuple(layer_sizes)
    if len(sizes) < 2:
        raise ValueError(f"{name}: expected at least 2 sizes (inputs and outputs), got {list(sizes)}")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"{name}: expected positive integers, got {list(sizes)}")
    return tuple(int(s) for s in sizes)


def check_data_arguments(
    *, val_split: float, test_split: float, seed: int, n_samples: int, noise: float
) -> None:
    """Checks the arguments of `data.load` that need no data; ValueError naming the first bad one.

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


def csv_path(source: str) -> str | None:
    """The PATH of a `csv:PATH` source (a file or a glob, as given); None for any other source."""
    return source[len(CSV_PREFIX) :] if isinstance(source, str) and source.startswith(CSV_PREFIX) else None
