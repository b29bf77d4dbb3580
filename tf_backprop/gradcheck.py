"""Gradient checking: automatic vs hand-written vs central finite differences.

Three entry points share one comparison core (`compare`) and one report (`Report`):

* `check(model, x, y, loss)`: the `MLP`'s `tf.GradientTape` gradients, its hand-written
  (`backprop.manual_gradients`) gradients and central differences of the loss, all in float64
  (a float32 model is checked on a float64 copy of its weights).
* `gradcheck(fn, inputs)`: any TensorFlow callable; the gradients `tf.GradientTape` computes
  (so a `tf.custom_gradient` inside `fn` is what gets checked) vs central differences.
* `check_model(model, x, y, loss_fn)`: any Keras model; tape vs central differences of the
  loss per trainable variable (custom layers included).

Modes:
  full  perturbs every element: the whole gradient (MLP) or the whole Jacobian
        (output elements × input elements).  For small problems.
  fast  per variable or input, `directions` random directions v (the directional derivative
        from two evaluations, against gᵀv, or uᵀJv for a random unit u: one backward and two
        forwards per direction) plus `samples` random single elements.  Millions of
        parameters check in seconds.  A variable with at most directions + samples elements
        is checked element by element.  The MLP's directions have unit norm (a step of eps
        moves few pre-activations across a ReLU kink); a function's have unit RMS entries, so
        each element moves by about eps, as in the element checks.

Thresholds.  For values a, b the relative error is

    rel = |a − b| / max(|a|, |b|, atol / rtol)

and an element fails when rel > rtol, i.e. when |a − b| > max(atol, rtol · max(|a|, |b|)):
atol / rtol is the scale below which a gradient counts as zero.

  comparison                          dtype     eps    rtol    atol
  tape ↔ manual (`EXACT`)             float64   -      1e-9    1e-12 × max(1, max |g|)
  analytic ↔ numeric (`FLOAT64`)      float64   1e-6   1e-5    1e-8, or the round-off floor
  analytic ↔ numeric (`FLOAT32`)      float32   1e-3   1e-2    1e-3, or the round-off floor

tape ↔ manual: the two paths sum in different orders, which leaves round-off residue
proportional to the gradient's scale (max |g| over all tape gradient elements) in elements that
come out of cancelling sums.  Against numeric values, atol is raised to the finite-difference
round-off floor 16 · u · |f| / eps when that is larger (u: the dtype's machine epsilon; |f|: the
largest |f_i|, or for projections uᵀf the largest ‖u ⊙ f‖).  `FLOAT32` applies only when `fn`
does not run in float64 (it raises on float64 inputs, or returns a lower-precision output); the
report then says so.

Kinks.  A central difference across a point where the derivative jumps (ReLU at 0) is not a
valid reference.  For the MLP, a pre-activation of a `has_kink` activation that changes sign
between θ + ε and θ − ε marks the difference as crossing a kink; for any function, the
one-sided differences (f(x + ε) − f(x)) / ε and (f(x) − f(x − ε)) / ε disagreeing by at least
the observed error do.  A failing element that crossed a kink is counted as a kink, not as a
failure, and left out of max abs and max rel.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging as py_logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import backprop
from tf_backprop import losses as losses_lib
from tf_backprop.model import MLP

MODES = ("full", "fast")
ROUNDOFF_FACTOR = 16  # the round-off floor is ROUNDOFF_FACTOR · u · |f| / eps
ROW_BUDGET = 1 << 20  # elements of perturbation rows handed to one compiled call
MAX_FULL_JACOBIAN = 1 << 25  # output × input elements beyond which mode="full" refuses

GradientFn = Callable[..., tuple[tf.Tensor, list[tf.Tensor]]]


class _OwnRetracingFilter(py_logging.Filter):
    """Drops TensorFlow's "frequent retracing" warning about this module's compiled maps.

    Every check compiles fresh functions on purpose (they close over the model or function
    being checked); TensorFlow counts them as retraces of one function and would warn.
    """

    def filter(self, record: py_logging.LogRecord) -> bool:
        return "_compile_rows.<locals>" not in record.getMessage()


tf.get_logger().addFilter(_OwnRetracingFilter())


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


# --- input validation ------------------------------------------------------------------------
def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    return mode


def _check_positive(name: str, value, default: float | None = None) -> float:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0:
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_finite(name: str, value) -> np.ndarray:
    """value as a NumPy array; ValueError if it holds NaN or inf."""
    try:
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected an array of numbers, got {type(value).__name__}") from error
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise ValueError(f"{name}: expected finite values, found {bad} NaN or inf of {array.size}")
    return array


@dataclasses.dataclass(frozen=True)
class _Options:
    """How gradcheck and check_model check (see gradcheck's arguments)."""

    mode: str
    eps: float | None
    atol: float | None
    rtol: float | None
    seed: int
    directions: int
    samples: int

    def validated(self) -> _Options:
        _check_mode(self.mode)
        _check_count("directions", self.directions, 1)
        _check_count("samples", self.samples, 0)
        _check_count("seed", self.seed, 0)
        return self


# --- perturbations ---------------------------------------------------------------------------
class _Layout:
    """Several tensors seen as one flat vector θ (the concatenation of their elements)."""

    def __init__(self, names: Sequence[str], shapes: Sequence[Sequence[int]]):
        self.names = list(names)
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    def span(self, i: int) -> slice:
        return slice(self.offsets[i], self.offsets[i + 1])

    def flatten(self, tensors) -> tf.Tensor:
        return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)  # [n]

    def unflatten(self, theta: tf.Tensor) -> list[tf.Tensor]:
        return [tf.reshape(p, s) for p, s in zip(tf.split(theta, self.sizes), self.shapes)]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The perturbations that check one variable or input: k directions, then s elements."""

    directions: np.ndarray  # [k, n_i]
    elements: np.ndarray  # [s] flat indices

    @property
    def count(self) -> int:
        return len(self.directions) + len(self.elements)

    def rows(self, start: int, stop: int, eps: float) -> np.ndarray:
        """Rows start..stop within the variable, eps · v_d or eps · e_j: [stop − start, n_i]."""
        size = self.directions.shape[1]
        rows = np.zeros((stop - start, size))
        for r, item in enumerate(range(start, stop)):
            if item < len(self.directions):
                rows[r] = eps * self.directions[item]
            else:
                rows[r, self.elements[item - len(self.directions)]] = eps
        return rows

    def project(self, grad: np.ndarray) -> np.ndarray:
        """The analytic counterparts of the rows: [k + s] from a flat gradient [n_i]."""
        return np.concatenate([self.directions @ grad, grad[self.elements]])

    def locate(self, shape: tuple[int, ...]) -> Callable[[int], Location]:
        k = len(self.directions)

        def locate(item: int) -> Location:
            if item < k:
                return Location(direction=item)
            return Location(index=_unravel(self.elements[item - k], shape))

        return locate


def _full_plan(size: int) -> _Plan:
    return _Plan(np.zeros((0, size)), np.arange(size))


def _fast_plan(size: int, directions: int, samples: int, rng: np.random.Generator, unit: bool) -> _Plan:
    """k random sign directions and s random elements; every element if there are few.

    The directions' entries are ±1 (unit=False: each element moves by eps, as in the element
    checks, so uᵀJv stays well above the finite-difference round-off) or ±1/√n (unit=True, for
    the MLP: a step of eps in norm moves few pre-activations across a ReLU kink).
    """
    if size <= directions + samples:
        return _full_plan(size)
    signs = rng.integers(0, 2, (directions, size), dtype=np.int8) * 2.0 - 1.0  # [k, n_i]
    vectors = signs / math.sqrt(size) if unit else signs
    return _Plan(vectors, np.sort(rng.choice(size, samples, replace=False)))


def _plans(
    layout: _Layout, options: _Options, unit: bool, rng: np.random.Generator | None = None
) -> list[_Plan]:
    """One plan per variable or input: every element in full mode, else a fast plan."""
    if options.mode == "full":
        return [_full_plan(size) for size in layout.sizes]
    rng = rng or np.random.default_rng(options.seed)
    return [_fast_plan(size, options.directions, options.samples, rng, unit) for size in layout.sizes]


def _compile_rows(
    row_fn: Callable, n: int, dtype: tf.DType, signature, parallel: int, vectorize: bool = True
) -> Callable:
    """(rows [P, k], offset) -> row_fn of each row, stacked; compiled, one call per batch.

    Each row is padded with zeros to length n, its values at [offset, offset + k): only the
    perturbed variable's part travels from NumPy.  Many rows are vectorized (tf.vectorized_map:
    one batched op per op of row_fn; slower to trace, much faster on large functions), or
    looped over (tf.map_fn) when vectorize=False or vectorizing fails; a single (large) row
    skips both.
    """

    def padded(rows, offset):
        return tf.pad(rows, [[0, 0], [offset, n - offset - tf.shape(rows)[1]]])  # [P, n]

    def vectorized(rows, offset):
        return tf.vectorized_map(row_fn, padded(rows, offset), fallback_to_while_loop=True)

    def looped(rows, offset):
        full = padded(rows, offset)
        return tf.map_fn(row_fn, full, fn_output_signature=signature, parallel_iterations=parallel)

    def single(rows, offset):
        return tf.nest.map_structure(lambda t: t[None], row_fn(padded(rows, offset)[0]))

    many = _Compiled([vectorized, looped] if vectorize else [looped], dtype)
    one = _Compiled([single], dtype)
    return lambda rows, offset=0: (one if len(rows) == 1 else many)(tf.constant(rows, dtype), offset)


class _Compiled:
    """The first of several ways to run rows that works, compiled with tf.function.

    Each way is traced without autograph (much faster to trace); the last way is then tried
    with autograph (a user's function may need it) and finally eagerly.
    """

    def __init__(self, ways: list[Callable], dtype: tf.DType):
        spec = [tf.TensorSpec([None, None], dtype), tf.TensorSpec([], tf.int32)]
        last = ways[-1]
        self.attempts = [
            (way.__name__, tf.function(way, input_signature=spec, autograph=False)) for way in ways
        ]
        self.attempts += [
            (f"{last.__name__} with autograph", tf.function(last, input_signature=spec)),
            ("eager", last),
        ]

    def __call__(self, rows: tf.Tensor, offset: int):
        offset = tf.constant(offset, tf.int32)
        while len(self.attempts) > 1:
            name, attempt = self.attempts[0]
            try:
                return attempt(rows, offset)
            except Exception as error:  # noqa: BLE001 - this way failed: try the next one
                logging.info(
                    "gradcheck: %s evaluation failed, trying the next way: %s", name, _one_line(error)
                )
                self.attempts.pop(0)
        return self.attempts[0][1](rows, offset)


@dataclasses.dataclass(frozen=True)
class _Target:
    """How to perturb one variable: run maps (rows [P, its size], offset) to outputs, its
    elements sitting at [offset, offset + its size) of rows of length `size`; one row's
    evaluation holds about `cost` numbers."""

    run: Callable
    size: int
    offset: int
    cost: int


def _run_plans(targets: list[_Target], plans: list[_Plan], eps: float) -> list[list[np.ndarray]]:
    """Evaluates every plan's rows; returns, per variable, run's outputs concatenated (NumPy)."""
    results = []
    for target, plan in zip(targets, plans):
        chunk = max(1, ROW_BUDGET // max(target.size, target.cost))
        parts = []
        for start in range(0, plan.count, chunk):
            rows = plan.rows(start, min(plan.count, start + chunk), eps)  # [P, n_i]
            parts.append([np.asarray(t) for t in tf.nest.flatten(target.run(rows, target.offset))])
        results.append([np.concatenate(p) for p in zip(*parts)])
    return results


# --- A. the MLP checker ----------------------------------------------------------------------
def check(
    model: MLP,
    x,
    y,
    loss: str | losses_lib.Loss,
    mode: str = "full",
    l2: float = 0.0,
    eps: float | None = None,
    seed: int = 0,
    *,
    directions: int = 4,
    samples: int = 4,
    atol: float | None = None,
    rtol: float | None = None,
    tape_fn: GradientFn = backprop.tape_gradients,
    manual_fn: GradientFn = backprop.manual_gradients,
) -> Report:
    """Checks an MLP's tape and hand-written gradients against each other and central differences.

    Everything runs in float64; a float32 model is checked on a float64 copy of its weights.

    Args:
      model: a `tf_backprop.MLP` (use `check_model` for any other Keras model).
      x: inputs [m, n_0]; y: targets for `loss` (see `backprop.prepare`).
      loss: a loss name or `losses.Loss`.
      mode: "full" (every parameter) or "fast" (random directions and sampled elements).
      l2: the L2 coefficient λ of λ/2 Σ‖W‖².
      eps: the finite-difference step; default 1e-6.
      seed: seeds the fast mode's directions and samples.
      directions, samples: per variable, in fast mode.
      atol, rtol: override `FLOAT64` for the comparisons against numeric values.
      tape_fn, manual_fn: the two gradient sources, (model, x, y, loss, l2) -> (loss, grads).

    Returns:
      A `Report` with one entry per trainable variable and the comparisons tape ↔ manual,
      tape ↔ numeric and manual ↔ numeric.

    Raises:
      ValueError: on a bad argument (named in the message), including NaN or inf in x or y.
    """
    options = _Options(mode, eps, atol, rtol, seed, directions, samples).validated()
    eps, l2 = _check_positive("eps", eps, EPS["float64"]), _check_l2(l2)
    if not isinstance(model, MLP):
        raise ValueError(f"model: expected a tf_backprop MLP, got {type(model).__name__}; use check_model")
    _check_finite("x", x)
    _check_finite("y", y)
    model64, notes = _float64_mlp(model)
    x64, y64, loss = backprop.prepare(model64, x, y, loss)
    layout = _mlp_layout(model64)
    value, tape = tape_fn(model64, x64, y64, loss, l2)
    tape = _check_gradients("tape_fn", tape, layout)
    manual = _check_gradients("manual_fn", manual_fn(model64, x64, y64, loss, l2)[1], layout)
    plans = _plans(layout, options, unit=True)
    numeric = _run_plans(_mlp_targets(model64, x64, y64, loss, l2, layout), plans, eps)
    tolerances = (
        EXACT.scaled(max(float(np.abs(g).max()) for g in tape)),
        _override(FLOAT64, atol, rtol).with_roundoff("float64", float(value), eps),
    )
    entries = [
        _mlp_entry(layout, i, plans[i], tape[i], manual[i], numeric[i], eps, tolerances)
        for i in range(len(plans))
    ]
    return Report(_mlp_title(model, loss, l2, x64), mode, "float64", eps, tuple(entries), tuple(notes))


def _mlp_layout(model: MLP) -> _Layout:
    variables = model.trainable_variables
    names = [v.path.removeprefix(f"{model.name}/") for v in variables]  # dense_1/kernel, ...
    return _Layout(names, [v.shape for v in variables])


def _check_gradients(name: str, grads, layout: _Layout) -> list[np.ndarray]:
    """grads as float64 arrays; ValueError unless one per variable, each of its shape."""
    grads = list(grads)
    shapes = [None if g is None else tuple(np.shape(g)) for g in grads]
    if shapes != layout.shapes:
        raise ValueError(f"{name}: expected gradients of shapes {layout.shapes}, got {shapes}")
    return [np.asarray(g, np.float64) for g in grads]


def _check_l2(l2) -> float:
    if (
        isinstance(l2, bool)
        or not isinstance(l2, (int, float, np.number))
        or not l2 >= 0
        or not math.isfinite(l2)
    ):
        raise ValueError(f"l2: expected a finite number >= 0, got {l2!r}")
    return float(l2)


def _float64_mlp(model: MLP) -> tuple[MLP, list[str]]:
    """The model itself if float64, else a float64 copy with the same weights and activations."""
    if model.compute_dtype == "float64":
        return model, []
    copy = MLP(**{**model.get_config(), "dtype": "float64"})
    for target, source in zip(copy.weights, model.weights):
        target.assign(tf.cast(source, tf.float64))
    # Keep the activation objects themselves (a swapped-in one keeps its backward).
    copy.hidden_activation = model.hidden_activation
    copy.output_activation = model.output_activation
    return copy, [f"checked on a float64 copy of the {model.compute_dtype} model"]


def _mlp_targets(model: MLP, x, y, loss, l2: float, layout: _Layout) -> list[_Target]:
    """Per variable, a compiled map: perturbation rows δ -> (L(θ+δ), L(θ−δ), crossed a kink).

    The perturbed forward passes are written out here, apart from the model's, as an
    independent reference.  Layers below a perturbed one do not change: for large nets each
    layer l gets its own map, which starts from the cached h_{l-1} and z_l of an unperturbed
    pass and whose rows cover the parameters of layers l..L only.  Small nets share one map
    (one trace).
    """
    params = [tf.convert_to_tensor(v) for v in model.trainable_variables]  # [W_1, b_1, ..., b_L]
    forward = model.forward(x, keep_intermediates=True)
    inputs = [x] + forward.hs[:-1]  # h_0 .. h_{L-1}
    n_layers = len(model.dense_layers)
    firsts = [0] * n_layers if layout.size <= ROW_BUDGET else list(range(n_layers))
    signature = (tf.TensorSpec([], tf.float64),) * 2 + (tf.TensorSpec([], tf.bool),)
    cost = int(x.shape[0]) * sum(model.layer_sizes[1:])  # one row's activations
    runs = {}
    for first in sorted(set(firsts)):
        size = layout.size - int(layout.offsets[2 * first])
        row = _suffix_row(model, params, (inputs[first], forward.zs[first]), y, loss, l2, first)
        run = _compile_rows(row, size, tf.float64, signature, _parallel(size), vectorize=False)
        runs[first] = (run, size)
    targets = []
    for i in range(len(params)):
        first = firsts[i // 2]
        run, size = runs[first]
        targets.append(_Target(run, size, int(layout.offsets[i] - layout.offsets[2 * first]), cost))
    return targets


def _suffix_row(model: MLP, params, cached, y, loss, l2: float, first: int) -> Callable:
    """row(δ) -> (L(θ+δ), L(θ−δ), crossed a kink), δ over [W_first, b_first, ..., b_L] (flat).

    cached = (h_{first-1}, z_first) at θ.  z_first is linear in its layer's parameters, so
    z_first(θ ± δ) = z_first ± (h_{first-1} δW + δb): one product serves both signs, and for a
    single element or a bias it needs no matmul at all.
    """
    h_in, z_in = cached
    tail = params[2 * first :]  # [W_first, b_first, ..., W_L, b_L]
    sizes = [int(tf.size(p)) for p in tail]

    def loss_from(z, new_tail):
        signs, last = [], len(model.dense_layers) - 1
        for index in range(first, last + 1):  # z is z_index: [m, n_index]
            activation = model.activations_per_layer[index]
            h = activation.forward(z)
            if activation.has_kink:
                signs.append(z > 0)
            if index < last:
                w, b = new_tail[2 * (index + 1 - first) : 2 * (index + 2 - first)]
                z = tf.matmul(h, w) + b
        value = loss.value(z, h, y)
        if l2:
            value += losses_lib.l2_penalty([*params[0 : 2 * first : 2], *new_tail[0::2]], l2)
        return value, signs

    def kernel_step(d_kernel):
        """h_{first-1} δW: an outer product when δW is zero or has one nonzero row (elements)."""
        nonzero_rows = tf.reduce_any(d_kernel != 0, axis=1)  # [n_{first-1}]
        i = tf.argmax(tf.cast(nonzero_rows, tf.int32))

        def one_row():
            return h_in[:, i, None] * d_kernel[i][None, :]  # [m, 1] * [1, n_first]

        sparse = tf.reduce_sum(tf.cast(nonzero_rows, tf.int32)) <= 1
        return tf.cond(sparse, one_row, lambda: tf.matmul(h_in, d_kernel))

    def row(delta):
        steps = [tf.reshape(d, p.shape) for d, p in zip(tf.split(delta, sizes), tail)]
        z_step = kernel_step(steps[0]) + steps[1]  # [m, n_first]
        plus, signs_plus = loss_from(z_in + z_step, [p + d for p, d in zip(tail, steps)])
        minus, signs_minus = loss_from(z_in - z_step, [p - d for p, d in zip(tail, steps)])
        flips = [tf.reduce_any(a != b) for a, b in zip(signs_plus, signs_minus)]
        return plus, minus, tf.reduce_any(tf.stack(flips)) if flips else tf.constant(False)

    return row


def _mlp_entry(layout, i, plan, tape, manual, numeric, eps, tolerances) -> Entry:
    """One variable's comparisons: tape ↔ manual (every element), each ↔ numeric (the plan)."""
    exact, tolerance = tolerances
    plus, minus, crossed = numeric
    derivative = (plus - minus) / (2 * eps)  # [k + s]
    shape, locate = layout.shapes[i], plan.locate(layout.shapes[i])
    comparisons = [compare(tape, manual, exact, sources=("tape", "manual"), locate=_element_locator(shape))]
    for name, grad in (("tape", tape), ("manual", manual)):
        analytic = plan.project(grad.ravel())
        comparisons.append(
            compare(analytic, derivative, tolerance, sources=(name, "numeric"), kink=crossed, locate=locate)
        )
    full = len(plan.directions) == 0 and len(plan.elements) == layout.sizes[i]
    norms = {
        "tape": float(np.linalg.norm(tape)),
        "manual": float(np.linalg.norm(manual)),
        "numeric": float(np.linalg.norm(derivative)) if full else None,
    }
    return Entry(layout.names[i], shape, norms, tuple(comparisons))


def _mlp_title(model: MLP, loss, l2: float, x) -> str:
    sizes = "-".join(str(s) for s in model.layer_sizes)
    activations = f"{model.hidden_activation.name} → {model.output_activation.name}"
    return f"gradcheck: MLP {sizes} ({activations}), loss {loss.name}, l2 {l2:g}, batch {x.shape[0]}"


def random_batch(model: MLP, loss: str | losses_lib.Loss, batch_size: int, seed: int = 0):
    """A random batch to check `model` with `loss`: (x [batch, n_0], y).

    x ~ N(0, 1); y ~ N(0, 1) [batch, n_L] for the squared errors, {0, 1} [batch, n_L] for
    binary cross-entropy, class labels [batch] for categorical cross-entropy.
    """
    loss = losses_lib.get(loss)
    batch_size = _check_count("batch_size", batch_size, 1)
    rng = np.random.default_rng(_check_count("seed", seed, 0))
    x = rng.standard_normal((batch_size, model.layer_sizes[0]))
    outputs = model.layer_sizes[-1]
    if loss.sparse_labels:
        return x, rng.integers(0, outputs, batch_size)
    if loss.on_logits:
        return x, rng.integers(0, 2, (batch_size, outputs)).astype(np.float64)
    return x, rng.standard_normal((batch_size, outputs))


# --- B. any function -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Problem:
    """A function at a point, ready to check: fn(*xs) = output, inputs laid out as one θ."""

    fn: Callable
    xs: list[tf.Tensor]
    layout: _Layout
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
    options = _Options(mode, eps, atol, rtol, seed, directions, samples)
    title = "gradcheck: tf.GradientTape vs central differences"
    return _check_function(fn, inputs, names, options, title=title)


def _check_names(names, count: int) -> list[str] | None:
    if names is None:
        return None
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"names: expected {count} names (one per input), got {len(names)}")
    return names


