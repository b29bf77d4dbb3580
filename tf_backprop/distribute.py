"""Distributed training on tf.distribute: MirroredStrategy and MultiWorkerMirroredStrategy.

`make_strategy(config)` builds the strategy named by ``config.strategy`` (call it before any other
TensorFlow call); `DistributedEngine` is `train.Engine` on that strategy, for both gradient
sources.  Semantics (DESIGN.md §5):

* ``batch_size`` is the per-replica batch; a step consumes the *global* batch
  batch_size × replicas.  The chunk's indices are [steps, accum, global_batch] and replica r
  (``replica_id_in_sync_group``, global across workers) takes columns r·b .. (r+1)·b.
* Each replica's loss (L2 term included) and gradients are multiplied by 1/replicas exactly
  once (`backprop`'s ``loss_scale``); the Keras optimizer sums the gradients across replicas,
  so the update equals a single-device step on the global batch.  Clipping, if configured,
  happens per replica before that sum (Keras).
* Loss and metric sums are SUM-reduced over all replicas at every step, so every worker sees
  the same figures and stops at the same step.

What runs under XLA: XLA cannot compile a replica step that contains the optimizer on a CPU
strategy, so a step is a plain compiled ``tf.while_loop`` iteration: one ``strategy.run``
(each replica's forward + gradient, both sources and accumulation included, then
``optimizer.apply``) and one small all-reduce of the step's statistics.  On GPU replicas the
replica's forward + gradient and the tape↔manual check are ``jit_compile=True`` functions
(XLA fuses the small kernels); on CPU replicas TF's own kernels were as fast or faster
(benchmarks/distribute_bench.py), so nothing there is XLA-compiled except evaluation.

Checks: ``verify_every`` runs before the update (on one device the engine stops after it): every replica compares tape
and manual gradients on replica 0's micro-batch (identical inputs, so every worker decides alike
without a collective).  A non-finite loss or gradient is detected from the all-reduced flags
*after* the update: stopping before it would need the optimizer's collectives inside a
``tf.cond``.  The bad update is then in memory only (never saved) and `TrainingError` names the
step and the variable.

The run's progress (checkpoint.RunState) is created outside the strategy's scope: its variables
are plain, identical on every worker (MultiWorkerMirroredStrategy cannot broadcast the string
one).  Only the chief (task 0) writes the run's files.  Every other worker calls the same saves (a
checkpoint save or an export may involve collectives) into a temporary folder it deletes, and
restores from the chief's workdir, which it must be able to read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zlib
from collections.abc import Callable, Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import checkpoint as checkpoint_lib
from tf_backprop import config as config_lib
from tf_backprop import data as data_lib
from tf_backprop import losses as losses_lib
from tf_backprop import train as train_lib
from tf_backprop.model import MLP

_SUM = tf.distribute.ReduceOp.SUM
# What a collective raises when a peer died or the cluster's health check aborted it.
_LOST = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)
_WORKER_JOBS = ("chief", "worker")
_COLLECTIVE_KEY_STRIDE = 10_000  # group keys per MirroredStrategy instance


class WorkerLostError(train_lib.TrainingError):
    """A collective failed: another worker died or became unreachable."""


# ----------------------------------------------------------------------------- the strategy
def make_strategy(config: config_lib.TrainConfig) -> tf.distribute.Strategy | None:
    """The strategy for config.strategy; None for "none".  Call before any other TF call."""
    if config.strategy == "mirrored":
        return _mirrored(config)
    if config.strategy == "multi_worker":
        return _multi_worker(config)
    return None


def _fresh_collective_keys() -> None:
    """Gives the next MirroredStrategy of this process collective keys no earlier one used.

    Every instance starts its group keys at 1 + the class's _collective_key_base, so a second
    strategy in one process (tests, benchmarks, notebooks) would reuse the first one's keys and
    its collectives fail ("Collective instance 100 expected type ... but got ...").
    """
    tf.distribute.MirroredStrategy._collective_key_base += _COLLECTIVE_KEY_STRIDE


def _mirrored(config: config_lib.TrainConfig) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over cpu_replicas logical CPUs, or over every local GPU."""
    if config.cpu_replicas:
        return mirrored_on_cpus(cpu_devices(config.cpu_replicas))
    _fresh_collective_keys()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise config_lib.ConfigError(
            "strategy: 'mirrored' needs GPUs and TensorFlow sees none; give --cpu_replicas=N to "
            "mirror over N logical CPU devices, or install tensorflow[and-cuda] on a GPU machine"
        )
    return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(len(gpus))])


