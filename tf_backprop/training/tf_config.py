"""TF_CONFIG, the cluster a multi-worker run's environment names: its parsing, with one-line
errors, and which task is the chief.

Needs no TensorFlow: the command checks TF_CONFIG, as its other flags, before TensorFlow loads
(`training.cluster` starts the cluster up).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

from tf_backprop.training.errors import ConfigError

WORKER_JOBS = ("chief", "worker")  # the jobs a cluster may name


def parse_tf_config(text: str | None) -> tuple[dict[str, list[str]], dict]:
    """(cluster, task) of a TF_CONFIG value; ConfigError saying what is missing or wrong."""
    example = '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}'
    if not text:
        raise ConfigError(
            f"strategy: 'multi_worker' needs the TF_CONFIG environment variable on every worker, e.g. {example}"
        )
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG: not valid JSON ({error}); expected e.g. {example}") from None
    cluster = parsed.get("cluster") if isinstance(parsed, dict) else None
    task = parsed.get("task") if isinstance(parsed, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise ConfigError(f"TF_CONFIG: expected a 'cluster' and a 'task' object, e.g. {example}")
    for job, addresses in cluster.items():
        if job not in WORKER_JOBS:
            raise ConfigError(f"TF_CONFIG: job {job!r} is not supported; use 'worker' (and 'chief')")
        if not isinstance(addresses, list) or not addresses or not all(_is_address(a) for a in addresses):
            raise ConfigError(f"TF_CONFIG: cluster.{job} must be a list of 'host:port', got {addresses!r}")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster or isinstance(index, bool) or not isinstance(index, int):
        raise ConfigError(
            f"TF_CONFIG: task must name a job of the cluster ({', '.join(cluster)}) and an integer "
            f"index, got {task!r}"
        )
    if not 0 <= index < len(cluster[kind]):
        raise ConfigError(
            f"TF_CONFIG: task index {index} outside cluster.{kind} (0..{len(cluster[kind]) - 1})"
        )
    return cluster, task


def _is_address(address) -> bool:
    return isinstance(address, str) and bool(re.fullmatch(r"[^\s:]+:\d+|\[[0-9a-fA-F:]+\]:\d+", address))


def is_chief_process() -> bool:
    """Whether TF_CONFIG (if any) makes this process the chief: task 'chief', else worker 0."""
    if not os.environ.get("TF_CONFIG"):
        return True
    cluster, task = parse_tf_config(os.environ["TF_CONFIG"])
    return is_chief_task(cluster, task["type"], task["index"])


def is_chief_task(cluster: Mapping, task_type: str, task_id: int) -> bool:
    """Whether the task writes the run's files: the 'chief' task, or worker 0 without one."""
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and task_id == 0
