"""What distribution adds to a run: the strategy, its runner, chief-only files, worker checks.

`make_strategy(config)` builds MirroredStrategy (local GPUs or logical CPUs) or
MultiWorkerMirroredStrategy (TF_CONFIG) — call it before any other TensorFlow call.
`Replicas(strategy)` is the engine's runner on it: each step runs on every replica with
`strategy.run`, and its loss, metric sums, flags and (measured) gradients are SUM-reduced, so
every worker sees the same figures and stops at the same step.  The step itself
(`training.step`) scales its loss by 1/replicas; the Keras optimizer sums the gradients, so an
update equals a single-device step on the global batch.  Clipping, if configured, happens per
replica before that sum (Keras).

What runs under XLA: XLA cannot compile a replica step that contains the optimizer on a CPU
strategy, so a step is a plain compiled ``tf.while_loop`` iteration.  On GPU replicas each
replica's forward + gradient is a ``jit_compile=True`` function (XLA fuses the small kernels);
on CPU replicas TF's own kernels were as fast or faster (benchmarks/distribute_bench.py).

Waiting on other workers never lasts forever: MultiWorkerMirroredStrategy's start-up (every
worker registering with the chief's coordination service) is bounded by config.worker_timeout
(`cluster.bound_start_up`), and so is every collective (the start-up barrier, the resume
agreement, each step's reduction; CommunicationOptions).  Either raises WorkerLostError naming
the workers whose address did not answer.

Files.  The run's progress (checkpoint.RunState) is created outside the strategy's scope: its
variables are plain, identical on every worker (MultiWorkerMirroredStrategy cannot broadcast
the string one).  Only the chief (task 0) writes the run's files.  Every other worker calls the
same saves (a checkpoint save or an export may involve collectives) into a temporary folder it
deletes, and restores from the chief's workdir, which it must be able to read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import data as data_lib
from tf_backprop.model import MLP
from tf_backprop.training import checkpoint as checkpoint_lib
from tf_backprop.training import cluster as cluster_lib
from tf_backprop.training import tf_config
from tf_backprop.training.config import TrainConfig
from tf_backprop.training.errors import CheckpointError, ConfigError, WorkerLostError

_SUM = tf.distribute.ReduceOp.SUM
# What a collective raises when a peer died or the cluster's health check aborted it.
_LOST = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)
_COLLECTIVE_KEY_STRIDE = 10_000  # group keys per MirroredStrategy instance


# ----------------------------------------------------------------------------- the strategy
def make_strategy(config: TrainConfig) -> tf.distribute.Strategy | None:
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


def _mirrored(config: TrainConfig) -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over cpu_replicas logical CPUs, or over every local GPU."""
    if config.cpu_replicas:
        return mirrored_on_cpus(cpu_devices(config.cpu_replicas))
    _fresh_collective_keys()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise ConfigError(
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
        raise ConfigError(
            f"cpu_replicas: {count} requested, but TensorFlow is already running with "
            f"{len(names)} logical CPU device(s); they can only be configured before TensorFlow "
            f"initializes (use a new process, or --cpu_replicas={len(names)})"
        )
    return names


def _multi_worker(config: TrainConfig) -> tf.distribute.MultiWorkerMirroredStrategy:
    """MultiWorkerMirroredStrategy configured by TF_CONFIG (validated first)."""
    cluster, task = tf_config.parse_tf_config(os.environ.get("TF_CONFIG"))
    if config.device == "cpu":
        tf.config.set_visible_devices([], "GPU")  # before the runtime starts
    elif config.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise ConfigError("device: 'gpu' requested but TensorFlow sees no GPU")
    logging.info("multi-worker: task %s:%d of %s", task["type"], task["index"], cluster)
    cluster_lib.check_own_port_free(cluster, task)
    cluster_lib.bound_start_up(cluster, config.worker_timeout)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=config.worker_timeout)
    try:  # returns once every worker has registered
        with cluster_lib.ctrl_c_ends_the_process():
            logging.info("start-up: waiting up to %g s for every worker to register", config.worker_timeout)
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except _LOST:
        raise WorkerLostError(
            f"start-up: the other workers did not all connect within {config.worker_timeout:g} s"
            f"{cluster_lib.silent_phrase(cluster, task)}; start every worker with the same command "
            f"(only TF_CONFIG differs), or raise --worker_timeout"
        ) from None


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process writes the run's files: always, except on non-chief workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return tf_config.is_chief_task(resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id)


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def input_pipelines(strategy: tf.distribute.Strategy | None) -> tuple[int, int]:
    """(count, this process's index) of the input pipelines a streamed source needs: one per
    worker under multi_worker (the chief first, then the workers: the order of replica ids),
    else one."""
    if not is_multi_worker(strategy):
        return 1, 0
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    index = resolver.task_id + (1 if "chief" in cluster and resolver.task_type == "worker" else 0)
    if resolver.task_type == "chief":
        index = 0
    return strategy.num_replicas_in_sync // len(strategy.extended.worker_devices), index


