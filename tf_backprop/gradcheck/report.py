"""What a gradient check finds: tolerances, the element-wise comparison and the report.

For values a, b the relative error is

    rel = |a − b| / max(|a|, |b|, atol / rtol)

and an element fails when rel > rtol, i.e. when |a − b| > max(atol, rtol · max(|a|, |b|)):
atol / rtol is the scale below which a gradient counts as zero.

tape ↔ manual (`EXACT`): the two paths sum in different orders, which leaves round-off residue
proportional to the gradient's scale (max |g| over all tape gradient elements) in elements that
come out of cancelling sums; the MLP checker scales atol by it.  Against numeric values, atol is
raised to the finite-difference round-off floor ROUNDOFF_FACTOR · u · |f| / eps (|f| may count
rounding inside f that scales with its input: `engine`) when that is
larger (u: the dtype's machine epsilon; |f|: the largest |f_i|, or for projections uᵀf the
largest ‖u ⊙ f‖).

Verdicts.  A comparison is FAIL when an element fails (or a source could not be computed at
all: `error`); INCONCLUSIVE when too little of it was checked: more than MAX_UNCHECKED_FRACTION
of its values, or all of them, unchecked (f not finite at x ± ε; or at a kink: its one-sided
values could not be computed, or its value at the point is neither side's, `kinks`), or any one of them outside
the slopes on either side of its kink (`kinks`), or when the round-off floor exceeds
MAX_ROUNDOFF_FRACTION of the largest compared value (or of the zero floor atol/rtol it
replaced, if larger), so that errors of that size go unseen (eps too small for the dtype);
else ok.  A report is FAIL if any comparison fails, else INCONCLUSIVE if any is inconclusive,
else PASS; only PASS is `passed`.

`Report.to_text()` renders a norms table, a comparisons table, one line per failing, kinked or
inconclusive comparison, the thresholds and the verdict; `to_json()` the same data, NaN and inf
as strings.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tf_backprop import files
from tf_backprop.gradcheck import render

ROUNDOFF_FACTOR = 16  # the round-off floor is ROUNDOFF_FACTOR · u · |f| / eps
MAX_UNCHECKED_FRACTION = 0.1  # more unchecked values than this fraction: INCONCLUSIVE
MAX_ROUNDOFF_FRACTION = 0.1  # a round-off floor above this fraction of the largest value: INCONCLUSIVE


# --- thresholds ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tolerance:
    """An element fails when |a − b| / max(|a|, |b|, atol / rtol) > rtol."""

    atol: float
    rtol: float
    unraised_atol: float | None = None  # atol before the round-off floor raised it (None: not raised)
    per_value: bool = False  # atol is the largest of each value's own round-off floor (`compare`)

    @property
    def floor(self) -> float:
        """The scale below which a value counts as zero in the relative error."""
        return self.atol / self.rtol

    def with_roundoff(self, dtype: str, scale: float, eps: float) -> Tolerance:
        """This tolerance with atol raised to the finite-difference round-off floor."""
        floor = ROUNDOFF_FACTOR * float(np.finfo(dtype).eps) * abs(scale) / eps
        return self if floor <= self.atol else Tolerance(floor, self.rtol, unraised_atol=self.atol)

    def scaled(self, scale: float) -> Tolerance:
        """This tolerance with atol multiplied by max(1, scale)."""
        return Tolerance(self.atol * max(1.0, scale), self.rtol)

    def roundoff_per_value(self, dtype: str, scales: np.ndarray, eps: float) -> np.ndarray:
        """Each value's atol: this atol, raised to the round-off floor of its own scale [...]."""
        floors = ROUNDOFF_FACTOR * float(np.finfo(dtype).eps) * np.abs(scales) / eps
        return np.maximum(self.atol, floors)

    def __str__(self) -> str:
        if self.per_value:
            return f"rtol {self.rtol:.0e}, atol up to {self.atol:.1e} (each value's round-off floor)"
        return f"rtol {self.rtol:.0e}, atol {self.atol:.1e}"


EXACT = Tolerance(atol=1e-12, rtol=1e-9)
FLOAT64 = Tolerance(atol=1e-8, rtol=1e-5)
FLOAT32 = Tolerance(atol=1e-3, rtol=1e-2)
NUMERIC_TOLERANCES = {"float64": FLOAT64, "float32": FLOAT32}
EPS = {"float64": 1e-6, "float32": 1e-3}


