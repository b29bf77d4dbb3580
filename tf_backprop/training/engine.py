"""The training engine: many optimizer steps, across epochs, inside one compiled call.

A small net spends almost all its time in per-call overhead, so one call of the engine runs
every step up to a stop step, epochs included: per epoch it permutes the training rows in the
graph (`permutation`: a pure function of (seed, epoch)), gathers the epoch's rows once into
[steps, accum, global_batch, ...], runs a `tf.while_loop` of `Step`s (gradient, optional
verification, `optimizer.apply`), and at the epoch's end evaluates the validation split, writes
the epoch's record and does the early-stopping bookkeeping (best loss, epochs waited, best
weights) — all in the graph, so Python is touched once per call.  Losses and metric sums
accumulate in float64, step by step, so the history does not depend on where calls end.

A streamed plan (`plan.streaming`) has no training split in memory: each call is given a block
of its steps' rows [steps_per_call, accum, local_batch, ...] (`feed.StreamFeed`), and step s
takes row s − first of it; everything else is the same call.

The same engine runs with or without a `tf.distribute` strategy: a *runner* says how a step
reaches the replicas — `SingleDevice` calls it directly and compiles with XLA each epoch's step
loop, or for a long run the whole call (`Plan.compiles_whole_call`);
`distributed.Replicas` runs it with `strategy.run` in a compiled (non-XLA) loop, since XLA cannot
compile the optimizer's cross-replica update on CPU strategies.

Checks.  On one device the fast call checks once, at its end, that the loss, the weights and the
optimizer state are finite (a per-step check of every gradient costs the article's net ~12%);
when that check or a verification fails, everything the call changed is restored and the call
replayed with every step checked, which stops right after the first failing step.  Under a
strategy every step is checked (the flags are summed over the replicas).  Either way the failing
update exists only in memory; the run then fails, so it is never saved.  A call that did not
fail ends at its stop step or by an early stop; one that ends elsewhere (a fault in the step
arithmetic) fails the run with an internal error — the call's loop over epochs is bounded by the
epochs a call can touch, so such a fault cannot spin forever.

Monitoring measures the last step of each call: its gradients' norms, the weights' norms and
the update ratios ‖Δθ‖/‖θ‖ (and, with histograms, the gradients and the first micro-batch's
activations).  The call's loop stops one step short; the last step's gradients are computed
again from its rows and the weights it starts from, then the same loop runs that step and the
weights after it give the update ratios.  So the compiled step loop is one program with
monitoring on or off (compiled once; the measurement runs outside XLA unless the whole call is
compiled), and monitoring cannot change the training.
"""

from __future__ import annotations

import contextlib
import functools
import math
import typing
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import losses as losses_lib
from tf_backprop.model import MLP
from tf_backprop.training import compile_ahead
from tf_backprop.training.checkpoint import RunState
from tf_backprop.training.evaluation import Evaluator
from tf_backprop.training.plan import Plan
from tf_backprop.training.step import Step, norms, update_ratios

# Call stop codes.
RUNNING, NON_FINITE, DISAGREE = 0, 1, 2
# One record per completed epoch: [epoch (1-based), global step at its end, training loss,
# training metric sums (3), validation loss, validation metric sums (3)], float64.
RECORD_WIDTH = 10


