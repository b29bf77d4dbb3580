"""Finite-difference perturbations: which rows to evaluate, and evaluating them in compiled batches.

Several tensors (an MLP's variables, a function's inputs) are laid out as one flat vector θ
(`Layout`).  A `Plan` lists the perturbations that check one of them: k random directions,
then s single elements (every element in full mode).  Each perturbation is a row δ of
length n_i; a `Target` says how to evaluate rows of its tensor, and `run_plans` feeds it every
plan's rows in chunks of about ROW_BUDGET numbers, through maps compiled by `compile_rows`.
Fast mode projects gradients onto a plan's rows (`ProjectionRows`, `along`) without making
them dense: a row of a 10⁶-element input is 8 MB.
"""

from __future__ import annotations

import dataclasses
import logging as py_logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import text
from tf_backprop.gradcheck.options import Options
from tf_backprop.gradcheck.report import Location, unravel

ROW_BUDGET = 1 << 20  # elements of perturbation rows handed to one compiled call
SINGLE_ROW_SIZE = 100_000  # a lone row longer than this skips the map (its own trace)
# A check whose differences are projected to take longer than this says so, once, with the
# estimate: full mode's work grows with the square of the size (a 2-1000-1000-1 MLP: hours).
LONG_CHECK_SECONDS = 60.0
MEASURED_CHUNKS = 3  # chunks timed before the projection is trusted


class _OwnRetracingFilter(py_logging.Filter):
    """Drops TensorFlow's "frequent retracing" warning about the maps `compile_rows` builds.

    Every check compiles fresh functions on purpose (they close over the model or function
    being checked); TensorFlow counts them as retraces of one function and would warn.
    """

    def filter(self, record: py_logging.LogRecord) -> bool:
        return "compile_rows.<locals>" not in record.getMessage()


tf.get_logger().addFilter(_OwnRetracingFilter())


class Layout:
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
        """Where tensor i's elements sit in θ."""
        return slice(self.offsets[i], self.offsets[i + 1])

    def flatten(self, tensors) -> tf.Tensor:
        return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)  # [n]

    def unflatten(self, theta: tf.Tensor) -> list[tf.Tensor]:
        return [tf.reshape(p, s) for p, s in zip(tf.split(theta, self.sizes), self.shapes)]


@dataclasses.dataclass(frozen=True)
class Plan:
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

    def rows_at(self, at: np.ndarray, directions: np.ndarray | None = None) -> np.ndarray:
        """Rows `at` (positions in the plan) of unit size, v_d or e_j: [len(at), n_i], dense
        only for these; `directions` [k, n_i] stands in for the v_d (e.g. the realized ones)."""
        directions = self.directions if directions is None else directions
        at, k = np.asarray(at, int), len(self.directions)
        rows = np.zeros((len(at), self.directions.shape[1]))
        is_direction = at < k
        rows[is_direction] = directions[at[is_direction]]
        picked = np.flatnonzero(~is_direction)
        rows[picked, self.elements[at[picked] - k]] = 1.0
        return rows

    def project(self, grad: np.ndarray) -> np.ndarray:
        """The analytic counterparts of the rows: [k + s] from a flat gradient [n_i]."""
        return np.concatenate([self.directions @ grad, grad[self.elements]])

    def locate(self, shape: tuple[int, ...]) -> Callable[[int], Location]:
        """Row -> `Location`: the direction's number, or the element's index in `shape`."""
        k = len(self.directions)

        def locate(item: int) -> Location:
            if item < k:
                return Location(direction=item)
            return Location(index=unravel(self.elements[item - k], shape))

        return locate


def full_plan(size: int) -> Plan:
    """Every element of a tensor of `size` elements, one at a time."""
    return Plan(np.zeros((0, size)), np.arange(size))


def _fast_plan(size: int, directions: int, samples: int, rng: np.random.Generator, unit: bool) -> Plan:
    """k random sign directions and s random elements; every element if there are few.

    The directions' entries are ±1 (unit=False: each element moves by eps, as in the element
    checks, so uᵀJv stays well above the finite-difference round-off) or ±1/√n (unit=True, for
    the MLP: a step of eps in norm moves few pre-activations across a ReLU kink).
    """
    if size <= directions + samples:
        return full_plan(size)
    signs = rng.integers(0, 2, (directions, size), dtype=np.int8) * 2.0 - 1.0  # [k, n_i]
    vectors = signs / math.sqrt(size) if unit else signs
    return Plan(vectors, np.sort(rng.choice(size, samples, replace=False)))


