"""A function at a point, ready to check, and its compiled evaluations: reverse, forward, perturbed.

Every evaluation is a map over rows compiled by `perturb.compile_rows`: vector-Jacobian products
uᵀJ through tf.GradientTape, Jacobian-vector products Jv through tf.autodiff.ForwardAccumulator,
the perturbed pairs f(θ ± δ), and the same derivatives at other points θ' (each row carries its
point), which the kink rule (`kinks`) needs at θ ± δ.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tf_backprop.gradcheck import perturb
from tf_backprop.gradcheck.report import Location, Tolerance, unravel


@dataclasses.dataclass(frozen=True)
class Problem:
    """fn(*xs) = output, its inputs laid out as one θ; how to name and compare its values.

    locate_output maps a flat output position to Location fields (output_index, gradient);
    continuous is False when fn is itself a gradient (order 2: it may jump at a kink);
    forward asks for the forward-mode comparisons too.
    """

    fn: Callable
    xs: list[tf.Tensor]
    layout: perturb.Layout
    output: np.ndarray
    eps: float
    tolerance: Tolerance
    source: str  # the name of the reverse-mode side in the report
    locate_output: Callable[[int], dict]
    continuous: bool = True
    forward: bool = False
    runners: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)  # compiled, by name

    @property
    def dtype(self) -> str:
        return self.xs[0].dtype.name

    @property
    def f0(self) -> np.ndarray:
        return self.output.reshape(-1).astype(np.float64)  # [n_out]

    @property
    def theta(self) -> tf.Tensor:
        return self.layout.flatten(self.xs)  # [n]

    def flat_fn(self, theta: tf.Tensor) -> tf.Tensor:
        return tf.reshape(self.fn(*self.layout.unflatten(theta)), [-1])  # [n_out]

    def locate(self, i: int) -> Callable[[int], Location]:
        """Flat position in input i's [n_out, n_i] block -> its `Location`."""
        shape, size = self.layout.shapes[i], self.layout.sizes[i]

        def locate(q: int) -> Location:
            out, inp = divmod(q, size)
            return Location(index=unravel(inp, shape), **self.locate_output(out))

        return locate


def error_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, "" if it has none.

    Unlike `text.first_line`, no fallback to the error's type: the messages that quote this
    line name the type already.  TensorFlow's errors raised while tracing open with "in user
    code:" and end with the original error: that last line is the one returned.  Keras's
    "Exception encountered when calling ..." wrapper gives its next line (the layer's error),
    an eager op's error loses its "{{function_node ...}}" frame, and terminal bold is dropped.
    """
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Keras bolds its messages for terminals
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0] == "in user code:":
        return lines[-1]
    if lines[0].startswith("Exception encountered when calling") and len(lines) > 1:
        return _without_op_frame(lines[1])  # Keras's wrapper: the layer's own error is the next line
    return _without_op_frame(lines[0])


def _without_op_frame(line: str) -> str:
    """An eager op's error without TensorFlow's frame: "{{function_node __wrapped__Sub_device_
    /job:localhost/...}} Incompatible shapes: [3,5] vs. [3,2] [Op:Sub] name: " -> "Incompatible
    shapes: [3,5] vs. [3,2] [Op:Sub]"."""
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line)
    return re.sub(r"\s+name:\s*$", "", line)


def runner(p: Problem, name: str) -> Callable:
    """The compiled evaluation called `name` ("vjp", "jvp", "pair", "vjp_at", "jvp_at"), built once."""
    if name not in p.runners:
        p.runners[name] = _BUILDERS[name](p)
    return p.runners[name]


def _compile(p: Problem, row: Callable, width: int, out_size: int, pairs: bool = False) -> Callable:
    spec = tf.TensorSpec([out_size], p.theta.dtype)
    signature = (spec, spec) if pairs else spec
    return perturb.compile_rows(
        row, width, p.theta.dtype, signature, perturb.parallel_iterations(p.layout.size)
    )


def _vjp(p: Problem, theta: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape() as tape:
        tape.watch(theta)
        output = p.flat_fn(theta)
    return tape.gradient(output, theta, output_gradients=u, unconnected_gradients="zero")  # [n]


def _jvp(p: Problem, theta: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    with tf.autodiff.ForwardAccumulator(theta, v) as accumulator:
        output = p.flat_fn(theta)
    return accumulator.jvp(output, unconnected_gradients="zero")  # [n_out]


def vjp_runner(p: Problem) -> Callable:
    """Output cotangents u [P, n_out] -> uᵀJ [P, n] at θ, through tf.GradientTape."""
    theta = p.theta
    return _compile(p, lambda u: _vjp(p, theta, u), p.output.size, p.layout.size)


def jvp_runner(p: Problem) -> Callable:
    """(directions v [P, n_i], offset) -> Jv [P, n_out] at θ, through ForwardAccumulator."""
    theta = p.theta
    return _compile(p, lambda v: _jvp(p, theta, v), p.layout.size, p.output.size)


def pair_runner(p: Problem) -> Callable:
    """(rows δ [P, n_i], offset) -> (f(θ + δ), f(θ − δ)), each [P, n_out]."""
    theta = p.theta
    return _compile(
        p, lambda d: (p.flat_fn(theta + d), p.flat_fn(theta - d)), p.layout.size, p.output.size, True
    )


def vjp_at_runner(p: Problem) -> Callable:
    """Rows [θ' | u] [P, n + n_out] -> uᵀJ(θ') [P, n]: reverse mode at other points."""
    n = p.layout.size
    return _compile(p, lambda r: _vjp(p, r[:n], r[n:]), n + p.output.size, n)


def jvp_at_runner(p: Problem) -> Callable:
    """Rows [θ' | v] [P, 2n] -> J(θ')v [P, n_out]: forward mode at other points."""
    n = p.layout.size
    return _compile(p, lambda r: _jvp(p, r[:n], r[n:]), 2 * n, p.output.size)


_BUILDERS = {
    "vjp": vjp_runner,
    "jvp": jvp_runner,
    "pair": pair_runner,
    "vjp_at": vjp_at_runner,
    "jvp_at": jvp_at_runner,
}


def run_identity(run, count: int, width: int) -> np.ndarray:
    """run over the rows of the [count, count] identity, in chunks: [count, width]."""
    chunk = max(1, perturb.ROW_BUDGET // max(count, width))
    parts = []
    for start in range(0, count, chunk):
        rows = np.zeros((min(count, start + chunk) - start, count))
        rows[np.arange(len(rows)), np.arange(start, start + len(rows))] = 1.0
        parts.append(np.asarray(run(rows), np.float64))
    return np.concatenate(parts)


def run_chunked(run, rows: np.ndarray) -> np.ndarray:
    """run over rows [R, width] in chunks of about ROW_BUDGET numbers: stacked, float64."""
    chunk = max(1, perturb.ROW_BUDGET // max(1, rows.shape[1]))
    return np.concatenate(
        [np.asarray(run(rows[s : s + chunk]), np.float64) for s in range(0, len(rows), chunk)]
    )
