"""The public training API: `train(config)` runs a whole run; `build(config)` gives its parts.

The path of one run: config (validated once) → strategy (first, before any other TF call) →
data → plan (batching and run length) → model, optimizer and engine inside the strategy's
scope → run folder (refused unless ours, locked for the whole run, its outputs checked) →
resume → the loop (epochs, validation, early stopping, checkpoints, monitoring) → metrics.json
and the SavedModel export.

A streamed source (`data.wants_stream`) needs its run folder first: the statistics pass caches
its results in <workdir>/stream, so the folder is made (or checked for resuming) and locked
before the data is read, and removed again if it was new and the data is bad.  Under
multi_worker each worker scans its own shards (index ≡ worker mod workers), then every worker
merges all the shards' scans.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_backprop import backprop, files, names, text
from tf_backprop import data as data_lib
from tf_backprop import losses as losses_lib
from tf_backprop.data import checks as data_checks
from tf_backprop.data import pipeline
from tf_backprop.model import MLP
from tf_backprop.serving import export as export_lib
from tf_backprop.training import distributed, streaming, xla_flags
from tf_backprop.training import monitor as monitor_lib
from tf_backprop.training import workdir as workdir_lib
from tf_backprop.training.checkpoint import CONFIG_FILE, RunState, load_model
from tf_backprop.training.config import TrainConfig
from tf_backprop.training.engine import Engine, SingleDevice
from tf_backprop.training.errors import CheckpointError, ConfigError, WorkdirError
from tf_backprop.training.feed import InputKeeper, StreamFeed
from tf_backprop.training.loop import Loop, signals_recorded
from tf_backprop.training.optimizers import build_optimizer
from tf_backprop.training.plan import Plan, make_plan


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


@dataclasses.dataclass
class Trainer:
    """Everything a run trains with, built from a config, before any file is written.

    For notebooks and benchmarks: `trainer.loop()` runs epochs in memory (no workdir, no
    checkpoints) with `loop.train_epoch(...)` / `loop.run()`; `train()` adds the run folder.
    """

    config: TrainConfig
    plan: Plan
    datasets: data_lib.Datasets
    strategy: tf.distribute.Strategy | None
    device: str | None  # without a strategy: '/CPU:0' or '/GPU:0'
    model: MLP
    optimizer: keras.optimizers.Optimizer
    state: RunState  # the run's progress (epoch, early stopping): checkpointed with the model
    engine: Engine
    feed: StreamFeed | None = None  # a streamed source's training rows
    worker: int = 0  # this process's input pipeline (streamed under multi_worker: its worker index)

    def loop(self, keeper=None, progress: bool | None = False, monitor=None, input_keeper=None) -> Loop:
        """A Loop over this trainer's engine and run state."""
        return Loop(
            self.plan,
            self.config,
            self.datasets,
            self.engine,
            self.state,
            keeper,
            progress,
            monitor,
            self.feed,
            input_keeper,
        )


