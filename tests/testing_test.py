"""tf_backprop.testing.GradientCheckMixin: gradient assertions whose failure message is the report."""

import re

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

    def test_a_custom_msg_comes_first(self):
        with self.assertRaises(self.failureException) as caught:
            self.assertGradientsCorrect(square_with(wrong_at_one_element), [A], msg="my square")
        self.assertTrue(
            str(caught.exception).startswith("my square: gradients disagree with finite differences\n"),
            str(caught.exception)[:200],
        )

    def test_second_order_failure_names_the_element(self):
        point = np.array([0.3, -1.2, 2.0])  # docs/gradcheck.md's example
        sum_of_cubes = lambda t: tf.reduce_sum(cube_with(cube_stop_gradient)(t))  # noqa: E731
        self.assertGradientsCorrect(sum_of_cubes, [point], check_forward=True)
        with self.assertRaises(self.failureException) as caught:
            self.assertGradientsCorrect(sum_of_cubes, [point], order=2, check_forward=True)
        message = str(caught.exception)
        # Every diagonal element is off by the same factor (rel error 0.5): which is worst is
        # round-off's choice. The line names a diagonal element and both values, numeric = 6x.
        worst = re.search(
            r"worst at in\[(\d)\] grad inputs\[0\]\[\1\]: analytic (\S+), numeric (\S+),", message
        )
        self.assertIsNotNone(worst, message)
        j, analytic, numeric = int(worst[1]), float(worst[2]), float(worst[3])
        self.assertAllClose([analytic, numeric], [3 * point[j], 6 * point[j]], rtol=1e-6)

    def test_model_assertion(self):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh")])
        self.assertModelGradientsCorrect(model, A[:, :3], A[:, :2], keras.losses.MeanSquaredError())


if __name__ == "__main__":
    tf.test.main()
