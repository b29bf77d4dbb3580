"""Moments: count, mean and squared deviations of columns, merged batch by batch (Chan et al.).

A streaming pass cannot hold its rows, so each batch's moments are computed in two passes over
the batch and merged into the running ones with Chan, Golub and LeVeque's pairwise update,
in float64.  Everything is kept relative to a shift (the first row seen): with values around
1e9 and a spread of 0.01 the running mean itself cannot be stored closer than 1e-7, and every
merge would put that rounding into the squared deviations; relative to the shift the numbers
are of the spread's size, and the result is as accurate as NumPy's two-pass std over all the
rows at once.  Merging shards in a fixed order gives the same bits whoever computed each.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Moments:
    """count rows; shift [k] (a reference point); centered [k] = mean − shift; m2 [k] = Σ (x − mean)²."""

    count: int
    shift: np.ndarray
    centered: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, k: int) -> Moments:
        return cls(0, np.zeros(k), np.zeros(k), np.zeros(k))

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """The moments of values [m, k] (m may be 0)."""
        values = np.asarray(values, np.float64)
        if len(values) == 0:
            return cls.empty(values.shape[1])
        shift = values[0]
        with np.errstate(over="ignore", invalid="ignore"):  # stays inf or nan, reported by column
            relative = values - shift
            centered = relative.mean(axis=0)
            return cls(len(values), shift, centered, np.square(relative - centered).sum(axis=0))

    def merge(self, other: Moments) -> Moments:
        """The moments of both sets of rows (relative to this one's shift)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        with np.errstate(over="ignore", invalid="ignore"):  # as in `of`
            # Shifts are two rows of the data: their difference is exact where they are close.
            delta = ((other.shift - self.shift) + other.centered) - self.centered
            centered = self.centered + delta * (other.count / count)
            m2 = self.m2 + other.m2 + np.square(delta) * (self.count * other.count / count)
        return Moments(count, self.shift, centered, m2)

    @property
    def mean(self) -> np.ndarray:
        return self.shift + self.centered

    @property
    def std(self) -> np.ndarray:
        """The population standard deviation (as NumPy's default std, ddof 0)."""
        return np.sqrt(self.m2 / max(self.count, 1))

    def to_dict(self) -> dict:
        """JSON-ready: floats as hexadecimal strings (`float.hex`), which round-trip exactly and
        keep an overflowed inf (strict JSON has no number for it)."""
        return {
            k: v if k == "count" else [float(x).hex() for x in v] for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> Moments:
        arrays = {
            k: np.array([float.fromhex(x) for x in d[k]], np.float64) for k in ("shift", "centered", "m2")
        }
        return cls(int(d["count"]), **arrays)


def mean_and_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy's per-column mean and std of values [m, k] (m > 0); where NumPy's sums overflow,
    near float64's limit, the moments relative to a row, as the streamed pass computes them
    (still infinite when the spread itself overflows)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = values.mean(axis=0), values.std(axis=0)
    if np.all(np.isfinite(mean)) and np.all(np.isfinite(std)):
        return mean, std
    moments = Moments.of(values)
    return moments.mean, moments.std