def _check_function(fn, inputs, names, options: _Options, *, title, notes=(), source="analytic") -> Report:
    """The engine shared by gradcheck and check_model."""
    options = options.validated()
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    if not inputs:
        raise ValueError("inputs: expected at least one tensor")
    arrays = [_check_input(name, x) for name, x in zip(names, inputs)]
    dtype, output, dtype_note = _probe(fn, arrays, names)
    eps = _check_positive("eps", options.eps, EPS[dtype])
    tolerance = _override(NUMERIC_TOLERANCES[dtype], options.atol, options.rtol)
    xs = [tf.constant(a, dtype) for a in arrays]
    problem = _Problem(fn, xs, _Layout(names, [a.shape for a in arrays]), output, eps, tolerance, source)
    entries = _full_jacobian(problem) if options.mode == "full" else _projections(problem, options)
    notes = (*notes, *([dtype_note] if dtype_note else []))
    return Report(title, options.mode, dtype, eps, tuple(entries), notes)


def _check_input(name: str, x) -> np.ndarray:
    array = _check_finite(name, x)
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
                f"fn: raised {type(caught).__name__} on the inputs: {_one_line(caught)}"
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


def _vjp_runner(p: _Problem) -> Callable:
    """A compiled map: output cotangents u [P, n_out] -> uᵀJ [P, n], through tf.GradientTape."""
    theta = p.layout.flatten(p.xs)  # [n]

    def row(u):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            output = p.flat_fn(theta)
        return tape.gradient(output, theta, output_gradients=u, unconnected_gradients="zero")

    spec = tf.TensorSpec([p.layout.size], theta.dtype)
    return _compile_rows(row, p.output.size, theta.dtype, spec, _parallel(p.layout.size))


