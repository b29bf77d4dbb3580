"""Checking any function: `tf.GradientTape`'s gradients vs central differences, per input.

The analytic side is always a vector-Jacobian product uᵀJ from the tape (`_vjp_runner`): with u
running over the identity's rows in full mode (the whole Jacobian), over random unit vectors in
fast mode (projections uᵀJv against the directional differences, and (u₀ᵀJ)_j against single
elements).

Kinks.  For any function, a central difference crossed a kink when the one-sided differences
(f(x + ε) − f(x)) / ε and (f(x) − f(x − ε)) / ε disagree by at least the observed error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tf_backprop import text
from tf_backprop.gradcheck import perturb
from tf_backprop.gradcheck.options import Options, check_finite, check_positive, override_tolerance
from tf_backprop.gradcheck.report import (
    EPS,
    FLOAT32,
    NUMERIC_TOLERANCES,
    Entry,
    Location,
    Report,
    Tolerance,
    compare,
    unravel,
)

MAX_FULL_JACOBIAN = 1 << 25  # output × input elements beyond which mode="full" refuses


def gradcheck(
    fn: Callable[..., tf.Tensor],
    inputs,
    *,
    mode: str = "full",
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    directions: int = 8,
    samples: int = 8,
    names: Sequence[str] | None = None,
) -> Report:
    """Checks the gradients `tf.GradientTape` computes for `fn` against central differences.

    Args:
      fn: called as fn(*inputs); returns one floating-point tensor of any shape.
      inputs: a tensor or a list of tensors (floating point, finite).
      mode: "full" compares whole Jacobians (output elements × input elements); "fast"
        compares random projections uᵀJv plus sampled elements (uᵀJ)_j.
      eps: finite-difference step; default 1e-6 in float64, 1e-3 in float32.
      atol, rtol: override the default tolerance (`FLOAT64`, or `FLOAT32` when fn only runs
        in float32).
      seed: seeds the directions and samples.
      directions, samples: per input, in fast mode.
      names: one name per input for the report; default x, or inputs[0], inputs[1], ...

    Returns:
      A `Report` with one entry per input.

    Raises:
      ValueError: on bad arguments: non-floating or non-finite inputs, an output that is not a
        finite floating-point tensor, an input with no gradient path to the output.
    """
    single = not isinstance(inputs, (list, tuple))
    inputs = [inputs] if single else list(inputs)
    default_names = ["x"] if single else [f"inputs[{i}]" for i in range(len(inputs))]
    names = _check_names(names, len(inputs)) or default_names
    options = Options(mode, eps, atol, rtol, seed, directions, samples)
    title = "gradcheck: tf.GradientTape vs central differences"
    return check_function(fn, inputs, names, options, title=title)


def check_function(
    fn: Callable,
    inputs: Sequence,
    names: Sequence[str],
    options: Options,
    *,
    title: str,
    notes: Sequence[str] = (),
    source: str = "analytic",
) -> Report:
    """The engine of `gradcheck` and `check_model`: fn's tape gradients w.r.t. each input vs numeric.

    source names the analytic side in the report; notes come first in the report's notes.
    """
    options = options.validated()
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    if not inputs:
        raise ValueError("inputs: expected at least one tensor")
    arrays = [_check_input(name, x) for name, x in zip(names, inputs)]
    dtype, output, dtype_note = _probe(fn, arrays, names)
    eps = check_positive("eps", options.eps, EPS[dtype])
    tolerance = override_tolerance(NUMERIC_TOLERANCES[dtype], options.atol, options.rtol)
    xs = [tf.constant(a, dtype) for a in arrays]
    layout = perturb.Layout(names, [a.shape for a in arrays])
    problem = _Problem(fn, xs, layout, output, eps, tolerance, source)
    entries = _full_jacobian(problem) if options.mode == "full" else _projections(problem, options)
    notes = (*notes, *([dtype_note] if dtype_note else []))
    return Report(title, options.mode, dtype, eps, tuple(entries), notes)


def error_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, "" if it has none.

    Unlike `text.first_line`, no fallback to the error's type: the messages that quote this
    line name the type already.
    """
    return text.first_line(error) if str(error).strip() else ""


# --- the function at a point -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Problem:
    """A function at a point, ready to check: fn(*xs) = output, inputs laid out as one θ."""

    fn: Callable
    xs: list[tf.Tensor]
    layout: perturb.Layout
    output: np.ndarray
    eps: float
    tolerance: Tolerance
    source: str  # the name of the analytic side in the report

    @property
    def dtype(self) -> str:
        return self.xs[0].dtype.name

    @property
    def f0(self) -> np.ndarray:
        return self.output.reshape(-1).astype(np.float64)  # [n_out]

    def flat_fn(self, theta: tf.Tensor) -> tf.Tensor:
        return tf.reshape(self.fn(*self.layout.unflatten(theta)), [-1])  # [n_out]


def _check_names(names, count: int) -> list[str] | None:
    if names is None:
        return None
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"names: expected {count} names (one per input), got {len(names)}")
    return names