def plans(layout: Layout, options: Options, unit: bool, rng: np.random.Generator | None = None) -> list[Plan]:
    """One plan per variable or input: every element in full mode, else a fast plan."""
    if options.mode == "full":
        return [full_plan(size) for size in layout.sizes]
    rng = rng or np.random.default_rng(options.seed)
    return [_fast_plan(size, options.directions, options.samples, rng, unit) for size in layout.sizes]


def parallel_iterations(n: int) -> int:
    """How many rows of length n `tf.map_fn` may run at once."""
    # Parallel iterations copy θ each; allow them only while θ is small.
    return 8 if n <= 100_000 else 1


def compile_rows(
    row_fn: Callable, n: int, dtype: tf.DType, signature, parallel: int, vectorize: bool = True
) -> Callable:
    """(rows [P, k], offset) -> row_fn of each row, stacked; compiled, one call per batch.

    Each row is padded with zeros to length n, its values at [offset, offset + k): only the
    perturbed variable's part travels from NumPy.  Many rows are vectorized (tf.vectorized_map:
    one batched op per op of row_fn; slower to trace, much faster on large functions), or
    looped over (tf.map_fn) when vectorize=False or vectorizing fails; a single row longer than
    SINGLE_ROW_SIZE skips both.
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

    def run(rows, offset=0):
        # A single large row skips the map; a single small one shares the map's trace.
        way = one if len(rows) == 1 and n > SINGLE_ROW_SIZE else many
        return way(tf.constant(rows, dtype), offset)

    return run


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
                    "gradcheck: %s evaluation failed, trying the next way: %s", name, text.first_line(error)
                )
                self.attempts.pop(0)
        return self.attempts[0][1](rows, offset)


@dataclasses.dataclass(frozen=True)
class Target:
    """How to perturb one variable: run maps (rows [P, its size], offset) to outputs, its
    elements sitting at [offset, offset + its size) of rows of length `size`; one row's
    evaluation holds about `cost` numbers."""

    run: Callable
    size: int
    offset: int
    cost: int

    def chunk(self) -> int:
        """Rows per call: about ROW_BUDGET numbers."""
        return max(1, ROW_BUDGET // max(self.size, self.cost))


def run_plans(
    targets: list[Target], plans: list[Plan], eps: float, mode: str = "fast"
) -> list[list[np.ndarray]]:
    """Evaluates every plan's rows; returns, per variable, run's outputs concatenated (NumPy).

    A run projected to last over LONG_CHECK_SECONDS logs a warning with its estimate; `mode`
    "full" adds that mode "fast" is the quick way.
    """
    pace = _Pace(targets, plans, mode)
    results = []
    for target, plan in zip(targets, plans):
        chunk = target.chunk()
        parts = []
        for start in range(0, plan.count, chunk):
            stop = min(plan.count, start + chunk)
            rows = plan.rows(start, stop, eps)  # [P, n_i]
            began = time.perf_counter()
            parts.append([np.asarray(t) for t in tf.nest.flatten(target.run(rows, target.offset))])
            pace.done(target, stop - start, time.perf_counter() - began)
        results.append([np.concatenate(p) for p in zip(*parts)])
    return results


class _Pace:
    """Projects the time run_plans has left from the chunks evaluated so far, and warns once.

    Work is counted in numbers (rows · max(size, cost), as `Target.chunk` sizes chunks); a run
    function's first chunk traces and compiles it, so it is left out of the rate.
    """

    def __init__(self, targets: list[Target], plans: list[Plan], mode: str):
        self.rows_left = sum(plan.count for plan in plans)
        self.work_left = sum(plan.count * _row_work(t) for t, plan in zip(targets, plans))
        self.mode = mode
        self.compiled: set[int] = set()
        self.measured_chunks, self.measured_work, self.measured_seconds = 0, 0, 0.0
        self.warned = False

    def done(self, target: Target, rows: int, seconds: float) -> None:
        self.rows_left -= rows
        self.work_left -= rows * _row_work(target)
        if id(target.run) not in self.compiled:
            self.compiled.add(id(target.run))
            return
        self.measured_chunks += 1
        self.measured_work += rows * _row_work(target)
        self.measured_seconds += seconds
        if self.warned or self.measured_chunks < MEASURED_CHUNKS:
            return
        projected = self.work_left * self.measured_seconds / self.measured_work
        if projected > LONG_CHECK_SECONDS:
            self.warned = True
            self._warn(projected)

    def _warn(self, projected: float) -> None:
        advice = "; mode 'fast' checks random directions and sampled elements in seconds"
        logging.warning(
            "gradcheck: the finite differences have %s perturbations left, about %s at the rate so far%s",
            f"{self.rows_left:,}",
            text.duration(projected),
            advice if self.mode == "full" else "",
        )


def _row_work(target: Target) -> int:
    return max(target.size, target.cost)


def run_rows(target: Target, rows: np.ndarray) -> list[np.ndarray]:
    """target.run over rows [R, its size] in run_plans' chunks (so in the ways it traced): its
    outputs, each concatenated (NumPy)."""
    chunk = target.chunk()
    parts = [
        [np.asarray(t) for t in tf.nest.flatten(target.run(rows[s : s + chunk], target.offset))]
        for s in range(0, len(rows), chunk)
    ]
    return [np.concatenate(p) for p in zip(*parts)]


@dataclasses.dataclass(frozen=True)
class ProjectionRows:
    """A fast plan's rows for projections: k directions, then s sampled elements, dense [R, n_i]
    only where asked (for n_i = 10⁶ the dense rows cost more than the rest of a check)."""

    plan: Plan
    realized: np.ndarray  # [k, n_i]: the directions the analytic values are taken along

    def steps_at(self, at: np.ndarray) -> np.ndarray:
        """v_d or e_j, the directions the differences step along: [R, n_i]."""
        return self.plan.rows_at(at)

    def realized_at(self, at: np.ndarray) -> np.ndarray:
        """The directions the analytic values are taken along: [R, n_i]."""
        return self.plan.rows_at(at, self.realized)

    def along(self, grads: np.ndarray, absolute: bool = False) -> np.ndarray:
        """`along` of each row's gradient (direction d's row of grads [k, n_i] for direction d,
        row 0's for the elements) and its realized direction; absolute: `along_abs`. [k + s]"""
        k, elements = len(self.plan.directions), grads[0, self.plan.elements]
        if absolute:
            return np.concatenate([along_abs(grads[:k], self.realized), finite_abs(elements)])
        return np.concatenate([along(grads[:k], self.realized), elements])


