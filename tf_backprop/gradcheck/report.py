"""What a gradient check finds: tolerances, the element-wise comparison and the report.

For values a, b the relative error is

    rel = |a − b| / max(|a|, |b|, atol / rtol)

and an element fails when rel > rtol, i.e. when |a − b| > max(atol, rtol · max(|a|, |b|)):
atol / rtol is the scale below which a gradient counts as zero.

tape ↔ manual (`EXACT`): the two paths sum in different orders, which leaves round-off residue
proportional to the gradient's scale (max |g| over all tape gradient elements) in elements that
come out of cancelling sums; the MLP checker scales atol by it.  Against numeric values, atol is
raised to the finite-difference round-off floor ROUNDOFF_FACTOR · u · |f| / eps when that is
larger (u: the dtype's machine epsilon; |f|: the largest |f_i|, or for projections uᵀf the
largest ‖u ⊙ f‖).

`Report.to_text()` renders a norms table, a comparisons table, one line per failing or kinked
comparison, the thresholds and the verdict; `to_json()` the same data, NaN and inf as strings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

ROUNDOFF_FACTOR = 16  # the round-off floor is ROUNDOFF_FACTOR · u · |f| / eps


# --- thresholds ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tolerance:
    """An element fails when |a − b| / max(|a|, |b|, atol / rtol) > rtol."""

    atol: float
    rtol: float

    @property
    def floor(self) -> float:
        """The scale below which a value counts as zero in the relative error."""
        return self.atol / self.rtol

    def with_roundoff(self, dtype: str, scale: float, eps: float) -> Tolerance:
        """This tolerance with atol raised to the finite-difference round-off floor."""
        floor = ROUNDOFF_FACTOR * float(np.finfo(dtype).eps) * abs(scale) / eps
        return self if floor <= self.atol else Tolerance(floor, self.rtol)

    def scaled(self, scale: float) -> Tolerance:
        """This tolerance with atol multiplied by max(1, scale)."""
        return Tolerance(self.atol * max(1.0, scale), self.rtol)

    def __str__(self) -> str:
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
    (full Jacobians only); direction: the d-th random direction in fast mode.
    """

    index: tuple[int, ...] | None = None
    output_index: tuple[int, ...] | None = None
    direction: int | None = None

    def __str__(self) -> str:
        if self.direction is not None:
            return f"dir {self.direction}"
        text = _format_index(self.index)
        return text if self.output_index is None else f"in{text} out{_format_index(self.output_index)}"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


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
    difference crossed a kink (not failures, and left out of max_abs and max_rel); worst is the
    counted value with the largest relative error.
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

    @property
    def passed(self) -> bool:
        return self.failures == 0

    @property
    def label(self) -> str:
        return f"{self.sources[0]} ↔ {self.sources[1]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": list(self.sources),
            "rtol": self.tolerance.rtol,
            "atol": self.tolerance.atol,
            "checked": self.checked,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "failures": self.failures,
            "kinks": self.kinks,
            "passed": self.passed,
            "worst": _element_dict(self.worst, self.sources),
            "worst_kink": _element_dict(self.worst_kink, self.sources),
        }


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
    def passed(self) -> bool:
        return all(e.passed for e in self.entries)

    @property
    def comparisons(self) -> list[tuple[Entry, Comparison]]:
        return [(e, c) for e in self.entries for c in e.comparisons]

    @property
    def failures(self) -> int:
        return sum(c.failures for _, c in self.comparisons)

    @property
    def kinks(self) -> int:
        return sum(c.kinks for _, c in self.comparisons)

    def entry(self, name: str) -> Entry:
        """The entry called `name`; KeyError if there is none."""
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return _finite_json(
            {
                "title": self.title,
                "mode": self.mode,
                "dtype": self.dtype,
                "eps": self.eps,
                "passed": self.passed,
                "failures": self.failures,
                "kinks": self.kinks,
                "notes": list(self.notes),
                "entries": [e.to_dict() for e in self.entries],
            }
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def to_text(self) -> str:
        lines = [self.title, f"mode {self.mode}, {self.dtype}, eps {self.eps:g}"]
        lines += [f"note: {note}" for note in self.notes]
        lines += ["", *_norms_table(self.entries), "", *_comparisons_table(self.entries)]
        lines += _details(self)
        lines += ["", "thresholds: an element fails when |a − b| / max(|a|, |b|, atol/rtol) > rtol"]
        lines += [f"  {label}: {tol}" for label, tol in _tolerances(self).items()]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(
            f"{verdict}: {len(self.comparisons)} comparisons, {self.failures} failed elements, "
            f"{self.kinks} kinks"
        )
        return "\n".join(lines)

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
    locate: Callable[[int], Location] | None = None,
) -> Comparison:
    """Compares two arrays of gradient values element by element.

    Args:
      a, b: same-size arrays (compared flat).
      tolerance: when an element fails (see the module docstring).
      sources: names of a and b, for the report.
      kink: optional bool array, True where the finite difference crossed a kink; a failing
        element there counts as a kink, not a failure.
      locate: flat position -> `Location` (default: the flat index).
    """
    a, b = (np.asarray(v, np.float64).reshape(-1) for v in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"compare: a has {a.size} values, b has {b.size}")
    locate = locate or (lambda i: Location(index=(i,)))
    abs_error = np.abs(a - b)
    rel_error = abs_error / np.maximum(np.maximum(np.abs(a), np.abs(b)), tolerance.floor)
    rel_error = np.where(np.isnan(rel_error), np.inf, rel_error)  # NaN always fails
    bad = rel_error > tolerance.rtol
    kinks = bad & np.asarray(kink, bool).reshape(-1) if kink is not None else np.zeros_like(bad)
    counted = ~kinks

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
    )


