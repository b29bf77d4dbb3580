"""The run loop: engine calls to the next stop, then the epochs' records, checkpoints, signals.

Python is touched once per engine call.  A call ends at the next multiple of the plan's
steps_per_call (the compute budget), of --checkpoint_every, or at the run's end — a fixed grid of
global steps, so an interrupted and an uninterrupted run make the same calls from any checkpoint
on (and the engine's arithmetic does not depend on where calls end anyway).  Checkpoints are
written every --checkpoint_every steps, or by default when --checkpoint_seconds of training have
passed since the last one, and at the end, and on SIGINT/SIGTERM.

All progress lives in a `checkpoint.RunState` and the optimizer's iteration count, so a run
restored from a checkpoint continues exactly where the saved one stood.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import data as data_lib
from tf_backprop.data import pipeline
from tf_backprop.training import engine as engine_lib
from tf_backprop.training import evaluation
from tf_backprop.training.checkpoint import RunState
from tf_backprop.training.errors import CheckpointError, Interrupted, TrainingError, write_failure_reason
from tf_backprop.training.plan import Plan


class Progress:
    """One line on a terminal, rewritten after every call: steps, epoch, losses, speed.

    With the line shown, the per-epoch log lines are left out (they would interleave with it).
    """

    def __init__(self, enabled: bool | None, total_steps: int, epochs: int):
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self.total_steps, self.epochs = total_steps, epochs
        self.started, self.first_step = time.perf_counter(), None

    def update(self, step: int, epoch: int, record: dict[str, float] | None) -> None:
        if not self.enabled:
            return
        if self.first_step is None:
            self.first_step, self.started = step, time.perf_counter()
        width = 30
        done = int(width * step / max(self.total_steps, 1))
        bar = "=" * done + (">" if done < width else "") + " " * (width - done - 1)
        figures = " ".join(f"{k} {v:.4g}" for k, v in (record or {}).items() if k != "epoch")
        elapsed = time.perf_counter() - self.started
        rate = (step - self.first_step) / elapsed if elapsed > 0 and step > self.first_step else 0.0
        speed = f"  {rate:,.0f} steps/s" if rate else ""  # from the second call on
        line = f"[{bar}] {step}/{self.total_steps} steps, epoch {epoch}/{self.epochs}  {figures}{speed}"
        sys.stdout.write("\r" + line)
        sys.stdout.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stdout.write("\n")
            sys.stdout.flush()

    def log_epoch(self, record: dict[str, float]) -> None:
        if not self.enabled:
            summary = " ".join(f"{k}={v:.6g}" for k, v in record.items() if k != "epoch")
            logging.info("epoch %d: %s", record["epoch"], summary)


class Loop:
    """The Python side of a run over one engine.

    keeper: a checkpoint.Keeper (or a distributed worker's), or None to save nothing;
    monitor: a monitor.Monitor, or None; progress: show the progress line (None: on a terminal);
    feed: a feed.StreamFeed for a streamed source (its rows come a block per call), with
    input_keeper, a feed.InputKeeper saving its position with each checkpoint.
    """

    def __init__(
        self,
        plan: Plan,
        config,
        datasets: data_lib.Datasets,
        engine: engine_lib.Engine,
        state: RunState,
        keeper=None,
        progress: bool | None = False,
        monitor=None,
        feed=None,
        input_keeper=None,
    ):
        self.plan, self.config, self.datasets, self.engine = plan, config, datasets, engine
        self.keeper, self.state, self.monitor = keeper, state, monitor
        self.feed, self.input_keeper = feed, input_keeper
        self.progress = Progress(progress, plan.total_steps, plan.epochs)
        dtype = engine.model.compute_dtype
        self.train = None if feed is not None else _tensors(datasets.train, dtype)
        self.validation = None if datasets.validation is None else _tensors(datasets.validation, dtype)
        self.signals: list[int] = []  # filled by the signal handler
        self.calls = 0  # engine calls made
        self.step = int(engine.optimizer.iterations.numpy())  # updates applied so far
        self.saved_step = self.step if self.step else -1  # resumed: its checkpoint exists
        self.saved_at = time.monotonic()

    def run(self, total_steps: int | None = None) -> None:
        """Trains until total_steps (default: the plan's) or an early stop, saving checkpoints."""
        total = self.plan.total_steps if total_steps is None else total_steps
        while not bool(self.state.stopped.numpy()) and self.step < total:
            end = self.call_end(self.step, total)
            # A streamed call's rows: its steps' block (an early stop leaves the rest unread).
            train = self.train if self.feed is None else self.feed.block(end - self.step)
            out = self.engine.run(train, self.validation, end, total, self.step)
            self.calls += 1
            self.after_call(out)
        self.progress.end()
        if self.saved_step != self.step:
            self.save()

    def call_end(self, step: int, total: int) -> int:
        """Where the call starting at `step` ends: the next multiple of steps_per_call or of
        checkpoint_every, or the run's end."""
        end = min(total, (step // self.plan.steps_per_call + 1) * self.plan.steps_per_call)
        every = self.config.checkpoint_every
        if every:
            end = min(end, (step // every + 1) * every)
        return end

    def after_call(self, out: dict) -> None:
        """The call's epochs into the history, its measurement into TensorBoard, then the checks,
        the early stop, a checkpoint when due, and signals."""
        self.step = int(self.engine.optimizer.iterations.numpy())
        records = [self.end_epoch(row) for row in out["records"]]
        if self.monitor is not None:
            self.monitor.log_epochs([int(row[1]) for row in out["records"]], records)
        self.log_verification(out)
        self.check_status(out)
        if self.monitor is not None:
            learning_rate = self.engine.optimizer.learning_rate
            self.monitor.log_call(
                self.step, out, learning_rate, self.config.verify_every, self.engine.variables
            )
        epoch = int(self.state.epoch.numpy())
        self.progress.update(self.step, epoch, self.history[-1] if self.history else None)
        if bool(self.state.stopped.numpy()):
            self.stop_early()
        if self.checkpoint_due():
            self.save()
        self.check_signals()

    @property
    def history(self) -> list[dict]:
        return self.state.history()

    def end_epoch(self, row: np.ndarray) -> dict:
        """One epoch's record [engine.RECORD_WIDTH] into the history and the log; the record."""
        epoch, loss = int(row[0]), row[2]
        record = {"epoch": epoch, **evaluation.metrics_from_sums(loss, row[3:6], self.engine.loss)}
        if self.validation is not None:
            validation = evaluation.metrics_from_sums(row[6], row[7:10], self.engine.loss)
            record.update({f"val_{k}": v for k, v in validation.items()})
        self.state.append_history(record)
        self.progress.log_epoch(record)
        return record

    def epoch_metrics(self) -> dict[str, float]:
        """The running training loss and metrics of the current (unfinished) epoch."""
        position = max(int(self.state.step_in_epoch.numpy()), 1)
        loss = float(self.state.epoch_loss_sum.numpy()) / position
        return evaluation.metrics_from_sums(loss, self.state.epoch_metric_sums.numpy(), self.engine.loss)

    def stop_early(self) -> None:
        """After the epoch that used up the patience: log it and, with restore_best, end on the
        best validation weights."""
        logging.info(
            "early stop after epoch %d: no better validation loss for %d epochs",
            int(self.state.epoch.numpy()),
            int(self.state.waited.numpy()),
        )
        best_loss = float(self.state.best_val_loss.numpy())
        if self.config.restore_best and math.isfinite(best_loss):
            for variable, best in zip(self.engine.model.weights, self.state.best_weights):
                variable.assign(best)
            best_epoch = int(self.state.epoch.numpy()) - int(self.state.waited.numpy())
            logging.info("restored the weights of epoch %d (validation loss %.6g)", best_epoch, best_loss)

    def checkpoint_due(self) -> bool:
        if self.keeper is None:
            return False
        every = self.config.checkpoint_every
        if every:
            return self.step % every == 0
        return time.monotonic() - self.saved_at >= self.config.checkpoint_seconds

    def save(self) -> None:
        if self.keeper is None:
            return
        if self.monitor is not None:
            self.state.health_json.assign(json.dumps(self.monitor.detector.state()))
        try:
            if self.input_keeper is not None:  # first: a checkpoint must find its input position
                self.input_keeper.save(self.step)
            self.keeper.save()
        except (OSError, tf.errors.OpError) as error:  # a full disk: TensorFlow's SaveV2 or our files
            logging.debug("checkpoint not written", exc_info=True)
            raise CheckpointError(
                f"cannot write the checkpoint of step {self.step} in {self.keeper.directory} "
                f"({write_failure_reason(error)}); the checkpoints written before it are kept: "
                "make room and rerun the same command to resume"
            ) from None
        self.saved_step, self.saved_at = self.step, time.monotonic()

    def check_signals(self) -> None:
        """After SIGINT/SIGTERM: checkpoint (at this call's end), then Interrupted."""
        if self.signals:
            if self.saved_step != self.step:
                self.save()
            workdir = os.path.dirname(self.keeper.directory) if self.keeper is not None else "(no workdir)"
            raise Interrupted(self.signals[0], self.step, workdir)

    def log_verification(self, out: dict) -> None:
        if self.config.verify_every and int(out["status"]) != engine_lib.NON_FINITE:
            logging.info(
                "tape↔manual max relative error, last verified step: %s",
                np.array2string(out["verify_error"], precision=3),
            )

    def check_status(self, out: dict) -> None:
        """Raises TrainingError when the call stopped on a non-finite value or a disagreement."""
        status = int(out["status"])
        if status == engine_lib.RUNNING:
            return
        step = self.step  # the failing step: its update was applied in memory, never saved
        names = self.engine.model.variable_names
        if status == engine_lib.NON_FINITE:
            bad = np.flatnonzero(out["bad"])
            where = f"the gradient of {names[bad[0]]}" if len(bad) else "the loss"
            saved = (
                "no checkpoint was written yet: a rerun starts over"
                if self.saved_step < 0
                else f"the last checkpoint, at step {self.saved_step}, is untouched: a rerun resumes there"
            )
            advice = "try a lower --learning_rate or clipping"
            if not self.config.standardize:  # raw features of 1e30 overflow whatever the rate
                advice += ", or standardize the features (drop --nostandardize)"
            raise TrainingError(
                f"step {step}: non-finite value in {where}; stopped (that step's update was applied in "
                f"memory, never saved), and {saved}; {advice}"
            )
        errors = out["verify_error"]
        worst = int(np.argmax(errors))
        raise TrainingError(
            f"step {step}: tape and manual gradients disagree for {names[worst]}: max relative "
            f"error {errors[worst]:.3g} > tolerance {self.config.tolerance:g}"
        )

    def final_metrics(self) -> dict[str, float]:
        """Test metrics when there is a test split, else validation, else training."""
        for name in ("test", "validation", "train"):
            split = getattr(self.datasets, name)
            if isinstance(split, data_lib.StreamedSplit):
                dtype = self.engine.model.compute_dtype
                rows = pipeline.batches(split, self.datasets.preprocessing, evaluation.EVAL_BATCH, dtype)
                return {"split": name, **self.engine.evaluator.evaluate_batches(rows)}
            if split is not None:
                return {"split": name, **self.engine.evaluator.evaluate(split)}
        raise AssertionError("no data")


def _tensors(split: data_lib.Split, dtype) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.constant(split.x, dtype), evaluation.targets_tensor(split.y, dtype)


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
