"""When a disagreement with a central difference is a kink: the rule, shown on both sides.

A central difference (f(x + εv) − f(x − εv)) / 2ε across a point where the derivative jumps
(ReLU at 0, clip at ±1) measures an average of two slopes, not the derivative.  A failing value
is counted as a kink — not a failure — only when the kink is *shown*, from the one-sided
differences

    D+ = (f(x + εv) − f(x)) / ε,        D− = (f(x) − f(x − εv)) / ε

and the analytic source's own derivative along v: a at x, a± at x ± εv, m± at x ± εv/2.  Two
ways to show one:

1. A kink inside one step, or at x with the analytic value one side's: on one side s the
   function is smooth and a is right — D_s agrees with the trapezoid (a + a_s)/2 and with the
   midpoint m_s, each exact to second order between two points of one smooth piece, as accurate
   as the central difference (both: a wrong a whose error flips sign across x cancels in the
   trapezoid alone);
   on the other side s' the derivative jumps (a_s' ≠ a) and, for a continuous f (order 1), D_s'
   lies between a and a_s', the slopes it averaged (widened by |a_s − a|: slopes drift within a
   piece by about as much as over the smooth side's step).  a is checked, one-sided.  Where
   the jump side is straight over the whole step (its differences over ε and ε/2 agree), the
   kink is at x, and a_s' must be that side's slope (`_far_side_stands`); so must a value's
   that agreed while its one-sided differences did not (`_slopes_beside_agreeing_kinks`).
2. A kink at x where the analytic value is a convention (several kinks meeting, e.g. ReLUs at 0
   moving different ways along v): each side's difference agrees with its own midpoint slope
   (D± ≈ m±, the midpoint rule: exact to second order inside one piece) and the slopes differ
   (m+ ≠ m−).  The kink is shown; a is checked only if it agrees with m+ or m− (TensorFlow's
   kernels take one side's derivative at a kink); otherwise the value is *unchecked*: no
   difference along v can check a value chosen at a kink.  An unchecked value outside the
   slopes' range [min(m±), max(m±)] is moreover *beyond* them: a convention can give one (ReLU'(0)
   = 0 in 2·relu(t) − relu(−t) gives 0, the slopes are 2 and 1), but so does a wrong derivative
   at a single kink, so a comparison with one is never PASS.

3. At order 2 only, in full and fast mode (f a gradient, which may jump at x itself, as sign(x) does at 0: a value
   that is neither side's, so both sides jump), from f at x ± εv/2 too: each side's difference
   is D(h) = J/h + the mean slope over the step, which is the derivative at the step's middle
   (m± over ε, the derivative at x ± εv/4 over ε/2); the two steps separate the jump J from
   the source's slope error, which must vanish on both sides, J must not on one, and a must be
   one side's derivative at x (extrapolated from x ± εv/4 and x ± εv/2).

At order 2, f is a gradient, which itself jumps at a ReLU kink, so the "between" test of 1 is
skipped, and the jump side's jump may be in f alone (the second derivatives on both sides equal,
0 for ReLU): D_s' disagreeing with its own trapezoid (a + a_s')/2 shows it.  "Agrees" is the
comparison's own tolerance.  A value whose one-sided analytic values cannot be computed (not
finite, or the source raised at x ± εv) is *unchecked* too, and so is one whose central
difference is not finite (f is not, at x ± εv: log stepped below 0; one such value makes the
verdict INCONCLUSIVE: a wrong derivative can sit there), unless the value itself is NaN
where the difference is finite (`report.compare` fails that); everything else that disagreed is
a failure.  Before any of this, a value whose disagreement is the central difference's own
truncation error (the half step shrinks it four times) is compared with the Richardson
extrapolation instead (`truncation_explained`).  The MLP checker also requires a pre-activation of a
`has_kink` activation to sit at 0 or to change sign along the step, and where the step crosses
kinks at more than one place (`several`), a value no rule shows is unchecked, not a failure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from tf_backprop.gradcheck.report import Comparison, Location, Tolerance, compare

MAX_PROBES = 4096  # kink candidates examined per comparison; the rest count as failures

# (candidate positions, t) -> the analytic source's derivative along v at x + t·εv
AtSide = Callable[[np.ndarray, float], np.ndarray]


@dataclasses.dataclass(frozen=True)
class SplitSides:
    """Order 2's rule 3: the one-sided differences D± at the half step, and the steps really
    taken, full (h±) and half (h_half±), at the candidate positions."""

    d_plus: np.ndarray
    d_minus: np.ndarray
    h_plus: np.ndarray
    h_minus: np.ndarray
    h_half_plus: np.ndarray
    h_half_minus: np.ndarray


# candidate positions -> their `SplitSides`
Split = Callable[[np.ndarray], SplitSides]


@dataclasses.dataclass(frozen=True)
class Sides:
    """One-sided values at kink candidates (flat positions `at` of the compared arrays).

    d_plus, d_minus: the one-sided differences D±; a_plus, a_minus: the analytic source's
    derivative along the same direction at x ± εv (NaN where it could not be computed).
    """

    at: np.ndarray
    d_plus: np.ndarray
    d_minus: np.ndarray
    a_plus: np.ndarray
    a_minus: np.ndarray


def candidates(a, b, tolerance: Tolerance, allowed=None) -> np.ndarray:
    """Flat positions where a and b disagree (and `allowed` is True): the values to examine."""
    a, b = (np.asarray(v, np.float64).reshape(-1) for v in (a, b))
    bad = ~_agree(a, b, tolerance)
    if allowed is not None:
        bad &= np.asarray(allowed, bool).reshape(-1)
    return np.flatnonzero(bad)[:MAX_PROBES]


def examine(
    a,
    size: int,
    sides: Sides,
    tolerance: Tolerance,
    continuous: bool = True,
    midpoint: AtSide | None = None,
    split: Split | None = None,
):
    """(kink, unchecked, beyond): bool masks of length `size` over the compared values (see the module).

    beyond marks the unchecked values at the point that lie outside [min(m±), max(m±)].
    tolerance's atol may be per candidate (aligned with sides.at).
    midpoint(positions, ±0.5) gives m± for rule 2; without it only rule 1 applies.  split (order
    2 only) gives each side's jump and the slope beside it, for rule 3.
    """
    a = np.asarray(a, np.float64).reshape(-1)[sides.at]
    kink, unchecked, beyond = np.zeros(size, bool), np.zeros(size, bool), np.zeros(size, bool)
    available = np.isfinite(sides.a_plus) & np.isfinite(sides.a_minus)
    middles = (None, None) if midpoint is None else (midpoint(sides.at, 0.5), midpoint(sides.at, -0.5))
    plus = _shown(
        a, (sides.d_minus, sides.a_minus, middles[1]), (sides.d_plus, sides.a_plus), tolerance, continuous
    )
    minus = _shown(
        a, (sides.d_plus, sides.a_plus, middles[0]), (sides.d_minus, sides.a_minus), tolerance, continuous
    )
    shown = available & (plus | minus)
    if continuous and split is not None and shown.any():
        shown[shown] &= _far_side_stands(plus[shown], minus[shown], sides, shown, split, tolerance)
    kink[sides.at], unchecked[sides.at] = shown, ~available
    rest = available & ~shown
    if midpoint is not None and rest.any():
        at, tol = sides.at[rest], _take(tolerance, rest)
        m_plus, m_minus = middles[0][rest], middles[1][rest]
        clean = _agree(sides.d_plus[rest], m_plus, tol) & _agree(sides.d_minus[rest], m_minus, tol)
        at_the_point = clean & ~_agree(m_plus, m_minus, tol)
        one_side = _agree(a[rest], m_plus, tol) | _agree(a[rest], m_minus, tol)
        kink[at] = at_the_point & one_side
        unchecked[at] = (at_the_point & ~one_side) | ~(np.isfinite(m_plus) & np.isfinite(m_minus))
        between = (np.minimum(m_plus, m_minus) <= a[rest]) & (a[rest] <= np.maximum(m_plus, m_minus))
        beyond[at] = at_the_point & ~one_side & ~between
    if split is not None and midpoint is not None and not continuous:
        failing = available & ~kink[sides.at] & ~unchecked[sides.at]
        if failing.any():
            at = sides.at[failing]
            halves = split(at)
            quarters = (midpoint(at, 0.25), midpoint(at, -0.25))
            full = (sides.d_plus[failing], sides.d_minus[failing], middles[0][failing], middles[1][failing])
            kink[at] = _jumps_at_the_point(a[failing], full, halves, quarters, _take(tolerance, failing))
    return kink, unchecked, beyond


def _far_side_stands(plus, minus, sides: Sides, shown, split: Split, tolerance: Tolerance) -> np.ndarray:
    """Rule 1's jump side, checked where f is linear over its whole step (its one-sided
    differences over ε and ε/2 agree: the kink is at x itself): the analytic value at x ± εv
    must then be that side's slope.  A ReLU written with slope 2 at x = 0 showed a kink on its
    difference 1 lying between 0 and 2, and PASSed; its slope was never compared.

    plus, minus: which side rule 1 showed the jump on, for the `shown` candidates; True where
    a side it was shown on stands."""
    halves = split(sides.at[shown])
    tol = _take(tolerance, shown)
    # 3·D(ε) − 2·D(ε/2): the slope at the step's end, to second order on a smooth piece; its
    # round-off is about 7 times D's.
    wide = dataclasses.replace(tol, atol=7 * np.asarray(tol.atol))
    stands = np.zeros(len(plus), bool)
    for on_side, d, d_half, a_end in (
        (plus, sides.d_plus[shown], halves.d_plus, sides.a_plus[shown]),
        (minus, sides.d_minus[shown], halves.d_minus, sides.a_minus[shown]),
    ):
        linear = _agree(d, d_half, tol)
        stands |= on_side & ~(linear & ~_agree(a_end, 3 * d - 2 * d_half, wide))
    return stands


def truncation_explained(a, central, at: np.ndarray, split: Split, tolerance: Tolerance):
    """central with the values at `at` whose disagreement with a is the central difference's
    own truncation error replaced by their Richardson extrapolation (4·C(ε/2) − C(ε))/3.

    Near a pole or a log's edge (1/t at 1e-4, log at 3e-5) or with a large eps, C(ε) is off by
    ~(ε/x)²: a right derivative FAILed.  Truncation shows as C(ε) − a ≈ 4·(C(ε/2) − a); a wrong a
    leaves both differences equally far from it, and a kink does not shrink so.  tolerance: for
    the values at `at`."""
    halves = split(at)
    h_up, h_down = halves.h_half_plus, halves.h_half_minus
    with np.errstate(invalid="ignore", divide="ignore"):
        half = (halves.d_plus * h_up + halves.d_minus * h_down) / (h_up + h_down)  # C(ε/2)
        full, own = central[at], a[at]
        extrapolated = (4 * half - full) / 3
        # 4 to within 10% (a kink inside the step of a curved f came within 11%, at 3.56)
        shrank = np.abs((full - own) - 4 * (half - own)) <= 0.1 * np.abs(full - own)
    wide = dataclasses.replace(tolerance, atol=3 * np.asarray(tolerance.atol))  # C(ε/2) rounds 2×
    explained = shrank & _agree(own, extrapolated, wide)
    central = central.copy()
    central[at[explained]] = extrapolated[explained]
    return central


def _take(tolerance: Tolerance, mask: np.ndarray) -> Tolerance:
    """tolerance for the values a bool mask or flat positions pick: its per-value atol taken
    there, if it has one."""
    if np.ndim(tolerance.atol) == 0:
        return tolerance
    return dataclasses.replace(tolerance, atol=np.asarray(tolerance.atol)[mask])


def _jumps_at_the_point(a, full, halves: SplitSides, quarters, tolerance: Tolerance) -> np.ndarray:
    """Rule 3 (order 2): f jumps at x itself, on one side or both (sign(x) at 0: −1, 0, 1).

    A side's difference over a step h is D(h) = J/h + f's mean slope over the step, and that mean
    is the source's derivative at the step's middle to second order (m over ε, q over ε/2).  With
    A = D(h) − m and B = D(h/2) − q, the jump cancels in e = (h·A − h'·B)/(h − h') (h' the half
    step really taken), the source's slope error: e must vanish on both sides (within the
    slopes' tolerance), the jump A − e must not on one, and a must be one side's derivative at x.
    A wrong derivative leaves e; a jump of f alone does not.
    """
    d_plus, d_minus, m_plus, m_minus = full
    # Each side's derivative as it reaches x, from its values at ε/4 and ε/2 (linear, so exact
    # to second order): a must be one of them.
    limits = 2 * quarters[0] - m_plus, 2 * quarters[1] - m_minus
    right, jumped = np.ones(len(a), bool), np.zeros(len(a), bool)
    for d, m, d_half, q, h, h_half in (
        (d_plus, m_plus, halves.d_plus, quarters[0], halves.h_plus, halves.h_half_plus),
        (d_minus, m_minus, halves.d_minus, quarters[1], halves.h_minus, halves.h_half_minus),
    ):
        whole, half = d - m, d_half - q  # J/h and J/h' (+ the slope error each)
        error = (h * whole - h_half * half) / (h - h_half)
        right &= _agree(m + error, m, tolerance)
        jumped |= ~_agree(m + whole - error, m, tolerance)
    one_side = _agree(a, limits[0], tolerance) | _agree(a, limits[1], tolerance)
    return right & jumped & one_side


def _shown(a, smooth_side, jump_side, tolerance: Tolerance, continuous: bool) -> np.ndarray:
    """Rule 1 with the kink on the jump side: the other side smooth and checking a, the derivative jumping.

    smooth_side: (D, a at its end, m at its middle or None); jump_side: (D, a at its end).  The
    smooth side's difference must agree with both its trapezoid and its midpoint: two second-order
    rules agree on a smooth piece, while a wrong a whose error changes sign across the point
    (a = 1, a− = −1 on 50t²) cancels in the trapezoid alone.
    """
    (d_smooth, a_smooth, m_smooth), (d_jump, a_jump) = smooth_side, jump_side
    smooth = _agree(d_smooth, (a + a_smooth) / 2, tolerance)
    if m_smooth is not None:
        smooth &= _agree(d_smooth, m_smooth, tolerance)
    jump = ~_agree(a_jump, a, tolerance)
    if not continuous:
        # f itself may jump (a ReLU's gradient, 0 then 1): a derivative sees no jump in the
        # analytic values, only in the difference, which then disagrees with its own side's.
        return smooth & (jump | ~_agree(d_jump, (a + a_jump) / 2, tolerance))
    # Slopes drift within each piece too: by about as much as over the smooth side's step.
    slack = np.maximum(tolerance.atol, tolerance.rtol * np.maximum(np.abs(a), np.abs(a_jump)))
    slack = slack + np.abs(a_smooth - a)
    between = (np.minimum(a, a_jump) - slack <= d_jump) & (d_jump <= np.maximum(a, a_jump) + slack)
    return smooth & jump & between


def _agree(a, b, tolerance: Tolerance) -> np.ndarray:
    """|a − b| ≤ max(atol, rtol · max(|a|, |b|)), elementwise; False for NaN."""
    with np.errstate(invalid="ignore"):
        limit = np.maximum(tolerance.atol, tolerance.rtol * np.maximum(np.abs(a), np.abs(b)))
        return np.abs(a - b) <= limit


def compare_with_differences(
    a,
    differences: tuple[np.ndarray, np.ndarray, np.ndarray],
    at_side: AtSide,
    tolerance: Tolerance,
    *,
    sources: tuple[str, str],
    locate: Callable[[int], Location],
    continuous: bool = True,
    allowed=None,
    several=None,
    split: Split | None = None,
    atol=None,
) -> Comparison:
    """`compare` of analytic values a with central differences, kink candidates examined.

    differences: (central, D+, D−), flat like a; at_side(positions, t): the analytic source's
    values at x + t·εv for those positions (NaN where unavailable); allowed: where a kink may be
    (default everywhere); several: where the step crossed kinks at more than one place (the MLP
    checker counts them): a disagreement no rule shows there is unchecked, not a failure — the
    rules read one kink per step; atol: per-value atol, for the candidates, their kinks and
    `compare`.
    """
    a = np.asarray(a, np.float64).reshape(-1)
    central, d_plus, d_minus = (np.asarray(d, np.float64).reshape(-1) for d in differences)
    per_value = tolerance if atol is None else dataclasses.replace(tolerance, atol=np.reshape(atol, -1))
    # Truncation where no kink was crossed (`allowed`, when given, marks where one was).
    smooth = None if allowed is None else ~np.asarray(allowed, bool).reshape(-1)
    disagreeing = candidates(a, central, per_value, smooth) if split is not None else np.array([], int)
    if disagreeing.size:
        central = truncation_explained(a, central, disagreeing, split, _take(per_value, disagreeing))
    at = candidates(a, central, per_value, allowed)
    kink = unchecked = beyond = None
    if at.size:
        sides = Sides(at, d_plus[at], d_minus[at], at_side(at, 1.0), at_side(at, -1.0))
        # Each candidate's kink is judged at its own floor: one large output raised the shared
        # one enough to show a kink for a wrong derivative beside it.
        own = tolerance if atol is None else dataclasses.replace(tolerance, atol=np.reshape(atol, -1)[at])
        kink, unchecked, beyond = examine(a, a.size, sides, own, continuous, at_side, split)
        if several is not None:
            unchecked = unchecked | (np.asarray(several, bool).reshape(-1) & ~kink)
    if continuous and split is not None:
        a, central = _slopes_beside_agreeing_kinks(
            a, central, d_plus, d_minus, at_side, split, per_value, allowed, at
        )
    # f not finite at x ± εv (log or sqrt stepped below 0): no difference to check a against.
    return compare(
        a,
        central,
        tolerance,
        sources=sources,
        kink=kink,
        unchecked=unchecked,
        beyond=beyond,
        locate=locate,
        atol=atol,
        undefined=~np.isfinite(central),
    )


def _slopes_beside_agreeing_kinks(a, central, d_plus, d_minus, at_side, split, tolerance, allowed, examined):
    """(a, central) with a kink at x that agreed checked beside it: |x| at 0 has a = 0 and a
    central difference of 0 whatever its slopes, so an abs written with slope 2 for x > 0 PASSed
    there.  Where the one-sided differences disagree (a kink at x) and a side is straight over
    its whole step, the analytic value at x ± εv must be that side's slope (as `_far_side_stands`
    asks of the values that disagreed); where it is not, the pair compared there becomes that
    slope's (analytic at x ± εv, the extrapolated difference), which fails."""
    at_a_kink = _agree(a, central, tolerance) & ~_agree(d_plus, d_minus, tolerance)
    if allowed is not None:
        at_a_kink &= np.asarray(allowed, bool).reshape(-1)
    at_a_kink[examined] = False
    at = np.flatnonzero(at_a_kink)[:MAX_PROBES]
    if not at.size:
        return a, central
    halves = split(at)
    # A kink at x keeps its jump D+ − D− at the half step; curvature halves it (a smooth f near
    # a pole, whose one-sided differences disagree within rtol): only a jump is worth the
    # analytic source's values at x ± εv.
    jump = np.abs(halves.d_plus - halves.d_minus) > 0.75 * np.abs(d_plus[at] - d_minus[at])
    at, halves = at[jump], _rows(halves, jump)
    if not at.size:
        return a, central
    tol = _take(tolerance, at)
    wide = dataclasses.replace(tol, atol=7 * np.asarray(tol.atol))  # 3·D(ε) − 2·D(ε/2)'s round-off
    a, central = a.copy(), central.copy()
    for d, d_half, t in ((d_plus[at], halves.d_plus, 1.0), (d_minus[at], halves.d_minus, -1.0)):
        a_end, slope = at_side(at, t), 3 * d - 2 * d_half
        wrong = np.isfinite(a_end) & _agree(d, d_half, tol) & ~_agree(a_end, slope, wide)
        a[at[wrong]], central[at[wrong]] = a_end[wrong], slope[wrong]
    return a, central