def describe(strategy: tf.distribute.Strategy) -> str:
    """E.g. 'MirroredStrategy, 2 replicas (/cpu:0, /cpu:1)'; for logs."""
    devices = ", ".join(strategy.extended.worker_devices)
    if is_multi_worker(strategy):
        task = f"{strategy.cluster_resolver.task_type}:{strategy.cluster_resolver.task_id}"
        return f"MultiWorkerMirroredStrategy, {_replicas(strategy)}, this is {task} ({devices})"
    return f"MirroredStrategy, {_replicas(strategy)} ({devices})"


def _replicas(strategy) -> str:
    count = strategy.num_replicas_in_sync
    return f"{count} replica{'' if count == 1 else 's'}"


def select_device(name: str) -> str:
    """'/GPU:0' or '/CPU:0' for --device {auto, cpu, gpu}; ConfigError for gpu with none."""
    gpus = tf.config.list_physical_devices("GPU")
    if name == "gpu" and not gpus:
        raise ConfigError(
            "device: 'gpu' requested but TensorFlow sees no GPU (install tensorflow[and-cuda] "
            "on a machine with an NVIDIA GPU, or use --device=cpu)"
        )
    return "/GPU:0" if name != "cpu" and gpus else "/CPU:0"


def scope(strategy: tf.distribute.Strategy | None, device: str | None):
    """strategy.scope(), or tf.device(device) without a strategy."""
    return strategy.scope() if strategy is not None else tf.device(device)


# ----------------------------------------------------------------------------- collectives
@contextlib.contextmanager
def worker_errors(what: Callable[[], str], strategy: tf.distribute.Strategy | None = None) -> Iterator[None]:
    """Turns a failed collective into a one-line WorkerLostError (what(): e.g. 'step 120');
    given the strategy, it names the workers whose address does not answer."""
    try:
        yield
    except _LOST as error:
        silent = cluster_lib.silent_phrase(*_cluster_of(strategy)) if is_multi_worker(strategy) else ""
        raise WorkerLostError(
            f"{what()}: lost contact with another worker ({_cause(error)}){silent}; restart every "
            f"worker with the same command to resume from the last checkpoint"
        ) from None


def _cluster_of(strategy: tf.distribute.MultiWorkerMirroredStrategy) -> tuple[dict, dict]:
    """(cluster, task) as parse_tf_config gives them, from the strategy's resolver."""
    resolver = strategy.cluster_resolver
    return resolver.cluster_spec().as_dict(), {"type": resolver.task_type, "index": resolver.task_id}


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
        with worker_errors(lambda: what, strategy):
            _gather(strategy, [0.0])


_FAILURE_BYTES = 2048  # of a failure's message that first_failure passes on


def share_failure(
    strategy: tf.distribute.Strategy | None, failure: Exception | None, kind: type[Exception], what: str
) -> None:
    """Raises this worker's `failure`, or on the others the first failing worker's message as
    `kind`, instead of their waiting for a worker that has stopped (a collective under
    multi_worker, so also a barrier; elsewhere just raises `failure`)."""
    message = first_failure(strategy, None if failure is None else str(failure), what)
    if failure is not None:
        raise failure
    if message is not None:
        raise kind(message)


