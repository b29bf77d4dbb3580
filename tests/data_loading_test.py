"""Tests for tf_backprop.data.loading: the argument checks that config shares with load()."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import data

_VALID = {"val_split": 0.1, "test_split": 0.1, "seed": 0, "n_samples": 1000, "noise": 0.05}


class CheckArgumentsTest(parameterized.TestCase, tf.test.TestCase):
    def test_valid_arguments_pass(self):
        data.check_arguments(**_VALID)
        data.check_arguments(
            **{**_VALID, "val_split": 0.0, "test_split": 0.0, "seed": np.int64(3), "noise": 0}
        )

    @parameterized.named_parameters(
        ("val_one", {"val_split": 1.0}, r"^val_split: expected a fraction in \[0, 1\), got 1\.0$"),
        ("test_negative", {"test_split": -0.1}, r"^test_split: expected a fraction in \[0, 1\), got -0\.1$"),
        (
            "sum_one",
            {"val_split": 0.5, "test_split": 0.5},
            r"^val_split \+ test_split: must be < 1 to leave train rows, got 0\.5 \+ 0\.5$",
        ),
        ("seed_negative", {"seed": -1}, r"^seed: expected a non-negative integer, got -1$"),
        ("seed_bool", {"seed": True}, r"^seed: expected a non-negative integer, got True$"),
        ("seed_float", {"seed": 1.0}, r"^seed: expected a non-negative integer, got 1\.0$"),
        ("n_samples_zero", {"n_samples": 0}, r"^n_samples: expected a positive integer, got 0$"),
        ("noise_negative", {"noise": -0.1}, r"^noise: expected a finite number ≥ 0, got -0\.1$"),
        ("noise_nan", {"noise": float("nan")}, r"^noise: expected a finite number ≥ 0, got nan$"),
    )
    def test_bad_argument_is_named(self, change, pattern):
        with self.assertRaisesRegex(ValueError, pattern) as caught:
            data.check_arguments(**{**_VALID, **change})
        self.assertNotIsInstance(caught.exception, data.DataError)

    def test_arguments_are_keyword_only(self):
        with self.assertRaises(TypeError):
            data.check_arguments(0.1, 0.1, 0, 1000, 0.05)


if __name__ == "__main__":
    tf.test.main()
