"""Tests for tf_backprop.data: CSV errors, task inference, splits, standardization, synthetic sources."""

import json
import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import data

# Rows of a small valid CSV body (x1, x2, y), appended to the error cases that need data.
_HEADER = "x1,x2,y\n"


class CsvTestCase(tf.test.TestCase):
    """Writes CSV files into a fresh temporary directory per test."""

    def write_csv(self, text: str, name: str = "data.csv", encoding: str = "utf-8") -> str:
        """Writes `text` to `name` in a new temp dir and returns its path."""
        path = os.path.join(self.create_tempdir().full_path, name)
        with open(path, "w", newline="", encoding=encoding) as f:
            f.write(text)
        return path

    def write_indexed_csv(self, labels, name: str = "data.csv") -> str:
        """A CSV whose feature `idx` is the row number, so shuffled rows can be traced back."""
        rows = [f'{i},{0.5 * i},"{label}"' for i, label in enumerate(labels)]
        return self.write_csv("idx,x2,target\n" + "\n".join(rows) + "\n", name)

    def assert_one_line_error(self, error: Exception, *fragments: str):
        """The message is one line and contains every fragment."""
        message = str(error)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)


class CsvErrorTest(CsvTestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("empty_file", "", {}, ["data.csv: empty file"]),
        ("blank_lines_only", "\n\n  \n", {}, ["data.csv: empty file"]),
        ("header_only", _HEADER, {}, ["data.csv:1: no data rows"]),
        ("non_numeric_feature", _HEADER + "1,2,3\n4,abc,6\n", {}, ['data.csv:3:2 (column "x2")', '"abc"']),
        ("empty_feature_cell", _HEADER + "1,,3\n", {}, ['data.csv:2:2 (column "x2")', "empty cell"]),
        ("nan_feature", _HEADER + "1,2,3\nnan,2,3\n", {}, ['data.csv:3:1 (column "x1")', '"nan"']),
        ("inf_feature", _HEADER + "1,-inf,3\n", {}, ['data.csv:2:2 (column "x2")', '"-inf"', "finite"]),
        ("nan_target", _HEADER + "1,2,3\n1,2,NaN\n", {}, ['data.csv:3:3 (column "y")', '"NaN"', "finite"]),
        ("inf_target", _HEADER + "1,2,inf\n", {}, ['data.csv:2:3 (column "y")', '"inf"']),
        ("empty_target_cell", _HEADER + "1,2,3\n1,2,\n", {}, ['data.csv:3:3 (column "y")', "empty cell"]),
        ("ragged_short", _HEADER + "1,2,3\n4,5\n", {}, ["data.csv:3:", "expected 3 fields", "got 2"]),
        ("ragged_long", _HEADER + "1,2,3,4\n", {}, ["data.csv:2:", "expected 3 fields", "got 4"]),
        ("unknown_target", _HEADER + "1,2,3\n", {"target": "label"}, ["data.csv:1:", '"label"', "x1, x2, y"]),
        ("missing_target", _HEADER + "1,2,3\n", {"target": None}, ["data.csv", "'target'", "x1, x2, y"]),
        ("duplicate_header", "x1,x1,y\n1,2,3\n", {}, ['data.csv:1:2 (column "x1")', "duplicate", "column 1"]),
        ("empty_header_name", "x1,,y\n1,2,3\n", {}, ["data.csv:1:2", "empty column name"]),
        ("target_only", "y\n1\n2\n", {}, ["data.csv:1:", "no feature columns"]),
        ("single_class", "x1,y\n1,a\n2,a\n", {}, ['data.csv (column "y")', "at least 2 classes", '"a"']),
        ("crlf_line_endings", "x1,x2,y\r\n1,2,3\r\n4,q,6\r\n", {}, ['data.csv:3:2 (column "x2")', '"q"']),
        ("malformed_quote", 'x1,y\n1,"abc\n', {}, ["data.csv:", "malformed CSV"]),
        # A quoted field spanning lines 2-3: the next record starts on file line 4.
        ("line_after_multiline_field", _HEADER + '1,2,"a\nb"\n3,zz,c\n', {}, ['data.csv:4:2 (column "x2")']),
        (
            "text_target_with_mse",
            "x1,y\n1,2\n2,cat\n",
            {"loss": "mse"},
            ['data.csv:3:2 (column "y")', '"cat"', "mse"],
        ),
        (
            "real_target_with_bce",
            "x1,y\n1,0\n2,0.5\n",
            {"loss": "binary_crossentropy"},
            ['data.csv:3:2 (column "y")', "non-integer", "0.5"],
        ),
        (
            "binary_with_three_classes",
            "x1,y\n1,a\n2,b\n3,c\n",
            {"task": "binary"},
            ['data.csv (column "y")', "2 classes, got 3", '"a", "b", "c"'],
        ),
    )
    def test_error_names_file_line_and_column(self, text, kwargs, fragments):
        path = self.write_csv(text)
        kwargs = {"target": "y", "val_split": 0.0, "test_split": 0.0, **kwargs}
        with self.assertRaises(data.DataError) as caught:
            data.load("csv:" + path, **kwargs)
        self.assert_one_line_error(caught.exception, *fragments)

    def test_missing_file(self):
        path = os.path.join(self.create_tempdir().full_path, "missing.csv")
        with self.assertRaises(data.DataError) as caught:
            data.load("csv:" + path, target="y")
        self.assert_one_line_error(caught.exception, "missing.csv", "cannot read")

    def test_not_utf8_names_the_line(self):
        path = os.path.join(self.create_tempdir().full_path, "latin1.csv")
        with open(path, "wb") as f:
            f.write(b"x1,y\n1,caf\xe9\n")
        with self.assertRaises(data.DataError) as caught:
            data.load("csv:" + path, target="y")
        self.assert_one_line_error(caught.exception, "latin1.csv:2:", "not UTF-8")

    def test_reports_first_bad_cell_in_file_order(self):
        path = self.write_csv(_HEADER + "1,2,3\n1,x,3\ny,2,3\n")
        with self.assertRaises(data.DataError) as caught:
            data.load("csv:" + path, target="y", val_split=0.0, test_split=0.0)
        self.assert_one_line_error(caught.exception, 'data.csv:3:2 (column "x2")')

    def test_too_few_rows_for_the_splits(self):
        path = self.write_csv(_HEADER + "1,2,3\n4,5,6\n7,8,9\n")
        with self.assertRaises(data.DataError) as caught:
            data.load("csv:" + path, target="y", val_split=0.1, test_split=0.1)
        self.assert_one_line_error(caught.exception, "data.csv", "too few rows (3)", "test_split")

    def test_data_error_is_a_value_error_on_one_line(self):
        self.assertIsInstance(data.DataError("a"), ValueError)
        self.assertEqual(str(data.DataError("a\nb")), "a b")