def build(
    config: TrainConfig,
    datasets: data_lib.Datasets | None = None,
    *,
    step_functions: Mapping[str, Callable] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    jit_gradients: bool | None = None,
    stream_dir: str | None = None,
) -> Trainer:
    """The strategy, data, plan, model, optimizer and engine of `config`; writes nothing but a
    streamed source's statistics pass (into stream_dir, never into config.workdir unasked).

    Raises ConfigError / data.DataError for a bad configuration or data.  Call it before any
    other TensorFlow op when config.strategy needs logical CPU devices.

    Args:
      config, datasets, step_functions: as for `train`.
      strategy: a tf.distribute strategy to train on instead of config.strategy's (e.g. a
        MirroredStrategy over chosen devices); None: the config's.
      jit_gradients: under a strategy, XLA-compile each replica's forward + gradient
        (None: on GPU replicas only).
      stream_dir: where a streamed source's statistics pass keeps its results and row caches;
        None: a temporary folder deleted at exit (`train` gives <workdir>/stream, once it has
        checked the folder as a run folder).
    """
    if strategy is None:
        strategy = distributed.make_strategy(config)  # first: before any other TF call
    keras.utils.set_random_seed(config.seed)
    device = distributed.select_device(config.device) if strategy is None else None
    if datasets is None:
        datasets = load_datasets(config, strategy, stream_dir)
    data_checks.check_features_fit(datasets, config.dtype, config.standardize)
    streamed = isinstance(datasets.train, data_lib.StreamedSplit)
    loss = resolve_loss(config, datasets)
    spec = config.model_spec(datasets.n_features, datasets.n_outputs)
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    worker_rows = streaming.worker_rows(datasets.train, strategy) if streamed else None
    plan = make_plan(config, len(datasets.train), spec.layer_sizes, replicas, worker_rows)
    with distributed.scope(strategy, device):
        model = spec.build()
        backprop.check_loss_fits(model, loss)
        check_splits(model, datasets, loss)
        optimizer = build_optimizer(config, plan.total_steps)
    # Out of the strategy's scope: RunState's variables stay local (MWMS cannot broadcast strings).
    with tf.device(device or "/CPU:0"):
        state = RunState(model)
    with distributed.scope(strategy, device):
        if strategy is None:
            runner = SingleDevice(device)
        else:
            runner = distributed.Replicas(strategy, jit_gradients)
        std = datasets.preprocessing.target_std
        target_std = None if std is None else np.asarray(std, np.float64)
        engine = Engine(model, optimizer, loss, config, plan, state, target_std, step_functions, runner)
    feed = streaming.make_feed(config, plan, datasets, strategy, model.compute_dtype) if streamed else None
    worker = distributed.input_pipelines(strategy)[1]
    return Trainer(config, plan, datasets, strategy, device, model, optimizer, state, engine, feed, worker)


