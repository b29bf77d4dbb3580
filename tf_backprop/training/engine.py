"""The training engine: many optimizer steps inside one compiled call.

A small net spends almost all its time in per-step Python overhead, so the engine runs a
*chunk* of steps per call: the chunk's rows are gathered once into [steps, accum,
global_batch, ...] and a `tf.while_loop` runs the `Step` (gradient, optional verification,
`optimizer.apply`) for each.  The same engine runs with or without a `tf.distribute` strategy:
a *runner* says how a step reaches the replicas — `SingleDevice` calls it directly and compiles
the chunk with XLA; `distributed.Replicas` runs it with `strategy.run` in a compiled (non-XLA)
loop, since XLA cannot compile the optimizer's cross-replica update on CPU strategies.

Checks.  On one device the fast chunk checks once, at its end, that the loss, the weights and
the optimizer state are finite (a per-step check of every gradient costs the article's net
~12%); when that check or a verification fails, the chunk's start state is restored and the
chunk replayed with every step checked, which stops right after the first failing step.
Under a strategy every step is checked (the flags are summed over the replicas).  Either way
the failing update exists only in memory; the run then fails, so it is never saved.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import backprop
from tf_backprop import data as data_lib
from tf_backprop import losses as losses_lib
from tf_backprop.model import MLP
from tf_backprop.training.step import TINY, Step

# Chunk stop codes.
RUNNING, NON_FINITE, DISAGREE = 0, 1, 2


class SingleDevice:
    """The engine's runner without a strategy: the step runs as it is, under XLA."""

    jit = True  # compile the whole chunk with XLA
    jit_gradients = False  # (the chunk already is)
    replays = True  # a failed chunk is restored and replayed step by step

    def place(self, tensor):
        return tensor

    def run(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def sum(self, value):
        return value

    def first(self, value):
        return value

    def errors(self, what: Callable[[], str]):
        return contextlib.nullcontext()


class Engine:
    """Owns the compiled chunk and evaluation functions for one model and optimizer.

    Build it (like the model and optimizer) inside the strategy's scope when there is one, and
    pass that strategy's `distributed.Replicas` as `runner`.
    """

    def __init__(
        self,
        model: MLP,
        optimizer: keras.optimizers.Optimizer,
        loss: losses_lib.Loss,
        config,
        target_std: np.ndarray | None,
        step_functions: Mapping[str, Callable] | None = None,
        runner=None,
    ):
        self.model, self.optimizer, self.loss, self.config = model, optimizer, loss, config
        self.runner = runner or SingleDevice()
        self.step = Step(model, optimizer, loss, config, target_std, step_functions)
        if self.runner.jit_gradients:
            self.step.gradients = tf.function(self.step.gradients, jit_compile=True)
        self.variables = model.trainable_variables
        self.optimizer.build(self.variables)
        # Everything a chunk changes, for restoring a failed chunk's start.
        self._state = list(model.weights) + list(self.optimizer.variables)
        # Under a strategy the chunk is a plain compiled loop (chunks of other lengths retrace).
        jit = {"jit_compile": True} if self.runner.jit else {"reduce_retracing": True}
        compiled = functools.partial(tf.function, **jit)
        if self.runner.replays:
            self._fast_chunk = compiled(functools.partial(self._chunk, checked=False))
        self._checked_chunk = compiled(functools.partial(self._chunk, checked=True))
        if self.config.monitor and not self.runner.jit:
            self._measured_last = tf.function(self._measure_last, reduce_retracing=True)
        self.evaluate_batch = tf.function(self._evaluate_batch, jit_compile=True)

    # --- the Python side -----------------------------------------------------------------
    def run_chunk(self, x_all, y_all, indices) -> dict[str, tf.Tensor]:
        """Runs up to len(indices) steps; returns the stop code and the chunk's statistics.

        indices: [steps, accum, global_batch] int32.  The dict: steps_done (healthy steps),
        status, loss_sum, metric_sums [3], bad [n_vars] (non-finite gradient flags of the
        stopping step), verify_error [n_vars] (of the chunk's last verified step), and with
        monitoring the chunk's last step measured: health [3, n_vars] (gradient norm, weight
        norm, update ratio ‖ΔW‖/‖W‖), gradients (one per variable) and activations (h_l of its
        first micro-batch, [batch, n_l] each).  A healthy fast chunk's dict also holds
        start_state (the weights and optimizer variables it started from).
        """
        with self.runner.errors(lambda: f"step {int(self.optimizer.iterations.numpy()) + 1}"):
            if not self.runner.replays:
                out = self._checked_chunk(x_all, y_all, indices)
                return self._measured_last(x_all, y_all, indices, out) if self.config.monitor else out
            out = self._fast_chunk(x_all, y_all, indices)
            if int(out["status"]) == RUNNING:
                return out
            self._restore_state(out["start_state"])
            out = self._checked_chunk(x_all, y_all, indices)
        if int(out["status"]) == RUNNING:  # the replay's arithmetic may differ in the last bits
            logging.warning("a chunk failed its end-of-chunk check but not its step-by-step replay")
        return out

    def _restore_state(self, values) -> None:
        """Assigns a fast chunk's start_state back to the weights and optimizer state."""
        for variable, value in zip(self._state, values):
            variable.assign(value)

    # --- the compiled chunk ------------------------------------------------------------
    def _chunk(self, x_all, y_all, indices, checked: bool):
        """The compiled chunk (see run_chunk); `checked` checks every step and stops at a failure.

        The loop applies every update unconditionally and stops after a failing step: a
        tf.cond around optimizer.apply, or carrying the gradients to the next iteration, costs
        XLA 1.5-2x on small nets.
        """
        steps = tf.shape(indices)[0]
        # The fast chunk returns the state it started from, for a replay (a separate read per
        # chunk costs the article's net ~2%).
        start_state = [] if checked else [tf.identity(v) for v in self._state]
        # The chunk's rows, gathered once: [steps, accum, global_batch, ...].  (Gathering from
        # the whole training split inside the loop slows XLA's loop down with the split's size.)
        xs, ys = self._gather(x_all, y_all, indices)
        # The fast chunk checks gradients per step only under clip_value, which would clip an
        # infinite gradient element into a finite update.
        check = checked or bool(self.config.clip_value)
        # With monitoring the chunk's last step runs after the loop, measured.
        loop_steps = steps - 1 if self.config.monitor else steps
        carry = tf.while_loop(
            lambda i, status, *_: tf.logical_and(i < loop_steps, tf.equal(status, RUNNING)),
            lambda *carry: self._train_step(xs, ys, carry, check),
            self._initial_carry(),
        )
        measured = ()
        if self.config.monitor and self.runner.jit:
            carry, measured = tf.cond(
                tf.logical_and(tf.equal(carry[1], RUNNING), carry[0] < steps),
                lambda: self._train_step(xs, ys, carry, check, measure=True),
                lambda: (carry, self._empty_measurement()),
            )
        out = self._outputs(carry, checked)
        if not checked:
            out["start_state"] = start_state
        if measured:
            out["health"], out["gradients"], out["activations"] = measured
        return out

    def _gather(self, x_all, y_all, indices):
        """The rows of indices, once per replica device: ([steps, accum, global_batch, ...], same for y)."""
        return self.runner.place(tf.gather(x_all, indices)), self.runner.place(tf.gather(y_all, indices))

    def _initial_carry(self):
        """(step i, status, loss sum, metric sums, bad flags, last verification errors)."""
        n_vars = len(self.variables)
        dtype = self.model.compute_dtype
        return (
            tf.constant(0),
            tf.constant(RUNNING),
            tf.zeros([], dtype),
            tf.zeros([3], dtype),
            tf.zeros([n_vars], tf.bool),
            tf.zeros([n_vars], tf.float64),
        )

    def _outputs(self, carry, checked: bool) -> dict[str, tf.Tensor]:
        i, status, loss_sum, metric_sums, bad, verify_error = carry
        if not checked and self.runner.replays:
            status = tf.where(self._state_is_finite(loss_sum), status, NON_FINITE)
        return {
            "steps_done": i - tf.cast(tf.not_equal(status, RUNNING), tf.int32),
            "status": status,
            "loss_sum": loss_sum,
            "metric_sums": metric_sums,
            "bad": bad,
            "verify_error": verify_error,
        }

    def _train_step(self, xs, ys, carry, check: bool, measure: bool = False):
        """Step carry[0] of the chunk on every replica: the new carry, and with `measure`
        (carry, measurement)."""
        i, status, loss_sum, metric_sums, bad, verify_error = carry
        before = [tf.identity(v) for v in self.variables] if measure else None
        report = self.runner.run(self._replica_step, xs, ys, i, check=check, measure=measure)
        summed = self.runner.sum(
            {k: report[k] for k in ("value", "sums", "flags", "gradients") if k in report}
        )
        loss_sum += summed["value"]
        metric_sums += summed["sums"]
        healthy, agree = tf.constant(True), tf.constant(True)
        if check:
            flags = summed["flags"] > 0  # [1 + n_vars]
            healthy, bad = tf.logical_not(flags[0]), flags[1:]
        if self.config.verify_every:
            due, errors = self.runner.first(report["due"]), self.runner.first(report["errors"])
            agree = tf.logical_or(tf.logical_not(due), tf.reduce_all(errors <= self.config.tolerance))
            verify_error = tf.where(due, errors, verify_error)
        if check or self.config.verify_every:
            status = tf.where(healthy, tf.where(agree, RUNNING, DISAGREE), NON_FINITE)
        carry = (i + 1, status, loss_sum, metric_sums, bad, verify_error)
        if not measure:
            return carry
        grads = summed["gradients"]
        health = tf.stack([norms(grads), norms(self.variables), update_ratios(before, self.variables)])
        return carry, (health, list(grads), list(self.runner.first(report["activations"])))

    def _replica_step(self, xs, ys, i, check: bool, measure: bool):
        """The Step on this replica's copy of the chunk's step i; flags as numbers, to be summed."""
        report = self.step(xs[i], ys[i], check, measure)
        if check:
            report["flags"] = tf.cast(report["flags"], report["value"].dtype)
        return report

    def _measure_last(self, x_all, y_all, indices, out):
        """Under a strategy: the chunk's last step, measured, in its own compiled call."""
        carry = tuple(
            out[k] for k in ("steps_done", "status", "loss_sum", "metric_sums", "bad", "verify_error")
        )
        # steps_done left out a failing step; the carry counts every step run.
        carry = (carry[0] + tf.cast(tf.not_equal(carry[1], RUNNING), tf.int32), *carry[1:])
        steps = tf.shape(indices)[0]
        xs, ys = self._gather(x_all, y_all, indices[steps - 1 :])

        def measure():
            last, measured = self._train_step(xs, ys, (0, *carry[1:]), True, measure=True)
            return (carry[0] + last[0], *last[1:]), measured

        carry, measured = tf.cond(
            tf.logical_and(tf.equal(carry[1], RUNNING), carry[0] < steps),
            measure,
            lambda: (carry, self._empty_measurement()),
        )
        out = {**out, **self._outputs(carry, checked=True)}
        out["health"], out["gradients"], out["activations"] = measured
        return out

    def _state_is_finite(self, loss_sum):
        """Whether the loss sum, the weights and the optimizer's float state are all finite."""
        tensors = [t for t in self._state if tf.as_dtype(t.dtype).is_floating]
        poison = [tf.cast(tf.reduce_sum(t * 0), loss_sum.dtype) for t in tensors]  # NaN if any is not
        return tf.math.is_finite(loss_sum * 0 + tf.add_n(poison))

    def _empty_measurement(self):
        """Zero placeholders shaped like one measurement."""
        dtype, batch = self.model.compute_dtype, self.config.batch_size
        return (
            tf.zeros([3, len(self.variables)], tf.float64),
            [tf.zeros_like(v) for v in self.variables],
            [tf.zeros([batch, width], dtype) for width in self.model.layer_sizes[1:]],
        )

    # --- evaluation --------------------------------------------------------------------
    def _evaluate_batch(self, x, y):
        """[Σ loss × rows, metric sums...] of one evaluation batch."""
        forward = self.model.forward(x, keep_intermediates=True)
        value = backprop.total_loss(self.model, forward, y, self.loss, self.config.l2)
        rows = tf.cast(tf.shape(x)[0], value.dtype)
        return tf.concat([[value * rows], self.step.metric_sums(forward.output, y)], axis=0)

    def evaluate(self, split: data_lib.Split, batch_size: int = 8192) -> dict[str, float]:
        """Loss and metrics over a whole split (loss averaged per row)."""
        dtype = self.model.compute_dtype
        totals = np.zeros(4)
        for start in range(0, len(split.x), batch_size):
            x = tf.constant(split.x[start : start + batch_size], dtype)
            y = targets_tensor(split.y[start : start + batch_size], dtype)
            totals += self.evaluate_batch(x, y).numpy()
        return metrics_from_sums(totals[0] / len(split.x), totals[1:], self.loss)


def norms(tensors) -> tf.Tensor:
    """‖t‖ of each tensor, [n] float64."""
    return tf.stack([tf.norm(tf.cast(t, tf.float64)) for t in tensors])


def update_ratios(before, after) -> tf.Tensor:
    """‖after − before‖ / ‖before‖ per tensor, [n] float64."""
    return tf.stack(
        [
            tf.norm(tf.cast(a - b, tf.float64)) / tf.maximum(tf.norm(tf.cast(b, tf.float64)), TINY)
            for b, a in zip(before, after)
        ]
    )


def targets_tensor(y: np.ndarray, dtype) -> tf.Tensor:
    """Class ids stay int32; regression and binary targets take the model's dtype."""
    return tf.constant(y, tf.int32 if np.issubdtype(y.dtype, np.integer) else dtype)


def metrics_from_sums(loss: float, sums: np.ndarray, loss_fn: losses_lib.Loss) -> dict[str, float]:
    """Turns [Σ sq, Σ abs, count] or [Σ correct, 0, count] into named metrics."""
    count = max(float(sums[2]), 1.0)
    if loss_fn.on_logits:
        return {"loss": float(loss), "accuracy": float(sums[0]) / count}
    return {"loss": float(loss), "rmse": math.sqrt(float(sums[0]) / count), "mae": float(sums[1]) / count}
