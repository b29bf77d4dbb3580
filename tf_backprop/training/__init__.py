"""Training: config → plan → model, optimizer and engine → the run loop → outputs.

The public API: `train(config)` runs a whole run into a run folder and returns a
`TrainResult`; `build(config)` returns a `Trainer` (plan, model, optimizer, engine) whose
`loop()` trains in memory, for notebooks and benchmarks.  Modules, bottom up: errors, config,
plan, optimizers, step (one update on one replica), evaluation (a split's loss and metrics),
engine (many steps per compiled call), xla_flags (XLA_FLAGS for the run's size), tf_config
(TF_CONFIG), cluster (a bounded start-up), distributed (strategies), checkpoint, monitor, workdir, feed
and streaming (a streamed source's rows, pass and position), loop, api.

The names below load their module on first use, so importing one module of this package
(e.g. `training.checkpoint` from serving) does not import the run orchestration above it.
"""

import importlib

_PUBLIC = {
    "tf_backprop.training.api": (
        "RunSample",
        "TrainResult",
        "Trainer",
        "build",
        "check_splits",
        "load_datasets",
        "resolve_loss",
        "run_sample",
        "train",
    ),
    "tf_backprop.training.config": ("TrainConfig", "from_preset"),
    "tf_backprop.training.engine": ("Engine",),
    "tf_backprop.training.errors": (
        "CheckpointError",
        "ConfigError",
        "ConfigMismatchError",
        "Interrupted",
        "TrainingError",
        "WorkdirError",
        "WorkerLostError",
    ),
    "tf_backprop.training.loop": ("Loop",),
    "tf_backprop.training.plan": ("Plan", "make_plan"),
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module 'tf_backprop.training' has no attribute {name!r}")