class SingleDevice:
    """The engine's runner without a strategy: the step runs as it is, under XLA."""

    jit = True  # compile the step loops (or the whole call) with XLA
    jit_gradients = False  # (the loop already is)
    replays = True  # a failed call is restored and replayed step by step

    def __init__(self, device: str = "/CPU:0"):
        self.device = device
        # XLA's CPU runtime runs a step's two halves on two cores at once (Plan.splits_batch);
        # a GPU would only run twice the kernels.
        self.splits_batch = "GPU" not in device.upper()

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
    """Owns the compiled training call and the evaluation of one model, optimizer and run state.

    Build it (like the model and optimizer) inside the strategy's scope when there is one, and
    pass that strategy's `distributed.Replicas` as `runner`.
    """

    # The first call has XLA compile its step loop on a second thread while the call is traced
    # (`_step_loop_compiled_meanwhile`); False: one after the other (a benchmark's baseline).
    compiles_step_loop_ahead = True

    def __init__(
        self,
        model: MLP,
        optimizer: keras.optimizers.Optimizer,
        loss: losses_lib.Loss,
        config,
        plan: Plan,
        state: RunState,
        target_std: np.ndarray | None = None,
        step_functions: Mapping[str, Callable] | None = None,
        runner=None,
    ):
        self.model, self.optimizer, self.loss, self.config = model, optimizer, loss, config
        self.plan, self.state = plan, state
        self.runner = runner or SingleDevice()
        block_replicas = plan.block_replicas if plan.workers > 1 else None
        self.step = Step(
            model,
            optimizer,
            loss,
            config,
            target_std,
            step_functions,
            replica_batch=plan.replica_batch,
            block_replicas=block_replicas,
            halves=2 if plan.splits_batch and self.runner.splits_batch else 1,
        )
        if self.runner.jit_gradients:
            self.step.gradients = tf.function(self.step.gradients, jit_compile=True)
        self.evaluator = Evaluator(model, loss, config.l2, self.step.metric_sums)
        self.variables = model.trainable_variables
        self.optimizer.build(self.variables)
        # What a call changes: the training state (checked to be finite at a fast call's end),
        # and with the run's counters everything restored before a replay.
        self._training_state = [*model.weights, *self.optimizer.variables]
        self._state = [*self._training_state, *state.variables_changed_by_training]
        # The call is traced once (its inputs have fixed shapes) and without autograph: it uses
        # tf.while_loop / tf.cond explicitly, and autograph's conversion of Keras's optimizer
        # code triples the tracing time.
        # On one device XLA compiles either the whole call (a long run: Plan.compiles_whole_call)
        # or each epoch's step loop alone, the epoch ends (validation, records, early stopping)
        # running between in a plain graph: microseconds there, ~0.1 s more XLA compilation.
        self.compiles_whole_call = self.runner.jit and plan.compiles_whole_call
        compiled = functools.partial(
            tf.function, autograph=False, reduce_retracing=True, jit_compile=self.compiles_whole_call or None
        )
        steps = _inline
        if self.runner.jit and not self.compiles_whole_call:
            steps = functools.partial(tf.function, jit_compile=True, autograph=False)
        self._step_loops = {
            check: steps(functools.partial(self._steps, check=check)) for check in (False, True)
        }
        self._fast_call = compiled(functools.partial(self._call, checked=False))
        self._checked_call = compiled(functools.partial(self._call, checked=True))

    @property
    def peels_last_step(self) -> bool:
        """Whether a call's last step runs after its loop, as a launch of its own: to measure it
        (monitoring), or in a long whole-call run without monitoring (`Plan.peels_last_step`)."""
        return bool(self.config.monitor) or (self.compiles_whole_call and self.plan.peels_last_step)

    @property
    def gathers_each_step(self) -> bool:
        """Whether each step gathers its rows inside the loop (`Plan.gathers_each_step`)."""
        return self.runner.jit and self.plan.gathers_each_step

    # --- the Python side ---------------------------------------------------------------
    def run(self, train, validation, stop: int, total: int, first: int = 0) -> dict[str, np.ndarray]:
        """Trains from the current step up to `stop` (or an early stop, or a failing step).

        train, validation: (x, y) tensors of the splits (validation None when there is none) —
        for a streamed plan, train is instead the call's block of rows, (x [steps_per_call,
        accum, local_batch, n], y), whose row 0 is step `first` + 1's;
        total: the run's last step (its last epoch may be partial).  Returns, as NumPy: status
        (RUNNING, NON_FINITE or DISAGREE), bad [n_vars] (non-finite gradient flags of the failing
        step), verify_error [n_vars] (of the call's last verified step), records [k,
        RECORD_WIDTH] (one per epoch completed in the call) and, with monitoring, the
        measurement of the call's last step: health [3, n_vars] (gradient norm, weight norm,
        update ratio), gradients and activations (with histograms).
        """
        args = (
            *train,
            *(validation or (None, None)),
            tf.constant(first, tf.int64),
            tf.constant(stop, tf.int64),
            tf.constant(total, tf.int64),
        )
        with self.runner.errors(lambda: f"step {int(self.optimizer.iterations.numpy()) + 1}"):
            out = self._run_call(args, stop)
        self._check_reached(stop, int(out["status"]))
        return out

    def _run_call(self, args, stop: int) -> dict[str, np.ndarray]:
        """The fast call, and its checked replay when it fails (under a strategy: checked)."""
        if not self.runner.replays:
            return _numpy(self._checked_call(*args))
        with _without_graph_rewrites():
            with self._step_loop_compiled_meanwhile(args):
                out = self._fast_call(*args)
            if int(out["status"]) == RUNNING:
                return _numpy(out)
            self._restore(out["start_state"])
            out = self._checked_call(*args)
        if int(out["status"]) == RUNNING:  # the replay's arithmetic may differ in the last bits
            logging.warning("a call failed its end-of-call check but not its step-by-step replay")
        return _numpy(out)

    def _step_loop_compiled_meanwhile(self, args):
        """On the first call, when XLA compiles each epoch's step loop on its own: that
        compilation on a second thread while this one traces and starts the call
        (`compile_ahead`), by a launch of the step loop for no steps with the carry `_epoch`
        gives it.  The no-step launch changes nothing."""
        first = not self._fast_call.experimental_get_tracing_count()
        if not (first and self.compiles_step_loop_ahead and self.runner.jit and not self.compiles_whole_call):
            return contextlib.nullcontext()
        epoch, position, loss_sum, metric_sums, status, bad, verify_error, *_ = self._initial_carry()
        steps = (position, status, loss_sum, metric_sums, bad, verify_error)  # as in _epoch
        step_loop = self._step_loops[self._checks_steps(checked=False)]
        # (x_train, y_train, epoch, offset, end = position: no steps, *steps)
        no_steps = (args[0], args[1], epoch, tf.zeros([], tf.int64), position, *steps)
        return compile_ahead.compiled_meanwhile(
            lambda *a: step_loop(*a[:5], a[5:]), no_steps, self.runner.device
        )

    def _check_reached(self, stop: int, status: int) -> None:
        """RuntimeError when a call that did not fail ended neither at `stop` nor by an early
        stop: a fault in the engine's step arithmetic (the call's epoch loop is bounded, so such
        a fault ends the call instead of spinning forever)."""
        step = int(self.optimizer.iterations.numpy())
        if status == RUNNING and step != stop and not bool(self.state.stopped.numpy()):
            raise RuntimeError(f"internal error: the engine's call ended at step {step}, not at {stop}")

    def _restore(self, values) -> None:
        """Assigns a fast call's start_state back to everything the call changed."""
        for variable, value in zip(self._state, values):
            variable.assign(value)

    # --- the compiled call -------------------------------------------------------------
    def _call(self, x_train, y_train, x_val, y_val, first, stop, total, checked: bool):
        """The compiled call (see `run`); `checked` checks every step and stops at a failure."""
        # The fast call returns the state it started from, for a replay.
        start_state = [] if checked else [tf.identity(v) for v in self._state]
        check = self._checks_steps(checked)
        carry = tf.while_loop(
            lambda *c: self._epochs_continue(c, stop),
            lambda *c: self._epoch(c, x_train, y_train, x_val, y_val, first, stop, total, check),
            self._initial_carry(),
            maximum_iterations=self._max_records(),  # a call touches fewer epochs (see run)
        )
        epoch, position, loss_sum, metric_sums, status, bad, verify_error, records, count, measured = carry
        self.state.epoch.assign(epoch)
        self.state.step_in_epoch.assign(position)
        self.state.epoch_loss_sum.assign(loss_sum)
        self.state.epoch_metric_sums.assign(metric_sums)
        if not checked and self.runner.replays:
            status = tf.where(self._state_is_finite(loss_sum), status, NON_FINITE)
        out = {"status": status, "bad": bad, "verify_error": verify_error, "records": records, "count": count}
        if not checked:
            out["start_state"] = start_state
        if self.config.monitor:
            out.update(zip(("health", "gradients", "activations"), measured))
        return out

    def _checks_steps(self, checked: bool) -> bool:
        """Whether a call checks every step: the checked call, and any call that clips gradients
        (clipping would hide an infinite gradient)."""
        return checked or bool(self.config.clip_value)

    def _initial_carry(self):
        """(epoch, position in it, its loss and metric sums, status, bad flags, last verification
        errors, records, their count, measurement), from the run state."""
        n_vars, state = len(self.variables), self.state
        records = tf.zeros([self._max_records(), RECORD_WIDTH], tf.float64)
        return (
            state.epoch.read_value(),
            state.step_in_epoch.read_value(),
            state.epoch_loss_sum.read_value(),
            state.epoch_metric_sums.read_value(),
            tf.constant(RUNNING),
            tf.zeros([n_vars], tf.bool),
            tf.zeros([n_vars], tf.float64),
            records,
            tf.constant(0),
            self._empty_measurement(),
        )

    def _max_records(self) -> int:
        """Epochs one call can complete, or touch: a call is at most steps_per_call steps long."""
        return math.ceil(self.plan.steps_per_call / self.plan.steps_per_epoch) + 2

    def _epochs_continue(self, carry, stop):
        status = carry[4]
        running = tf.logical_and(tf.equal(status, RUNNING), tf.logical_not(self.state.stopped))
        return tf.logical_and(running, self.optimizer.iterations < stop)

    def _epoch(self, carry, x_train, y_train, x_val, y_val, first, stop, total, check):
        """The rest of the current epoch up to `stop`, then its end if it is complete.

        An epoch is complete after steps_per_epoch steps, or — partial, at most once a run —
        when the run reaches its last step `total`.
        """
        epoch, position, loss_sum, metric_sums, status, bad, verify_error, records, count, measured = carry
        spe = tf.constant(self.plan.steps_per_epoch, tf.int64)
        end = tf.minimum(spe, position + stop - self.optimizer.iterations)
        # A streamed block's row r is the call's step first + r, i.e. the epoch's position
        # r + offset (the epoch began at step iterations − position).
        offset = first - (self.optimizer.iterations - position)
        steps = (position, status, loss_sum, metric_sums, bad, verify_error)
        if self.peels_last_step:
            steps, measured = self._steps_then_last(
                x_train, y_train, epoch, offset, end, stop, steps, measured, check
            )
        else:
            steps = self._step_loops[check](x_train, y_train, epoch, offset, end, steps)
        position, status, loss_sum, metric_sums, bad, verify_error = steps
        at_run_end = tf.logical_and(tf.equal(self.optimizer.iterations, total), position > 0)
        ended = tf.logical_and(tf.logical_or(tf.equal(position, spe), at_run_end), tf.equal(status, RUNNING))
        epoch, position, loss_sum, metric_sums, records, count = tf.cond(
            ended,
            lambda: self._end_epoch(epoch, position, loss_sum, metric_sums, records, count, x_val, y_val),
            lambda: (epoch, position, loss_sum, metric_sums, records, count),
        )
        return epoch, position, loss_sum, metric_sums, status, bad, verify_error, records, count, measured

    def _steps(self, x_train, y_train, epoch, offset, end, carry, check: bool):
        """Steps carry[0] .. end of an epoch, stopping at a failing one: the epoch's rows in its
        order (streamed: the call's block, whose row is the position − offset), then the step
        loop — compiled with XLA on one device."""
        if self.plan.streaming:
            xs, ys = self.runner.place(x_train), self.runner.place(y_train)
        elif self.gathers_each_step:
            order = self.plan.epoch_order(epoch)  # [spe, accum, global_batch]
            xs, ys, offset = _Rows(x_train, order), _Rows(y_train, order), 0
        else:
            order = self.plan.epoch_order(epoch)
            xs, ys = (self.runner.place(tf.gather(t, order)) for t in (x_train, y_train))
            offset = 0  # xs [spe, accum, global_batch, ...]
        return tf.while_loop(
            lambda i, status, *_: tf.logical_and(i < end, tf.equal(status, RUNNING)),
            lambda *c: self._train_step(xs, ys, c, offset, check),
            carry,
        )

    def _steps_then_last(self, x_train, y_train, epoch, offset, end, stop, carry, measured, check: bool):
        """`_steps` up to the call's last step, then — if it falls in this epoch and nothing
        failed — that step in a launch of its own, measured with monitoring: (carry, measured)."""
        steps = self._step_loops[check]
        last = carry[0] + (stop - self.optimizer.iterations) - 1  # the call's last step's position
        carry = steps(x_train, y_train, epoch, offset, tf.minimum(end, last), carry)
        i, status = carry[0], carry[1]
        due = tf.logical_and(tf.logical_and(tf.equal(i, last), i < end), tf.equal(status, RUNNING))

        def last_step():
            if not self.config.monitor:
                return steps(x_train, y_train, epoch, offset, i + 1, carry), measured
            before = [tf.identity(v) for v in self.variables]
            gradients, activations = self._gradients_at(x_train, y_train, epoch, offset, i)
            after = steps(x_train, y_train, epoch, offset, i + 1, carry)
            return after, self._measurement(before, gradients, activations)

        return tf.cond(due, last_step, lambda: (carry, measured))

    def _gradients_at(self, x_train, y_train, epoch, offset, i):
        """The gradients step i of the epoch is about to apply (summed over the replicas), and
        with histograms the activations of replica 0's first micro-batch: recomputed from the
        step's rows and the current weights."""
        if self.plan.streaming:
            xs, ys = (tf.gather(t, i - offset) for t in (x_train, y_train))
        else:
            rows = tf.gather(self.plan.epoch_order(epoch), i)  # [accum, global_batch]
            xs, ys = (tf.gather(t, rows) for t in (x_train, y_train))
        report = self.runner.run(self.step.measurement, self.runner.place(xs), self.runner.place(ys))
        gradients = self.runner.sum(report["gradients"])
        return gradients, self.runner.first(report.get("activations", ()))

    def _end_epoch(self, epoch, steps, loss_sum, metric_sums, records, count, x_val, y_val):
        """Validation, the epoch's record, early stopping; the next epoch's counters."""
        steps = tf.cast(steps, tf.float64)
        step = tf.cast(self.optimizer.iterations, tf.float64)
        head = tf.stack([tf.cast(epoch + 1, tf.float64), step, loss_sum / steps])
        if x_val is None:
            validation = tf.fill([4], tf.constant(np.nan, tf.float64))
        else:
            validation = self.evaluator.split_totals(x_val, y_val)  # [loss, metric sums (3)]
            self._track_best(validation[0])
        record = tf.concat([head, metric_sums, validation], axis=0)  # [RECORD_WIDTH]
        records = tf.tensor_scatter_nd_update(records, [[count]], [record])
        zero = tf.zeros([], tf.int64)
        return epoch + 1, zero, tf.zeros([], tf.float64), tf.zeros([3], tf.float64), records, count + 1

    def _track_best(self, validation_loss):
        """Early stopping: the best validation loss, its weights, the epochs waited since."""
        state = self.state
        improved = validation_loss < state.best_val_loss

        def remember():
            state.best_val_loss.assign(validation_loss)
            state.waited.assign(0)
            for best, variable in zip(state.best_weights, self.model.weights):
                best.assign(variable)
            return tf.constant(0)

        tf.cond(improved, remember, lambda: tf.constant(0))
        state.waited.assign(tf.where(improved, tf.zeros([], tf.int64), state.waited + 1))
        if self.config.patience:
            state.stopped.assign(state.waited >= self.config.patience)

    def _train_step(self, xs, ys, carry, offset, check: bool):
        """Step carry[0] of the epoch (row carry[0] − offset of xs) on every replica: the new carry."""
        i, status, loss_sum, metric_sums, bad, verify_error = carry
        row = i if isinstance(offset, int) else i - offset  # the in-memory epoch's rows: offset 0
        report = self.runner.run(self._replica_step, xs, ys, row, check=check)
        summable = ("value", "sums", "flags")
        summed = self.runner.sum({k: report[k] for k in summable if k in report})
        loss_sum += tf.cast(summed["value"], tf.float64)
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
        return i + 1, status, loss_sum, metric_sums, bad, verify_error

    def _replica_step(self, xs, ys, i, check: bool):
        """The Step on this replica's copy of step i; flags as numbers, to be summed."""
        # A gather, not xs[i]: XLA takes a slice's start computed from the call's arguments
        # (`first` of a streamed block, the end of a last step run after the loop) for a
        # compile-time constant, and would compile the loop anew for each value.
        report = self.step(_row(xs, i), _row(ys, i), check)
        if check:
            report["flags"] = tf.cast(report["flags"], report["value"].dtype)
        return report

    def _measurement(self, before, gradients, activations):
        """(health [3, n_vars], gradients, activations) of the step just taken from `before`."""
        health = tf.stack([norms(gradients), norms(self.variables), update_ratios(before, self.variables)])
        if not self.config.histogram_every:
            return health, (), ()
        return health, tuple(gradients), tuple(activations)

    def _empty_measurement(self):
        """Zero placeholders shaped like one measurement (empty when monitoring is off)."""
        if not self.config.monitor:
            return ()
        health = tf.zeros([3, len(self.variables)], tf.float64)
        if not self.config.histogram_every:
            return health, (), ()
        dtype, batch = self.model.compute_dtype, self.plan.replica_batch
        activations = tuple(tf.zeros([batch, width], dtype) for width in self.model.layer_sizes[1:])
        return health, tuple(tf.zeros_like(v) for v in self.variables), activations

    def _state_is_finite(self, loss_sum):
        """Whether the loss sum, the weights and the optimizer's float state are all finite."""
        tensors = [t for t in self._training_state if tf.as_dtype(t.dtype).is_floating]
        poison = [tf.cast(tf.reduce_sum(t * 0), tf.float64) for t in tensors]  # NaN if any is not
        return tf.math.is_finite(loss_sum * 0 + tf.add_n(poison))


