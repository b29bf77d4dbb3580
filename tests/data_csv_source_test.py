"""Tests for tf_backprop.data.csv_source: errors naming file, line and column; targets encoded per task."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from csv_files import CsvTestCase

from tf_backprop import data

# Rows of a small valid CSV body (x1, x2, y), appended to the error cases that need data.
_HEADER = "x1,x2,y\n"


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
        ("semicolons", "x1;x2;y\n1;2;3\n", {}, ["data.csv:1:", "columns: x1;x2;y (", 'by ";": only commas']),
        ("tabs", "x1\tx2\ty\n1\t2\t3\n", {}, ["data.csv:1:", "separate fields by tabs: only commas"]),
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


if __name__ == "__main__":
    tf.test.main()
