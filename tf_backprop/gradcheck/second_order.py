"""Second order for any function: its gradient as a function, whose derivative the engine checks.

`gradcheck(fn, inputs, order=2)` checks G, the gradient of fn computed by tf.GradientTape, like
any function: the analytic side is G's vector-Jacobian product from a second tape around the
first (reverse over reverse: Hessian-vector products), or with forward mode on, G's JVP from a
ForwardAccumulator (forward over reverse); the numeric side is central differences of G.  A
tf.custom_gradient whose gradient function is built from pieces that do not differentiate (a
NumPy constant, tf.stop_gradient, an op without a registered gradient) has a right G and a wrong
derivative of G, which is what fails here.

What G is:
* a scalar fn: its gradient with respect to every input, [n] (the Hessian is [n, n]);
* any other fn in full mode: the gradient of each output element, [n_out · n] (one Hessian per
  output element; at most MAX_OUTPUTS of them);
* any other fn in fast mode: the gradient of wᵀf for one random unit output cotangent w
  (seeded): the VJP of a VJP.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tf_backprop.gradcheck import perturb
from tf_backprop.gradcheck.report import unravel

MAX_OUTPUTS = 64  # full mode on a non-scalar fn: one Hessian per output element, at most this many


def gradient_function(
    fn: Callable, layout: perturb.Layout, output_shape, mode: str, seed: int
) -> tuple[Callable, Callable[[int], dict], str | None]:
    """(G, locate_output, note): G(*inputs) -> a flat gradient (see the module docstring)."""
    output_shape = tuple(output_shape)
    n_out = int(np.prod(output_shape, dtype=np.int64))
    cotangent, note = None, None
    if n_out > 1 and mode == "full" and n_out > MAX_OUTPUTS:
        raise ValueError(
            f"order: 2 in full mode checks one Hessian per output element, at most {MAX_OUTPUTS}; fn "
            f"has {n_out} output elements: use mode='fast', or a scalar fn"
        )
    if n_out > 1 and mode == "fast":
        cotangent = np.random.default_rng(seed).standard_normal(n_out)
        cotangent /= np.linalg.norm(cotangent)
        note = f"second order of wᵀf for a random unit output cotangent w (seed {seed})"
    per_output = n_out > 1 and cotangent is None

    def gradient(*xs):
        with tf.GradientTape(persistent=per_output) as tape:
            tape.watch(xs)
            y = tf.reshape(fn(*xs), [-1])  # [n_out]
            if per_output:
                targets = [y[o] for o in range(n_out)]
            else:
                weights = 1.0 if cotangent is None else tf.constant(cotangent, y.dtype)
                targets = [tf.reduce_sum(y * weights)]
        parts = []
        for target in targets:
            grads = tape.gradient(target, list(xs), unconnected_gradients="zero")
            parts += [tf.reshape(g, [-1]) for g in grads]
        # Outside fn's domain (log at x − ε < 0) its gradient formula may still be finite (1/x):
        # NaN there makes the difference undefined, as fn's own NaN does at order 1.
        gradients = tf.concat(parts, axis=0)  # [n] or [n_out · n]
        return tf.where(tf.reduce_all(tf.math.is_finite(y)), gradients, tf.constant(np.nan, gradients.dtype))

    return gradient, _gradient_locator(layout, output_shape if per_output else None), note


def _gradient_locator(layout: perturb.Layout, output_shape) -> Callable[[int], dict]:
    """Flat position of G -> Location fields: the gradient element (and the output element)."""

    def locate(q: int) -> dict:
        out, k = divmod(q, layout.size)
        i = int(np.searchsorted(layout.offsets, k, side="right") - 1)
        fields = {"gradient": (layout.names[i], unravel(k - int(layout.offsets[i]), layout.shapes[i]))}
        if output_shape is not None:
            fields["output_index"] = unravel(out, output_shape)
        return fields

    return locate


def output_locator(output_shape) -> Callable[[int], dict]:
    """First order: flat output position -> its output_index (none for a scalar output)."""
    output_shape = tuple(output_shape)
    return lambda q: {"output_index": unravel(q, output_shape) if output_shape else None}