# --- the report ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Location:
    """Where a compared value sits.

    index: the element of the variable or input; output_index: the element of the output
    (full Jacobians only); direction: the d-th random direction in fast mode; gradient (second
    order): (name, index) of the gradient element whose derivative this is, ∂/∂index of
    ∂f/∂name[index].
    """

    index: tuple[int, ...] | None = None
    output_index: tuple[int, ...] | None = None
    direction: int | None = None
    gradient: tuple[str, tuple[int, ...]] | None = None

    def __str__(self) -> str:
        if self.direction is not None:
            return f"dir {self.direction}"
        text = render.format_index(self.index)
        if self.output_index is None and self.gradient is None:
            return text
        text = f"in{text}"
        if self.gradient is not None:
            text += f" grad {self.gradient[0]}{render.format_index(self.gradient[1])}"
        return text if self.output_index is None else f"{text} out{render.format_index(self.output_index)}"

    def to_dict(self) -> dict[str, Any]:
        data = {
            "index": render.listed(self.index),
            "output_index": render.listed(self.output_index),
            "direction": self.direction,
        }
        if self.gradient is not None:  # second order only
            data["gradient"] = {"of": self.gradient[0], "index": list(self.gradient[1])}
        return data


def unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index in `shape` of the flat (row-major) position; () for a scalar."""
    return tuple(int(i) for i in np.unravel_index(int(flat), shape)) if shape else ()


def element_locator(shape: tuple[int, ...]) -> Callable[[int], Location]:
    """flat position -> the `Location` of that element of a tensor of `shape`."""
    return lambda i: Location(index=unravel(i, shape))


@dataclasses.dataclass(frozen=True)
class Element:
    """One compared pair of values: a from the first source, b from the second."""

    location: Location
    a: float
    b: float
    abs_error: float
    rel_error: float


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Two gradient sources compared over one variable or input.

    checked counts the compared values (elements or directions); kinks those whose finite
    difference crossed a kink shown on both sides (`kinks`); unchecked those that disagreed
    where a kink could be neither shown nor ruled out; kinks and unchecked values are not
    failures, and are left out of max_abs and max_rel; worst is the counted value with the
    largest relative error.  error: why a source could not be computed at all (a failure).
    """

    sources: tuple[str, str]
    tolerance: Tolerance
    checked: int
    max_abs: float
    max_rel: float
    failures: int
    kinks: int
    worst: Element | None
    worst_kink: Element | None = None
    unchecked: int = 0
    worst_unchecked: Element | None = None
    beyond_slopes: int = 0  # of the unchecked: values at a kink outside its one-sided slopes
    undefined: int = 0  # of the unchecked: values where f is not finite at x ± ε (out of its domain)
    error: str | None = None
    unresolved: bool = False  # the round-off floor exceeds MAX_ROUNDOFF_FRACTION of every value
    largest: float = 0.0  # the largest finite |value| of either source among the counted values

    @property
    def verdict(self) -> str:
        """ "FAIL", "INCONCLUSIVE" (too little checked, see the module docstring) or "ok"."""
        if self.failures or self.error:
            return "FAIL"
        if self.unresolved:
            return "INCONCLUSIVE"
        if (
            self.beyond_slopes
            or self.undefined
            or (
                self.unchecked
                and (self.unchecked > MAX_UNCHECKED_FRACTION * self.checked or self.unchecked == self.checked)
            )
        ):
            return "INCONCLUSIVE"
        return "ok"

    @property
    def passed(self) -> bool:
        return self.verdict == "ok"

    @property
    def reason(self) -> str | None:
        """Why the verdict is not ok, in words; None when it is."""
        if self.error:
            return self.error
        if self.failures:
            return f"{self.failures} of {self.checked} exceed rtol"
        if self.unresolved:
            return (
                f"the finite differences' round-off floor (atol {self.tolerance.atol:.1e}) exceeds "
                f"{MAX_ROUNDOFF_FRACTION:.0%} of every compared value: eps too small for the dtype"
            )
        if self.beyond_slopes:
            return (
                f"{self.unchecked} of {self.checked} unchecked, {self.beyond_slopes} of them outside the "
                "slopes on either side of their kink"
            )
        if self.undefined:
            return (
                f"{self.unchecked} of {self.checked} unchecked, {self.undefined} of them where f is not "
                f"finite at x ± ε (a step out of its domain: a smaller eps checks them)"
            )
        if self.verdict == "INCONCLUSIVE":
            limit = (
                "all of them" if self.unchecked == self.checked else f"more than {MAX_UNCHECKED_FRACTION:.0%}"
            )
            return f"{self.unchecked} of {self.checked} unchecked ({limit})"
        return None

    @property
    def label(self) -> str:
        return f"{self.sources[0]} ↔ {self.sources[1]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": list(self.sources),
            "rtol": self.tolerance.rtol,
            "atol": self.tolerance.atol,  # with atol_per_value: the largest value's atol
            "atol_per_value": self.tolerance.per_value,
            "checked": self.checked,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "failures": self.failures,
            "kinks": self.kinks,
            "unchecked": self.unchecked,
            "beyond_slopes": self.beyond_slopes,
            "undefined": self.undefined,
            "unresolved": self.unresolved,
            "verdict": self.verdict,
            "reason": self.reason,
            "passed": self.passed,
            "worst": render.element_dict(self.worst, self.sources),
            "worst_kink": render.element_dict(self.worst_kink, self.sources),
            "worst_unchecked": render.element_dict(self.worst_unchecked, self.sources),
        }


