"""The checkers' shared arguments: validated, each error naming its argument.

Every check raises ValueError("<argument>: expected ..., got ...") on a bad argument, before
any gradient is computed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tf_backprop.gradcheck.report import Tolerance

MODES = ("full", "fast")


@dataclasses.dataclass(frozen=True)
class Options:
    """How a check perturbs and compares (see `gradcheck`'s arguments)."""

    mode: str
    eps: float | None
    atol: float | None
    rtol: float | None
    seed: int
    directions: int
    samples: int

    def validated(self) -> Options:
        """These options; ValueError on a bad mode, directions, samples or seed."""
        _check_mode(self.mode)
        check_count("directions", self.directions, 1)
        check_count("samples", self.samples, 0)
        check_count("seed", self.seed, 0)
        return self


def _check_mode(mode: str) -> str:
    """mode, if one of `MODES`."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    return mode


def check_positive(name: str, value, default: float | None = None) -> float:
    """value as a positive finite float; `default` when value is None and a default is given."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def check_count(name: str, value, minimum: int) -> int:
    """value as an int >= minimum (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_finite(name: str, value) -> np.ndarray:
    """value as a NumPy array; ValueError if it holds NaN or inf."""
    try:
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected an array of numbers, got {type(value).__name__}") from error
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise ValueError(f"{name}: expected finite values, found {bad} NaN or inf of {array.size}")
    return array


def override_tolerance(tolerance: Tolerance, atol, rtol) -> Tolerance:
    """tolerance with the given atol and rtol (each positive and finite) in place of its own."""
    return Tolerance(
        check_positive("atol", atol, tolerance.atol),
        check_positive("rtol", rtol, tolerance.rtol),
    )
