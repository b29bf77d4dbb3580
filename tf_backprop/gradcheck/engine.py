"""Checking a function at a point: whole Jacobians (full mode) or random projections (fast mode).

Per input, the reverse-mode values (uᵀJ from tf.GradientTape) are compared with central
differences; with forward mode on, the forward-mode values (Jv from ForwardAccumulator) are
compared with the central differences and with the reverse-mode ones (uᵀ(Jv) = (uᵀJ)v, equal up
to round-off).  A disagreement with the differences is examined by the kink rule (`kinks`),
from the one-sided differences and the same source's derivatives at θ ± δ.

full  the whole Jacobian [n_out, n_i] of every input: u over the output identity, v over the
      input identity.
fast  per input, k random sign directions v (uᵀJv for a random unit u per direction, against
      uᵀ(f(θ + εv) − f(θ − εv))/2ε) plus s random elements j ((u₀ᵀJ)_j).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from tf_backprop.gradcheck import kinks, perturb
from tf_backprop.gradcheck.options import Options
from tf_backprop.gradcheck.problem import Problem, error_line, run_chunked, run_identity, runner
from tf_backprop.gradcheck.report import (
    EXACT,
    FLOAT32,
    Comparison,
    Entry,
    Tolerance,
    compare,
    failed_source,
)

MAX_FULL_JACOBIAN = 1 << 25  # output × input elements beyond which mode="full" refuses
EXACT32 = Tolerance(atol=FLOAT32.atol * 1e-3, rtol=1e-4)  # forward ↔ reverse in float32


@dataclasses.dataclass(frozen=True)
class _Source:
    """One analytic source's values for one input, and the same values at θ ± δ (`kinks`)."""

    values: np.ndarray
    at_side: Callable[[np.ndarray, int], np.ndarray]  # (candidate positions, ±1) -> values there


@dataclasses.dataclass(frozen=True)
class _Numeric:
    """The central differences of one input's values and the one-sided ones, flat; split: the
    one-sided differences at the half step (`kinks.Split`), computed for the candidates only."""

    central: np.ndarray
    plus: np.ndarray
    minus: np.ndarray
    split: Callable | None = None
    atol: np.ndarray | None = None  # each value's atol: its own round-off floor (`_roundoff`)


def full_jacobian(p: Problem) -> list[Entry]:
    """Compares the whole Jacobian [n_out, n_i] of every input."""
    n, n_out = p.layout.size, p.output.size
    if n * n_out > MAX_FULL_JACOBIAN:
        raise ValueError(f"mode: 'full' would compare a {n_out} x {n} Jacobian; use mode='fast'")
    try:
        reverse = run_identity(runner(p, "vjp"), n_out, n)  # [n_out, n]
    except Exception as error:  # noqa: BLE001 - e.g. an op without a second-order gradient
        return _unavailable(p, error)
    forward, error = _forward_full(p) if p.forward else (None, None)
    target = perturb.Target(runner(p, "pair"), n, 0, n_out)
    plus, minus = perturb.run_plans([target], [perturb.full_plan(n)], p.eps, "full")[0]
    plus, minus = (v.astype(np.float64).T for v in (plus, minus))  # [n_out, n]
    f0 = p.f0[:, None]
    up, down = element_steps(p)
    # f's own rounding: of its value (|f|) and of intermediates that scale with the input (|θ|·|J|).
    theta_max = _theta_max(p)
    # The comparison's largest floor, for the report; each value is judged at its own (below).
    scale = float(np.abs(p.f0).max()) + theta_max * float(perturb.finite_abs(reverse).max(initial=0.0))
    tolerance = p.tolerance.with_roundoff(p.dtype, scale, p.eps)
    entries = []
    for i in range(len(p.xs)):
        span = p.layout.span(i)
        numeric = _Numeric(
            ((plus - minus) / (up + down))[:, span].ravel(),
            ((plus - f0) / up)[:, span].ravel(),
            ((f0 - minus) / down)[:, span].ravel(),
        )
        # f's rounding per value: of f_o itself, and of intermediates at the inputs' scale.
        sensitivity = np.maximum(
            perturb.finite_abs(reverse[:, span]), perturb.finite_abs(numeric.central.reshape(n_out, -1))
        )
        numeric = dataclasses.replace(numeric, atol=_roundoff(p, np.abs(f0) + theta_max * sensitivity))
        numeric = dataclasses.replace(
            numeric, split=kinks.cached(_jump_split(p, i, numeric, up[span], down[span]))
        )
        sources = {p.source: _Source(reverse[:, span].ravel(), _reverse_at_element(p, i))}
        if forward is not None:
            sources["forward"] = _Source(forward[:, span].ravel(), _forward_at_element(p, i))
        comparisons = _comparisons(p, sources, numeric, tolerance, p.locate(i), error)
        norms = {name: float(np.linalg.norm(s.values)) for name, s in sources.items()}
        norms["numeric"] = float(np.linalg.norm(numeric.central))
        entries.append(Entry(p.layout.names[i], p.layout.shapes[i], norms, comparisons))
    return entries


