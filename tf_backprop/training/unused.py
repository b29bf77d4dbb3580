"""Settings that have no effect under the rest of a config: said, never silently ignored.

`unused(config, given)` lists, for the fields the user set (`given`: flag names present on the
command line, or the keyword arguments of a TrainConfig), those the run will not use and why:
--momentum with Adam, --lr_alpha without a cosine schedule, --n_samples with a CSV, ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tf_backprop import data as data_lib
from tf_backprop.training.config import TrainConfig

_MOMENTUM_OPTIMIZERS = ("momentum", "nesterov", "rmsprop")
_MONITOR_FIELDS = (
    "histogram_every",
    "vanishing_ratio",
    "vanishing_floor",
    "exploding_threshold",
    "health_patience",
)

# field -> config -> why the field has no effect in that config, or None when it has one.
_RULES: dict[str, Callable[[TrainConfig], str | None]] = {
    "momentum": lambda c: (
        None
        if c.optimizer in _MOMENTUM_OPTIMIZERS
        else f"optimizer {c.optimizer!r} takes none (only {', '.join(_MOMENTUM_OPTIMIZERS)} do)"
    ),
    "lr_decay_steps": lambda c: None if c.lr_schedule != "constant" else "the learning rate is constant",
    "lr_decay_rate": lambda c: (
        None
        if c.lr_schedule in ("exponential", "step")
        else f"only the exponential and step schedules decay by a rate, not {c.lr_schedule!r}"
    ),
    "lr_alpha": lambda c: None if c.lr_schedule == "cosine" else "only the cosine schedule has a final rate",
    "verify_tolerance": lambda c: None if c.verify_every else "nothing is verified (verify_every is 0)",
    "restore_best": lambda c: None if c.patience else "there is no early stopping (patience is 0)",
    "n_samples": lambda c: None if data_lib.csv_path(c.data) is None else "the data is a CSV file",
    "noise": lambda c: None if data_lib.csv_path(c.data) is None else "the data is a CSV file",
    "checkpoint_seconds": lambda c: (
        None
        if not c.checkpoint_every
        else f"checkpoints are every {c.checkpoint_every} steps (checkpoint_every)"
    ),
    "worker_timeout": lambda c: (
        None if c.strategy == "multi_worker" else "only multi_worker runs wait on workers"
    ),
    **{
        name: (lambda c: None if c.monitor else "monitoring is off (monitor is false)")
        for name in _MONITOR_FIELDS
    },
}


def unused(config: TrainConfig, given: Iterable[str]) -> list[tuple[str, str]]:
    """(field, why it has no effect) for each field in `given` the run will not use, in `given`'s order."""
    found = []
    for name in given:
        rule = _RULES.get(name)
        reason = rule(config) if rule is not None else None
        if reason is not None:
            found.append((name, reason))
    return found
