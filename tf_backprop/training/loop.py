"""The run loop: epochs of engine chunks, validation, early stopping, checkpoints, signals.

All progress lives in a `checkpoint.RunState` and the optimizer's iteration count, so a run
restored from a checkpoint continues exactly where the saved one stood.  Chunks end at
multiples of the plan's steps_per_call within an epoch and at checkpoint steps: the same
boundaries in an interrupted and an uninterrupted run, hence the same arithmetic.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import data as data_lib
from tf_backprop.training import engine as engine_lib
from tf_backprop.training.checkpoint import RunState
from tf_backprop.training.errors import Interrupted, TrainingError
from tf_backprop.training.plan import Plan


class Progress:
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


class Loop:
    """The Python side of a run over one engine.

    keeper: a checkpoint.Keeper (or a distributed worker's), or None to save nothing;
    monitor: a monitor.Monitor, or None.
    """

    def __init__(
        self,
        plan: Plan,
        config,
        datasets: data_lib.Datasets,
        engine: engine_lib.Engine,
        state: RunState,
        keeper=None,
        progress: Progress | None = None,
        monitor=None,
    ):
        self.plan, self.config, self.datasets, self.engine = plan, config, datasets, engine
        self.keeper, self.state, self.monitor = keeper, state, monitor
        self.progress = progress or Progress(False)
        dtype = engine.model.compute_dtype
        self.x_train = tf.constant(datasets.train.x, dtype)
        self.y_train = engine_lib.targets_tensor(datasets.train.y, dtype)
        self.signals: list[int] = []  # filled by the signal handler
        # Python mirrors of the hot counters (reading a variable costs an eager op per chunk);
        # `sync_state` writes them into `state` before every checkpoint.
        self.step = int(engine.optimizer.iterations.numpy())  # updates applied so far
        self.position, self.epoch_loss, self.epoch_sums = 0, 0.0, np.zeros(3)
        self.saved_step = self.step if self.step else -1  # resumed: its checkpoint exists

    def run(self, total_steps: int | None = None) -> None:
        """Trains until total_steps (default: the plan's) or an early stop, saving checkpoints."""
        total_steps = self.plan.total_steps if total_steps is None else total_steps
        per_epoch = self.plan.steps_per_epoch
        epochs = math.ceil(total_steps / per_epoch)
        while not bool(self.state.stopped.numpy()) and self.step < total_steps:
            epoch = int(self.state.epoch.numpy())
            steps = min(per_epoch, total_steps - epoch * per_epoch)
            self.train_epoch(epoch, epochs, steps)
            self.end_epoch(epoch)
        if self.keeper is not None and self.saved_step != self.step:
            self.save()

    def train_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        """Runs the rest of one epoch chunk by chunk, from state.step_in_epoch."""
        indices = self.plan.epoch_indices(epoch)[:steps]
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
        per_call = self.plan.steps_per_call
        end = min(steps, (position // per_call + 1) * per_call)
        every = self.config.checkpoint_every
        if every:
            end = min(end, position + every - self.step % every)
        return end

    def epoch_metrics(self) -> dict[str, float]:
        """The running training loss and metrics of the current epoch."""
        loss = self.epoch_loss / max(self.position, 1)
        return engine_lib.metrics_from_sums(loss, self.epoch_sums, self.engine.loss)

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
        if self.keeper is None:
            return
        self.sync_state()
        self.keeper.save()
        self.saved_step = self.step

    def check_signals(self) -> None:
        """After SIGINT/SIGTERM: checkpoint (at this chunk boundary), then Interrupted."""
        if self.signals:
            if self.saved_step != self.step:
                self.save()
            workdir = os.path.dirname(self.keeper.directory) if self.keeper is not None else "(no workdir)"
            raise Interrupted(self.signals[0], self.step, workdir)

    def check_chunk(self, out: dict[str, tf.Tensor]) -> None:
        """Raises TrainingError when the chunk stopped on a non-finite value or a disagreement."""
        status = int(out["status"])
        if self.config.verify_every and status != engine_lib.NON_FINITE:
            logging.info(
                "tape↔manual max relative error, last verified step: %s",
                np.array2string(out["verify_error"].numpy(), precision=3),
            )
        if status == engine_lib.RUNNING:
            return
        step = self.step + 1  # the failing step (the last healthy one is saved, never this one)
        names = self.engine.model.variable_names
        if status == engine_lib.NON_FINITE:
            bad = np.flatnonzero(out["bad"].numpy())
            where = f"the gradient of {names[bad[0]]}" if len(bad) else "the loss"
            raise TrainingError(
                f"step {step}: non-finite value in {where}; stopped, nothing after step {step - 1} "
                f"is saved (its update was applied in memory but never saved; try a lower "
                f"--learning_rate or clipping)"
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
def signals_recorded(received: list[int]):
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
