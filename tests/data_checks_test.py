"""data.checks: one warning line per finding a data scientist would want, never an error."""

import os

import numpy as np
from absl import logging
from absl.testing import parameterized
from csv_files import CsvTestCase

from tf_backprop import data, training
from tf_backprop.data import checks

_ALL_TRAIN = {"val_split": 0.0, "test_split": 0.0}


class DataWarningsTest(CsvTestCase, parameterized.TestCase):
    def load_warnings(self, text: str, **kwargs) -> list[str]:
        """The absl warnings logged while loading a CSV of `text` (target column y)."""
        path = self.write_csv(text)
        return self.warnings_of(lambda: data.load(f"csv:{path}", target="y", **kwargs))

    def test_clean_data_warns_nothing(self):
        rows = "".join(f"{i},{(i * 7) % 5},{i % 3}\n" for i in range(60))
        self.assertEqual(self.load_warnings("x1,x2,y\n" + rows), [])

    def test_many_classes_for_few_rows(self):
        # 600 rows with 500 distinct labels (the case): both class warnings.
        labels = [f"c{i % 500}" for i in range(600)]
        rows = "".join(f"{i},{i % 7},{label}\n" for i, label in enumerate(labels))
        messages = self.load_warnings("x1,x2,y\n" + rows)
        self.assertLen(messages, 2)
        rare, many = messages
        self.assertRegex(rare, r"data\.csv: \d+ of 500 classes have fewer than two training rows \(")
        self.assertRegex(many, r'data\.csv: 500 classes in 600 rows .*"y" really a class label')
        for message in messages:
            self.assertNotIn("\n", message)

    def test_a_class_with_one_training_row(self):
        rows = "".join(f"{i},{i % 7},{'a' if i % 2 else 'b'}\n" for i in range(59)) + "59,1,lonely\n"
        (message,) = self.load_warnings("x1,x2,y\n" + rows, val_split=0.0, test_split=0.0)
        self.assertRegex(message, r'1 of 3 classes have fewer than two training rows \("lonely"\)')

    def test_constant_target_and_constant_feature(self):
        rows = "".join(f"{i},7,3.5\n" for i in range(40))
        messages = self.load_warnings("x1,x2,y\n" + rows)
        self.assertLen(messages, 2)
        self.assertRegex(messages[0], r'feature\(s\) "x2" constant in the training rows')
        self.assertRegex(messages[1], r'the target "y" is constant in the training rows \(3\.5\)')

    def test_a_feature_beyond_float32_range_is_named(self):
        # Trains (standardized in float64), but the float32 export could not score these rows.
        rows = "x1,x2,y\n" + "".join(f"{i},{i % 5}e37,{i % 3}\n" for i in range(40))
        (message,) = self.load_warnings(rows + "40,-3.5e38,1\n")
        self.assertRegex(message, r'data\.csv: feature\(s\) "x2" hold values beyond float32\'s range')
        self.assertEqual(self.load_warnings(rows), [])
        self.assertEqual(self.load_warnings(rows + f"40,{float(np.finfo(np.float32).max)!r},1\n"), [])

    @parameterized.named_parameters(
        ("constant_columns", "".join(f"{i},7,3.5\n" for i in range(40)), "auto", 2),
        ("rare_and_many_classes", "".join(f"{i},{i % 7},c{i % 50}\n" for i in range(60)), "auto", 2),
        (
            "integer_classes",
            "".join(f"{i},{i % 7},{i % 2}\n" for i in range(40)) + "9,1,7\n",
            "multiclass",
            1,
        ),
        (
            "integer_cells_alike",
            "".join(f"{i},{i % 7},{i % 2}\n" for i in range(40)) + "9,1,7\n9,2,7.0\n",
            "multiclass",
            0,
        ),
        (
            "beyond_float32",
            "".join(f"{i},{i % 5}e37,{i % 3}.5\n" for i in range(40)) + "4,-4e38,1\n",
            "auto",
            1,
        ),
    )
    def test_a_streamed_source_warns_as_in_memory(self, rows: str, task: str, expected: int):
        # Every row trains in both loaders, so they see the same rows and must say the same.
        path = self.write_csv("x1,x2,y\n" + rows)
        streamed = self.warnings_of(lambda: self.load_streamed(path, task))
        self.assertLen(streamed, expected)
        in_memory = lambda: data.load(f"csv:{path}", target="y", task=task, **_ALL_TRAIN)  # noqa: E731
        self.assertEqual(streamed, self.warnings_of(in_memory))

    def test_a_streamed_source_counts_classes_across_shards_and_cells(self):
        # "1" and "1.0" are one class in two shards: 2 training rows, not two classes of 1.
        folder = self.create_tempdir()
        rows = "x1,x2,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(40))
        folder.create_file("part-0.csv", rows + "7,1,3\n")
        second = folder.create_file("part-1.csv", rows + "8,2,3.0\n")
        pattern = os.path.join(folder.full_path, "part-*.csv")
        self.assertEqual(self.warnings_of(lambda: self.load_streamed(pattern, "multiclass")), [])
        second.write_text(rows + "8,2,4.0\n")  # now classes 3 and 4 have a row each
        (message,) = self.warnings_of(lambda: self.load_streamed(pattern, "multiclass"))
        self.assertRegex(message, r'2 of 4 classes have fewer than two training rows \("3", "4"\)')

    def test_a_streamed_source_with_clean_data_warns_nothing(self):
        path = self.write_csv("x1,x2,y\n" + "".join(f"{i},{i % 7},{'ab'[i % 2]}\n" for i in range(40)))
        self.assertEqual(self.warnings_of(lambda: self.load_streamed(path)), [])

    def test_unstandardized_features_beyond_float32_are_refused_for_a_float32_model(self):
        rows = "x1,x2,y\n" + "".join(f"{i},{i % 5}e37,{i % 3}.5\n" for i in range(40)) + "4,-4e38,1\n"
        path = self.write_csv(rows)
        in_memory = lambda: data.load(f"csv:{path}", target="y", standardize=False, **_ALL_TRAIN)  # noqa: E731
        (warning,) = self.warnings_of(in_memory)
        self.assertIn(
            '"x2" hold values beyond float32\'s range (±3.4e38): a float64 model takes them as they are '
            "(not standardized; a float32 one cannot)",
            warning,
        )
        for datasets in (in_memory(), self.load_streamed(path, standardize=False)):
            with self.assertRaisesRegex(
                data.DataError,
                r'data\.csv: feature\(s\) "x2" hold values beyond float32\'s range \(±3\.4e38\), and '
                r"without standardization a float32 model cannot take them; .* \(--dtype=float64\)$",
            ):
                checks.check_features_fit(datasets, "float32", standardize=False)
            checks.check_features_fit(datasets, "float64", standardize=False)  # fits
            checks.check_features_fit(datasets, "float32", standardize=True)  # standardized in float64
        cfg = training.TrainConfig(data=f"csv:{path}", target="y", standardize=False, **_ALL_TRAIN)
        with self.assertRaisesRegex(data.DataError, "a float32 model cannot take them"):
            training.build(cfg)  # before any model is made

    def warnings_of(self, load) -> list[str]:
        """The absl warnings logged while `load()` runs."""
        with self.assertLogs("absl", level="WARNING") as logs:
            logging.warning("(loading)")  # assertLogs needs one record; this one is ours
            load()
        return [record.getMessage() for record in logs.records[1:]]

    def load_streamed(self, path: str, task: str = "auto", standardize: bool = True) -> data.Datasets:
        directory = self.create_tempdir().full_path
        data.scan_shards(f"csv:{path}", target="y", seed=0, directory=directory, **_ALL_TRAIN)
        return data.load_streamed(
            f"csv:{path}",
            target="y",
            task=task,
            loss=None,
            standardize=standardize,
            directory=directory,
            **_ALL_TRAIN,
        )

    def test_synthetic_data_warns_nothing(self):
        with self.assertLogs("absl", level="WARNING") as logs:
            logging.warning("(loading)")
            data.load("spirals:3", n_samples=300)
        self.assertLen(logs.records, 1)

    def test_constant_columns_uses_the_scale_of_the_column(self):
        values = np.array([[1e9, 0.0], [1e9 + 1e-4, 1e-4]])  # rounding noise vs a real spread of 1e-4
        np.testing.assert_array_equal(checks.constant_columns(values), [True, False])