def projections(p: Problem, options: Options) -> list[Entry]:
    """Compares uᵀJv for random u, v and (u₀ᵀJ)_j for sampled elements j, per input."""
    rng = np.random.default_rng(options.seed)
    us = rng.standard_normal((options.directions, p.output.size))
    us /= np.linalg.norm(us, axis=1, keepdims=True)  # [k, n_out], unit rows
    try:
        reverse = run_chunked(runner(p, "vjp"), us)  # uᵀJ: [k, n]
    except Exception as error:  # noqa: BLE001 - e.g. an op without a second-order gradient
        return _unavailable(p, error)
    plans = perturb.plans(p.layout, options, unit=False, rng=rng)
    values = perturb.run_plans([_pair_target(p, i) for i in range(len(plans))], plans, p.eps, options.mode)
    scale = float(np.max(np.linalg.norm(us * p.f0, axis=1)))  # round-off of uᵀf, errors independent
    # Rounding inside f that scales with its input: |θ| · ‖uᵀJ‖₁.
    scale += _theta_max(p) * float(perturb.finite_abs(reverse).sum(axis=1).max(initial=0.0))
    tolerance = p.tolerance.with_roundoff(p.dtype, scale, p.eps)
    return [
        _projection_entry(p, i, plan, us, reverse, value, tolerance)
        for i, (plan, value) in enumerate(zip(plans, values))
    ]


def _pair_target(p: Problem, i: int) -> perturb.Target:
    """Input i's rows evaluated as (f(θ + δ), f(θ − δ)): the plan's steps and their halves."""
    return perturb.Target(runner(p, "pair"), p.layout.size, int(p.layout.offsets[i]), p.output.size)


def _roundoff(p: Problem, scales: np.ndarray) -> np.ndarray:
    """Each value's atol, flat: p's atol raised to the round-off floor of its own scale.  One
    floor per comparison, sized by its largest value, hid a 100% error in the small ones."""
    return p.tolerance.roundoff_per_value(p.dtype, scales, p.eps).ravel()


def _theta_max(p: Problem) -> float:
    """max |θ|: an intermediate of f that scales with its input rounds by about u·|θ|·|∂f/∂θ|,
    which the differences divide by ε (t/7 at 10⁸ moves sin(t/7) by ~1% of its slope)."""
    return float(np.abs(np.asarray(p.theta, np.float64)).max(initial=0.0))