def failed_source(sources: tuple[str, str], tolerance: Tolerance, error: str) -> Comparison:
    """A comparison that could not be made because a source could not be computed: FAIL."""
    return Comparison(sources, tolerance, 0, 0.0, 0.0, 0, 0, None, error=error)


@dataclasses.dataclass(frozen=True)
class Entry:
    """The checks of one variable (MLP, Keras model) or one input (function)."""

    name: str
    shape: tuple[int, ...]
    norms: dict[str, float | None]
    comparisons: tuple[Comparison, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "norms": dict(self.norms),
            "passed": self.passed,
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


@dataclasses.dataclass(frozen=True)
class Report:
    """A gradient check's result; `to_text()` renders tables, `to_json()` the same data."""

    title: str
    mode: str
    dtype: str
    eps: float
    entries: tuple[Entry, ...]
    notes: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        """ "PASS", "FAIL" (a comparison failed) or "INCONCLUSIVE" (too little checked)."""
        verdicts = {c.verdict for _, c in self.comparisons}
        return "FAIL" if "FAIL" in verdicts else "INCONCLUSIVE" if "INCONCLUSIVE" in verdicts else "PASS"

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"

    @property
    def comparisons(self) -> list[tuple[Entry, Comparison]]:
        return [(e, c) for e in self.entries for c in e.comparisons]

    @property
    def failures(self) -> int:
        return sum(c.failures for _, c in self.comparisons)

    @property
    def kinks(self) -> int:
        return sum(c.kinks for _, c in self.comparisons)

    @property
    def unchecked(self) -> int:
        return sum(c.unchecked for _, c in self.comparisons)

    def entry(self, name: str) -> Entry:
        """The entry called `name`; KeyError if there is none."""
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return files.finite_or_null(  # strict JSON: a non-finite value is null, named in non_finite
            {
                "title": self.title,
                "mode": self.mode,
                "dtype": self.dtype,
                "eps": self.eps,
                "verdict": self.verdict,
                "passed": self.passed,
                "failures": self.failures,
                "kinks": self.kinks,
                "unchecked": self.unchecked,
                "notes": list(self.notes),
                "entries": [e.to_dict() for e in self.entries],
            }
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def to_text(self) -> str:
        """Tables of norms and comparisons, a line per finding, the thresholds and the verdict."""
        return render.report_text(self)

    def __str__(self) -> str:
        return self.to_text()


# --- the comparison core ---------------------------------------------------------------------
def compare(
    a,
    b,
    tolerance: Tolerance,
    *,
    sources: tuple[str, str] = ("analytic", "numeric"),
    kink=None,
    unchecked=None,
    beyond=None,
    locate: Callable[[int], Location] | None = None,
    atol=None,
    undefined=None,
) -> Comparison:
    """Compares two arrays of gradient values element by element.

    Args:
      a, b: same-size arrays (compared flat).
      tolerance: when an element fails (see the module docstring).
      sources: names of a and b, for the report.
      kink: optional bool array, True where the finite difference crossed a kink that was
        shown (`kinks.examine`); a failing element there counts as a kink, not a failure.
      unchecked: optional bool array, True where a disagreement could not be examined; a
        failing element there counts as unchecked (see `Comparison.verdict`).  A NaN in a
        where b is finite always counts as a failure, whatever kink and unchecked say.
      beyond: optional bool array, True where an unchecked value at a kink lies outside the
        slopes on either side (`kinks.examine`); one such value makes the verdict INCONCLUSIVE.
      locate: flat position -> `Location` (default: the flat index).
      undefined: optional bool array, True where f is not finite at x ± ε: such a value counts
        as unchecked, and one makes the verdict INCONCLUSIVE (a wrong derivative can sit there).
      atol: optional per-value atol (`Tolerance.roundoff_per_value`), in place of tolerance's:
        a floor sized by one large value must not hide errors in the small ones.
    """
    a, b = (np.asarray(v, np.float64).reshape(-1) for v in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"compare: a has {a.size} values, b has {b.size}")
    locate = locate or (lambda i: Location(index=(i,)))
    if atol is not None:
        atol = np.asarray(atol, np.float64).reshape(-1)
        tolerance = _per_value(tolerance, atol)
    abs_error = np.abs(a - b)
    floor = tolerance.floor if atol is None else atol / tolerance.rtol
    rel_error = abs_error / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    rel_error = np.where(np.isnan(rel_error), np.inf, rel_error)  # NaN always fails
    bad = rel_error > tolerance.rtol
    # A NaN derivative where the differences are finite is wrong whatever the sides show: no
    # kink or unavailable one-sided value excuses it (it would poison any training step).
    excusable = bad & ~(np.isnan(a) & np.isfinite(b))
    kinks = excusable & _mask(kink, bad) & ~_mask(undefined, bad)
    out_of_domain = excusable & _mask(undefined, bad)
    unexamined = excusable & (_mask(unchecked, bad) | out_of_domain) & ~kinks
    beyond_slopes = unexamined & _mask(beyond, bad)
    counted = ~kinks & ~unexamined
    magnitude = np.maximum(np.abs(a), np.abs(b))[counted]

    def element(mask):
        if not mask.any():
            return None
        i = int(np.argmax(np.where(mask, rel_error, -1.0)))
        return Element(locate(i), float(a[i]), float(b[i]), float(abs_error[i]), float(rel_error[i]))

    return Comparison(
        sources=sources,
        tolerance=tolerance,
        checked=int(a.size),
        max_abs=float(abs_error[counted].max(initial=0.0)),
        max_rel=float(rel_error[counted].max(initial=0.0)),
        failures=int((bad & counted).sum()),
        kinks=int(kinks.sum()),
        worst=element(counted),
        worst_kink=element(kinks),
        unchecked=int(unexamined.sum()),
        worst_unchecked=element(beyond_slopes if beyond_slopes.any() else unexamined),
        beyond_slopes=int(beyond_slopes.sum()),
        undefined=int((unexamined & out_of_domain).sum()),
        unresolved=_unresolved(a, b, tolerance, None if atol is None else atol[counted]),
        largest=float(magnitude[np.isfinite(magnitude)].max(initial=0.0)),
    )


def below_atol_notes(entries: Sequence[Entry], atol: float) -> list[str]:
    """A note for each variable or input whose values compared with the differences all lie
    below 10·atol: atol is absolute, so an error smaller than atol passes there unseen (10⁴
    gradients of ~1e-9 passed a 2× error).  Not a verdict: a structural zero computed with
    round-off looks the same."""
    notes = []
    for entry in entries:
        largest = max((c.largest for c in entry.comparisons if "numeric" in c.sources), default=0.0)
        if 0 < largest < 10 * atol:
            notes.append(
                f"{entry.name}: every value compared is below 10× atol (largest {largest:.1e}, atol "
                f"{atol:.0e}): an error smaller than atol passes; pass a smaller atol to check it"
            )
    return notes


def _per_value(tolerance: Tolerance, atol: np.ndarray) -> Tolerance:
    """The tolerance a comparison with per-value atol reports: its largest atol."""
    largest = float(atol.max(initial=tolerance.atol))
    unraised = tolerance.unraised_atol if tolerance.unraised_atol is not None else tolerance.atol
    raised = largest > unraised
    return Tolerance(largest, tolerance.rtol, unraised if raised else None, per_value=raised)


def _unresolved(a: np.ndarray, b: np.ndarray, tolerance: Tolerance, counted_atol=None) -> bool:
    """True when the round-off floor raised atol above MAX_ROUNDOFF_FRACTION of the values' scale.

    The scale: the largest value, or the zero floor the unraised tolerance had, if larger (a
    derivative that is 0 everywhere is resolved by an atol far below that floor).  With
    per-value atol, the largest atol of the values it judged (counted_atol): an unchecked
    value's own floor decides nothing.
    """
    if tolerance.unraised_atol is None:
        return False
    largest = float(np.nanmax(np.maximum(np.abs(a), np.abs(b)), initial=0.0))
    scale = max(largest, tolerance.unraised_atol / tolerance.rtol)
    atol = tolerance.atol if counted_atol is None else float(np.max(counted_atol, initial=0.0))
    return bool(atol > MAX_ROUNDOFF_FRACTION * scale)


def _mask(values, like: np.ndarray) -> np.ndarray:
    return np.zeros_like(like) if values is None else np.asarray(values, bool).reshape(-1)


# --- rendering -------------------------------------------------------------------------------
