"""The training engine: many optimizer steps inside one compiled graph.

A small net spends almost all its time in per-step Python overhead (DESIGN.md §4), so the
engine runs a *chunk* of steps in one `tf.function(jit_compile=True)` call: the training split
lives on the device, the chunk's sample indices arrive as one [steps, accum, batch] tensor,
and a `tf.while_loop` runs gradient, checks and `optimizer.apply` for each step.  Both
gradient sources (`tape`, `manual`) go through the same loop.

Inside the loop
* every `verify_every` steps both gradient sources are computed on the step's first
  micro-batch and compared;
* and at the chunk's end the loss, weights and optimizer state are checked to be finite.
A failing chunk is replayed from its start with every step checked, which stops right after
the first failing step (see `Engine.run_chunk`); the Python side turns that into a
`TrainingError` naming the step and the variable, and nothing after the last healthy step is
ever saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import backprop
from tf_backprop import checkpoint as checkpoint_lib
from tf_backprop import config as config_lib
from tf_backprop import data as data_lib
from tf_backprop import losses as losses_lib
from tf_backprop import monitor as monitor_lib
from tf_backprop.model import MLP
from tf_backprop.serving import export as export_lib

_TINY = 1e-30
# Chunk stop codes.
_RUNNING, _NON_FINITE, _DISAGREE = 0, 1, 2


class TrainingError(RuntimeError):
    """Training failed (non-finite loss or gradient, tape/manual disagreement)."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written first.  exit_code is 128 + signum."""

    def __init__(self, signum: int, step: int, workdir: str):
        self.signum, self.step, self.exit_code = signum, step, 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} at step {step}: checkpoint written to {workdir}/ckpt; rerun the same command to resume"
        )


@dataclasses.dataclass
class TrainResult:
    """What a run produced: the model, its per-epoch history and its final metrics."""

    model: MLP
    history: list[dict[str, float]]
    final_metrics: dict[str, float]
    workdir: str
    steps: int
    stopped_early: bool
    datasets: data_lib.Datasets


# ----------------------------------------------------------------------------- set-up helpers
def select_device(name: str) -> str:
    """'/GPU:0' or '/CPU:0' for --device {auto, cpu, gpu}; ConfigError for gpu with none."""
    gpus = tf.config.list_physical_devices("GPU")
    if name == "gpu" and not gpus:
        raise config_lib.ConfigError(
            "device: 'gpu' requested but TensorFlow sees no GPU (install tensorflow[and-cuda] "
            "on a machine with an NVIDIA GPU, or use --device=cpu)"
        )
    return "/GPU:0" if name != "cpu" and gpus else "/CPU:0"


def build_schedule(config: config_lib.TrainConfig, total_steps: int):
    """The learning rate: a float or a Keras LearningRateSchedule."""
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        decay_steps = config.lr_decay_steps or total_steps
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps, alpha=config.lr_alpha)
    if config.lr_schedule in ("exponential", "step"):
        return keras.optimizers.schedules.ExponentialDecay(
            lr,
            config.lr_decay_steps,
            config.lr_decay_rate,
            staircase=config.lr_schedule == "step",
        )
    return lr


