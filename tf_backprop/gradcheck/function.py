"""Checking any function: `tf.GradientTape`'s gradients vs central differences, per input.

`gradcheck` validates its arguments, runs fn once (in float64 if it can, else float32), and
hands a `problem.Problem` to the engine (`engine`): whole Jacobians in full mode, random
projections in fast mode; with order=2 the problem is fn's gradient (`second_order`), with
check_forward=True forward mode is compared as well.  Disagreements at kinks follow `kinks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tf_backprop.gradcheck import engine, perturb, second_order
from tf_backprop.gradcheck.options import (
    Options,
    check_finite,
    check_positive,
    check_step,
    override_tolerance,
)
from tf_backprop.gradcheck.problem import Problem, error_line
from tf_backprop.gradcheck.report import EPS, FLOAT32, NUMERIC_TOLERANCES, Report, below_atol_notes

MAX_FULL_JACOBIAN = engine.MAX_FULL_JACOBIAN


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
    order: int = 1,
    check_forward: bool = False,
) -> Report:
    """Checks the gradients `tf.GradientTape` computes for `fn` against central differences.

    Args:
      fn: called as fn(*inputs); returns one floating-point tensor of any shape.
      inputs: a tensor or a list of tensors (floating point, finite).
      mode: "full" compares whole Jacobians (output elements × input elements); "fast"
        compares random projections uᵀJv plus sampled elements (uᵀJ)_j.
      eps: finite-difference step; default 1e-6 in float64, 1e-3 in float32; at most 1% of
        each input's scale max(1, max |x|).
      atol, rtol: override the default tolerance (`FLOAT64`, or `FLOAT32` when fn only runs
        in float32).
      seed: seeds the directions and samples.
      directions, samples: per input, in fast mode.
      names: one name per input for the report; default x, or inputs[0], inputs[1], ...
      order: 1, or 2 to check the derivative of the gradient (`second_order`): Hessian-vector
        products from nested tapes against central differences of the tape's gradient.
      check_forward: also compare tf.autodiff.ForwardAccumulator (forward mode; at order 2,
        forward over reverse) with the differences and with reverse mode.

    Returns:
      A `Report` with one entry per input; its verdict is PASS, FAIL or INCONCLUSIVE.

    Raises:
      ValueError: on bad arguments: non-floating or non-finite inputs, an output that is not a
        finite floating-point tensor, an input with no gradient path to the output, an eps
        too large for the inputs, a random fn, an fn that computes in float16 or bfloat16
        inside (raised only when its check would FAIL: central differences cannot check it).
    """
    single = not isinstance(inputs, (list, tuple))
    inputs = [inputs] if single else list(inputs)
    default_names = ["x"] if single else [f"inputs[{i}]" for i in range(len(inputs))]
    names = _check_names(names, len(inputs)) or default_names
    options = Options(mode, eps, atol, rtol, seed, directions, samples, order, check_forward)
    return check_function(fn, inputs, names, options, title=f"gradcheck: {describe(options.validated())}")


def describe(options: Options) -> str:
    """What a check with these options compares, for its title."""
    sources = "tf.GradientTape" + (" and tf.autodiff.ForwardAccumulator" if options.check_forward else "")
    if options.order == 1:
        return f"{sources} vs central differences"
    sources = "tape over tape" + (" and forward over reverse" if options.check_forward else "")
    return f"second order, {sources} vs central differences of the tape's gradient"


def check_function(
    fn: Callable,
    inputs: Sequence,
    names: Sequence[str],
    options: Options,
    *,
    title: str,
    notes: Sequence[str] = (),
    source: str = "analytic",
    what: str = "fn",
) -> Report:
    """The engine of `gradcheck` and `check_model`: fn's tape gradients w.r.t. each input vs numeric.

    source names the analytic (reverse-mode) side in the report; notes come first in the
    report's notes; what names fn in error messages.
    """
    options = options.validated()
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    if not inputs:
        raise ValueError("inputs: expected at least one tensor")
    arrays = [_check_input(name, x) for name, x in zip(names, inputs)]
    dtype, output, dtype_note = _probe(fn, arrays, names, what)
    eps = check_positive("eps", options.eps, EPS[dtype])
    check_step(eps, names, arrays, dtype)
    tolerance = override_tolerance(NUMERIC_TOLERANCES[dtype], options.atol, options.rtol)
    xs = [tf.constant(a, dtype) for a in arrays]
    _check_deterministic(fn, xs, output, what)
    layout = perturb.Layout(names, [a.shape for a in arrays])
    checked, locate_output, order_note = fn, second_order.output_locator(output.shape), None
    if options.order == 2:
        checked, locate_output, order_note = second_order.gradient_function(
            fn, layout, output.shape, options.mode, options.seed
        )
        output = _check_output(checked(*xs), what, "its gradient")
    problem = Problem(checked, xs, layout, output, eps, tolerance, source, locate_output)
    # A gradient may jump at a kink (order 2); forward mode only when asked for.
    problem = dataclasses.replace(problem, continuous=options.order == 1, forward=options.check_forward)
    entries = (
        engine.full_jacobian(problem) if options.mode == "full" else engine.projections(problem, options)
    )
    promoted = None
    if dtype == "float64" and any(a.dtype.itemsize < 8 for a in arrays):
        promoted = "float32 inputs checked in float64: what fn does in float32 itself (overflow, rounding) is not checked"
    notes = (
        *notes,
        *(n for n in (dtype_note, order_note, promoted) if n),
        *below_atol_notes(entries, tolerance.atol),
    )
    report = Report(title, options.mode, dtype, eps, tuple(entries), notes)
    if report.verdict == "FAIL":  # traced only then: a check that passes needs no excuse
        _check_not_half_precision(fn, xs, what)
    return report


# --- validation ------------------------------------------------------------------------------
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


def _probe(fn, arrays, names, what: str = "fn") -> tuple[str, np.ndarray, str | None]:
    """Runs fn and its gradient once, in float64 if it can, else float32.

    Returns (dtype, fn's output, a note when float32); ValueError on an output that is not one
    finite floating-point tensor, or an input without a gradient (of its shape).
    """
    try:
        output, grads = _run_with_gradients(fn, arrays, tf.float64)
        error = (
            None if _output_dtype(output) == tf.float64 else f"{what} returned {_output_dtype(output).name}"
        )
    except Exception as caught:  # noqa: BLE001 - any failure in float64 means "try float32"
        error = f"{what} raised {type(caught).__name__}"
    if error is None and _float32_inside(fn, arrays, output):
        try:  # it computes in float32, then casts: check it in float32, if it runs there
            output, grads = _run_with_gradients(fn, arrays, tf.float32)
            dtype, note = "float32", f"{what} returned only float32 values on float64 inputs"
        except Exception:  # noqa: BLE001 - float64 only after all: keep the float64 run
            dtype, note = "float64", None
    else:
        dtype, note = ("float64", None) if error is None else ("float32", f"{error} on float64 inputs")
    if error is not None:
        try:
            output, grads = _run_with_gradients(fn, arrays, tf.float32)
        except Exception as caught:  # noqa: BLE001
            raise ValueError(
                f"{what}: raised {type(caught).__name__} on the inputs: {error_line(caught)}"
                + _scalars_hint(caught, arrays)
            ) from caught
    output = _check_output(output, what)
    for name, grad, array in zip(names, grads, arrays):
        _check_gradient(name, grad, array.shape, what)
    return dtype, output, note and f"{note}: checked in float32, {FLOAT32}"


def _scalars_hint(error: BaseException, arrays) -> str:
    """For fn(x) given [0.1, 0.2, 0.3]: a list is one input per element."""
    several_numbers = len(arrays) > 1 and all(a.ndim == 0 for a in arrays)
    if several_numbers and isinstance(error, TypeError) and "positional argument" in str(error):
        return (
            f" (a list of {len(arrays)} numbers is {len(arrays)} inputs; pass np.array([...]) for one input)"
        )
    return ""


def _run_with_gradients(fn, arrays, dtype) -> tuple[Any, list]:
    """fn(*inputs) and, for a floating-point output, the gradient of its sum w.r.t. each input."""
    xs = [tf.constant(a, dtype) for a in arrays]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        output = fn(*xs)
    if not (tf.is_tensor(output) and output.dtype.is_floating):
        return output, [None] * len(xs)  # _check_output says what is wrong
    return output, tape.gradient(output, xs)


def _check_deterministic(fn, xs, output: np.ndarray, what: str) -> None:
    """ValueError when fn gives another output for the same inputs (dropout in training mode):
    its differences would measure its noise, not a derivative (a bare FAIL said nothing)."""
    again = np.asarray(fn(*xs), np.float64)
    first = np.asarray(output, np.float64)
    limit = 1e-6 * max(1.0, float(np.abs(first).max(initial=0.0)))
    if again.shape != first.shape or not np.all(np.abs(again - first) <= limit):
        raise ValueError(
            f"{what}: gave another output for the same inputs (a random op, such as dropout in "
            "training mode?); the differences of a random function measure its noise, not a derivative"
        )


HALF_PRECISION = ("float16", "bfloat16")


def _check_not_half_precision(fn, xs, what: str) -> None:
    """ValueError when fn's graph computes in float16 or bfloat16 (mixed precision, a cast):
    its differences measure that rounding (~1e-3 of each value, far above eps 1e-6 × its
    derivative), so a FAIL would say nothing about the gradient."""
    try:
        specs = [tf.TensorSpec(x.shape, x.dtype) for x in xs]
        graph = tf.function(fn, autograph=False).get_concrete_function(*specs).graph
    except Exception:  # noqa: BLE001 - a function that cannot be traced keeps its verdict
        return
    dtype = _half_precision_in(graph)
    if dtype:
        raise ValueError(
            f"{what}: computes in {dtype} inside (a mixed-precision layer, or a cast to {dtype}?): "
            f"central differences measure its rounding, not a derivative, so they cannot check it; "
            f"check the same computation in float32 or float64"
        )


def _half_precision_in(graph, seen: set | None = None) -> str | None:
    """float16 or bfloat16 when an op of the graph or of the functions it calls (while and cond
    bodies) gives values of that dtype; None if none does."""
    seen = set() if seen is None else seen
    for op in graph.get_operations():
        for output in op.outputs:
            if output.dtype.name in HALF_PRECISION:
                return output.dtype.name
    for name, function in getattr(graph, "_functions", {}).items():
        inner = getattr(function, "graph", None)
        if name not in seen and inner is not None:
            seen.add(name)
            if found := _half_precision_in(inner, seen):
                return found
    return None


def _float32_inside(fn, arrays, output) -> bool:
    """True when fn's float64 output holds only float32 values, some needing more than 12 bits,
    and still does at inputs moved by ~1e-9 of their size (below float32's resolution, far above
    float64's): fn computes in float32 and casts (its differences at eps = 1e-6 would be ~5%
    float32 noise).  A float64 computation follows the move (max(a, b) of float32 data too)."""
    values = np.asarray(output, np.float64).reshape(-1)
    mantissas = np.frexp(values)[0] * 2.0**12
    if not (_float32_values(values) and np.any(mantissas != np.round(mantissas))):
        return False
    rng = np.random.default_rng(0)
    moved = [
        tf.constant(a + 1e-9 * np.maximum(np.abs(a), 1.0) * rng.choice([-1.0, 1.0], np.shape(a)), tf.float64)
        for a in (np.asarray(a, np.float64) for a in arrays)
    ]
    try:
        again = fn(*moved)
    except Exception:  # noqa: BLE001 - no verdict from a probe that fails
        return False
    return _output_dtype(again) == tf.float64 and _float32_values(np.asarray(again, np.float64).reshape(-1))


def _float32_values(values: np.ndarray) -> bool:
    """Whether every value is finite and a float32 value."""
    with np.errstate(over="ignore"):
        return bool(
            np.all(np.isfinite(values)) and np.all(values.astype(np.float32).astype(np.float64) == values)
        )


def _output_dtype(output) -> tf.DType:
    try:
        return tf.as_dtype(getattr(output, "dtype", None) or np.asarray(output).dtype)
    except TypeError:
        return tf.variant  # not a numeric dtype; _check_output says what is wrong


def _check_output(output, what: str = "fn", which: str = "the output") -> np.ndarray:
    if output is None:  # a function that forgot its return
        raise ValueError(f"{what}: expected one tensor as output, got None")
    if isinstance(output, (list, tuple, dict)):
        raise ValueError(f"{what}: expected one tensor as output, got a {type(output).__name__}")
    array = np.asarray(output)
    if array.dtype.kind != "f":
        raise ValueError(f"{what}: expected a floating-point output, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: {which} contains NaN or inf at the given inputs")
    return array


def _check_gradient(name: str, grad, shape, what: str = "fn") -> None:
    if grad is None:
        raise ValueError(
            f"{name}: the output of {what} does not depend on it (no gradient path from input to output)"
        )
    if tuple(grad.shape) != tuple(shape):
        raise ValueError(
            f"{name}: its gradient has shape {list(grad.shape)}, expected {list(shape)} "
            "(a tf.custom_gradient returning a wrongly shaped gradient?)"
        )