def element_steps(p: Problem, eps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The steps θ ± ε·e_j really take in p's dtype (ε: p.eps unless given), (up, down) [n]:
    fl(θ_j + ε) − θ_j and θ_j − fl(θ_j − ε).  They differ from ε once |θ_j| is large (at 1e8,
    ε = 1e-6 moves θ by 9.984e-7), so the differences divide by them (`options.check_step`
    refuses a zero one)."""
    theta = np.asarray(p.theta)
    step = theta.dtype.type(p.eps if eps is None else eps)
    exact = theta.astype(np.float64)
    return (theta + step).astype(np.float64) - exact, exact - (theta - step).astype(np.float64)


def _realized_directions(p: Problem, i: int, plan: perturb.Plan) -> np.ndarray:
    """The direction each random direction v of input i's plan really takes: ((θ + εv) −
    (θ − εv)) / 2ε in p's dtype, [k, n_i].  A sampled element's is e_j (its differences divide
    by its own steps instead)."""
    theta = np.asarray(p.theta)[p.layout.span(i)]
    step = (theta.dtype.type(p.eps) * plan.directions).astype(theta.dtype, copy=False)  # [k, n_i]
    realized = (theta + step).astype(np.float64, copy=False)  # in place from here: n_i may be 10⁶
    realized -= theta - step  # exact in float64 when theta is float32
    realized /= 2 * p.eps
    return realized


# --- comparisons -------------------------------------------------------------------------------
def _comparisons(p: Problem, sources, numeric: _Numeric, tolerance, locate, error) -> tuple[Comparison, ...]:
    """Each source ↔ numeric; with forward mode, forward ↔ reverse as well."""
    comparisons = [
        _against_numeric(p, name, source, numeric, tolerance, locate) for name, source in sources.items()
    ]
    if p.forward:
        if "forward" not in sources:  # forward mode failed: said once per comparison it would make
            comparisons.append(failed_source(("forward", "numeric"), tolerance, error))
        comparisons.append(_forward_vs_reverse(p, sources, locate, error))
    return tuple(comparisons)


def _against_numeric(
    p: Problem, name: str, source: _Source, numeric: _Numeric, tolerance, locate
) -> Comparison:
    """A source against the central differences, its kink candidates examined (`kinks`)."""
    differences = (numeric.central, numeric.plus, numeric.minus)
    return kinks.compare_with_differences(
        source.values,
        differences,
        source.at_side,
        tolerance,
        sources=(name, "numeric"),
        locate=locate,
        continuous=p.continuous,
        split=numeric.split,
        atol=numeric.atol,
    )


def _jump_split(p: Problem, i: int, numeric: _Numeric, up: np.ndarray, down: np.ndarray) -> Callable:
    """`kinks.Split` for input i's [n_out, n_i] positions: f at x ± (ε/2)e_j, its one-sided
    differences, and the steps really taken (up, down: input i's steps at ε)."""
    size, offset = p.layout.sizes[i], int(p.layout.offsets[i])

    def split(at: np.ndarray) -> kinks.SplitSides:
        outs, columns = np.divmod(at, size)
        rows = np.zeros((len(at), size))
        rows[np.arange(len(at)), columns] = p.eps / 2
        pair = runner(p, "pair")(rows, offset)
        plus, minus = (np.asarray(v, np.float64)[np.arange(len(at)), outs] for v in pair)
        up_half, down_half = (steps[offset + columns] for steps in element_steps(p, p.eps / 2))
        f0 = p.f0[outs]
        return kinks.SplitSides(
            (plus - f0) / up_half, (f0 - minus) / down_half, up[columns], down[columns], up_half, down_half
        )

    return split


def _forward_vs_reverse(p: Problem, sources, locate, error) -> Comparison:
    """forward ↔ reverse, both analytic: equal up to round-off of the larger values' scale."""
    exact, labels = (EXACT if p.dtype == "float64" else EXACT32), ("forward", p.source)
    if "forward" not in sources:
        return failed_source(labels, exact, error)
    forward, reverse = sources["forward"].values, sources[p.source].values
    scale = float(
        max(perturb.finite_abs(forward).max(initial=0.0), perturb.finite_abs(reverse).max(initial=0.0))
    )
    return compare(forward, reverse, exact.scaled(scale), sources=labels, locate=locate)


def _unavailable(p: Problem, error: BaseException) -> list[Entry]:
    """Entries whose one comparison FAILs naming why the reverse-mode values could not be computed."""
    line = error_line(error)
    why = f"{p.source} values could not be computed: {type(error).__name__}" + (f": {line}" if line else "")
    comparison = failed_source((p.source, "numeric"), p.tolerance, why)
    return [
        Entry(name, shape, {p.source: None, "numeric": None}, (comparison,))
        for name, shape in zip(p.layout.names, p.layout.shapes)
    ]


def _forward_failure(error: BaseException) -> str:
    line = error_line(error)
    return f"forward mode failed: {type(error).__name__}" + (f": {line}" if line else "")


# --- full mode -----------------------------------------------------------------------------------
def _forward_full(p: Problem) -> tuple[np.ndarray | None, str | None]:
    """J [n_out, n] from forward mode over the input identity, or (None, why it failed)."""
    try:
        return run_identity(runner(p, "jvp"), p.layout.size, p.output.size).T, None
    except Exception as error:  # noqa: BLE001 - any failure of forward mode is the verdict
        return None, _forward_failure(error)


def _element_points(p: Problem, i: int, at: np.ndarray, t: float, width: int):
    """Rows [θ + tε e_j | 0…] for candidates `at` in input i's [n_out, n_i]; (rows, outs, columns)."""
    n = p.layout.size
    outs, columns = np.divmod(at, p.layout.sizes[i])
    columns = columns + int(p.layout.offsets[i])
    rows = np.zeros((len(at), n + width))
    rows[:, :n] = np.asarray(p.theta)
    rows[np.arange(len(at)), columns] += t * p.eps
    return rows, outs, columns


def _reverse_at_element(p: Problem, i: int) -> Callable:
    """(positions in [n_out, n_i], t) -> (e_oᵀ J(θ + tε e_j))_j, reverse mode."""

    def at_side(at: np.ndarray, t: float) -> np.ndarray:
        rows, outs, columns = _element_points(p, i, at, t, p.output.size)
        rows[np.arange(len(at)), p.layout.size + outs] = 1.0  # u = e_o
        return run_chunked(runner(p, "vjp_at"), rows)[np.arange(len(at)), columns]

    return kinks.guarded(at_side)


def _forward_at_element(p: Problem, i: int) -> Callable:
    """(positions in [n_out, n_i], t) -> (J(θ + tε e_j) e_j)_o, forward mode."""

    def at_side(at: np.ndarray, t: float) -> np.ndarray:
        rows, outs, columns = _element_points(p, i, at, t, p.layout.size)
        rows[np.arange(len(at)), p.layout.size + columns] = 1.0  # v = e_j
        return run_chunked(runner(p, "jvp_at"), rows)[np.arange(len(at)), outs]

    return kinks.guarded(at_side)


# --- fast mode -----------------------------------------------------------------------------------
def _projection_entry(p: Problem, i: int, plan: perturb.Plan, us, reverse, value, tolerance) -> Entry:
    u = _row_cotangents(us, plan)  # [k + s, n_out]
    plus, minus, base = (np.sum(u * f.astype(np.float64), axis=1) for f in (*value, p.f0[None]))
    up, down = _row_steps(p, i, plan)
    numeric = _Numeric((plus - minus) / (up + down), (plus - base) / up, (base - minus) / down)
    # Rows are v_d (the steps' directions; the analytic values are taken along the realized
    # ones) for the k directions, then e_j for the s elements: dense [k + s, n_i] only where asked.
    rows = perturb.ProjectionRows(plan, _realized_directions(p, i, plan))
    grads = reverse[:, p.layout.span(i)]  # uᵀJ per direction [k, n_i]
    # Each row's rounding: of uᵀf (errors independent), and of intermediates at the inputs' scale.
    moved = np.maximum(rows.along(grads, absolute=True), perturb.finite_abs(numeric.central))
    scales = np.linalg.norm(u * p.f0, axis=1) + _theta_max(p) * moved
    numeric = dataclasses.replace(numeric, atol=_roundoff(p, scales))
    numeric = dataclasses.replace(numeric, split=kinks.cached(_row_split(p, i, rows, u, base, (up, down))))
    sources = {p.source: _Source(rows.along(grads), _reverse_at_row(p, i, u, rows))}
    error = None
    if p.forward:
        try:
            realized = rows.realized_at(np.arange(plan.count))
            jv = run_chunked(lambda r: runner(p, "jvp")(r, int(p.layout.offsets[i])), realized)
            sources["forward"] = _Source(np.sum(u * jv, axis=1), _forward_at_row(p, i, u, rows))
        except Exception as caught:  # noqa: BLE001 - any failure of forward mode is the verdict
            error = _forward_failure(caught)
    locate = plan.locate(p.layout.shapes[i])
    comparisons = _comparisons(p, sources, numeric, tolerance, locate, error)
    norms = {name: None for name in [*sources, "numeric"]}  # projections: no whole-gradient norms
    return Entry(p.layout.names[i], p.layout.shapes[i], norms, comparisons)


def _row_points(p: Problem, i: int, rows: perturb.ProjectionRows, at: np.ndarray, t: float) -> np.ndarray:
    """θ + tε v_r for the rows `at`: [R, n]."""
    points = np.tile(np.asarray(p.theta), (len(at), 1))
    points[:, p.layout.span(i)] += t * p.eps * rows.steps_at(at)
    return points


def _reverse_at_row(p: Problem, i: int, u: np.ndarray, rows: perturb.ProjectionRows) -> Callable:
    """(rows, t) -> u_rᵀ J(θ + tε v_r) w_r, reverse mode (w_r: the realized direction)."""

    def at_side(at: np.ndarray, t: float) -> np.ndarray:
        points = np.concatenate([_row_points(p, i, rows, at, t), u[at]], axis=1)
        grads = run_chunked(runner(p, "vjp_at"), points)[:, p.layout.span(i)]
        return perturb.along(grads, rows.realized_at(at))

    return kinks.guarded(at_side)


def _forward_at_row(p: Problem, i: int, u: np.ndarray, rows: perturb.ProjectionRows) -> Callable:
    """(rows, t) -> u_rᵀ J(θ + tε v_r) w_r, forward mode."""

    def at_side(at: np.ndarray, t: float) -> np.ndarray:
        tangents = np.zeros((len(at), p.layout.size))
        tangents[:, p.layout.span(i)] = rows.realized_at(at)
        points = np.concatenate([_row_points(p, i, rows, at, t), tangents], axis=1)
        return np.sum(u[at] * run_chunked(runner(p, "jvp_at"), points), axis=1)

    return kinks.guarded(at_side)


def _row_cotangents(us: np.ndarray, plan: perturb.Plan) -> np.ndarray:
    """u for each row of the plan: u_d for direction d, u_0 for the sampled elements."""
    k = len(plan.directions)
    return np.concatenate([us[:k], np.repeat(us[:1], len(plan.elements), axis=0)])


def _row_split(p: Problem, i: int, rows: perturb.ProjectionRows, u, base, steps) -> Callable:
    """`kinks.Split` for input i's rows: uᵀf at θ ± (ε/2)v_r, its one-sided
    differences, and the steps (ε-sized `steps`, (up, down) [k + s], and the half ones)."""
    target = _pair_target(p, i)
    half_up, half_down = _row_steps(p, i, rows.plan, p.eps / 2)
    up, down = steps

    def split(at: np.ndarray) -> kinks.SplitSides:
        pair = perturb.run_rows(target, rows.steps_at(at) * (p.eps / 2))
        plus, minus = (np.sum(u[at] * np.asarray(v, np.float64), axis=1) for v in pair)
        return kinks.SplitSides(
            (plus - base[at]) / half_up[at],
            (base[at] - minus) / half_down[at],
            up[at],
            down[at],
            half_up[at],
            half_down[at],
        )

    return split


def _row_steps(
    p: Problem, i: int, plan: perturb.Plan, eps: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(up, down) [k + s]: ε (p.eps unless given) for the directions (their analytic side takes
    the realized direction), `element_steps` for the sampled elements."""
    eps = p.eps if eps is None else eps
    up, down = (s[p.layout.span(i)][plan.elements] for s in element_steps(p, eps))
    k = np.full(len(plan.directions), eps)
    return np.concatenate([k, up]), np.concatenate([k, down])
