"""Tests for tf_backprop.data.synthetic: shapes, dtypes, tasks and noise of the synthetic sources."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import data


class SyntheticTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.named_parameters(
        ("regression", "regression", "regression", (1,), np.float64, 1),
        ("xor", "xor", "binary", (1,), np.float64, 1),
        ("spirals", "spirals", "binary", (1,), np.float64, 1),
        ("spirals_2", "spirals:2", "binary", (1,), np.float64, 1),
        ("spirals_4", "spirals:4", "multiclass", (), np.int32, 4),
        ("random", "random", "regression", (1,), np.float64, 1),
    )
    def test_shapes_dtypes_and_task(self, source, task, y_tail, y_dtype, n_outputs):
        ds = data.load(source, n_samples=200)
        self.assertEqual((ds.task, ds.n_features, ds.n_outputs, ds.source), (task, 2, n_outputs, source))
        self.assertEqual(ds.preprocessing.feature_names, ["x1", "x2"])
        for split in (ds.train, ds.validation, ds.test):
            self.assertEqual((split.x.shape[1:], split.x.dtype), ((2,), np.float64))
            self.assertEqual((split.y.shape, split.y.dtype), ((len(split), *y_tail), y_dtype))
        self.assertEqual(len(ds.train) + len(ds.validation) + len(ds.test), 200)

    def test_xor_labels_follow_the_quadrant_without_noise(self):
        ds = data.load("xor", noise=0.0, standardize=False, val_split=0.0, test_split=0.0)
        x, y = ds.train.x, ds.train.y[:, 0]
        self.assertAllEqual(y, (x[:, 0] * x[:, 1] > 0).astype(np.float64))
        self.assertEqual(ds.preprocessing.class_names, ["0", "1"])

    def test_spirals_classes_are_balanced(self):
        ds = data.load("spirals:3", n_samples=300, val_split=0.0, test_split=0.0)
        self.assertAllEqual(np.bincount(ds.train.y), [100, 100, 100])
        self.assertEqual(ds.preprocessing.class_names, ["0", "1", "2"])

    def test_regression_noise_has_the_requested_std(self):
        kwargs = {"n_samples": 4000, "standardize": False, "val_split": 0.0, "test_split": 0.0}
        clean, noisy = (
            data.load("regression", noise=0.0, **kwargs),
            data.load("regression", noise=0.5, **kwargs),
        )
        self.assertAllEqual(clean.train.x, noisy.train.x)
        self.assertLess(np.abs(clean.train.y).max(), 3.0)  # O(1) targets
        self.assertNear(np.std(noisy.train.y - clean.train.y), 0.5, 0.05)

    def test_random_is_uniform_in_unit_interval(self):
        ds = data.load("random", standardize=False, val_split=0.0, test_split=0.0)
        for values in (ds.train.x, ds.train.y):
            self.assertTrue(np.all((values >= 0.0) & (values < 1.0)))


if __name__ == "__main__":
    tf.test.main()
