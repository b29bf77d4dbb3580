"""The checkers' shared arguments: validated, each error naming its argument.

Every check raises ValueError("<argument>: expected ..., got ...") on a bad argument, before
any gradient is computed.

The step.  A finite difference is a derivative only for a step small against the values it
moves: `check_step` refuses an eps larger than MAX_STEP_FRACTION of an input's (or variable's)
scale, max(1, its largest |element|) — the floor of 1 gives zero and tiny inputs a scale.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tf_backprop.gradcheck.report import Tolerance

MODES = ("full", "fast")
ORDERS = (1, 2)
MAX_STEP_FRACTION = 0.01  # eps may move an input by at most this fraction of its scale


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
    order: int = 1
    check_forward: bool = False

    def validated(self) -> Options:
        """These options; ValueError on a bad mode, directions, samples, seed, order or check_forward."""
        _check_mode(self.mode)
        check_count("directions", self.directions, 1)
        check_count("samples", self.samples, 0)
        check_count("seed", self.seed, 0)
        if isinstance(self.order, bool) or self.order not in ORDERS:
            raise ValueError(f"order: expected 1 or 2, got {self.order!r}")
        if not isinstance(self.check_forward, (bool, np.bool_)):
            raise ValueError(f"check_forward: expected True or False, got {self.check_forward!r}")
        if self.atol is not None:
            check_positive("atol", self.atol)
        if self.rtol is not None:
            check_rtol(self.rtol)
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


def check_rtol(value, default: float | None = None) -> float:
    """value as a relative tolerance: positive and below 1.  At rtol ≥ 1 a gradient of the right
    sign passes whatever its size (|a − b| ≤ max(|a|, |b|)); at 2 a flipped one does too."""
    rtol = check_positive("rtol", value, default)
    if rtol >= 1:
        raise ValueError(
            f"rtol: expected a number below 1 (at 1 a gradient of the right sign passes whatever its "
            f"size), got {value!r}"
        )
    return rtol


def check_count(name: str, value, minimum: int) -> int:
    """value as an int ≥ minimum (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    return int(value)


def check_finite(name: str, value) -> np.ndarray:
    """value as a NumPy array; ValueError if it is None or ragged, or holds NaN or inf."""
    try:
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except (TypeError, ValueError) as error:
        raise ValueError(_not_numbers(name, value)) from error
    if array.dtype.kind == "O":  # None, or rows of different lengths
        raise ValueError(_not_numbers(name, value))
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise ValueError(f"{name}: expected finite values, found {bad} NaN or inf of {array.size}")
    return array


def _not_numbers(name: str, value) -> str:
    if value is None:
        return f"{name}: expected an array of numbers, got None"
    if isinstance(value, (list, tuple)):
        return f"{name}: expected an array of numbers, got a {type(value).__name__} that is not one (rows of different lengths?)"
    return f"{name}: expected an array of numbers, got {type(value).__name__}"


def override_tolerance(tolerance: Tolerance, atol, rtol) -> Tolerance:
    """tolerance with the given atol and rtol (each positive and finite) in place of its own."""
    return Tolerance(
        check_positive("atol", atol, tolerance.atol),
        check_rtol(rtol, tolerance.rtol),
    )


def check_step(eps: float, names, arrays, dtype: str = "float64") -> None:
    """ValueError unless eps ≤ MAX_STEP_FRACTION · max(1, max |x|) for every input x (named), and
    x ± eps, in `dtype`, differs from x in every element (a step lost to rounding measures 0/0)."""
    for name, array in zip(names, arrays):
        _check_moves(eps, name, np.asarray(array).astype(dtype))
        values = np.abs(np.asarray(array, np.float64))
        scale = max(1.0, float(values.max(initial=0.0)))
        if eps > MAX_STEP_FRACTION * scale:
            raise ValueError(
                f"eps: {eps:g} would move {name} by up to {eps:g}, more than {MAX_STEP_FRACTION:g} of its "
                f"scale {scale:.3g} (max(1, largest |element|)); a finite difference with such a step is "
                f"not a derivative: use eps <= {MAX_STEP_FRACTION * scale:.3g}"
            )


def _check_moves(eps: float, name: str, values: np.ndarray) -> None:
    step = values.dtype.type(eps)
    with np.errstate(over="ignore"):
        stuck = (values + step == values) | (values - step == values)
    if stuck.any():
        index = tuple(int(i) for i in np.argwhere(stuck)[0])
        value = values[index]
        spacing = float(np.spacing(np.abs(value)))
        raise ValueError(
            f"eps: {eps:g} does not move {name}{list(index) if index else ''} = {float(value):g} in "
            f"{values.dtype.name}, whose values there are {spacing:.3g} apart; use eps ≥ {4 * spacing:.3g}"
        )
