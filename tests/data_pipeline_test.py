"""Tests for tf_backprop.data.pipeline: the tf.data steps and batches over a streamed split's caches."""

import os

import numpy as np
import tensorflow as tf
from data_scan_test import StreamTestCase

from tf_backprop.data import pipeline

# 4 shards of 150 rows; feature "idx" is the row's number over all shards, so rows can be traced.
_SHARDS, _ROWS = 4, 150


class PipelineTest(StreamTestCase):
    def setUp(self):
        super().setUp()
        texts = {}
        for s in range(_SHARDS):
            rows = range(s * _ROWS, (s + 1) * _ROWS)
            texts[f"part-{s}.csv"] = "idx,other,y\n" + "".join(f"{i},{i % 7},{i * 0.5}\n" for i in rows)
        self.folder = self.write_shards(texts)
        self.datasets = self.streamed(os.path.join(self.folder, "part-*.csv"), standardize=False)
        self.train = self.datasets.train

    def steps(self, shards=None, seed=0, shuffle=True, batch=7, accum=2, count=None, spe=None):
        """Row numbers [count, accum, batch] of the first `count` steps (default: one epoch)."""
        shards = list(range(_SHARDS)) if shards is None else shards
        rows = sum(self.train.shard_rows[s] for s in shards)
        spe = spe or rows // (batch * accum)
        dataset = pipeline.training_steps(
            self.train,
            self.datasets.preprocessing,
            shards=shards,
            seed=seed,
            shuffle=shuffle,
            batch=batch,
            accum=accum,
            steps_per_epoch=spe,
            dtype=tf.float64,
        )
        taken = [x.numpy()[..., 0] for x, _ in dataset.take(count or spe)]
        return np.array(taken).astype(int)

    def train_rows(self, shards=None) -> set[int]:
        split = pipeline.read_split(self.train, self.datasets.preprocessing)
        rows = set(split.x[:, 0].astype(int))
        if shards is not None:
            rows = {r for r in rows if r // _ROWS in shards}
        return rows

    def test_an_epoch_takes_each_training_row_at_most_once_dropping_less_than_a_step(self):
        epoch = self.steps().ravel()
        self.assertLen(set(epoch), len(epoch))
        every = self.train_rows()
        self.assertContainsSubset(set(epoch), every)
        self.assertLess(len(every) - len(epoch), 14)

    def test_the_order_is_a_function_of_the_seed_and_the_epoch(self):
        spe = len(self.train) // 14
        two = self.steps(count=2 * spe)
        np.testing.assert_array_equal(self.steps(count=2 * spe), two)
        first, second = two[:spe].ravel(), two[spe:].ravel()
        self.assertNotEqual(first.tolist(), second.tolist())
        self.assertGreater(len(set(first) & set(second)), 0.9 * len(first))  # the same rows, reordered
        self.assertNotEqual(self.steps(seed=1).ravel().tolist(), first.tolist())

    def test_without_shuffling_the_rows_come_in_shard_and_file_order(self):
        epoch = self.steps(shuffle=False).ravel()
        self.assertEqual(epoch.tolist(), sorted(self.train_rows())[: len(epoch)])

    def test_two_workers_read_disjoint_shards(self):
        mine = {tuple(shards): set(self.steps(shards=shards).ravel()) for shards in ([0, 2], [1, 3])}
        self.assertContainsSubset(mine[(0, 2)], self.train_rows([0, 2]))
        self.assertContainsSubset(mine[(1, 3)], self.train_rows([1, 3]))
        self.assertEmpty(mine[(0, 2)] & mine[(1, 3)])

    def test_a_restored_iterator_continues_at_the_same_row(self):
        spe = 9  # epochs of 9 steps: the 30 steps below cross three epoch ends
        dataset = lambda: pipeline.training_steps(  # noqa: E731
            self.train,
            self.datasets.preprocessing,
            shards=list(range(_SHARDS)),
            seed=4,
            shuffle=True,
            batch=5,
            accum=3,
            steps_per_epoch=spe,
            dtype=tf.float32,
        )
        iterator = iter(dataset())
        for _ in range(13):
            next(iterator)
        saved = tf.train.Checkpoint(iterator=iterator).save(os.path.join(self.create_tempdir(), "input"))
        expected = [next(iterator) for _ in range(30)]
        again = iter(dataset())
        tf.train.Checkpoint(iterator=again).restore(saved).assert_consumed()
        for (x, y), (x2, y2) in zip(expected, (next(again) for _ in range(30))):
            np.testing.assert_array_equal(x2.numpy(), x.numpy())
            np.testing.assert_array_equal(y2.numpy(), y.numpy())

    def test_batches_are_the_split_in_order(self):
        batches = list(pipeline.batches(self.train, self.datasets.preprocessing, 64, tf.float64))
        self.assertEqual([len(x) for x, _ in batches[:-1]], [64] * (len(batches) - 1))
        x = np.concatenate([x.numpy() for x, _ in batches])
        np.testing.assert_array_equal(x, pipeline.read_split(self.train, self.datasets.preprocessing).x)
        np.testing.assert_array_equal(x[:, 0], sorted(self.train_rows()))


if __name__ == "__main__":
    tf.test.main()