def build_optimizer(config: config_lib.TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """The Keras optimizer named by config.optimizer, with schedule, decay and clipping."""
    common = {
        "learning_rate": build_schedule(config, total_steps),
        "clipnorm": config.clip_norm,
        "global_clipnorm": config.clip_global_norm,
        "clipvalue": config.clip_value,
    }
    if config.weight_decay is not None:
        common["weight_decay"] = config.weight_decay
    name, momentum = config.optimizer, config.momentum
    factories = {
        "sgd": lambda: keras.optimizers.SGD(**common),
        "momentum": lambda: keras.optimizers.SGD(momentum=momentum, **common),
        "nesterov": lambda: keras.optimizers.SGD(momentum=momentum, nesterov=True, **common),
        "adam": lambda: keras.optimizers.Adam(**common),
        "adamw": lambda: keras.optimizers.AdamW(**common),
        "rmsprop": lambda: keras.optimizers.RMSprop(momentum=0.0, rho=momentum, **common),
        "adagrad": lambda: keras.optimizers.Adagrad(**common),
    }
    return factories[name]()


def build_model(config: config_lib.TrainConfig, datasets: data_lib.Datasets) -> MLP:
    """The MLP for this config, its widths fitted to the data."""
    return MLP(
        config.layer_sizes(datasets.n_features, datasets.n_outputs),
        activation=config.activation,
        output_activation=config.output_activation,
        kernel_initializer=config.initializer,
        dtype=config.dtype,
        seed=config.seed,
    )


def resolve_loss(config: config_lib.TrainConfig, datasets: data_lib.Datasets) -> losses_lib.Loss:
    """The config's loss, or the task's default one."""
    return losses_lib.get(config.loss or data_lib.default_loss(datasets.task))


def check_splits(model: MLP, datasets: data_lib.Datasets, loss: losses_lib.Loss) -> None:
    """DataError naming the split when its features or targets do not fit the model and loss.

    Every row is checked here, eagerly: inside the compiled engine an out-of-range class label
    would silently become an all-zero one-hot row.
    """
    for name in ("train", "validation", "test"):
        split = getattr(datasets, name)
        if split is None:
            continue
        try:
            backprop.prepare(model, split.x, split.y, loss)
        except ValueError as error:
            raise data_lib.DataError(f"{datasets.source}, {name} split: {error}") from None


def load_datasets(config: config_lib.TrainConfig) -> data_lib.Datasets:
    """The data set named by config.data, split and standardized."""
    return data_lib.load(
        config.data,
        target=config.target,
        task=config.task,
        loss=config.loss,
        val_split=config.val_split,
        test_split=config.test_split,
        seed=config.seed,
        n_samples=config.n_samples,
        noise=config.noise,
        standardize=config.standardize,
    )


def make_workdir(workdir: str | None) -> str:
    """Creates the run folder; by default a new timestamped one under ./runs/."""
    if workdir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = os.path.join("runs", stamp)
        suffix = 1
        while os.path.exists(workdir):
            suffix += 1
            workdir = os.path.join("runs", f"{stamp}-{suffix}")
    os.makedirs(workdir, exist_ok=True)
    return os.path.abspath(workdir)


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes JSON to a temporary sibling, then renames it into place (never half-written)."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


# ----------------------------------------------------------------------------- batching
def steps_per_epoch(config: config_lib.TrainConfig, n_train: int) -> int:
    """Full updates per epoch; the shuffled remainder of each epoch is dropped."""
    per_step = config.batch_size * config.grad_accum_steps
    if n_train < per_step:
        raise config_lib.ConfigError(
            f"batch_size: batch_size × grad_accum_steps = {per_step} exceeds the {n_train} training rows"
        )
    return n_train // per_step


def epoch_indices(config: config_lib.TrainConfig, n_train: int, epoch: int) -> np.ndarray:
    """Sample indices of one epoch, [steps, accum, batch]: a pure function of (seed, epoch)."""
    order = np.arange(n_train)
    if config.shuffle:
        order = np.random.default_rng([config.seed, epoch]).permutation(n_train)
    steps = steps_per_epoch(config, n_train)
    used = order[: steps * config.batch_size * config.grad_accum_steps]
    return used.reshape(steps, config.grad_accum_steps, config.batch_size).astype(np.int32)


# ----------------------------------------------------------------------------- the engine
class Engine:
    """Owns the compiled chunk and evaluation functions for one model and optimizer."""

    def __init__(
        self,
        model: MLP,
        optimizer: keras.optimizers.Optimizer,
        loss: losses_lib.Loss,
        config: config_lib.TrainConfig,
        target_std: np.ndarray | None,
        step_functions: Mapping[str, Callable] | None = None,
    ):
        self.model, self.optimizer, self.loss, self.config = model, optimizer, loss, config
        step_functions = step_functions or backprop.STEP_FUNCTIONS
        self.primary = step_functions[config.grad_source]
        self.other = step_functions["manual" if config.grad_source == "tape" else "tape"]
        self.variables = model.trainable_variables
        self.loss_scale = 1.0  # the loss's share of the global batch (1/replicas under a strategy)
        dtype = model.compute_dtype
        # Regression metrics are reported in the target's original units.
        self.target_std = tf.constant(1.0 if target_std is None else target_std, dtype)
        self.optimizer.build(self.variables)
        # Everything a chunk changes, for restoring a failed chunk's start.
        self._state = list(model.weights) + list(self.optimizer.variables)
        self._fast_chunk = tf.function(functools.partial(self._chunk, checked=False), jit_compile=True)
        self._checked_chunk = tf.function(functools.partial(self._chunk, checked=True), jit_compile=True)
        self.evaluate_batch = tf.function(self._evaluate_batch, jit_compile=True)

    # --- one micro-batch ---------------------------------------------------------------
    def _metric_sums(self, output, y):
        """[Σ squared error, Σ |error|, count] (regression) or [Σ correct, 0, count]."""
        dtype = output.dtype
        if self.loss.on_logits:
            if self.loss.sparse_labels:
                labels = y if y.shape.rank == 1 else tf.argmax(y, axis=-1, output_type=tf.int32)
                hits = tf.cast(tf.equal(tf.argmax(output, -1, output_type=tf.int32), labels), dtype)
            else:
                hits = tf.cast(tf.equal(output > 0, y > 0.5), dtype)
            count = tf.cast(tf.size(hits), dtype)
            return tf.stack([tf.reduce_sum(hits), tf.zeros([], dtype), count])
        error = (output - y) * self.target_std  # [m, k], original units
        count = tf.cast(tf.size(error), dtype)
        return tf.stack([tf.reduce_sum(tf.square(error)), tf.reduce_sum(tf.abs(error)), count])

    def _micro_step(self, x, y):
        """Loss, gradients and metric sums of one micro-batch (x [batch, n_0])."""
        value, grads, output = self.primary(self.model, x, y, self.loss, self.config.l2, self.loss_scale)
        return value, grads, self._metric_sums(output, y)

    def _accumulated_step(self, xs, ys):
        """Mean loss and mean gradient over the step's micro-batches (xs [accum, batch, n_0])."""
        value, grads, sums = self._micro_step(xs[0], ys[0])
        accum = self.config.grad_accum_steps
        if accum == 1:
            return value, grads, sums

        def body(j, value, grads, sums):
            v, g, s = self._micro_step(xs[j], ys[j])
            return j + 1, value + v, [a + b for a, b in zip(grads, g)], sums + s

        _, value, grads, sums = tf.while_loop(
            lambda j, *_: j < accum, body, (tf.constant(1), value, grads, sums)
        )
        return value / accum, [g / accum for g in grads], sums

    # --- checks ------------------------------------------------------------------------
    def _disagreement(self, x_all, y_all, indices):
        """_disagreement_on the rows `indices` of (x_all, y_all)."""
        return self._disagreement_on(tf.gather(x_all, indices), tf.gather(y_all, indices))

    def _disagreement_on(self, x, y):
        """Per-variable max |g_tape − g_manual| / max(max |g_tape|, max |g_manual|), [n_vars]."""
        _, first, _ = self.primary(self.model, x, y, self.loss, self.config.l2)
        _, second, _ = self.other(self.model, x, y, self.loss, self.config.l2)
        errors = []
        for a, b in zip(first, second):
            scale = tf.maximum(tf.maximum(tf.reduce_max(tf.abs(a)), tf.reduce_max(tf.abs(b))), _TINY)
            errors.append(tf.reduce_max(tf.abs(a - b)) / scale)
        return tf.cast(tf.stack(errors), tf.float64)

    @staticmethod
    def _finite(value, grads):
        """(whether the loss and every gradient are finite, per-variable non-finite flags)."""
        # g·0 sums to 0 when every element is finite and to NaN otherwise.
        poison = tf.stack([tf.reduce_sum(g * 0) for g in grads])  # [n_vars]
        return tf.math.is_finite(value * 0 + tf.reduce_sum(poison)), tf.math.is_nan(poison)

    # --- the compiled chunk ------------------------------------------------------------
    def run_chunk(self, x_all, y_all, indices) -> dict[str, tf.Tensor]:
        """Runs up to len(indices) steps; returns the stop code and the chunk's statistics.

        indices: [steps, accum, batch] int32.  The dict: steps_done (healthy steps), status,
        loss_sum, metric_sums [3], bad [n_vars] (non-finite gradient flags of the stopping
        step), verify_error [n_vars] (of the chunk's last verified step), and with monitoring
        the chunk's last step measured: health [3, n_vars] (gradient norm, weight norm, update
        ratio ‖ΔW‖/‖W‖), gradients (one per variable) and activations (h_l of its first
        micro-batch, [batch, n_l] each).  A healthy chunk's dict also holds start_state (the
        weights and optimizer variables it started from).

        The fast chunk checks that its loss, weights and optimizer state are finite once, at
        its end (a per-step check of every gradient costs the article's net ~12%).  When that
        check (or a verification) fails, the state of the chunk's start is restored and the
        chunk replayed checking every step: the replay stops right after the first failing step
        and names it.  The failing update exists only in memory; the run then fails, so it is
        never saved.
        """
        out = self._fast_chunk(x_all, y_all, indices)
        if int(out["status"]) == _RUNNING:
            return out
        self._restore_state(out["start_state"])
        out = self._checked_chunk(x_all, y_all, indices)
        if int(out["status"]) == _RUNNING:  # the replay's arithmetic may differ in the last bits
            logging.warning("a chunk failed its end-of-chunk check but not its step-by-step replay")
        return out

    def _restore_state(self, values) -> None:
        """Assigns a fast chunk's start_state back to the weights and optimizer state."""
        for variable, value in zip(self._state, values):
            variable.assign(value)

    def _chunk(self, x_all, y_all, indices, checked: bool):
        """The compiled chunk (see run_chunk); `checked` checks every step and stops at a failure.

        The loop applies every update unconditionally and stops after a failing step: a
        tf.cond around optimizer.apply, or carrying the gradients to the next iteration, costs
        XLA 1.5-2x on small nets.
        """
        dtype, n_vars = self.model.compute_dtype, len(self.variables)
        steps = tf.shape(indices)[0]
        # The fast chunk returns the state it started from, for a replay (a separate read per
        # chunk costs the article's net ~2%).
        start_state = [] if checked else [tf.identity(v) for v in self._state]
        # The chunk's rows, gathered once: [steps, accum, batch, ...].  (Gathering from the
        # whole training split inside the loop slows XLA's loop down with the split's size.)
        xs, ys = tf.gather(x_all, indices), tf.gather(y_all, indices)
        # The fast chunk checks gradients per step only under clip_value, which would clip an
        # infinite gradient element into a finite update.
        check_gradients = checked or bool(self.config.clip_value)

        carry = (
            tf.constant(0),
            tf.constant(_RUNNING),
            tf.zeros([], dtype),
            tf.zeros([3], dtype),
            tf.zeros([n_vars], tf.bool),
            tf.zeros([n_vars], tf.float64),
        )
        # With monitoring the chunk's last step runs after the loop, measured.
        loop_steps = steps - 1 if self.config.monitor else steps
        carry = tf.while_loop(
            lambda i, status, *_: tf.logical_and(i < loop_steps, tf.equal(status, _RUNNING)),
            lambda *carry: self._step(xs, ys, carry, check_gradients),
            carry,
        )
        measured = ()
        if self.config.monitor:
            carry, measured = tf.cond(
                tf.logical_and(tf.equal(carry[1], _RUNNING), carry[0] < steps),
                lambda: self._step(xs, ys, carry, check_gradients, measure=True),
                lambda: (carry, self._empty_measurement()),
            )
        i, status, loss_sum, metric_sums, bad, verify_error = carry
        if not checked:
            status = tf.where(self._state_is_finite(loss_sum), status, _NON_FINITE)
        out = {
            "steps_done": i - tf.cast(tf.not_equal(status, _RUNNING), tf.int32),
            "status": status,
            "loss_sum": loss_sum,
            "metric_sums": metric_sums,
            "bad": bad,
            "verify_error": verify_error,
        }
        if not checked:
            out["start_state"] = start_state
        if self.config.monitor:
            out["health"], out["gradients"], out["activations"] = measured
        return out

    def _step(self, xs, ys, carry, check_gradients: bool, measure: bool = False):
        """Step carry[0] of the chunk: the new carry, and with `measure` (carry, measurement)."""
        i, status, loss_sum, metric_sums, bad, verify_error = carry
        value, grads, sums = self._accumulated_step(xs[i], ys[i])
        healthy, step_bad = self._finite(value, grads) if check_gradients else (tf.constant(True), bad)
        verify_error, agree = self._maybe_verify(healthy, xs[i][0], ys[i][0], verify_error)
        if measure:
            measured = self._apply_and_measure(grads, xs[i][0])
        else:
            self.optimizer.apply(grads, self.variables)
        if check_gradients or self.config.verify_every:
            status = tf.where(healthy, tf.where(agree, _RUNNING, _DISAGREE), _NON_FINITE)
            bad = step_bad
        carry = (i + 1, status, loss_sum + value, metric_sums + sums, bad, verify_error)
        return (carry, measured) if measure else carry

    def _state_is_finite(self, loss_sum):
        """Whether the loss sum, the weights and the optimizer's float state are all finite."""
        tensors = [t for t in self._state if tf.as_dtype(t.dtype).is_floating]
        poison = [tf.cast(tf.reduce_sum(t * 0), loss_sum.dtype) for t in tensors]  # NaN if any is not
        return tf.math.is_finite(loss_sum * 0 + tf.add_n(poison))

    def _maybe_verify(self, healthy, x, y, verify_error):
        """Every verify_every steps: (per-variable tape↔manual errors, whether they agree)."""
        every = self.config.verify_every
        if not every:
            return verify_error, tf.constant(True)
        step = tf.cast(self.optimizer.iterations, tf.int32) + 1
        return tf.cond(
            tf.logical_and(healthy, step % every == 0),
            lambda: self._verified(x, y),
            lambda: (verify_error, tf.constant(True)),
        )

    def _empty_measurement(self):
        """Zero placeholders shaped like one measurement (empty when monitoring is off)."""
        if not self.config.monitor:
            return ()
        dtype, batch = self.model.compute_dtype, self.config.batch_size
        return (
            tf.zeros([3, len(self.variables)], tf.float64),
            [tf.zeros_like(v) for v in self.variables],
            [tf.zeros([batch, width], dtype) for width in self.model.layer_sizes[1:]],
        )

    def _verified(self, x, y):
        errors = self._disagreement_on(x, y)
        return errors, tf.reduce_all(errors <= self.config.tolerance)

    def _apply_and_measure(self, grads, x):
        """optimizer.apply, and the step's (health, gradients, activations)."""
        before = [tf.identity(v) for v in self.variables]
        activations = self.model.forward(x, keep_intermediates=True).hs
        self.optimizer.apply(grads, self.variables)
        health = tf.stack([_norms(grads), _norms(self.variables), _update_ratios(before, self.variables)])
        return health, list(grads), activations

    # --- evaluation --------------------------------------------------------------------
    def _evaluate_batch(self, x, y):
        """[Σ loss × rows, metric sums...] of one evaluation batch."""
        forward = self.model.forward(x, keep_intermediates=True)
        value = backprop.total_loss(self.model, forward, y, self.loss, self.config.l2)
        rows = tf.cast(tf.shape(x)[0], value.dtype)
        return tf.concat([[value * rows], self._metric_sums(forward.output, y)], axis=0)

    def evaluate(self, split: data_lib.Split, batch_size: int = 8192) -> dict[str, float]:
        """Loss and metrics over a whole split (loss averaged per row)."""
        dtype = self.model.compute_dtype
        totals = np.zeros(4)
        for start in range(0, len(split.x), batch_size):
            x = tf.constant(split.x[start : start + batch_size], dtype)
            y = targets_tensor(split.y[start : start + batch_size], dtype)
            totals += self.evaluate_batch(x, y).numpy()
        return metrics_from_sums(totals[0] / len(split.x), totals[1:], self.loss)


def _norms(tensors) -> tf.Tensor:
    """‖t‖ of each tensor, [n] float64."""
    return tf.stack([tf.norm(tf.cast(t, tf.float64)) for t in tensors])


def _update_ratios(before, after) -> tf.Tensor:
    """‖after − before‖ / ‖before‖ per tensor, [n] float64."""
    return tf.stack(
        [
            tf.norm(tf.cast(a - b, tf.float64)) / tf.maximum(tf.norm(tf.cast(b, tf.float64)), _TINY)
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


# ----------------------------------------------------------------------------- the run
class _Progress:
    """A Keras Progbar per epoch on a terminal; absl logging per epoch otherwise."""

    def __init__(self, enabled: bool | None):
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self.bar = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        if self.enabled:
            print(f"Epoch {epoch + 1}/{epochs}")
            self.bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "rmse", "mae", "accuracy"])
            if done:
                self.bar.update(done)

    def update(self, step: int, values: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(step, list(values.items()))

    def end_epoch(self, epoch: int, record: dict[str, float]) -> None:
        summary = " ".join(f"{k}={v:.6g}" for k, v in record.items() if k != "epoch")
        if self.bar is not None:
            print(f"  {summary}")
        logging.info("epoch %d: %s", epoch + 1, summary)


class _Run:
    """The Python side of a run: epochs, chunks, validation, early stopping, checkpoints.

    All progress lives in `state` (a checkpoint.RunState) and the optimizer's iteration count,
    so a run restored from a checkpoint continues exactly where the saved one stood.  Chunks
    end at multiples of config.chunk_steps() within an epoch and at checkpoint steps: the same
    boundaries in an interrupted and an uninterrupted run, hence the same arithmetic.
    """

    def __init__(self, config, datasets, engine: Engine, keeper, state, progress: _Progress, monitor=None):
        self.config, self.datasets, self.engine = config, datasets, engine
        self.keeper, self.state, self.progress, self.monitor = keeper, state, progress, monitor
        dtype = engine.model.compute_dtype
        self.x_train = tf.constant(datasets.train.x, dtype)
        self.y_train = targets_tensor(datasets.train.y, dtype)
        self.signals: list[int] = []  # filled by the signal handler
        # Python mirrors of the hot counters (reading a variable costs an eager op per chunk);
        # `sync_state` writes them into `state` before every checkpoint.
        self.step = int(engine.optimizer.iterations.numpy())  # updates applied so far
        self.position, self.epoch_loss, self.epoch_sums = 0, 0.0, np.zeros(3)
        self.saved_step = self.step if self.step else -1  # resumed: its checkpoint exists
        self.per_call = config.chunk_steps(engine.model.layer_sizes)

    def run(self, per_epoch: int, total_steps: int) -> None:
        """Trains until total_steps or an early stop, saving checkpoints on the way."""
        epochs = math.ceil(total_steps / per_epoch)
        while not bool(self.state.stopped.numpy()) and self.step < total_steps:
            epoch = int(self.state.epoch.numpy())
            steps = min(per_epoch, total_steps - epoch * per_epoch)
            self.train_epoch(epoch, epochs, steps)
            self.end_epoch(epoch)
        if self.saved_step != self.step:
            self.save()

    def train_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        """Runs the rest of one epoch chunk by chunk, from state.step_in_epoch."""
        indices = epoch_indices(self.config, len(self.datasets.train.x), epoch)[:steps]
        self.position = int(self.state.step_in_epoch.numpy())
        self.epoch_loss = float(self.state.epoch_loss_sum.numpy())
        self.epoch_sums = self.state.epoch_metric_sums.numpy()
        self.progress.start_epoch(epoch, epochs, steps, self.position)
        while self.position < steps:
            end = self.chunk_end(self.position, steps)
            out = self.engine.run_chunk(self.x_train, self.y_train, tf.constant(indices[self.position : end]))
            self.step += int(out["steps_done"])
            self.check_chunk(out)
            self.position = position = end
            self.epoch_loss += float(out["loss_sum"])
            self.epoch_sums = self.epoch_sums + out["metric_sums"].numpy().astype(np.float64)
            if self.progress.enabled:
                self.progress.update(position, self.epoch_metrics())
            if self.monitor is not None:
                learning_rate = self.engine.optimizer.learning_rate
                self.monitor.log_chunk(
                    self.step, out, learning_rate, self.config.verify_every, self.engine.variables
                )
            every = self.config.checkpoint_every
            if position < steps and every and self.step % every == 0:
                self.save()
            self.check_signals()

    def chunk_end(self, position: int, steps: int) -> int:
        """Where the chunk starting at `position` ends: steps_per_call or a checkpoint step."""
        per_call = self.per_call
        end = min(steps, (position // per_call + 1) * per_call)
        every = self.config.checkpoint_every
        if every:
            end = min(end, position + every - self.step % every)
        return end

    def epoch_metrics(self) -> dict[str, float]:
        """The running training loss and metrics of the current epoch."""
        loss = self.epoch_loss / max(self.position, 1)
        return metrics_from_sums(loss, self.epoch_sums, self.engine.loss)

    def end_epoch(self, epoch: int) -> None:
        """Validation, history, early stopping; then the epoch-end checkpoint."""
        record = {"epoch": epoch + 1, **self.epoch_metrics()}
        if self.datasets.validation is not None:
            validation = self.engine.evaluate(self.datasets.validation)
            record.update({f"val_{k}": v for k, v in validation.items()})
            self.track_best(validation["loss"])
        self.state.append_history(record)
        self.progress.end_epoch(epoch, record)
        if self.monitor is not None:
            self.monitor.log_epoch(self.step, record)
        self.state.epoch.assign(epoch + 1)
        self.position, self.epoch_loss, self.epoch_sums = 0, 0.0, np.zeros(3)
        self.sync_state()  # train_epoch starts the next epoch from state.step_in_epoch
        waited = int(self.state.waited.numpy())
        if self.config.patience and waited >= self.config.patience:
            logging.info(
                "early stop after epoch %d: no better validation loss for %d epochs", epoch + 1, waited
            )
            self.state.stopped.assign(True)
            self.restore_best()
        every = self.config.checkpoint_every
        if not every or self.step % every == 0:
            self.save()
        self.check_signals()

    def track_best(self, validation_loss: float) -> None:
        """Remembers the best weights and counts the epochs since the last improvement."""
        if validation_loss < float(self.state.best_val_loss.numpy()):
            self.state.best_val_loss.assign(validation_loss)
            self.state.waited.assign(0)
            for best, variable in zip(self.state.best_weights, self.engine.model.weights):
                best.assign(variable)
        else:
            self.state.waited.assign_add(1)

    def restore_best(self) -> None:
        """With restore_best, ends on the weights of the best validation loss."""
        if self.config.restore_best and math.isfinite(float(self.state.best_val_loss.numpy())):
            for variable, best in zip(self.engine.model.weights, self.state.best_weights):
                variable.assign(best)

    def sync_state(self) -> None:
        """Writes the Python-side epoch counters (and health counters) into the checkpointed state."""
        self.state.step_in_epoch.assign(self.position)
        self.state.epoch_loss_sum.assign(self.epoch_loss)
        self.state.epoch_metric_sums.assign(self.epoch_sums)
        if self.monitor is not None:
            self.state.health_json.assign(json.dumps(self.monitor.detector.state()))

    def save(self) -> None:
        self.sync_state()
        self.keeper.save()
        self.saved_step = self.step

    def check_signals(self) -> None:
        """After SIGINT/SIGTERM: checkpoint (at this chunk boundary), then Interrupted."""
        if self.signals:
            if self.saved_step != self.step:
                self.save()
            raise Interrupted(self.signals[0], self.step, os.path.dirname(self.keeper.directory))

    def check_chunk(self, out: dict[str, tf.Tensor]) -> None:
        """Raises TrainingError when the chunk stopped on a non-finite value or a disagreement."""
        status = int(out["status"])
        if self.config.verify_every and status != _NON_FINITE:
            logging.info(
                "tape↔manual max relative error, last verified step: %s",
                np.array2string(out["verify_error"].numpy(), precision=3),
            )
        if status == _RUNNING:
            return
        step = self.step + 1  # the failing step (the last healthy one is saved, never this one)
        names = self.engine.model.variable_names
        if status == _NON_FINITE:
            bad = np.flatnonzero(out["bad"].numpy())
            where = f"the gradient of {names[bad[0]]}" if len(bad) else "the loss"
            raise TrainingError(
                f"step {step}: non-finite value in {where}; stopped, nothing after step {step - 1} "
                f"is saved (try a lower --learning_rate or clipping)"
            )
        errors = out["verify_error"].numpy()
        worst = int(np.argmax(errors))
        raise TrainingError(
            f"step {step}: tape and manual gradients disagree for {names[worst]}: max relative "
            f"error {errors[worst]:.3g} > tolerance {self.config.tolerance:g}"
        )

    def final_metrics(self) -> dict[str, float]:
        """Test metrics when there is a test split, else validation, else training."""
        for name in ("test", "validation", "train"):
            split = getattr(self.datasets, name)
            if split is not None:
                return {"split": name, **self.engine.evaluate(split)}
        raise AssertionError("no data")


@contextlib.contextmanager
def _signals_recorded(received: list[int]):
    """Within the block, SIGINT and SIGTERM are recorded instead of killing the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def train(
    config: config_lib.TrainConfig,
    datasets: data_lib.Datasets | None = None,
    *,
    restart: bool = False,
    progress: bool | None = None,
    step_functions: Mapping[str, Callable] | None = None,
) -> TrainResult:
    """Trains an MLP as `config` says, resuming from the workdir's latest checkpoint if any.

    Writes config.json, data.json, ckpt/, tb/, metrics.json and (config.export) the
    SavedModel export/ to the workdir.

    Args:
      config: a validated TrainConfig.
      datasets: data to train on; None loads `config.data`.
      restart: move a previous run in the workdir aside (into previous-<time>/) and start over.
      progress: show a progress bar (None: when stdout is a terminal).
      step_functions: {"tape": fn, "manual": fn} overriding backprop.STEP_FUNCTIONS, e.g. to
        check a custom gradient path with verify_every (fn signature as backprop.tape_step).

    Raises:
      ConfigError / data.DataError: bad configuration or data (nothing trained).
      checkpoint.ConfigMismatchError: the workdir holds a run with another model or data.
      checkpoint.CheckpointError: checkpoints exist but none is readable.
      TrainingError: a non-finite loss or gradient, or tape and manual disagreeing.
      Interrupted: SIGINT/SIGTERM arrived; a checkpoint was written first.
      distribute.WorkerLostError (a TrainingError): under multi_worker, another worker died.

    Under a strategy (config.strategy) only the chief writes to the workdir; batch_size is the
    per-replica batch and a step consumes batch_size × replicas rows (docs/distributed.md).
    """
    from tf_backprop import distribute as distribute_lib  # it imports this module

    strategy = distribute_lib.make_strategy(config)  # first: before any other TF call
    keras.utils.set_random_seed(config.seed)
    device = select_device(config.device) if strategy is None else None
    datasets = datasets if datasets is not None else load_datasets(config)
    loss = resolve_loss(config, datasets)
    batching = distribute_lib.global_batch_config(config, strategy)  # batch_size = the global batch
    per_epoch = steps_per_epoch(batching, len(datasets.train.x))
    total_steps = config.total_steps(per_epoch)
    with distribute_lib.scope(strategy, device):
        # Everything that can reject the config happens before the workdir is touched.
        model = build_model(config, datasets)
        backprop.check_loss_fits(model, loss)
        check_splits(model, datasets, loss)
        workdir = distribute_lib.prepare_workdir(
            strategy, config, restart, lambda: _prepare_workdir(config, datasets, restart)
        )
        optimizer = build_optimizer(config, total_steps)
        if strategy is None:
            engine = Engine(model, optimizer, loss, config, _target_std(datasets), step_functions)
        else:
            engine = distribute_lib.DistributedEngine(
                strategy, model, optimizer, loss, config, _target_std(datasets), step_functions
            )
    # Out of the strategy's scope: RunState's variables stay local (MWMS cannot broadcast strings).
    with tf.device(device or "/CPU:0"):
        state = checkpoint_lib.RunState(model)
        keeper = distribute_lib.make_keeper(
            strategy, workdir, model, optimizer, state, config.keep_checkpoints
        )
        _resume(keeper, state, optimizer, config)
        distribute_lib.check_workers_agree(strategy, config, datasets, int(optimizer.iterations.numpy()))
        logging.info(
            "%s gradients on %s: %d steps (%d per epoch), workdir %s",
            config.grad_source,
            device or distribute_lib.describe(strategy),
            total_steps,
            per_epoch,
            workdir,
        )
        monitor = _make_monitor(config, workdir, model) if distribute_lib.is_chief(strategy) else None
        if monitor is not None:  # a resumed run continues its warning counts
            monitor.detector.load_state(json.loads(state.health_json.numpy().decode()))
        run = _Run(batching, datasets, engine, keeper, state, _Progress(progress), monitor)
        try:
            with _signals_recorded(run.signals):
                run.run(per_epoch, total_steps)
        finally:
            if monitor is not None:
                monitor.close()
        final = run.final_metrics()
    history, stopped = state.history(), bool(state.stopped.numpy())
    metrics = {"history": history, "final": final, "steps": run.step, "stopped_early": stopped}
    if monitor is not None:
        metrics["gradient_health"] = monitor.detector.summary()
    with distribute_lib.output_dir(strategy, workdir) as output:  # non-chief: a deleted scratch dir
        write_json_atomic(os.path.join(output, "metrics.json"), metrics)
        if config.export:
            path = export_lib.export_saved_model(
                model,
                datasets.preprocessing,
                config,
                os.path.join(output, export_lib.EXPORT_DIR),
                overwrite=True,
            )
            logging.info("SavedModel in %s", path)
    return TrainResult(model, history, final, workdir, run.step, stopped, datasets)


def _prepare_workdir(config: config_lib.TrainConfig, datasets: data_lib.Datasets, restart: bool) -> str:
    """Creates or reopens the workdir (refusing another run's), writes config and data stats."""
    workdir = make_workdir(config.workdir)
    if restart:
        checkpoint_lib.move_aside(workdir)
    checkpoint_lib.check_resumable(workdir, config)
    write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
    write_json_atomic(os.path.join(workdir, "data.json"), datasets.preprocessing.to_dict())
    return workdir


def _make_monitor(config: config_lib.TrainConfig, workdir: str, model: MLP) -> monitor_lib.Monitor | None:
    if not config.monitor:
        return None
    thresholds = monitor_lib.HealthThresholds(
        config.vanishing_ratio, config.vanishing_floor, config.exploding_threshold, config.health_patience
    )
    return monitor_lib.Monitor(workdir, model, thresholds, config.histogram_every)


def _resume(keeper, state, optimizer, config: config_lib.TrainConfig) -> None:
    """Restores the latest good checkpoint, if any, keeping the config's learning rate."""
    restored = keeper.restore_latest()
    if restored is None:
        return
    if config.lr_schedule == "constant":
        optimizer.learning_rate = config.learning_rate  # a harmless change on resume
    step, epoch = int(optimizer.iterations.numpy()), int(state.epoch.numpy()) + 1
    logging.info("resumed from %s: step %d, epoch %d", restored, step, epoch)
    print(f"resuming from {restored} at step {step}, epoch {epoch}", file=sys.stderr)


def _target_std(datasets: data_lib.Datasets) -> np.ndarray | None:
    std = datasets.preprocessing.target_std
    return None if std is None else np.asarray(std, np.float64)