def _rows(sides: SplitSides, mask: np.ndarray) -> SplitSides:
    """sides at the positions a bool mask picks."""
    return SplitSides(*(np.asarray(getattr(sides, f.name))[mask] for f in dataclasses.fields(SplitSides)))


def cached(split: Split) -> Split:
    """split, evaluating f at x ± εv/2 once per position: truncation, rule 1's far side, rule 3
    and each analytic source's comparison ask for the same candidates."""
    done: dict[int, tuple] = {}
    names = [field.name for field in dataclasses.fields(SplitSides)]

    def once(at: np.ndarray) -> SplitSides:
        missing = np.array([p for p in np.asarray(at).tolist() if p not in done], int)
        if missing.size:
            sides = split(missing)
            for k, position in enumerate(missing.tolist()):
                done[position] = tuple(float(getattr(sides, name)[k]) for name in names)
        rows = [done[p] for p in np.asarray(at).tolist()]
        return (
            SplitSides(*(np.array(column, np.float64) for column in zip(*rows, strict=True)))
            if rows
            else split(at)
        )

    return once


def guarded(at_side: AtSide) -> AtSide:
    """at_side, returning NaN (unchecked) where the source cannot be computed at x + t·εv."""

    def safe(at: np.ndarray, t: float) -> np.ndarray:
        try:
            return np.asarray(at_side(at, t), np.float64)
        except Exception:  # noqa: BLE001 - an unavailable one-sided value leaves the kink unchecked
            return np.full(len(at), np.nan)

    return safe