def mirrored_on_cpus(devices: list[str]) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over CPU devices, reducing on one of them.

    Between logical CPUs of one process ReductionToOneDevice beats the default RING collectives
    by 10-25% (benchmarks/distribute_bench.py), and it needs no collective keys.
    """
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def cpu_devices(count: int) -> list[str]:
    """The names of `count` logical CPU devices, configuring them if TF has not started yet.

    Raises ConfigError when the runtime already runs with another number of logical CPUs
    (logical devices can only be configured before TensorFlow initializes).
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is None or len(configured) != count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
            )
        except RuntimeError:
            pass  # already initialized: checked below
    names = [device.name for device in tf.config.list_logical_devices("CPU")]
    if len(names) != count:
        raise config_lib.ConfigError(
            f"cpu_replicas: {count} requested, but TensorFlow is already running with "
            f"{len(names)} logical CPU device(s); they can only be configured before TensorFlow "
            f"initializes (use a new process, or --cpu_replicas={len(names)})"
        )
    return names


def _multi_worker(config: config_lib.TrainConfig) -> tf.distribute.MultiWorkerMirroredStrategy:
    """MultiWorkerMirroredStrategy configured by TF_CONFIG (validated first)."""
    cluster, task = parse_tf_config(os.environ.get("TF_CONFIG"))
    if config.device == "cpu":
        tf.config.set_visible_devices([], "GPU")  # before the runtime starts
    elif config.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise config_lib.ConfigError("device: 'gpu' requested but TensorFlow sees no GPU")
    logging.info("multi-worker: task %s:%d of %s", task["type"], task["index"], cluster)
    return tf.distribute.MultiWorkerMirroredStrategy()