def first_failure(strategy: tf.distribute.Strategy | None, message: str | None, what: str) -> str | None:
    """The message of the first input pipeline (as `input_pipelines` counts them) that reports
    one (`message` not None), or None: the same answer on every worker.  Under multi_worker a
    collective (so a barrier); the message travels in it, at most _FAILURE_BYTES of UTF-8."""
    if not is_multi_worker(strategy):
        return message
    _, mine = input_pipelines(strategy)
    encoded = (message or "").encode()[:_FAILURE_BYTES]
    row = [0.0 if message is None else float(mine + 1), *encoded, *[0] * (_FAILURE_BYTES - len(encoded))]
    with worker_errors(lambda: what, strategy):
        every = _gather(strategy, row)  # [replicas, 1 + _FAILURE_BYTES]
    failing = every[every[:, 0] > 0]
    if not len(failing):
        return None
    first = failing[np.argmin(failing[:, 0])]
    return bytes(int(b) for b in first[1:]).rstrip(b"\0").decode(errors="ignore")


def check_workers_agree(
    strategy: tf.distribute.Strategy | None,
    config: TrainConfig,
    datasets: data_lib.Datasets,
    step: int,
) -> None:
    """ConfigError unless every worker has the same config, data statistics and restored step."""
    if not is_multi_worker(strategy):
        return
    fingerprint = json.dumps([config.to_dict(), datasets.preprocessing.to_dict()], sort_keys=True)
    mine = [float(zlib.crc32(fingerprint.encode())), float(len(datasets.train)), float(step)]
    with worker_errors(lambda: "start-up", strategy):
        every = _gather(strategy, mine)
    if (every[:, :2] != every[0, :2]).any():
        raise ConfigError(
            "start-up: the workers were started with different flags or data; give every worker "
            "the same command (only TF_CONFIG differs)"
        )
    if (every[:, 2] != every[0, 2]).any():
        steps = ", ".join(str(int(s)) for s in every[:, 2])
        raise CheckpointError(
            f"the workers resumed at different steps ({steps}): every worker must read the chief's "
            f"workdir (a shared filesystem, same path), or start over with --restart"
        )


# ----------------------------------------------------------------------------- files
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


# ----------------------------------------------------------------------------- the runner
class Replicas:
    """The engine's runner on a strategy: a step on every replica, its figures summed.

    jit_gradients: XLA-compile each replica's forward + gradient; None: on GPU replicas only
    (on CPU replicas TF's own kernels were as fast or faster: benchmarks/distribute_bench.py).
    """

    jit = False  # XLA cannot compile the optimizer's cross-replica update on CPU strategies
    replays = False  # every step is checked: restoring distributed state is not attempted
    splits_batch = False  # the replicas already split it (Plan.splits_batch is for one device)

    def __init__(self, strategy: tf.distribute.Strategy, jit_gradients: bool | None = None):
        self.strategy = strategy
        if jit_gradients is None:
            jit_gradients = all("GPU" in d.upper() for d in strategy.extended.worker_devices)
        self.jit_gradients = jit_gradients

    def place(self, tensor):
        """One copy of `tensor` per replica device (no copy between CPUs)."""
        return self.strategy.experimental_distribute_values_from_function(lambda _: tf.identity(tensor))

    def run(self, fn, *args, **kwargs):
        return self.strategy.run(fn, args=args, kwargs=kwargs)

    def sum(self, value):
        """A nest of per-replica tensors summed over every replica, in one collective per dtype
        (every worker calls it): a reduction per tensor would cost a cross-device op each."""
        flat = tf.nest.flatten(value)
        local = self.first(flat)  # shapes and dtypes
        totals = [None] * len(flat)
        for dtype in {t.dtype for t in local}:
            members = [i for i, t in enumerate(local) if t.dtype == dtype]
            packed = self.run(
                lambda *ts: tf.concat([tf.reshape(t, [-1]) for t in ts], 0), *[flat[i] for i in members]
            )
            total = self.strategy.reduce(_SUM, packed, axis=None)
            parts = tf.split(total, [int(np.prod(local[i].shape)) for i in members])
            for i, part in zip(members, parts):
                totals[i] = tf.reshape(part, local[i].shape)
        return tf.nest.pack_sequence_as(value, totals)

    def first(self, value):
        """Replica 0's value (of this worker; identical on every replica where it is used)."""
        return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[0], value)

    def errors(self, what: Callable[[], str]):
        return worker_errors(what, self.strategy)