class _Rows(typing.NamedTuple):
    """A split and the epoch's order of its rows, [spe, accum, global_batch]: step i's rows are
    gathered inside the loop."""

    split: tf.Tensor
    order: tf.Tensor


def _row(xs, i):
    """Step i's rows [accum, global_batch, ...] of xs (gathered rows, or a `_Rows`)."""
    if isinstance(xs, _Rows):
        return tf.gather(xs.split, tf.gather(xs.order, i))
    return tf.gather(xs, i)


def _inline(fn):
    """No compilation of its own: the function runs inside the caller's graph."""
    return fn


@contextlib.contextmanager
def _without_graph_rewrites():
    """Calls made inside run without Grappler's graph rewrites.

    On one device the call's work runs under XLA; Grappler would only rewrite the plain graph
    around it (the epoch ends, the measured step), and that took ~0.3 s of the default run's
    first call on the 2-core CI machine.  The option is TensorFlow's (global), restored after.
    """
    options = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": options.get("disable_meta_optimizer", False)}
        )


def _numpy(out: dict) -> dict:
    """The call's outputs as NumPy, records cut to the epochs completed (start_state stays a
    list of tensors, for a restore)."""
    result = {k: v if k == "start_state" else tf.nest.map_structure(np.asarray, v) for k, v in out.items()}
    if "count" in result:
        result["records"] = result["records"][: int(result.pop("count"))]
    return result