def parse_tf_config(text: str | None) -> tuple[dict[str, list[str]], dict]:
    """(cluster, task) of a TF_CONFIG value; ConfigError saying what is missing or wrong."""
    example = '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}'
    if not text:
        raise config_lib.ConfigError(
            f"strategy: 'multi_worker' needs the TF_CONFIG environment variable on every worker, e.g. {example}"
        )
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise config_lib.ConfigError(
            f"TF_CONFIG: not valid JSON ({error}); expected e.g. {example}"
        ) from None
    cluster = parsed.get("cluster") if isinstance(parsed, dict) else None
    task = parsed.get("task") if isinstance(parsed, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise config_lib.ConfigError(f"TF_CONFIG: expected a 'cluster' and a 'task' object, e.g. {example}")
    for job, addresses in cluster.items():
        if job not in _WORKER_JOBS:
            raise config_lib.ConfigError(
                f"TF_CONFIG: job {job!r} is not supported; use 'worker' (and 'chief')"
            )
        if not isinstance(addresses, list) or not addresses or not all(_is_address(a) for a in addresses):
            raise config_lib.ConfigError(
                f"TF_CONFIG: cluster.{job} must be a list of 'host:port', got {addresses!r}"
            )
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster or isinstance(index, bool) or not isinstance(index, int):
        raise config_lib.ConfigError(
            f"TF_CONFIG: task must name a job of the cluster ({', '.join(cluster)}) and an integer "
            f"index, got {task!r}"
        )
    if not 0 <= index < len(cluster[kind]):
        raise config_lib.ConfigError(
            f"TF_CONFIG: task index {index} outside cluster.{kind} (0..{len(cluster[kind]) - 1})"
        )
    return cluster, task


def _is_address(address) -> bool:
    return isinstance(address, str) and bool(re.fullmatch(r"[^\s:]+:\d+|\[[0-9a-fA-F:]+\]:\d+", address))


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process writes the run's files: always, except on non-chief workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return _is_chief_task(resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id)


def is_chief_process() -> bool:
    """Whether TF_CONFIG (if any) makes this process the chief: task 'chief', else worker 0."""
    if not os.environ.get("TF_CONFIG"):
        return True
    cluster, task = parse_tf_config(os.environ["TF_CONFIG"])
    return _is_chief_task(cluster, task["type"], task["index"])


def _is_chief_task(cluster: Mapping, task_type: str, task_id: int) -> bool:
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def describe(strategy: tf.distribute.Strategy) -> str:
    """E.g. 'MirroredStrategy, 2 replicas (/cpu:0, /cpu:1)'; for logs."""
    devices = ", ".join(strategy.extended.worker_devices)
    if is_multi_worker(strategy):
        task = f"{strategy.cluster_resolver.task_type}:{strategy.cluster_resolver.task_id}"
        return f"MultiWorkerMirroredStrategy, {strategy.num_replicas_in_sync} replicas, this is {task} ({devices})"
    return f"MirroredStrategy, {strategy.num_replicas_in_sync} replicas ({devices})"


def global_batch_config(
    config: config_lib.TrainConfig, strategy: tf.distribute.Strategy | None
) -> config_lib.TrainConfig:
    """The config the run's batching sees: batch_size = per-replica batch × replicas."""
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return config
    return config_lib.TrainConfig.from_dict(
        {**config.to_dict(), "batch_size": config.batch_size * strategy.num_replicas_in_sync}
    )


def scope(strategy: tf.distribute.Strategy | None, device: str | None):
    """strategy.scope(), or tf.device(device) without a strategy."""
    return strategy.scope() if strategy is not None else tf.device(device)


# ----------------------------------------------------------------------------- collectives
@contextlib.contextmanager
def worker_errors(what: Callable[[], str]) -> Iterator[None]:
    """Turns a failed collective into a one-line WorkerLostError (what(): e.g. 'step 120')."""
    try:
        yield
    except _LOST as error:
        raise WorkerLostError(
            f"{what()}: lost contact with another worker ({_cause(error)}); restart every worker "
            f"with the same command to resume from the last checkpoint"
        ) from None


def _cause(error: tf.errors.OpError) -> str:
    """The useful part of a collective's error, on one line."""
    text = error.message
    match = re.search(r"aborted by: (.*)", text, re.S)
    text = match.group(1) if match else text
    text = re.split(r"The tasks have crashed|Additional GRPC|\[type\.googleapis|The error could be", text)[0]
    text = " ".join(text.replace("Error reported from ", "").split())
    return f"{type(error).__name__}: {text[:300]}"


def _gather(strategy: tf.distribute.Strategy, values: list[float]) -> np.ndarray:
    """Every replica's `values` ([replicas, n]); a collective, so also a barrier."""
    local = tf.constant(values, tf.float64)

    @tf.function  # strategy.run is slow and noisy eagerly
    def gather():
        return strategy.gather(strategy.run(lambda: tf.identity(local)), axis=0)

    return gather().numpy().reshape(strategy.num_replicas_in_sync, -1)


def barrier(strategy: tf.distribute.Strategy | None, what: str) -> None:
    """Waits until every worker gets here (multi-worker only)."""
    if is_multi_worker(strategy):
        with worker_errors(lambda: what):
            _gather(strategy, [0.0])


def check_workers_agree(
    strategy: tf.distribute.Strategy | None,
    config: config_lib.TrainConfig,
    datasets: data_lib.Datasets,
    step: int,
) -> None:
    """ConfigError unless every worker has the same config, data statistics and restored step."""
    if not is_multi_worker(strategy):
        return
    fingerprint = json.dumps([config.to_dict(), datasets.preprocessing.to_dict()], sort_keys=True)
    mine = [float(zlib.crc32(fingerprint.encode())), float(len(datasets.train.x)), float(step)]
    with worker_errors(lambda: "start-up"):
        every = _gather(strategy, mine)
    if (every[:, :2] != every[0, :2]).any():
        raise config_lib.ConfigError(
            "strategy: the workers were started with different flags or data; give every worker "
            "the same command (only TF_CONFIG differs)"
        )
    if (every[:, 2] != every[0, 2]).any():
        steps = ", ".join(str(int(s)) for s in every[:, 2])
        raise checkpoint_lib.CheckpointError(
            f"the workers resumed at different steps ({steps}): every worker must read the chief's "
            f"workdir (a shared filesystem, same path), or start over with --restart"
        )


# ----------------------------------------------------------------------------- files
def prepare_workdir(
    strategy: tf.distribute.Strategy | None,
    config: config_lib.TrainConfig,
    restart: bool,
    prepare: Callable[[], str],
) -> str:
    """The chief runs `prepare` (create, move aside, write config); the others wait for it."""
    if is_chief(strategy):
        workdir = prepare()
    else:
        workdir = os.path.abspath(config.workdir)
        if not restart:
            checkpoint_lib.check_resumable(workdir, config)  # read-only: the chief writes it
    barrier(strategy, "start-up")
    return workdir


def _temporary_dir(workdir: str, strategy: tf.distribute.Strategy) -> str:
    """A non-chief worker's scratch folder (TensorFlow's `workertemp_<id>` convention)."""
    return os.path.join(workdir, f"workertemp_{strategy.cluster_resolver.task_id}")


class _WorkerKeeper:
    """A non-chief worker's checkpoints: restores the chief's; saves into a folder it deletes."""

    def __init__(self, workdir: str, temporary: str, model: MLP, optimizer, state, keep: int):
        self.reader = checkpoint_lib.Keeper(workdir, model, optimizer, state, keep)
        self.directory, self.temporary = self.reader.directory, temporary

    def restore_latest(self) -> str | None:
        return self.reader.restore_latest()

    def save(self) -> str:
        """Writes a checkpoint like the chief does, then deletes it."""
        path = self.reader.checkpoint.write(os.path.join(self.temporary, "ckpt"))
        shutil.rmtree(self.temporary, ignore_errors=True)
        logging.info("checkpoint written and deleted (not the chief): %s", path)
        return path


def make_keeper(
    strategy: tf.distribute.Strategy | None, workdir: str, model: MLP, optimizer, state, keep: int
):
    """checkpoint.Keeper for the chief; a temporary-writing keeper for the other workers."""
    if is_chief(strategy):
        return checkpoint_lib.Keeper(workdir, model, optimizer, state, keep)
    return _WorkerKeeper(workdir, _temporary_dir(workdir, strategy), model, optimizer, state, keep)


@contextlib.contextmanager
def output_dir(strategy: tf.distribute.Strategy | None, workdir: str) -> Iterator[str]:
    """Where this process writes metrics and the export: the workdir, or a deleted scratch folder."""
    if is_chief(strategy):
        yield workdir
        return
    temporary = _temporary_dir(workdir, strategy)
    os.makedirs(temporary, exist_ok=True)
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# ----------------------------------------------------------------------------- the engine
class DistributedEngine(train_lib.Engine):
    """train.Engine's interface (run_chunk, evaluate, model, optimizer, variables, loss) on a strategy.

    Build it, like the model and optimizer, inside strategy.scope().
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        model: MLP,
        optimizer: keras.optimizers.Optimizer,
        loss: losses_lib.Loss,
        config: config_lib.TrainConfig,
        target_std: np.ndarray | None,
        step_functions: Mapping[str, Callable] | None = None,
        *,
        jit_gradients: bool | None = None,
    ):
        """jit_gradients: XLA-compile each replica's forward + gradient; None: on GPU replicas only
        (on CPU replicas TF's own kernels were as fast or faster: benchmarks/distribute_bench.py)."""
        super().__init__(model, optimizer, loss, config, target_std, step_functions)
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        self.loss_scale = 1.0 / self.replicas  # the loss's one division by the replica count
        if jit_gradients is None:
            jit_gradients = all("GPU" in d.upper() for d in strategy.extended.worker_devices)
        self.replica_gradients = tf.function(self._replica_gradients, jit_compile=jit_gradients)
        self.disagreement = tf.function(self._disagreement, jit_compile=jit_gradients)
        self.run_steps = tf.function(self._steps, reduce_retracing=True)
        self.run_measured = tf.function(self._measured_step, reduce_retracing=True)
        self.run_chunk = self._run_chunk  # replaces Engine's single-device chunk

    def is_chief(self) -> bool:
        return is_chief(self.strategy)

    # --- one replica (replica context) ---------------------------------------------------
    def _replica_gradients(self, x, y):
        """This replica's share of one step, averaged over its micro-batches (x, y: [accum, b, ...]).

        Engine._accumulated_step with self.loss_scale = 1/replicas: each replica's loss and
        gradients are scaled once; the optimizer sums the gradients across replicas.
        """
        return self._accumulated_step(x, y)

    def _my_columns(self, step_indices):
        """This replica's columns of the step's [accum, global_batch] indices: [accum, b]."""
        b = self.config.batch_size
        start = tf.distribute.get_replica_context().replica_id_in_sync_group * b
        return step_indices[:, start : start + b]

    def _replica_step(self, x_all, y_all, step_indices, next_first, has_next, measure=False):
        """Gradients, the update, then the check of the next step (before its update).

        Returns (report, verification[, summed gradients, activations]): report = [loss share,
        metric sums (3), loss not finite, gradient not finite (n_vars)], to be SUM-reduced.
        """
        mine = self._my_columns(step_indices)  # [accum, b]
        value, grads, sums = self.replica_gradients(tf.gather(x_all, mine), tf.gather(y_all, mine))
        if measure:  # the h_l of replica 0's micro-batch, before the update (as on one device)
            first = tf.gather(x_all, step_indices[0][: self.config.batch_size])
            activations = self.model.forward(first, keep_intermediates=True).hs
        self.optimizer.apply(grads, self.variables)
        flags = [_not_finite(value)] + [_not_finite(g) for g in grads]
        report = tf.concat([[value], sums, tf.cast(tf.stack(flags), value.dtype)], axis=0)
        verification = self._replica_verify(x_all, y_all, next_first, has_next)
        if not measure:
            return report, verification
        summed = tf.distribute.get_replica_context().all_reduce(_SUM, grads)
        return report, verification, summed, activations

    def _replica_verify(self, x_all, y_all, first, has_next):
        """[due, per-variable tape↔manual errors]: the check of the coming step, if due.

        Every replica checks the same micro-batch (replica 0's), so all decide alike.
        """
        n_vars, every = len(self.variables), self.config.verify_every
        if not every:
            return tf.zeros([1 + n_vars], tf.float64)
        step = tf.cast(self.optimizer.iterations, tf.int32) + 1
        due = tf.logical_and(has_next, step % every == 0)
        errors = tf.cond(
            due,
            lambda: self.disagreement(x_all, y_all, first),
            lambda: tf.zeros([n_vars], tf.float64),
        )
        return tf.concat([[tf.cast(due, tf.float64)], errors], axis=0)

    # --- all replicas (cross-replica context) -----------------------------------------------
    def _on_replicas(self, tensor):
        """One copy of `tensor` per replica device (for the chunk; no copy between CPUs)."""
        return self.strategy.experimental_distribute_values_from_function(lambda _: tf.identity(tensor))

    def _first(self, indices, i):
        """(replica 0's micro-batch of step i or of the last step, whether step i exists)."""
        total = tf.shape(indices)[0]
        return indices[tf.minimum(i, total - 1)][0][: self.config.batch_size], i < total

    def _checked(self, verification, verify_error):
        """(verify_error, agree) after a replica-side check ([due, errors...])."""
        local = self.strategy.experimental_local_results(verification)[0]
        due, errors = local[0] > 0, local[1:]
        agree = tf.logical_or(tf.logical_not(due), tf.reduce_all(errors <= self.config.tolerance))
        return tf.where(due, errors, verify_error), agree

    def _steps(self, x_all, y_all, indices, limit):
        """Runs steps [0, limit) of indices [steps, accum, global_batch], each checked first."""
        x_local, y_local = self._on_replicas(x_all), self._on_replicas(y_all)
        dtype, n_vars = self.model.compute_dtype, len(self.variables)
        first, has_first = self._first(indices, 0)
        verification = self.strategy.run(self._replica_verify, args=(x_local, y_local, first, has_first))
        verify_error, agree = self._checked(verification, tf.zeros([n_vars], tf.float64))

        def body(i, status, loss_sum, metric_sums, bad, verify_error):
            report, verification = self.strategy.run(
                self._replica_step, args=(x_local, y_local, indices[i], *self._first(indices, i + 1))
            )
            report = self.strategy.reduce(_SUM, report, axis=None)
            flags = report[4:] > 0
            healthy = tf.logical_not(tf.reduce_any(flags))
            verify_error, agree = self._checked(verification, verify_error)
            status = tf.where(
                healthy, tf.where(agree, train_lib._RUNNING, train_lib._DISAGREE), train_lib._NON_FINITE
            )
            return i + 1, status, loss_sum + report[0], metric_sums + report[1:4], flags, verify_error

        carry = (
            tf.constant(0),
            tf.where(agree, train_lib._RUNNING, train_lib._DISAGREE),
            tf.zeros([], dtype),
            tf.zeros([3], dtype),
            tf.zeros([1 + n_vars], tf.bool),  # [loss, gradients...] not finite
            verify_error,
        )
        carry = tf.while_loop(
            lambda i, status, *_: tf.logical_and(i < limit, tf.equal(status, train_lib._RUNNING)), body, carry
        )
        return dict(zip(("steps_done", "status", "loss_sum", "metric_sums", "flags", "verify_error"), carry))

    def _measured_step(self, x_all, y_all, step_indices):
        """The chunk's last step, measured: (report, health [3, n_vars], gradients, activations)."""
        x_local, y_local = self._on_replicas(x_all), self._on_replicas(y_all)
        before = [tf.identity(v) for v in self.variables]
        no_next = (step_indices[0][: self.config.batch_size], tf.constant(False))
        report, _, summed, activations = self.strategy.run(
            self._replica_step, args=(x_local, y_local, step_indices, *no_next), kwargs={"measure": True}
        )
        report = self.strategy.reduce(_SUM, report, axis=None)
        local = self.strategy.experimental_local_results
        grads = [local(g)[0] for g in summed]
        activations = [local(h)[0] for h in activations]
        health = tf.stack(
            [
                train_lib._norms(grads),
                train_lib._norms(self.variables),
                train_lib._update_ratios(before, self.variables),
            ]
        )
        return report, health, grads, activations

    # --- the Python side ---------------------------------------------------------------------
    def _run_chunk(self, x_all, y_all, indices) -> dict[str, tf.Tensor]:
        """Engine.run_chunk on the strategy: the same keys; TrainingError on a non-finite step."""
        steps = int(indices.shape[0])
        limit = steps - 1 if self.config.monitor else steps
        with worker_errors(lambda: f"step {int(self.optimizer.iterations.numpy()) + 1}"):
            out = self.run_steps(x_all, y_all, indices, tf.constant(limit))
            if self.config.monitor:
                out = self._measure_last(x_all, y_all, indices, out, limit)
        flags = out.pop("flags")
        out["bad"] = flags[1:]
        if int(out["status"]) == train_lib._NON_FINITE:
            self._raise_non_finite(flags.numpy())
        return out

    def _measure_last(self, x_all, y_all, indices, out, limit: int) -> dict[str, tf.Tensor]:
        """Adds the measured last step (and the health keys) to the loop's results."""
        if int(out["status"]) != train_lib._RUNNING or limit == int(indices.shape[0]):
            out["health"], out["gradients"], out["activations"] = self._empty_measurement()
            return out
        report, health, grads, activations = self.run_measured(x_all, y_all, indices[limit])
        flags = report[4:] > 0
        status = train_lib._NON_FINITE if bool(tf.reduce_any(flags)) else train_lib._RUNNING
        out.update(
            steps_done=out["steps_done"] + 1,
            status=tf.constant(status),
            loss_sum=out["loss_sum"] + report[0],
            metric_sums=out["metric_sums"] + report[1:4],
            flags=flags,
            health=health,
            gradients=grads,
            activations=activations,
        )
        return out

    def _raise_non_finite(self, flags: np.ndarray) -> None:
        """TrainingError naming the step (already applied, never saved) and the variable."""
        step = int(self.optimizer.iterations.numpy())
        bad = np.flatnonzero(flags[1:])
        where = f"the gradient of {self.model.variable_names[bad[0]]}" if len(bad) else "the loss"
        raise train_lib.TrainingError(
            f"step {step}: non-finite value in {where}; under a distribution strategy this is found "
            f"after the update, which was applied in memory but never saved (try a lower "
            f"--learning_rate or clipping)"
        )


def _not_finite(tensor: tf.Tensor) -> tf.Tensor:
    return tf.logical_not(tf.reduce_all(tf.math.is_finite(tensor)))