def _check_input(name: str, x) -> np.ndarray:
    array = check_finite(name, x)
    if array.dtype.kind != "f":
        raise ValueError(
            f"{name}: expected a floating-point tensor, got dtype {array.dtype}; "
            "gradients are defined only for floating-point inputs"
        )
    if array.size == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {list(array.shape)}")
    return array


def _probe(fn, arrays, names) -> tuple[str, np.ndarray, str | None]:
    """Runs fn and its gradient once, in float64 if it can, else float32.

    Returns (dtype, fn's output, a note when float32); ValueError on an output that is not one
    finite floating-point tensor, or an input without a gradient (of its shape).
    """
    try:
        output, grads = _run_with_gradients(fn, arrays, tf.float64)
        error = None if _output_dtype(output) == tf.float64 else f"fn returned {_output_dtype(output).name}"
    except Exception as caught:  # noqa: BLE001 - any failure in float64 means "try float32"
        error = f"fn raised {type(caught).__name__}"
    dtype, note = ("float64", None) if error is None else ("float32", f"{error} on float64 inputs")
    if error is not None:
        try:
            output, grads = _run_with_gradients(fn, arrays, tf.float32)
        except Exception as caught:  # noqa: BLE001
            raise ValueError(
                f"fn: raised {type(caught).__name__} on the inputs: {error_line(caught)}"
            ) from caught
    output = _check_output(output)
    for name, grad, array in zip(names, grads, arrays):
        _check_gradient(name, grad, array.shape)
    return dtype, output, note and f"{note}: checked in float32, {FLOAT32}"


def _run_with_gradients(fn, arrays, dtype) -> tuple[Any, list]:
    """fn(*inputs) and, for a floating-point output, the gradient of its sum w.r.t. each input."""
    xs = [tf.constant(a, dtype) for a in arrays]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        output = fn(*xs)
    if not (tf.is_tensor(output) and output.dtype.is_floating):
        return output, [None] * len(xs)  # _check_output says what is wrong
    return output, tape.gradient(output, xs)


def _output_dtype(output) -> tf.DType:
    try:
        return tf.as_dtype(getattr(output, "dtype", None) or np.asarray(output).dtype)
    except TypeError:
        return tf.variant  # not a numeric dtype; _check_output says what is wrong