# --- rendering -------------------------------------------------------------------------------
def _format_index(index) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]" if index is not None else "-"


def _format_number(value) -> str:
    return "-" if value is None else f"{value:.3e}"


def _element_dict(element: Element | None, sources: tuple[str, str]) -> dict[str, Any] | None:
    if element is None:
        return None
    return {
        **element.location.to_dict(),
        sources[0]: element.a,
        sources[1]: element.b,
        "abs_error": element.abs_error,
        "rel_error": element.rel_error,
    }


def _finite_json(value):
    """Replaces NaN and inf (not valid JSON) by strings, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def _norms_table(entries) -> list[str]:
    sources = list(dict.fromkeys(s for e in entries for s in e.norms))
    header = ["name", "shape", *[f"‖{s}‖" for s in sources]]
    rows = [[e.name, str(list(e.shape)), *[_format_number(e.norms.get(s)) for s in sources]] for e in entries]
    return _table(header, rows)


def _comparisons_table(entries) -> list[str]:
    header = ["name", "comparison", "checked", "max abs", "max rel", "worst at", "a", "b", "kinks", "verdict"]
    rows = []
    for e in entries:
        for c in e.comparisons:
            worst = c.worst
            rows.append(
                [
                    e.name,
                    c.label,
                    str(c.checked),
                    f"{c.max_abs:.2e}",
                    f"{c.max_rel:.2e}",
                    str(worst.location) if worst else "-",
                    f"{worst.a:.6g}" if worst else "-",
                    f"{worst.b:.6g}" if worst else "-",
                    str(c.kinks),
                    "ok" if c.passed else "FAIL",
                ]
            )
    return _table(header, rows)


def _details(report: Report) -> list[str]:
    lines = []
    for entry, c in report.comparisons:
        if not c.passed:
            w = c.worst
            lines.append(
                f"FAIL {entry.name} {c.label}: {c.failures} of {c.checked} exceed rtol; worst at "
                f"{w.location}: {c.sources[0]} {w.a:.9g}, {c.sources[1]} {w.b:.9g}, "
                f"abs error {w.abs_error:.3e}, rel error {w.rel_error:.3e}"
            )
        if c.kinks:
            k = c.worst_kink
            lines.append(
                f"kink {entry.name} {c.label}: {c.kinks} finite difference(s) crossed a kink, not "
                f"counted; e.g. at {k.location}: {c.sources[0]} {k.a:.6g}, {c.sources[1]} {k.b:.6g}"
            )
    return ["", *lines] if lines else []


def _tolerances(report: Report) -> dict[str, Tolerance]:
    return {c.label: c.tolerance for _, c in report.comparisons}
