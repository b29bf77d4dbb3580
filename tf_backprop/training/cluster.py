"""The multi-worker cluster's start-up: one that ends, and the workers that did not answer.

TF_CONFIG itself (its parsing, which task is the chief) is `training.tf_config`, which needs
no TensorFlow.  `bound_start_up` makes
MultiWorkerMirroredStrategy's start-up (every worker registering with the chief's coordination
service) end after a timeout instead of waiting forever, and `ctrl_c_ends_the_process` lets
Ctrl-C end that wait.  `silent_workers` names the workers
whose address refuses a TCP connection, for the messages of a start-up or a collective that
timed out.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator, Mapping

from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.eager import context as tf_context  # no public API configures the service

from tf_backprop.training import tf_config
from tf_backprop.training.errors import ConfigError

_PROBE_SECONDS = 2.0  # per worker address, when naming the workers that did not answer


# ----------------------------------------------------------------------------- waiting
def bound_start_up(cluster: Mapping, timeout_seconds: float) -> None:
    """Configures TensorFlow's coordination service as MultiWorkerMirroredStrategy would, but
    with a bounded start-up: every worker waits at most `timeout_seconds` for all to register,
    then the strategy's constructor raises DeadlineExceededError.  Call before the strategy.

    (TensorFlow's default waits forever, holding the GIL, so no Python watchdog could end it.)
    """
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster[job]))
        for job in tf_config.WORKER_JOBS
        if job in cluster
    ]
    leader = f"/job:{'chief' if 'chief' in cluster else 'worker'}/replica:0/task:0"  # the strategy's
    runtime = tf_context.context()
    runtime.configure_coordination_service(
        service_type="standalone",
        service_leader=leader,
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=int(timeout_seconds * 1000),
    )
    # Without the barrier the leader returns from registration at once and then waits for the
    # others without any deadline.
    runtime.coordination_service.cluster_register_with_barrier = True


@contextlib.contextmanager
def ctrl_c_ends_the_process() -> Iterator[None]:
    """SIGINT ends the process at once (its default action) for the block: the start-up wait
    holds the interpreter in TensorFlow's C++, so Ctrl-C's KeyboardInterrupt would be raised
    only after --worker_timeout.  Nothing is written before it.  (SIGTERM cannot be helped so:
    TensorFlow's preemption notifier takes it over inside the same call.  Python sets handlers
    from the main thread only.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_own_port_free(cluster: Mapping, task: Mapping) -> None:
    """ConfigError when another process already listens on this task's port: TensorFlow's gRPC
    server then fails with a traceback ('Could not start gRPC server'), and the other workers
    wait out --worker_timeout and blame a stuck worker."""
    address = cluster[task["type"]][task["index"]]
    port = int(address.rsplit(":", 1)[1])
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed one in TIME_WAIT is free
        try:
            probe.bind(("", port))
        except OSError as error:
            raise ConfigError(
                f"TF_CONFIG: this task's address {address} ({task['type']} {task['index']}) cannot be "
                f"served: port {port} is taken ({error.strerror}); stop what holds it, or give the task "
                f"another port in every worker's TF_CONFIG"
            ) from None


def silent_workers(cluster: Mapping, task: Mapping) -> list[str]:
    """'worker 1 (host:port)' for every other task of the cluster whose address refuses a TCP
    connection (a worker that is up serves its address as soon as it starts)."""
    silent = []
    for job, addresses in cluster.items():
        for index, address in enumerate(addresses):
            if (job, index) == (task["type"], task["index"]):
                continue
            host, port = address.rsplit(":", 1)
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_SECONDS):
                    pass
            except OSError:
                silent.append(f"{job} {index} ({address})")
    return silent


def silent_phrase(cluster: Mapping, task: Mapping) -> str:
    """For messages: "; no answer from worker 1 (host:port)", or that every address answers."""
    silent = silent_workers(cluster, task)
    if silent:
        return f"; no answer from {', '.join(silent)}"
    return (
        "; every worker's address answers (is one stuck, started with another TF_CONFIG, or its port "
        "held by another program?)"
    )