def _pair_runner(p: _Problem) -> Callable:
    """A compiled map: rows δ [P, n] -> (f(θ + δ), f(θ − δ)), each [P, n_out]."""
    theta = p.layout.flatten(p.xs)  # [n]
    spec = tf.TensorSpec([p.output.size], theta.dtype)

    def row(delta):
        return p.flat_fn(theta + delta), p.flat_fn(theta - delta)

    return _compile_rows(row, p.layout.size, theta.dtype, (spec, spec), _parallel(p.layout.size))


def _full_jacobian(p: _Problem) -> list[Entry]:
    """Compares the whole Jacobian [n_out, n_i] of every input."""
    n, n_out = p.layout.size, p.output.size
    if n * n_out > MAX_FULL_JACOBIAN:
        raise ValueError(f"mode: 'full' would compare a {n_out} x {n} Jacobian; use mode='fast'")
    analytic = _run_identity(_vjp_runner(p), n_out, n)  # [n_out, n]
    plus, minus = _run_plans([_Target(_pair_runner(p), n, 0, n_out)], [_full_plan(n)], p.eps)[0]
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


def _run_identity(run, n_out: int, n: int) -> np.ndarray:
    """run over the rows of the [n_out, n_out] identity, in chunks: [n_out, n]."""
    chunk = max(1, ROW_BUDGET // max(n, n_out))
    parts = []
    for start in range(0, n_out, chunk):
        rows = np.zeros((min(n_out, start + chunk) - start, n_out))
        rows[np.arange(len(rows)), np.arange(start, start + len(rows))] = 1.0
        parts.append(np.asarray(run(rows), np.float64))
    return np.concatenate(parts)


def _projections(p: _Problem, options: _Options) -> list[Entry]:
    """Compares uᵀJv for random u, v and (u₀ᵀJ)_j for sampled elements j, per input."""
    rng = np.random.default_rng(options.seed)
    us = rng.standard_normal((options.directions, p.output.size))
    us /= np.linalg.norm(us, axis=1, keepdims=True)  # [k, n_out], unit rows
    analytic = np.asarray(_vjp_runner(p)(us), np.float64)  # uᵀJ: [k, n]
    plans = _plans(p.layout, options, unit=False, rng=rng)
    run, cost = _pair_runner(p), max(p.layout.size, p.output.size)
    targets = [_Target(run, p.layout.size, int(p.layout.offsets[i]), cost) for i in range(len(plans))]
    values = _run_plans(targets, plans, p.eps)
    scale = float(np.max(np.linalg.norm(us * p.f0, axis=1)))  # round-off of uᵀf, errors independent
    tolerance = p.tolerance.with_roundoff(p.dtype, scale, p.eps)
    return [
        _projection_entry(p, i, plan, us, analytic, value, tolerance)
        for i, (plan, value) in enumerate(zip(plans, values))
    ]


def _projection_entry(p: _Problem, i: int, plan: _Plan, us, analytic, value, tolerance) -> Entry:
    u = _row_cotangents(us, plan)  # [k + s, n_out]
    plus, minus, base = (np.sum(u * f.astype(np.float64), axis=1) for f in (*value, p.f0[None]))
    a = _project_rows(analytic[:, p.layout.span(i)], plan)
    b = (plus - minus) / (2 * p.eps)
    kink = np.abs((plus - base) - (base - minus)) / p.eps >= np.abs(a - b)
    locate = plan.locate(p.layout.shapes[i])
    comparison = compare(a, b, tolerance, sources=(p.source, "numeric"), kink=kink, locate=locate)
    return Entry(p.layout.names[i], p.layout.shapes[i], {p.source: None, "numeric": None}, (comparison,))


def _row_cotangents(us: np.ndarray, plan: _Plan) -> np.ndarray:
    """u for each row of the plan: u_d for direction d, u_0 for the sampled elements."""
    k = len(plan.directions)
    return np.concatenate([us[:k], np.repeat(us[:1], len(plan.elements), axis=0)])


def _project_rows(grads: np.ndarray, plan: _Plan) -> np.ndarray:
    """Analytic values of the plan's rows from uᵀJ per direction [k, n_i]: [k + s]."""
    k = len(plan.directions)
    return np.concatenate([np.sum(grads[:k] * plan.directions, axis=1), grads[0, plan.elements]])


# --- B.3 any Keras model ---------------------------------------------------------------------
def check_model(
    model: keras.Model,
    x,
    y,
    loss_fn: Callable,
    *,
    mode: str = "full",
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    directions: int = 4,
    samples: int = 4,
    training: bool = False,
) -> Report:
    """Checks a Keras model's tape gradients of loss_fn(y, model(x)) per trainable variable.

    A float32 model is cloned in float64 when Keras can (Sequential and functional models
    from their layers' configs, subclassed ones with `from_config`); otherwise it is checked in
    float32 with widened tolerances, and the report says so.  A `keras.losses.Loss` computes
    in `keras.config.floatx()` unless built with dtype="float64"; it is rebuilt in float64
    when it can be.

    Args:
      model: a built Keras model with trainable variables (custom layers included).
      x, y: a batch of inputs and targets (finite).
      loss_fn: (y_true, y_pred) -> scalar loss, e.g. a `keras.losses.Loss`.
      mode, eps, atol, rtol, seed, directions, samples: as in `gradcheck`, per variable.
      training: passed to the model's call when it takes a `training` argument.

    Returns:
      A `Report` with one entry per trainable variable: tape ↔ numeric.

    Raises:
      ValueError: on a bad argument, named in the message.
    """
    options = _Options(mode, eps, atol, rtol, seed, directions, samples).validated()
    if not isinstance(model, keras.Model):
        raise ValueError(f"model: expected a keras.Model, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ValueError(
            f"loss_fn: expected a callable (y_true, y_pred) -> loss, got {type(loss_fn).__name__}"
        )
    x, y = _check_finite("x", x), _check_finite("y", y)
    if not model.trainable_variables:
        raise ValueError("model: has no trainable variables (build it first, e.g. by calling it on x)")
    target, notes = _float64_keras(model, x)
    if target.compute_dtype == "float64":
        loss_fn = _float64_loss(loss_fn)
    fn = _stateless_loss(target, x, y, loss_fn, training)
    values = [np.asarray(v.numpy()) for v in target.trainable_variables]
    names = [v.path for v in model.trainable_variables]
    title = f"gradcheck: Keras model {model.name!r}, batch {len(x)}: tf.GradientTape vs central differences"
    return _check_function(fn, values, names, options, title=title, notes=notes, source="tape")


def _stateless_loss(model: keras.Model, x: np.ndarray, y: np.ndarray, loss_fn, training: bool) -> Callable:
    """fn(*trainable values) -> the loss, with the model's variables replaced by the values."""
    dtype = model.compute_dtype
    x, y = (tf.constant(a, dtype) if a.dtype.kind == "f" else tf.constant(a) for a in (x, y))
    non_trainable = [v.value for v in model.non_trainable_variables]
    takes_training = "training" in inspect.signature(model.call).parameters
    kwargs = {"training": training} if takes_training else {}

    def fn(*trainable):
        outputs, _ = model.stateless_call(list(trainable), non_trainable, x, **kwargs)
        return loss_fn(y, outputs)

    return fn


def _float64_keras(model: keras.Model, x: np.ndarray) -> tuple[keras.Model, list[str]]:
    """The model if its variables are float64, else a float64 clone if Keras can build one."""
    if all(v.dtype == "float64" for v in model.trainable_variables):
        return model, []
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")  # sublayers a custom layer creates follow it
    try:
        clone = _clone_float64(model, x)
    except Exception as error:  # noqa: BLE001 - any cloning failure means "check in float32"
        logging.info("gradcheck: no float64 clone of %s: %s", model.name, error)
        return model, [f"could not clone the model in float64 ({type(error).__name__}: {_one_line(error)})"]
    finally:
        keras.config.set_dtype_policy(previous)
    return clone, ["checked on a float64 clone of the model"]


def _clone_float64(model: keras.Model, x: np.ndarray) -> keras.Model:
    """A float64 copy of the model with its weights; ValueError if it does not match."""
    if isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False):
        clone = keras.models.clone_model(model, clone_function=_float64_layer)
    else:
        clone = model.__class__.from_config({**model.get_config(), "dtype": "float64"})
    x64 = tf.constant(x, tf.float64)
    clone(x64)  # builds it
    if [tuple(v.shape) for v in model.weights] != [tuple(v.shape) for v in clone.weights]:
        raise ValueError("the clone's variables differ from the model's")
    if any(v.dtype != "float64" for v in clone.trainable_variables):
        raise ValueError("some of the clone's variables are not float64")
    for target, source in zip(clone.weights, model.weights):
        target.assign(tf.cast(source, target.dtype))
    expected, got = np.asarray(model(x)), np.asarray(clone(x64))
    if expected.shape != got.shape or not np.allclose(expected, got, rtol=1e-3, atol=1e-4):
        raise ValueError("the float64 clone computes different outputs")
    return clone