def along(grads: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Σ_j g_j w_j per row [R], over the elements each direction moves: a sampled element's row
    is its own value, even where another element's is inf (inf · 0 would make it NaN)."""
    with np.errstate(invalid="ignore", over="ignore"):
        sums = np.einsum("ij,ij->i", grads, directions)  # no [R, n] temporaries: n may be 10⁶
        bad = ~np.isfinite(sums)
        if bad.any():  # a non-finite g_j: only the elements the direction moves count
            moved = directions[bad] != 0
            sums[bad] = np.sum(np.where(moved, grads[bad] * directions[bad], 0.0), axis=1)
    return sums


def along_abs(grads: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Σ_j |g_j| |w_j| per row [R], a non-finite g_j counting 0 (`finite_abs`)."""
    with np.errstate(invalid="ignore", over="ignore"):
        sums = np.einsum("ij,ij->i", np.abs(grads), np.abs(directions))
    bad = ~np.isfinite(sums)
    if bad.any():
        sums[bad] = along(finite_abs(grads[bad]), np.abs(directions[bad]))
    return sums


def finite_abs(values: np.ndarray) -> np.ndarray:
    """|values|, 0 where not finite: a NaN analytic value fails by itself, and must not make the
    tolerance NaN, which would fail every other value with it."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(values), np.abs(values), 0.0)