def train(
    config: TrainConfig,
    datasets: data_lib.Datasets | None = None,
    *,
    restart: bool = False,
    progress: bool | None = None,
    step_functions: Mapping[str, Callable] | None = None,
    tune_xla: bool = False,
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
        check a custom gradient path with verify_every (fn signature as backprop.tape_step;
        with Plan.splits_batch it is called on each half of a micro-batch's rows).
      tune_xla: set XLA_FLAGS for the run's size before it compiles, as the commands do
        (`xla_flags.prefer_for`: a small step's elemental emitters); XLA reads them at the
        process's first compilation, so in a process that has compiled before, this changes
        nothing.

    Raises:
      ConfigError / data.DataError: bad configuration or data (nothing trained).
      WorkdirError: the workdir is not a run folder, is in use by another run, or cannot be
        written (nothing written to it).
      ConfigMismatchError: the workdir holds a run with another model or data.
      CheckpointError: checkpoints exist but none is readable.
      TrainingError: a non-finite loss or gradient, or tape and manual disagreeing.
      Interrupted: SIGINT/SIGTERM arrived; a checkpoint was written first.
      WorkerLostError (a TrainingError): under multi_worker, another worker died.

    Under a strategy (config.strategy) only the chief writes to the workdir; batch_size is the
    global batch, split evenly among the replicas (docs/distributed.md).
    """
    if datasets is None and data_lib.wants_stream(config.data, config.stream):
        return _train_streamed(config, restart, progress, step_functions, tune_xla)
    if config.workdir is not None:  # a wrong folder is refused before the data loads (a large CSV: seconds)
        workdir_lib.check_read_only(config, None, restart)
    trainer = build(config, datasets, step_functions=step_functions)
    with _run_folder(trainer, restart) as (workdir, before):
        return _train_in(trainer, workdir, progress, before, tune_xla)


def _train_streamed(
    config: TrainConfig, restart: bool, progress: bool | None, step_functions, tune_xla: bool
) -> TrainResult:
    """`train` of a streamed source: its run folder first, for the statistics pass to write into."""
    strategy = distributed.make_strategy(config)  # first: before any other TF call
    data_lib.check_source_files(config.data)  # a missing file: before the folder is touched
    with streaming.opened(config, strategy, restart) as (config, before):
        try:
            stream_dir = os.path.join(config.workdir, workdir_lib.STREAM_DIR)
            trainer = build(config, step_functions=step_functions, strategy=strategy, stream_dir=stream_dir)
            streaming.finish(config, strategy, trainer.datasets, trainer.plan)
        except (ValueError, OSError):  # bad data or config: the folder goes back as it was
            if before is not None:
                workdir_lib.put_back(config.workdir, before)
            raise
        distributed.barrier(strategy, "data")
        return _train_in(trainer, config.workdir, progress, before, tune_xla)


def _train_in(
    trainer: Trainer,
    workdir: str,
    progress: bool | None,
    before: workdir_lib.Before | None = None,
    tune_xla: bool = False,
) -> TrainResult:
    """The run itself, in its prepared (and, on the chief, locked) run folder; before: on the
    chief, the folder as it was, put back if the workers turn out to disagree."""
    if tune_xla and trainer.strategy is None:  # before the engine's first XLA compilation
        xla_flags.prefer_for(trainer.plan, [trainer.device])  # (replicas on CPUs compile none)
    config, strategy, datasets, state = trainer.config, trainer.strategy, trainer.datasets, trainer.state
    with tf.device(trainer.device or "/CPU:0"):
        keeper = distributed.make_keeper(
            strategy, workdir, trainer.model, trainer.optimizer, state, config.keep_checkpoints
        )
        input_keeper = None
        if trainer.feed is not None:
            input_keeper = InputKeeper(workdir, trainer.worker, trainer.feed, config.keep_checkpoints)
        _resume(keeper, state, trainer.optimizer, config, input_keeper)
        step = int(trainer.optimizer.iterations.numpy())
        _check_workers_agree(trainer, workdir, step, before)
        where = trainer.device or distributed.describe(strategy)
        logging.info(
            "%s gradients on %s: %d steps (%d per epoch), workdir %s",
            config.grad_source, where, trainer.plan.total_steps, trainer.plan.steps_per_epoch, workdir,
        )  # fmt: skip
        monitor = (
            monitor_lib.from_config(config, workdir, trainer.model, start_step=step)
            if distributed.is_chief(strategy)
            else None
        )
        if monitor is not None:  # a resumed run continues its warning counts
            monitor.detector.load_state(json.loads(state.health_json.numpy().decode()))
        loop = trainer.loop(keeper, progress, monitor, input_keeper)
        try:
            with signals_recorded(loop.signals):
                loop.run()
        finally:
            if monitor is not None:
                monitor.close()
        final = loop.final_metrics()
    history, stopped = state.history(), bool(state.stopped.numpy())
    _write_outputs(
        trainer,
        workdir,
        {"history": history, "final": final, "steps": loop.step, "stopped_early": stopped},
        monitor,
    )
    return TrainResult(trainer.model, history, final, workdir, loop.step, stopped, datasets)


def _check_workers_agree(
    trainer: Trainer, workdir: str, step: int, before: workdir_lib.Before | None
) -> None:
    """distributed.check_workers_agree; when they do not, the chief first puts the folder back
    as it was (a new one goes): its config.json would refuse the corrected command's rerun."""
    try:
        distributed.check_workers_agree(trainer.strategy, trainer.config, trainer.datasets, step)
    except (ConfigError, CheckpointError):
        if before is not None:
            workdir_lib.put_back(workdir, before)
        raise


@contextlib.contextmanager
def _run_folder(trainer: Trainer, restart: bool) -> Iterator[tuple[str, workdir_lib.Before | None]]:
    """(workdir, before): the chief prepares the workdir and locks it for the whole run
    (workdir.prepared), before holding what it was; the other workers wait for it (before None).

    Under multi_worker every worker first checks the folder as it is (workdir.check_read_only),
    and the chief changes it only when all have: each worker refuses a bad folder with its own
    line, and none reads the folder while the chief writes it (a worker that did met the chief's
    writability probe, or a restart half moved aside, and refused a good folder).  What only
    the chief's preparation finds (a folder locked by another run) every worker raises."""
    config, strategy, workdir = trainer.config, trainer.strategy, None
    if distributed.is_multi_worker(strategy):
        workdir = workdir_lib.check_read_only(config, trainer.datasets, restart, trainer.plan)
        distributed.barrier(strategy, "start-up")
    before, failure = None, None
    with contextlib.ExitStack() as stack:
        if distributed.is_chief(strategy):
            before = workdir_lib.before_opening(config.workdir)
            try:
                workdir = stack.enter_context(
                    workdir_lib.prepared(config, trainer.datasets, restart, trainer.plan)
                )
            except WorkdirError as error:
                failure = error
        distributed.share_failure(strategy, failure, WorkdirError, "start-up")  # also the barrier
        yield workdir, before


def _write_outputs(trainer: Trainer, workdir: str, metrics: dict, monitor) -> None:
    """metrics.json and the export, by the chief (the others write into a deleted scratch folder)."""
    if monitor is not None:
        metrics["gradient_health"] = monitor.detector.summary()
    with distributed.output_dir(trainer.strategy, workdir) as output:
        files.write_json(os.path.join(output, "metrics.json"), metrics)
        if trainer.config.export:
            export_lib.export_saved_model(
                trainer.model,
                trainer.datasets.preprocessing,
                trainer.config,
                os.path.join(output, export_lib.EXPORT_DIR),
                overwrite=True,
            )


def _resume(keeper, state: RunState, optimizer, config: TrainConfig, input_keeper=None) -> None:
    """Restores the latest good checkpoint, if any (and a streamed input's position at its step),
    keeping the config's learning rate."""
    restored = keeper.restore_latest()
    if restored is None:
        return
    if input_keeper is not None:
        input_keeper.restore(int(optimizer.iterations.numpy()))
    if config.lr_schedule == "constant":
        optimizer.learning_rate = config.learning_rate  # a harmless change on resume
    step, epoch = int(optimizer.iterations.numpy()), int(state.epoch.numpy()) + 1
    logging.info("resumed from %s: step %d, epoch %d", restored, step, epoch)
    print(f"resuming from {restored} at step {step}, epoch {epoch}", file=sys.stderr)


def load_datasets(
    config: TrainConfig, strategy: tf.distribute.Strategy | None = None, stream_dir: str | None = None
) -> data_lib.Datasets:
    """The data set named by config.data, split and standardized: in memory, or streamed
    (`data.wants_stream`) through the statistics pass into stream_dir (see `build`)."""
    if data_lib.wants_stream(config.data, config.stream):
        return streaming.load(config, strategy, stream_dir or streaming.temporary_directory())
    return data_lib.load(
        config.data,
        seed=config.seed,
        n_samples=config.n_samples,
        noise=config.noise,
        **config.split_options(),
    )


def resolve_loss(config: TrainConfig, datasets: data_lib.Datasets) -> losses_lib.Loss:
    """The config's loss, or the task's default one."""
    return losses_lib.get(config.loss or data_lib.default_loss(datasets.task))


def check_splits(model: MLP, datasets: data_lib.Datasets, loss: losses_lib.Loss) -> None:
    """DataError naming the split when its features or targets do not fit the model and loss.

    Every row is checked here, eagerly: inside the compiled engine an out-of-range class label
    would silently become an all-zero one-hot row.
    """
    for name in ("train", "validation", "test"):
        split = getattr(datasets, name)
        if split is None or isinstance(split, data_lib.StreamedSplit):  # checked by the pass
            continue
        try:
            backprop.prepare(model, split.x, split.y, loss)
        except ValueError as error:
            raise data_lib.DataError(f"{datasets.source}, {name} split: {error}") from None


def _check_run_data_found(workdir: str, source: str) -> None:
    """data.DataError when a run's CSV is not where its config.json says, saying where the path
    came from: given relative, it is relative to the folder the run was trained in."""
    path = data_lib.csv_path(source)
    if path is None:
        return
    try:
        data_lib.check_source_files(source)
    except data_lib.DataError as error:
        relative = (
            "" if os.path.isabs(os.path.expanduser(path)) else ", relative to the folder it was trained in"
        )
        raise data_lib.DataError(
            f"{error}: the run's data, as {os.path.join(workdir, CONFIG_FILE)} names it"
            f"{relative}; run from that folder, or put the data back"
        ) from None


SPLIT_ORDER = names.SPLIT_ORDER  # run_sample's default: the first split the run has


@dataclasses.dataclass(frozen=True)
class RunSample:
    """One row of a trained run's data as training saw it, with the run's model, loss and L2."""

    model: MLP
    x: np.ndarray  # [1, n_0], standardized with the run's statistics
    y: np.ndarray  # [1, k], or a class label [1]
    loss: losses_lib.Loss
    l2: float
    description: str  # e.g. "runs/x: test split, row 0"


def run_sample(
    workdir: str, row: int = 0, split: str | None = None, checkpoint: str | None = None
) -> RunSample:
    """Row `row` of a run's split (default: test, else validation, else train) and its model.

    The data is loaded again from the run's config.json, split and standardized as training did.
    Raises CheckpointError when the run cannot be read; ValueError naming `row` or `split` when
    they do not fit, and data.DataError when the data no longer matches the run's data.json.
    """
    model, config, preprocessing = load_model(workdir, checkpoint)
    _check_run_data_found(workdir, config.data)
    if data_lib.wants_stream(config.data, config.stream):  # the run's own statistics pass
        datasets = streaming.merged(config, os.path.join(workdir, workdir_lib.STREAM_DIR))
    else:
        datasets = load_datasets(config)
    if datasets.preprocessing.to_dict() != preprocessing.to_dict():
        raise data_lib.DataError(
            f"{datasets.source}: the data's statistics differ from {os.path.join(workdir, 'data.json')}; "
            f"has it changed since the run trained?"
        )
    if split is not None and split not in SPLIT_ORDER:
        raise ValueError(f"split: expected one of {', '.join(SPLIT_ORDER)}, got {split!r}")
    name = split or next(n for n in SPLIT_ORDER if getattr(datasets, n) is not None)
    chosen = getattr(datasets, name)
    if chosen is None:
        raise ValueError(f"split: the run at {workdir} has no {name} split ({name}_split was 0)")
    if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < len(chosen):
        raise ValueError(
            f"row: expected an integer in [0, {len(chosen)}) (the {name} split's rows), got {row!r}"
        )
    if isinstance(chosen, data_lib.StreamedSplit):
        chosen = pipeline.read_split(chosen, datasets.preprocessing, limit=row + 1)
    sample = slice(row, row + 1)
    loss = resolve_loss(config, datasets)
    label = _class_label(datasets.preprocessing.class_names, chosen.y[sample])
    return RunSample(
        model,
        chosen.x[sample],
        chosen.y[sample],
        loss,
        config.l2,
        f"{workdir}: {name} split, row {row}{label}{_standardized(datasets.preprocessing)}",
    )


def _standardized(preprocessing) -> str:
    """' (x and y standardized as in training)' for what the run standardizes, else ''."""
    scaled = [
        name
        for name, means, stds in (
            ("x", preprocessing.feature_mean, preprocessing.feature_std),
            ("y", preprocessing.target_mean, preprocessing.target_std),
        )
        if means is not None and (any(means) or any(s != 1.0 for s in stds))
    ]
    return f" ({' and '.join(scaled)} standardized as in training)" if scaled else ""


def _class_label(class_names: list[str] | None, y: np.ndarray) -> str:
    """', class "Adelie"' for a classification row (y: its class id, or 0/1), else ''."""
    if not class_names:
        return ""
    return f", class {text.quote(class_names[int(np.asarray(y).reshape(-1)[0])])}"
