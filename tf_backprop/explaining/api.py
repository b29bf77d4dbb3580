"""`explain(model, x, y, loss)`: the trace of one pass with, for the article's net, its errata.

Also what the CLI needs around it: a float64 copy of a model (the trace of a float32 run is
computed on its weights converted exactly) and the default sample drawn from a seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from tf_backprop import losses as losses_lib
from tf_backprop import names
from tf_backprop.explaining import errata as errata_lib
from tf_backprop.explaining import trace as trace_lib
from tf_backprop.model import MLP

ERRATA_MODES = names.ERRATA_MODES


def explain(
    model: MLP, x, y, loss: str | losses_lib.Loss, l2: float = 0.0, errata: str = "auto"
) -> trace_lib.Trace:
    """The trace of one forward and backward pass of `model` on (x, y) (`trace.Trace`).

    Args:
      model: an `MLP`; the trace is computed in its dtype (float64 for exact numbers).
      x: [m, n_0], or [n_0] for one sample (y then a number, [k] or a class label).
      y: the targets as `loss` takes them.
      loss: a name in `losses.LOSSES` or a `losses.Loss`.
      l2: the L2 penalty λ of λ/2 Σ‖W‖².
      errata: "auto" adds the article's errata when they apply (`errata.not_applicable`),
        "on" requires them (ValueError naming why they do not apply), "off" leaves them out.

    Raises ValueError for inputs the model or the loss cannot take.
    """
    if errata not in ERRATA_MODES:
        raise ValueError(f"errata: expected one of {', '.join(ERRATA_MODES)}, got {errata!r}")
    loss = losses_lib.get(loss)
    trace = trace_lib.build(model, x, y, loss, l2)
    if errata == "off":
        return trace
    reason = errata_lib.not_applicable(trace)
    if reason is not None:
        if errata == "on":
            raise ValueError(f"errata: the article's errata do not apply here: {reason}")
        return trace
    return dataclasses.replace(trace, errata=tuple(errata_lib.evaluate(trace, model, loss)))


def float64_copy(model: MLP) -> MLP:
    """The model itself if float64, else a float64 copy with its weights converted exactly."""
    if model.compute_dtype == "float64":
        return model
    copy = dataclasses.replace(model.spec, dtype="float64").build()
    for target, source in zip(copy.weights, model.weights):
        target.assign(tf.cast(source, tf.float64))
    return copy


def default_sample(model: MLP, loss: str | losses_lib.Loss, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One sample (x [n_0], y) drawn from `seed`, with short decimals to read.

    x uniform in [−1, 1) rounded to 1 decimal; y by the loss's task: uniform in [0, 1) rounded to
    1 decimal (regression), 0 or 1 per output (binary), a class label (multiclass).
    """
    loss = losses_lib.get(loss)
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(-1.0, 1.0, model.layer_sizes[0]), 1)
    outputs = model.layer_sizes[-1]
    if loss.task == "multiclass":
        return x, np.asarray(rng.integers(0, outputs))
    if loss.task == "binary":
        return x, rng.integers(0, 2, outputs).astype(np.float64)
    return x, np.round(rng.uniform(0.0, 1.0, outputs), 1)
