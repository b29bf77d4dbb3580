"""Tests for tf_backprop.data.tasks: the task from the task flag, the loss and the target."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import data


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

    def test_numbers_with_a_stray_text_cell_are_not_classified_unasked(self):
        # 199 numbers and one "n/a" trained a 200-class model, with no word about the cell.
        names = [f"{v}.5" for v in range(199)] + ["n/a"]
        stray = data.TargetSummary("labels", names, "d.csv", 'd.csv:58:2 (column "y")', '"n/a"')
        with self.assertRaisesRegex(
            data.DataError,
            r'^d\.csv:58:2 \(column "y"\): got text "n/a" in a target whose other values are numbers '
            r'\(199 of 200 distinct values\); fix the cell, or set task "multiclass" \(--task=multiclass\)',
        ):
            data.infer_task("auto", None, stray)
        self.assertEqual(data.infer_task("multiclass", None, stray), "multiclass")  # asked for
        labels = ["1", "2", "3", "other"]  # few numbers: a label set like any other
        self.assertEqual(data.infer_task("auto", None, data.TargetSummary("labels", labels)), "multiclass")
        many = [str(v) for v in range(30)] + ["low", "high"]  # 2 of 32 texts: more than strays
        self.assertEqual(data.infer_task("auto", None, data.TargetSummary("labels", many)), "multiclass")

    def test_a_csv_target_with_a_stray_text_cell_names_it(self):
        rows = "".join(f"{i % 7},{i * 1.5}\n" for i in range(40)).replace("30.0\n", "n/a\n")
        path = self.create_tempfile("d.csv", "x,y\n" + rows).full_path
        with self.assertRaisesRegex(data.DataError, r'd\.csv:22:2 \(column "y"\): got text "n/a"'):
            data.load(f"csv:{path}", target="y")


class LossTasksTest(tf.test.TestCase):
    def test_each_loss_implies_the_task_it_takes(self):
        self.assertEqual(
            data.LOSS_TASKS,
            {
                "mse": "regression",
                "half_mse": "regression",
                "binary_crossentropy": "binary",
                "categorical_crossentropy": "multiclass",
            },
        )

    def test_each_default_loss_takes_its_task(self):
        self.assertEqual(sorted(data.DEFAULT_LOSSES), sorted(data.TASKS))
        for task, loss in data.DEFAULT_LOSSES.items():
            self.assertEqual(data.LOSS_TASKS[loss], task)


if __name__ == "__main__":
    tf.test.main()
