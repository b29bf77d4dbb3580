"""tf_backprop.testing.GradientCheckMixin: gradient assertions whose failure message is the report."""

import keras
import numpy as np
import tensorflow as tf
from planted_faults import cube_stop_gradient, cube_with, square_with, stable_logsumexp, wrong_at_one_element

from tf_backprop.testing import GradientCheckMixin

A = np.random.default_rng(0).standard_normal((3, 4))


class MixinTest(GradientCheckMixin, tf.test.TestCase):
    def test_passing_assertion_returns_the_report(self):
        report = self.assertGradientsCorrect(stable_logsumexp, [A])
        self.assertTrue(report.passed)

    def test_failure_message_is_the_report(self):
        with self.assertRaises(self.failureException) as caught:
            self.assertGradientsCorrect(square_with(wrong_at_one_element), [A], names=["x"])
        message = str(caught.exception)
        for expected in ["FAIL x analytic ↔ numeric", "in[1, 2] out[1, 2]", "analytic", "numeric"]:
            self.assertIn(expected, message)

    def test_second_order_failure_names_the_element(self):
        point = np.array([0.3, -1.2, 2.0])  # docs/gradcheck.md's example
        sum_of_cubes = lambda t: tf.reduce_sum(cube_with(cube_stop_gradient)(t))  # noqa: E731
        self.assertGradientsCorrect(sum_of_cubes, [point], check_forward=True)
        with self.assertRaises(self.failureException) as caught:
            self.assertGradientsCorrect(sum_of_cubes, [point], order=2, check_forward=True)
        message = str(caught.exception)
        self.assertIn("worst at in[2] grad inputs[0][2]: analytic 6, numeric 12", message)

    def test_model_assertion(self):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh")])
        self.assertModelGradientsCorrect(model, A[:, :3], A[:, :2], keras.losses.MeanSquaredError())


if __name__ == "__main__":
    tf.test.main()
