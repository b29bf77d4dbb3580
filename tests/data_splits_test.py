"""Tests for tf_backprop.data.splits: split sizes, seeds, standardization with train statistics."""

import json

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from csv_files import CsvTestCase

from tf_backprop import data


class StandardizationTest(CsvTestCase):
    def load_pair(self, **kwargs) -> tuple[data.Datasets, data.Datasets]:
        """The same rows and split, in original units and standardized."""
        kwargs = {"n_samples": 500, "val_split": 0.2, "test_split": 0.2, "seed": 3, **kwargs}
        return data.load("regression", standardize=False, **kwargs), data.load("regression", **kwargs)

    def test_statistics_come_from_the_train_rows_only(self):
        raw, std = self.load_pair()
        prep = std.preprocessing
        self.assertAllClose(prep.feature_mean, raw.train.x.mean(axis=0))
        self.assertAllClose(prep.feature_std, raw.train.x.std(axis=0))
        self.assertAllClose(prep.target_mean, raw.train.y.mean(axis=0))
        self.assertAllClose(prep.target_std, raw.train.y.std(axis=0))
        all_x = np.concatenate([raw.train.x, raw.validation.x, raw.test.x])
        self.assertNotAllClose(prep.feature_mean, all_x.mean(axis=0), atol=1e-9)
        self.assertAllClose(std.train.x.mean(axis=0), [0.0, 0.0], atol=1e-12)
        self.assertAllClose(std.train.x.std(axis=0), [1.0, 1.0])
        self.assertAllClose(std.train.y.mean(axis=0), [0.0], atol=1e-12)
        self.assertAllClose(std.validation.x, (raw.validation.x - prep.feature_mean) / prep.feature_std)
        self.assertAllClose(std.test.x, prep.transform_features(raw.test.x))

    def test_no_standardization_gives_identity_statistics(self):
        raw, _ = self.load_pair()
        prep = raw.preprocessing
        self.assertEqual((prep.feature_mean, prep.feature_std), ([0.0, 0.0], [1.0, 1.0]))
        self.assertEqual((prep.target_mean, prep.target_std), ([0.0], [1.0]))

    def test_metrics_in_original_units(self):
        raw, std = self.load_pair()
        prep = std.preprocessing
        self.assertAllClose(prep.inverse_transform_targets(std.test.y), raw.test.y)
        self.assertAllClose(prep.transform_targets(raw.test.y), std.test.y)
        # A prediction off by 0.1 standardized units is off by 0.1·std in original units.
        predictions = prep.inverse_transform_targets(std.test.y + 0.1)
        self.assertAllClose(np.mean((predictions - raw.test.y) ** 2), (0.1 * prep.target_std[0]) ** 2)

    def test_classification_targets_are_not_transformed(self):
        ds = data.load("xor", n_samples=100)
        self.assertAllEqual(ds.preprocessing.inverse_transform_targets(ds.train.y), ds.train.y)

    def test_constant_feature_keeps_unit_std(self):
        path = self.write_csv("a,b,y\n" + "".join(f"0.1,{i},{i % 3}\n" for i in range(30)))
        ds = data.load("csv:" + path, target="y")
        self.assertEqual(ds.preprocessing.feature_std[0], 1.0)
        self.assertAllClose(ds.train.x[:, 0], np.zeros(len(ds.train)), atol=1e-12)
        self.assertTrue(np.all(np.isfinite(ds.test.x)))

    def test_transform_features_checks_the_shape(self):
        _, std = self.load_pair()
        with self.assertRaisesRegex(ValueError, r"x: expected shape \[batch, 2\]"):
            std.preprocessing.transform_features(np.zeros((4, 3)))

    def test_preprocessing_dict_round_trip(self):
        _, std = self.load_pair()
        restored = data.Preprocessing.from_dict(json.loads(json.dumps(std.preprocessing.to_dict())))
        self.assertEqual(restored, std.preprocessing)
        with self.assertRaisesRegex(ValueError, "missing"):
            data.Preprocessing.from_dict({"task": "binary"})


class SplitTest(CsvTestCase, parameterized.TestCase):
    def test_split_sizes(self):
        ds = data.load("regression", n_samples=1000, val_split=0.1, test_split=0.2)
        self.assertEqual((len(ds.train), len(ds.validation), len(ds.test)), (700, 100, 200))

    def test_zero_fractions_give_no_split(self):
        ds = data.load("xor", n_samples=50, val_split=0.0, test_split=0.0)
        self.assertLen(ds.train, 50)
        self.assertIsNone(ds.validation)
        self.assertIsNone(ds.test)

    def test_splits_partition_the_rows(self):
        ds = data.load(
            "csv:" + self.write_indexed_csv(range(50)),
            target="target",
            val_split=0.2,
            test_split=0.3,
            standardize=False,
        )
        rows = np.concatenate([ds.train.x[:, 0], ds.validation.x[:, 0], ds.test.x[:, 0]])
        self.assertAllEqual(np.sort(rows), np.arange(50))
        self.assertEqual((len(ds.train), len(ds.validation), len(ds.test)), (25, 10, 15))

    @parameterized.parameters("regression", "spirals:3")
    def test_same_seed_gives_identical_arrays(self, source):
        first, second = data.load(source, seed=7), data.load(source, seed=7)
        for name in ("train", "validation", "test"):
            self.assertAllEqual(getattr(first, name).x, getattr(second, name).x)
            self.assertAllEqual(getattr(first, name).y, getattr(second, name).y)
        self.assertEqual(first.preprocessing, second.preprocessing)
        self.assertNotAllClose(first.train.x, data.load(source, seed=8).train.x)

    @parameterized.named_parameters(
        ("val_one", {"val_split": 1.0}, "val_split"),
        ("val_negative", {"val_split": -0.1}, "val_split"),
        ("test_one", {"test_split": 1.0}, "test_split"),
        ("sum_one", {"val_split": 0.5, "test_split": 0.5}, "val_split \\+ test_split"),
        ("n_samples_zero", {"n_samples": 0}, "n_samples"),
        ("n_samples_negative", {"n_samples": -5}, "n_samples"),
        ("noise_negative", {"noise": -0.1}, "noise"),
        ("seed_negative", {"seed": -1}, "seed"),
        ("target_for_synthetic", {"target": "y"}, "target"),
        ("unknown_task", {"task": "ranking"}, "task: unknown name 'ranking'"),
        ("unknown_loss", {"loss": "hinge"}, "loss: unknown name 'hinge'"),
    )
    def test_bad_arguments_raise_value_error(self, kwargs, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            data.load("regression", **kwargs)

    def test_a_csv_path_without_the_prefix_is_pointed_to_it(self):
        for kwargs in ({}, {"target": "y"}):  # with a target, not "only CSV sources take a target"
            with self.assertRaisesRegex(
                ValueError, r"^source: unknown name 'x\.csv' \(a CSV file\? csv:x\.csv\)"
            ):
                data.load("x.csv", **kwargs)

    @parameterized.parameters("moons", "spirals:1", "spirals:x", "xor:3", "")
    def test_unknown_source_lists_valid_names(self, source):
        with self.assertRaisesRegex(ValueError, "source: .*(regression, xor, spirals|K ≥ 2)"):
            data.load(source)


if __name__ == "__main__":
    tf.test.main()
