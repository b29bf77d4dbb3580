"""A streamed source in a run: its folder first, the statistics pass per worker, the merge, the feed.

The statistics pass keeps its results and row caches in <workdir>/stream, so a streamed run
opens its folder (made or checked as ours, locked, a previous run moved aside for --restart or
its config checked for resuming) before reading any data, and is put back as it was
(`workdir.put_back`) if the data turns out bad.  Under multi_worker the shards are divided by file,
as tf.data's FILE auto-sharding divides them: worker w of W scans, and then trains on, the shards
whose index ≡ w (mod W); every worker then merges all the shards' scans (in shard order, so all
get the same statistics) from the shared run folder.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator

import tensorflow as tf
from absl import logging

from tf_backprop import data as data_lib
from tf_backprop.data import pipeline
from tf_backprop.training import distributed
from tf_backprop.training import resume as resume_lib
from tf_backprop.training import workdir as workdir_lib
from tf_backprop.training.config import TrainConfig
from tf_backprop.training.feed import StreamFeed
from tf_backprop.training.plan import Plan
from tf_backprop.training.workdir import Before


def worker_shards(count: int, workers: int, worker: int) -> list[int]:
    """The shards input pipeline `worker` of `workers` reads (by file: index ≡ worker mod workers)."""
    return [s for s in range(count) if s % workers == worker]


def worker_rows(split: data_lib.StreamedSplit, strategy: tf.distribute.Strategy | None) -> list[int]:
    """Each input pipeline's training rows."""
    workers, _ = distributed.input_pipelines(strategy)
    count = len(split.files)
    return [sum(split.shard_rows[s] for s in worker_shards(count, workers, w)) for w in range(workers)]


@contextlib.contextmanager
def opened(config: TrainConfig, strategy, restart: bool) -> Iterator[tuple[TrainConfig, Before | None]]:
    """The run folder, ready for the statistics pass to write into, for the block: (the config
    naming it, on the chief what the folder was before, for `workdir.put_back` if the data
    turns out bad).  The chief opens it (workdir.opened: checked as ours, locked for the block,
    a previous run moved aside or its config checked) and writes config.json, so a pass that is
    interrupted leaves a folder known as a run folder; the other workers wait for it.  Under
    multi_worker every worker first checks the folder as it is (api's order: each refuses a bad
    folder with its own line, none reads it while the chief writes it)."""
    checked = None
    if distributed.is_multi_worker(strategy):
        checked = workdir_lib.check_read_only(config, None, restart)
        distributed.barrier(strategy, "start-up")
    if not distributed.is_chief(strategy):
        distributed.barrier(strategy, "start-up")  # the chief has opened the folder
        yield dataclasses.replace(config, workdir=checked), None
        return
    before = workdir_lib.before_opening(config.workdir)
    with workdir_lib.opened(config, restart) as workdir:
        config = dataclasses.replace(config, workdir=workdir)  # runs/<date>-<time> when none was given
        workdir_lib.write_config(workdir, config)
        distributed.barrier(strategy, "start-up")
        yield config, before


def finish(config: TrainConfig, strategy, datasets: data_lib.Datasets, plan: Plan) -> None:
    """After the statistics pass: the chief finishes preparing the folder (workdir.finish), the
    other workers check the data and the steps trained against it."""
    if distributed.is_chief(strategy):
        workdir_lib.finish(config.workdir, config, datasets, plan)
    else:
        resume_lib.check_same_data(config.workdir, datasets)
        resume_lib.check_not_past(config.workdir, config, plan.total_steps, plan.steps_per_epoch)
        resume_lib.check_not_stopped(config.workdir, config)


def load(config: TrainConfig, strategy, directory: str) -> data_lib.Datasets:
    """The statistics pass over this process's shards, then (every worker's done) the merge."""
    data_lib.infer_task(config.task, config.loss)  # a task/loss conflict fails before any data is read
    workers, worker = distributed.input_pipelines(strategy)
    count = len(data_lib.source_shards(config.data))
    failure = None
    try:
        data_lib.scan_shards(
            config.data,
            target=config.target,
            val_split=config.val_split,
            test_split=config.test_split,
            seed=config.seed,
            directory=directory,
            indices=worker_shards(count, workers, worker),
        )
    except data_lib.DataError as error:
        if workers == 1:
            raise
        failure = error
    # A worker whose shards failed raises its DataError; the others the first failing one's.
    distributed.share_failure(strategy, failure, data_lib.DataError, "statistics pass")
    return merged(config, directory)


def merged(config: TrainConfig, directory: str) -> data_lib.Datasets:
    """Every shard's scan in `directory` merged (data.load_streamed)."""
    return data_lib.load_streamed(config.data, directory=directory, **config.split_options())


def temporary_directory() -> str:
    """A temporary folder for a statistics pass, deleted at exit."""
    directory = tempfile.mkdtemp(prefix="tf_backprop-stream-")
    atexit.register(shutil.rmtree, directory, True)
    return directory


def make_feed(config: TrainConfig, plan: Plan, datasets: data_lib.Datasets, strategy, dtype) -> StreamFeed:
    """The engine's training rows: this process's shards through data.pipeline."""
    workers, worker = distributed.input_pipelines(strategy)
    mine = worker_shards(len(datasets.train.files), workers, worker)
    logging.info("input pipeline %d of %d reads training shards %s", worker, workers, mine)
    steps = pipeline.training_steps(
        datasets.train,
        datasets.preprocessing,
        shards=mine,
        seed=config.seed,
        shuffle=config.shuffle,
        batch=plan.local_batch,
        accum=plan.grad_accum_steps,
        steps_per_epoch=plan.steps_per_epoch,
        dtype=dtype,
        prefetch=plan.prefetch_steps,
    )
    return StreamFeed(steps, plan)
