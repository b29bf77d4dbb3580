"""Pipelines: tf.data datasets over a streamed split's cache files, for training and evaluation.

`training_steps` yields one element per optimizer step — (x [accum, batch, n], y) in the
model's dtype, standardized with the run's statistics — epoch after epoch, without end.  Its
order is a pure function of the seed and the epoch:

* each epoch visits its shards in an order permuted by (seed, epoch), reading
  INTERLEAVE shards at a time, one cached record (a parse batch's rows of a shard) from each
  in turn;
* the rows are permuted within windows of WINDOW_ROWS consecutive rows by (seed, epoch,
  window) — a shuffle buffer of that many rows, stateless;
* the epoch ends after `steps_per_epoch` steps; its remaining rows are dropped, as in memory;
* up to `prefetch` steps are prepared ahead by tf.data's background threads — the engine asks
  for a whole call's steps, so that the next call's rows are read while the current call trains.

Every stage is deterministic and stateless, so `tf.train.Checkpoint` restores an iterator at
the exact row where it was saved.  `batches` yields a split's rows in file order, for
evaluation; `read_split` reads a (small) split into memory as a `Split`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_backprop.data.containers import Preprocessing, Split, StreamedSplit

INTERLEAVE = 4  # shards read at a time
WINDOW_ROWS = 1 << 16  # rows shuffled together (~5 MB of 20 float32 features)
_EPOCHS = 1 << 40  # "without end"


def _decoder(split: StreamedSplit, preprocessing: Preprocessing, dtype):
    """record, shard -> (x [r, n] dtype, y): a cache record standardized and encoded."""
    n = split.n_features
    mean = tf.constant(preprocessing.feature_mean, tf.float64)
    std = tf.constant(preprocessing.feature_std, tf.float64)
    task = preprocessing.task
    if task == "regression":
        target_mean = tf.constant(preprocessing.target_mean, tf.float64)
        target_std = tf.constant(preprocessing.target_std, tf.float64)
    else:  # per shard, code -> class id; padded with -1
        width = max(1, max(len(ids) for ids in split.class_ids))
        table = tf.constant([ids + [-1] * (width - len(ids)) for ids in split.class_ids], tf.int32)

    def decode(record, shard):
        rows = tf.reshape(tf.io.decode_raw(record, tf.float64), [-1, n + 2])  # [r, n + 2]
        x = tf.cast((rows[:, :n] - mean) / std, dtype)
        if task == "regression":
            return x, tf.cast((rows[:, n : n + 1] - target_mean) / target_std, dtype)  # [r, 1]
        codes = tf.cast(rows[:, n + 1], tf.int32)
        ids = tf.gather(table[shard], codes)  # [r]
        return x, (tf.cast(ids[:, None], dtype) if task == "binary" else ids)

    return decode


def _records(split: StreamedSplit, shards: list[int], decode, order=None) -> tf.data.Dataset:
    """Decoded records of `shards` (permuted by `order` if given), INTERLEAVE shards at a time."""
    files = tf.constant([split.files[s] for s in shards])
    ids = tf.constant(shards, tf.int32)
    if order is not None:
        files, ids = tf.gather(files, order), tf.gather(ids, order)
    return tf.data.Dataset.from_tensor_slices((files, ids)).interleave(
        lambda f, s: tf.data.TFRecordDataset(f).map(lambda r: decode(r, s)),
        cycle_length=min(INTERLEAVE, len(shards)),
        block_length=1,
        num_parallel_calls=min(INTERLEAVE, len(shards)),
        deterministic=True,
    )


def training_steps(
    split: StreamedSplit,
    preprocessing: Preprocessing,
    *,
    shards: list[int],
    seed: int,
    shuffle: bool,
    batch: int,
    accum: int,
    steps_per_epoch: int,
    dtype,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """(x [accum, batch, n], y [accum, batch, ...]) per step from `shards` of the split, forever;
    `prefetch` steps prepared ahead (an iterator's checkpoint holds them)."""
    decode = _decoder(split, preprocessing, dtype)
    shards = [s for s in shards if split.shard_rows[s]]

    def epoch(e):
        order = None
        if shuffle:
            key = tf.stack([tf.constant(seed, tf.int64), e])
            order = tf.random.experimental.stateless_shuffle(tf.range(len(shards)), key)
        rows = _records(split, shards, decode, order)
        if shuffle:
            rows = rows.rebatch(WINDOW_ROWS).enumerate().map(lambda i, w: _permuted(w, seed, e, i))
        steps = rows.rebatch(batch, drop_remainder=True).batch(accum, drop_remainder=True)
        return steps.take(steps_per_epoch)

    dataset = tf.data.Dataset.range(_EPOCHS).flat_map(epoch).prefetch(prefetch)
    return dataset.with_options(_options())


def _permuted(window, seed: int, epoch, index):
    """The window's rows (x, y) in an order keyed by (seed, epoch, window index)."""
    x, y = window
    key = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(seed, tf.int64), epoch]), index)
    order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(x)[0]), key)
    return tf.gather(x, order), tf.gather(y, order)


def batches(split: StreamedSplit, preprocessing: Preprocessing, batch: int, dtype) -> tf.data.Dataset:
    """The split's rows (x, y) in shard and file order, `batch` at a time (the last one smaller)."""
    decode = _decoder(split, preprocessing, dtype)
    shards = [s for s in range(len(split.files)) if split.shard_rows[s]]
    files = tf.data.Dataset.from_tensor_slices(
        ([split.files[s] for s in shards], tf.constant(shards, tf.int32))
    )
    rows = files.flat_map(lambda f, s: tf.data.TFRecordDataset(f).map(lambda r: decode(r, s)))
    return rows.rebatch(batch).prefetch(2).with_options(_options())


def read_split(split: StreamedSplit, preprocessing: Preprocessing, limit: int | None = None) -> Split:
    """The split's first `limit` rows (default all) in memory, as the in-memory loader lays a
    Split out: x float64, targets float64 [m, k] / [m, 1] or class ids int32 [m]."""
    xs, ys, count = [], [], 0
    for x, y in batches(split, preprocessing, 1 << 16, tf.float64):
        xs.append(x.numpy())
        ys.append(y.numpy())
        count += len(xs[-1])
        if limit is not None and count >= limit:
            break
    n = split.n_features
    x = np.concatenate(xs) if xs else np.zeros((0, n))
    y = np.concatenate(ys) if ys else np.zeros((0, 1))
    if preprocessing.task == "multiclass":
        y = y.astype(np.int32)
    return Split(x[:limit], y[:limit])


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # Each worker reads the shards it is given; tf.distribute must not shard them again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options