def _float64_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})


def _float64_loss(loss_fn):
    if isinstance(loss_fn, keras.losses.Loss) and loss_fn.dtype != "float64":
        try:
            return loss_fn.__class__.from_config({**loss_fn.get_config(), "dtype": "float64"})
        except Exception as error:  # noqa: BLE001 - keep the loss as given
            logging.info("gradcheck: keeping %s in its dtype: %s", loss_fn, error)
    return loss_fn


# --- small helpers ---------------------------------------------------------------------------
def _one_line(error: Exception) -> str:
    """The first non-empty line of an error's message."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")


def _override(tolerance: Tolerance, atol, rtol) -> Tolerance:
    return Tolerance(
        _check_positive("atol", atol, tolerance.atol),
        _check_positive("rtol", rtol, tolerance.rtol),
    )


def _parallel(n: int) -> int:
    # Parallel iterations copy θ each; allow them only while θ is small.
    return 8 if n <= 100_000 else 1


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(flat), shape)) if shape else ()


def _element_locator(shape) -> Callable[[int], Location]:
    return lambda i: Location(index=_unravel(i, shape))


def _jacobian_locator(input_shape, output_shape) -> Callable[[int], Location]:
    size = int(np.prod(input_shape, dtype=np.int64))
    output_shape = tuple(output_shape)

    def locate(i: int) -> Location:
        out, inp = divmod(i, size)
        output_index = _unravel(out, output_shape) if output_shape else None  # scalar: no index
        return Location(index=_unravel(inp, input_shape), output_index=output_index)

    return locate


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