def _check_output(output) -> np.ndarray:
    if isinstance(output, (list, tuple, dict)):
        raise ValueError(f"fn: expected one tensor as output, got a {type(output).__name__}")
    array = np.asarray(output)
    if array.dtype.kind != "f":
        raise ValueError(f"fn: expected a floating-point output, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("fn: the output contains NaN or inf at the given inputs")
    return array


def _check_gradient(name: str, grad, shape) -> None:
    if grad is None:
        raise ValueError(f"{name}: fn's output does not depend on it (no gradient path from input to output)")
    if tuple(grad.shape) != tuple(shape):
        raise ValueError(
            f"{name}: its gradient has shape {list(grad.shape)}, expected {list(shape)} "
            "(a tf.custom_gradient returning a wrongly shaped gradient?)"
        )


# --- the two sides -----------------------------------------------------------------------------
def _vjp_runner(p: _Problem) -> Callable:
    """A compiled map: output cotangents u [P, n_out] -> uᵀJ [P, n], through tf.GradientTape."""
    theta = p.layout.flatten(p.xs)  # [n]

    def row(u):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            output = p.flat_fn(theta)
        return tape.gradient(output, theta, output_gradients=u, unconnected_gradients="zero")

    spec = tf.TensorSpec([p.layout.size], theta.dtype)
    return perturb.compile_rows(
        row, p.output.size, theta.dtype, spec, perturb.parallel_iterations(p.layout.size)
    )


def _pair_runner(p: _Problem) -> Callable:
    """A compiled map: rows δ [P, n] -> (f(θ + δ), f(θ − δ)), each [P, n_out]."""
    theta = p.layout.flatten(p.xs)  # [n]
    spec = tf.TensorSpec([p.output.size], theta.dtype)

    def row(delta):
        return p.flat_fn(theta + delta), p.flat_fn(theta - delta)

    parallel = perturb.parallel_iterations(p.layout.size)
    return perturb.compile_rows(row, p.layout.size, theta.dtype, (spec, spec), parallel)


# --- full mode: whole Jacobians --------------------------------------------------------------
def _full_jacobian(p: _Problem) -> list[Entry]:
    """Compares the whole Jacobian [n_out, n_i] of every input."""
    n, n_out = p.layout.size, p.output.size
    if n * n_out > MAX_FULL_JACOBIAN:
        raise ValueError(f"mode: 'full' would compare a {n_out} x {n} Jacobian; use mode='fast'")
    analytic = _run_identity(_vjp_runner(p), n_out, n)  # [n_out, n]
    target = perturb.Target(_pair_runner(p), n, 0, n_out)
    plus, minus = perturb.run_plans([target], [perturb.full_plan(n)], p.eps)[0]
    plus, minus = (v.astype(np.float64).T for v in (plus, minus))  # [n_out, n]
    numeric = (plus - minus) / (2 * p.eps)
    f0 = p.f0[:, None]
    gap = np.abs((plus - f0) - (f0 - minus)) / p.eps  # how much the one-sided differences disagree
    tolerance = p.tolerance.with_roundoff(p.dtype, float(np.abs(p.f0).max()), p.eps)
    return [_jacobian_entry(p, i, analytic, numeric, gap, tolerance) for i in range(len(p.xs))]


def _jacobian_entry(p: _Problem, i: int, analytic, numeric, gap, tolerance) -> Entry:
    span = p.layout.span(i)
    a, b = analytic[:, span], numeric[:, span]  # [n_out, n_i]
    locate = _jacobian_locator(p.layout.shapes[i], p.output.shape)
    kink = gap[:, span] >= np.abs(a - b)
    comparison = compare(a, b, tolerance, sources=(p.source, "numeric"), kink=kink, locate=locate)
    norms = {p.source: float(np.linalg.norm(a)), "numeric": float(np.linalg.norm(b))}
    return Entry(p.layout.names[i], p.layout.shapes[i], norms, (comparison,))


def _jacobian_locator(input_shape, output_shape) -> Callable[[int], Location]:
    size = int(np.prod(input_shape, dtype=np.int64))
    output_shape = tuple(output_shape)

    def locate(i: int) -> Location:
        out, inp = divmod(i, size)
        output_index = unravel(out, output_shape) if output_shape else None  # scalar: no index
        return Location(index=unravel(inp, input_shape), output_index=output_index)

    return locate


def _run_identity(run, n_out: int, n: int) -> np.ndarray:
    """run over the rows of the [n_out, n_out] identity, in chunks: [n_out, n]."""
    chunk = max(1, perturb.ROW_BUDGET // max(n, n_out))
    parts = []
    for start in range(0, n_out, chunk):
        rows = np.zeros((min(n_out, start + chunk) - start, n_out))
        rows[np.arange(len(rows)), np.arange(start, start + len(rows))] = 1.0
        parts.append(np.asarray(run(rows), np.float64))
    return np.concatenate(parts)


# --- fast mode: projections ------------------------------------------------------------------
def _projections(p: _Problem, options: Options) -> list[Entry]:
    """Compares uᵀJv for random u, v and (u₀ᵀJ)_j for sampled elements j, per input."""
    rng = np.random.default_rng(options.seed)
    us = rng.standard_normal((options.directions, p.output.size))
    us /= np.linalg.norm(us, axis=1, keepdims=True)  # [k, n_out], unit rows
    analytic = np.asarray(_vjp_runner(p)(us), np.float64)  # uᵀJ: [k, n]
    plans = perturb.plans(p.layout, options, unit=False, rng=rng)
    run, cost = _pair_runner(p), max(p.layout.size, p.output.size)
    targets = [perturb.Target(run, p.layout.size, int(p.layout.offsets[i]), cost) for i in range(len(plans))]
    values = perturb.run_plans(targets, plans, p.eps)
    scale = float(np.max(np.linalg.norm(us * p.f0, axis=1)))  # round-off of uᵀf, errors independent
    tolerance = p.tolerance.with_roundoff(p.dtype, scale, p.eps)
    return [
        _projection_entry(p, i, plan, us, analytic, value, tolerance)
        for i, (plan, value) in enumerate(zip(plans, values))
    ]


def _projection_entry(p: _Problem, i: int, plan: perturb.Plan, us, analytic, value, tolerance) -> Entry:
    u = _row_cotangents(us, plan)  # [k + s, n_out]
    plus, minus, base = (np.sum(u * f.astype(np.float64), axis=1) for f in (*value, p.f0[None]))
    a = _project_rows(analytic[:, p.layout.span(i)], plan)
    b = (plus - minus) / (2 * p.eps)
    kink = np.abs((plus - base) - (base - minus)) / p.eps >= np.abs(a - b)
    locate = plan.locate(p.layout.shapes[i])
    comparison = compare(a, b, tolerance, sources=(p.source, "numeric"), kink=kink, locate=locate)
    return Entry(p.layout.names[i], p.layout.shapes[i], {p.source: None, "numeric": None}, (comparison,))


def _row_cotangents(us: np.ndarray, plan: perturb.Plan) -> np.ndarray:
    """u for each row of the plan: u_d for direction d, u_0 for the sampled elements."""
    k = len(plan.directions)
    return np.concatenate([us[:k], np.repeat(us[:1], len(plan.elements), axis=0)])


def _project_rows(grads: np.ndarray, plan: perturb.Plan) -> np.ndarray:
    """Analytic values of the plan's rows from uᵀJ per direction [k, n_i]: [k + s]."""
    k = len(plan.directions)
    return np.concatenate([np.sum(grads[:k] * plan.directions, axis=1), grads[0, plan.elements]])