class CsvLoadTest(CsvTestCase):
    def load_all_train(self, path, **kwargs) -> data.Datasets:
        """Loads every row into the train split, in original units."""
        return data.load("csv:" + path, val_split=0.0, test_split=0.0, standardize=False, **kwargs)

    def test_text_classes_are_sorted_and_ids_index_them(self):
        labels = ["dog", "cat", "bird", "cat", "dog", "dog"]
        ds = self.load_all_train(self.write_indexed_csv(labels), target="target")
        self.assertEqual(ds.task, "multiclass")
        self.assertEqual(ds.preprocessing.class_names, ["bird", "cat", "dog"])
        self.assertEqual(ds.preprocessing.feature_names, ["idx", "x2"])
        self.assertEqual(ds.preprocessing.target_name, "target")
        self.assertEqual((ds.n_features, ds.n_outputs), (2, 3))
        self.assertEqual(ds.train.y.dtype, np.int32)
        self.assertEqual(ds.train.y.shape, (6,))
        rows = ds.train.x[:, 0].astype(int)  # original row of each shuffled example
        expected = [ds.preprocessing.class_names.index(labels[r]) for r in rows]
        self.assertAllEqual(ds.train.y, expected)
        self.assertIsNone(ds.preprocessing.target_mean)

    def test_two_text_classes_are_binary_and_quoted_fields_parse(self):
        labels = ["dog", "big, cat", "dog", "big, cat"]
        ds = self.load_all_train(self.write_indexed_csv(labels), target="target")
        self.assertEqual(ds.task, "binary")
        self.assertEqual(ds.preprocessing.class_names, ["big, cat", "dog"])
        self.assertEqual((ds.train.y.shape, ds.train.y.dtype, ds.n_outputs), ((4, 1), np.float64, 1))
        rows = ds.train.x[:, 0].astype(int)
        self.assertAllEqual(ds.train.y[:, 0], [labels[r] == "dog" for r in rows])

    def test_two_text_classes_as_multiclass(self):
        ds = self.load_all_train(self.write_indexed_csv(["a", "b", "a"]), target="target", task="multiclass")
        self.assertEqual((ds.task, ds.n_outputs, ds.train.y.dtype), ("multiclass", 2, np.int32))

    def test_integer_target_with_categorical_loss_becomes_classes(self):
        labels = [2, 10, 1, 10, 2]
        ds = self.load_all_train(
            self.write_indexed_csv(labels), target="target", loss="categorical_crossentropy"
        )
        self.assertEqual(ds.task, "multiclass")
        # Whole numbers sort numerically, not as strings ("10" < "2").
        self.assertEqual(ds.preprocessing.class_names, ["1", "2", "10"])
        rows = ds.train.x[:, 0].astype(int)
        self.assertAllEqual(ds.train.y, [["1", "2", "10"].index(str(labels[r])) for r in rows])

    def test_integer_target_with_binary_loss(self):
        labels = [7, 3, 3, 7.0]
        ds = self.load_all_train(self.write_indexed_csv(labels), target="target", loss="binary_crossentropy")
        self.assertEqual((ds.task, ds.preprocessing.class_names), ("binary", ["3", "7"]))
        rows = ds.train.x[:, 0].astype(int)
        self.assertAllEqual(ds.train.y[:, 0], [labels[r] == 7 for r in rows])

    def test_integer_target_without_task_is_regression(self):
        ds = self.load_all_train(self.write_indexed_csv([1, 2, 3]), target="target")
        self.assertEqual((ds.task, ds.n_outputs, ds.train.y.shape), ("regression", 1, (3, 1)))
        self.assertIsNone(ds.preprocessing.class_names)

    def test_numeric_regression_target_round_trips(self):
        values = [1.5, -2.25, 3.0, 10.0, 0.125]
        path = self.write_indexed_csv(values)
        ds = data.load("csv:" + path, target="target", val_split=0.0, test_split=0.0)
        self.assertEqual(ds.task, "regression")
        self.assertEqual(ds.source, "csv:" + os.path.abspath(path))
        raw_x = ds.train.x * ds.preprocessing.feature_std + ds.preprocessing.feature_mean
        rows = np.round(raw_x[:, 0]).astype(int)
        self.assertAllClose(
            ds.preprocessing.inverse_transform_targets(ds.train.y)[:, 0], np.take(values, rows)
        )

    def test_whitespace_and_byte_order_mark_are_ignored(self):
        path = self.write_csv(" x1 , y \n 1 , a \n2, b\n", encoding="utf-8-sig")
        ds = self.load_all_train(path, target="y")
        self.assertEqual(ds.preprocessing.feature_names, ["x1"])
        self.assertEqual(ds.preprocessing.class_names, ["a", "b"])

    def test_blank_lines_are_skipped(self):
        ds = self.load_all_train(self.write_csv("x1,y\n\n1,2\n\n3,4\n\n"), target="y")
        self.assertLen(ds.train, 2)


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

    @parameterized.parameters("moons", "spirals:1", "spirals:x", "xor:3", "")
    def test_unknown_source_lists_valid_names(self, source):
        with self.assertRaisesRegex(ValueError, "source: .*(regression, xor, spirals|K >= 2)"):
            data.load(source)


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


class TaskInferenceTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.parameters(
        ("auto", None, "auto"),
        ("auto", "mse", "regression"),
        ("auto", "half_mse", "regression"),
        ("auto", "binary_crossentropy", "binary"),
        ("auto", "categorical_crossentropy", "multiclass"),
        ("binary", None, "binary"),
        ("regression", "half_mse", "regression"),
        ("multiclass", "categorical_crossentropy", "multiclass"),
    )
    def test_task_from_flags(self, task, loss, expected):
        self.assertEqual(data.infer_task(task, loss), expected)

    @parameterized.parameters(
        ("regression", "binary_crossentropy"),
        ("binary", "categorical_crossentropy"),
        ("multiclass", "mse"),
    )
    def test_task_and_loss_conflict(self, task, loss):
        with self.assertRaises(data.DataError) as caught:
            data.infer_task(task, loss)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertIn(f'task "{task}"', message)
        self.assertIn(f'loss "{loss}"', message)

    def test_unknown_names_are_argument_errors(self):
        for task, loss in (("ranking", None), ("auto", "hinge")):
            with self.assertRaises(ValueError) as caught:
                data.infer_task(task, loss)
            self.assertNotIsInstance(caught.exception, data.DataError)

    def test_default_loss(self):
        self.assertEqual(data.default_loss("regression"), "mse")
        self.assertEqual(data.default_loss("binary"), "binary_crossentropy")
        self.assertEqual(data.default_loss("multiclass"), "categorical_crossentropy")
        with self.assertRaisesRegex(ValueError, "task: unknown name"):
            data.default_loss("auto")

    @parameterized.named_parameters(
        ("regression_with_bce", "regression", {"loss": "binary_crossentropy"}, "non-integer"),
        ("xor_with_mse", "xor", {"loss": "mse"}, "numeric target"),
        ("three_spirals_as_binary", "spirals:3", {"task": "binary"}, "2 classes, got 3"),
        ("random_as_multiclass", "random", {"task": "multiclass"}, "class labels"),
    )
    def test_synthetic_conflicts(self, source, kwargs, fragment):
        with self.assertRaises(data.DataError) as caught:
            data.load(source, n_samples=50, **kwargs)
        self.assertIn(fragment, str(caught.exception))
        self.assertIn(source, str(caught.exception))

    def test_task_loss_conflict_fails_before_reading_the_file(self):
        with self.assertRaisesRegex(data.DataError, "conflicts with loss"):
            data.load("csv:/no/such/file.csv", target="y", task="regression", loss="binary_crossentropy")

    def test_csv_source_needs_a_path(self):
        with self.assertRaisesRegex(ValueError, "needs a file path"):
            data.load("csv:", target="y")

    def test_binary_data_with_categorical_loss_has_two_outputs(self):
        ds = data.load("spirals", n_samples=100, loss="categorical_crossentropy")
        self.assertEqual(
            (ds.task, ds.n_outputs, ds.train.y.dtype, ds.train.y.ndim), ("multiclass", 2, np.int32, 1)
        )

    def test_target_summary_drives_the_task(self):
        integer = data.TargetSummary("integer", ["0", "1", "2"])
        self.assertEqual(data.infer_task("auto", None, integer), "regression")
        self.assertEqual(data.infer_task("auto", "categorical_crossentropy", integer), "multiclass")
        self.assertEqual(data.infer_task("auto", None, data.TargetSummary("labels", ["a", "b"])), "binary")
        self.assertEqual(
            data.infer_task("auto", None, data.TargetSummary("labels", ["a", "b", "c"])), "multiclass"
        )


if __name__ == "__main__":
    tf.test.main()
