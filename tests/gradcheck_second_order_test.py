"""Second order and forward mode for any function, Keras model and the tf.test assertion.

A tf.custom_gradient whose first derivative is right and second is wrong (a NumPy op, a
tf.stop_gradient, a wrong formula in the gradient function) passes at order 1 and fails at
order 2, naming the element; a function right in reverse mode and wrong in forward mode fails
the forward check; correct functions pass in float64 at tight tolerances.
"""

import json

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from planted_faults import (
    cube_numpy_constant,
    cube_numpy_value,
    cube_stop_gradient,
    cube_with,
    cube_wrong_second_formula,
    identity_through_adjust_hue,
    sin_through_numpy,
    square_forward_wrong,
    stable_logsumexp,
)

from tf_backprop import gradcheck
from tf_backprop.testing import GradientCheckMixin

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((4, 2))
X = np.array([0.3, -1.2, 2.0, 0.7])
TIGHT = {"rtol": 1e-7}  # float64 differences of exact gradients agree to ~1e-9 here


def _layer_norm_loss(x, gamma):
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)  # not tf.nn.moments: below
    return tf.reduce_sum(tf.square((x - mean) * tf.math.rsqrt(variance + 1e-5) * gamma))


def _moments_variance(x):
    return tf.reduce_sum(tf.nn.moments(x, axes=[-1])[1])


class CorrectFunctionsPassTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("logsumexp_custom_gradient", stable_logsumexp, [A]),
        ("tanh_matmul_two_inputs", lambda x, w: tf.reduce_sum(tf.tanh(x @ w)), [A, B]),
        (
            "softmax_cross_entropy",
            lambda z: tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(tf.nn.softmax(A), z)),
            [A],
        ),
        ("layer_norm", _layer_norm_loss, [A, RNG.standard_normal(4)]),
        ("right_cube", lambda x: tf.reduce_sum(cube_with(lambda x, dy: 3.0 * x * x * dy)(x)), [X]),
    )
    def test_order_2_with_forward_mode(self, fn, inputs):
        for mode in ("full", "fast"):
            report = gradcheck.gradcheck(fn, inputs, order=2, check_forward=True, mode=mode, **TIGHT)
            self.assertEqual(report.verdict, "PASS", report.to_text())
            self.assertEqual(report.dtype, "float64")
            labels = [c.label for c in report.entries[0].comparisons]
            self.assertEqual(labels, ["analytic ↔ numeric", "forward ↔ numeric", "forward ↔ analytic"])

    def test_full_mode_compares_the_whole_hessian(self):
        report = gradcheck.gradcheck(lambda x, w: tf.reduce_sum(tf.tanh(x @ w)), [A, B], order=2)
        self.assertEqual([c.checked for _, c in report.comparisons], [20 * 12, 20 * 8])  # [n, n_i]
        self.assertIn("second order", report.title)

    def test_non_scalar_output_full_mode_checks_each_output_hessian(self):
        report = gradcheck.gradcheck(stable_logsumexp, A, order=2)  # 3 outputs: 3 Hessians [12, 12]
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.entries[0].comparisons[0].checked, 3 * 12 * 12)
        self.assertIn(" out[", str(report.entries[0].comparisons[0].worst.location))

    def test_non_scalar_output_fast_mode_is_a_vjp_of_a_vjp(self):
        report = gradcheck.gradcheck(stable_logsumexp, RNG.standard_normal((40, 50)), order=2, mode="fast")
        self.assertTrue(report.passed, report.to_text())
        self.assertIn("random unit output cotangent", report.notes[0])

    def test_linear_function_has_a_zero_hessian(self):
        report = gradcheck.gradcheck(lambda x: tf.reduce_sum(3.0 * x), X, order=2, check_forward=True)
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.entries[0].norms["analytic"], 0.0)

    def test_forward_mode_at_order_1(self):
        report = gradcheck.gradcheck(tf.matmul, [A, B], check_forward=True, **TIGHT)
        self.assertTrue(report.passed, report.to_text())
        self.assertLen(report.comparisons, 6)

    def test_relu_kinks_at_order_2_are_jumps_of_the_gradient(self):
        report = gradcheck.gradcheck(
            lambda x: tf.reduce_sum(tf.nn.relu(x) ** 2), np.array([0.0, 1.5, -2.0]), order=2
        )
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.kinks, 1)  # at 0, the gradient 2 relu(x) jumps in slope from 0 to 2

    def test_plain_relu_kink_at_order_2_is_a_jump_of_the_gradient_itself(self):
        # ∇ Σ relu(x) is the step 0 → 1; the second derivative is 0 on both sides, so only the
        # jump side's difference (1/ε there) shows the jump, at the point or inside the step.
        for kinked in (0.0, 3e-7):
            x = np.array([kinked, 1.5, -2.0])
            report = gradcheck.gradcheck(lambda t: tf.reduce_sum(tf.nn.relu(t)), x, order=2)
            self.assertEqual(report.verdict, "PASS", report.to_text())
            self.assertEqual(report.kinks, 1)

    def test_a_gradient_that_jumps_on_both_sides_of_the_point_is_a_kink(self):
        # At a tie or at 0 the gradient's value is neither side's (sign(0) = 0 between −1 and 1):
        # both sides' differences hold a jump of 1/ε; the second derivatives beside it are right.
        cases = (
            (lambda t: tf.reduce_sum(tf.abs(t)), [0.0, 0.7], 1),
            (lambda t: tf.reduce_sum(tf.nn.relu(t) + tf.nn.relu(-t)), [0.0], 1),
            (lambda t: tf.reduce_max(t), [0.5, 0.5, -1.0], 4),
            (lambda t: tf.reduce_sum(tf.abs(t) * t * t + tf.abs(t)), [0.0, 0.4], 1),  # curved beside it
        )
        for fn, x, kinks in cases:
            report = gradcheck.gradcheck(fn, np.array(x), order=2)
            self.assertEqual(report.verdict, "PASS", report.to_text())
            self.assertEqual(report.kinks, kinks)
            # fast mode: random directions cross the same jumps, and sampled elements hit them
            report = gradcheck.gradcheck(fn, np.array(x), order=2, mode="fast")
            self.assertEqual(report.verdict, "PASS", report.to_text())
            self.assertGreater(report.kinks, 0)

    def test_a_wrong_second_derivative_at_a_two_sided_jump_still_fails(self):
        @tf.custom_gradient
        def two_t(t):  # the value 2t, its derivative claimed 7
            return 2.0 * t, lambda dy: 7.0 * dy

        @tf.custom_gradient
        def square(t):  # t², its gradient 2t right, the gradient's derivative wrong
            return t * t, lambda dy: dy * two_t(t)

        fn = lambda t: tf.reduce_sum(tf.abs(t) + square(t))  # noqa: E731
        for x in ([0.0], [4e-7]):
            self.assertEqual(gradcheck.gradcheck(fn, np.array(x)).verdict, "PASS")
            report = gradcheck.gradcheck(fn, np.array(x), order=2)
            self.assertEqual(report.verdict, "FAIL", report.to_text())
            self.assertEqual((report.failures, report.kinks), (1, 0))
            report = gradcheck.gradcheck(fn, np.array(x), order=2, mode="fast")
            self.assertEqual(report.verdict, "FAIL", report.to_text())
            self.assertEqual(report.kinks, 0)

    def test_an_op_without_a_second_order_gradient_is_a_fail_naming_it(self):
        fn = lambda t: tf.reduce_sum(tf.nn.softsign(t))  # noqa: E731 - TF registers no SoftsignGrad gradient
        x = np.array([0.3, -1.2, 2.0])
        self.assertEqual(gradcheck.gradcheck(fn, x).verdict, "PASS")
        for mode in ("full", "fast"):
            report = gradcheck.gradcheck(fn, x, order=2, mode=mode)
            self.assertEqual(report.verdict, "FAIL", report.to_text())
            self.assertIn("analytic values could not be computed", report.to_text())
            self.assertIn("gradient registry has no entry for: SoftsignGrad", report.to_text())

    def test_a_wrong_second_derivative_whose_error_flips_sign_is_no_kink(self):
        @tf.custom_gradient
        def hundred_t(t):  # the value 100t, its derivative claimed 100 ± 1e6 (sign of t)
            sign = tf.where(t >= 0, tf.ones_like(t), -tf.ones_like(t))
            return 100.0 * t, lambda dy: dy * (100.0 + 1e6 * sign)

        @tf.custom_gradient
        def fifty_t_squared(t):
            return 50.0 * t * t, lambda dy: dy * hundred_t(t)

        for point in (0.0, 4e-7):
            fn = lambda t: tf.reduce_sum(fifty_t_squared(t))  # noqa: E731
            report = gradcheck.gradcheck(fn, np.array([point]), order=2)
            self.assertEqual(report.verdict, "FAIL", report.to_text())
            self.assertEqual(report.kinks, 0)

    def test_a_wrong_second_derivative_at_a_jump_of_the_gradient_still_fails(self):
        @tf.custom_gradient
        def doubled_slope(t):  # the value t, the derivative claimed 2
            return tf.identity(t), lambda dy: 2.0 * dy

        @tf.custom_gradient
        def half_square(t):  # t²/2, its gradient t right, the gradient's derivative 2 wrong
            return t * t / 2, lambda dy: dy * doubled_slope(t)

        x = np.array([0.0, 1.5, -2.0])
        fn = lambda t: tf.reduce_sum(tf.nn.relu(t) + half_square(t))  # noqa: E731
        self.assertEqual(gradcheck.gradcheck(fn, x).verdict, "PASS")
        report = gradcheck.gradcheck(fn, x, order=2)
        self.assertEqual(report.verdict, "FAIL", report.to_text())
        self.assertEqual((report.failures, report.kinks), (3, 0))  # the kinked element included


class DomainEdgeTest(tf.test.TestCase):
    """sum(log(t)) with t[0] = 1e-8 < eps: its gradient 1/t is finite at t − ε < 0, where log
    is not, and those differences FAILed a right Hessian.  Undefined there, as at order 1."""

    T = np.array([1e-8, 0.5, 2.0])

    def test_outside_the_domain_is_inconclusive_and_a_smaller_eps_checks_it(self):
        for mode in ("full", "fast"):
            with self.subTest(mode=mode):
                report = gradcheck.gradcheck(
                    lambda t: tf.reduce_sum(tf.math.log(t)), self.T, order=2, mode=mode
                )
                self.assertEqual(report.verdict, "INCONCLUSIVE", report.to_text())
                self.assertIn("where f is not finite at x ± ε", report.to_text())
                small = gradcheck.gradcheck(
                    lambda t: tf.reduce_sum(tf.math.log(t)), self.T, order=2, mode=mode, eps=1e-12
                )
                self.assertEqual(small.verdict, "PASS", small.to_text())

    def test_a_wrong_second_derivative_there_still_fails(self):
        @tf.custom_gradient
        def log(t):
            return tf.math.log(t), lambda dy: dy * tf.stop_gradient(1.0 / t)  # no second derivative

        for eps in (None, 1e-12):
            report = gradcheck.gradcheck(lambda t: tf.reduce_sum(log(t)), self.T, order=2, eps=eps)
            self.assertEqual(report.verdict, "FAIL", report.to_text())


class SecondOrderFaultsTest(tf.test.TestCase, parameterized.TestCase):
    """First derivative right, second wrong: passes at order 1, fails at order 2 naming the element."""

    @parameterized.named_parameters(
        ("numpy_op_in_the_gradient", cube_numpy_constant),
        ("numpy_value_in_the_gradient", cube_numpy_value),  # eager only: the compiled ways fall back
        ("stop_gradient_in_the_gradient", cube_stop_gradient),
        ("wrong_second_derivative_formula", cube_wrong_second_formula),
    )
    def test_fails_at_order_2_only(self, backward):
        fn = lambda x: tf.reduce_sum(cube_with(backward)(x))  # noqa: E731 - Σ x³: ∇ = 3x², H = diag(6x)
        for mode in ("fast", "full"):
            first = gradcheck.gradcheck(fn, X, mode=mode, **TIGHT)
            self.assertEqual(first.verdict, "PASS", first.to_text())
            second = gradcheck.gradcheck(fn, X, order=2, mode=mode)
            self.assertEqual(second.verdict, "FAIL", second.to_text())
        comparison = second.entries[0].comparisons[0]  # full mode: the whole Hessian
        worst = comparison.worst
        j = worst.location.index[0]
        self.assertEqual(worst.location.gradient, ("x", (j,)))  # a diagonal element ∂²/∂x_j²
        self.assertAllClose(worst.b, 6.0 * X[j], rtol=1e-6)  # numeric: the true second derivative
        self.assertNotAllClose(worst.a, worst.b)
        self.assertEqual(comparison.failures, len(X))

    def test_failure_line_names_the_element_and_both_values(self):
        report = gradcheck.gradcheck(lambda x: tf.reduce_sum(cube_with(cube_stop_gradient)(x)), X, order=2)
        line = next(line for line in report.to_text().splitlines() if line.startswith("FAIL x"))
        self.assertRegex(line, r"worst at in\[\d\] grad x\[\d\]: analytic [-\d.]+, numeric [-\d.]+")
        data = json.loads(report.to_json())
        self.assertEqual(data["entries"][0]["comparisons"][0]["worst"]["gradient"]["of"], "x")

    def test_forward_over_reverse_disagrees_with_a_wrong_custom_second_derivative(self):
        # Under tf.function, forward mode differentiates the custom gradient's forward ops (3x²
        # -> 6x), reverse mode its written derivative (3x): forward ↔ analytic names it.
        fn = lambda x: tf.reduce_sum(cube_with(cube_wrong_second_formula)(x))  # noqa: E731
        report = gradcheck.gradcheck(fn, X, order=2, check_forward=True)
        verdicts = {c.label: c.verdict for _, c in report.comparisons}
        self.assertEqual(
            verdicts, {"analytic ↔ numeric": "FAIL", "forward ↔ numeric": "ok", "forward ↔ analytic": "FAIL"}
        )


class TensorFlowSecondOrderTest(tf.test.TestCase):
    def test_tf_nn_moments_has_a_wrong_second_derivative(self):
        # TF 2.21's tf.nn.moments computes the variance around tf.stop_gradient(mean): harmless
        # to first order (that gradient is zero), wrong to second.  Keras's LayerNormalization
        # inherits it on the TensorFlow backend.
        self.assertEqual(gradcheck.gradcheck(_moments_variance, A, **TIGHT).verdict, "PASS")
        report = gradcheck.gradcheck(_moments_variance, A, order=2)
        self.assertEqual(report.verdict, "FAIL", report.to_text())
        worst = report.entries[0].comparisons[0].worst
        row, column = worst.location.index  # d/dx[row, column] of the gradient's element
        self.assertEqual(worst.location.gradient[1][0], row)  # only one row's variance couples them
        exact = (float(worst.location.gradient[1][1] == column) - 1.0 / 4) * 2.0 / 4  # ∂²var/∂x∂x
        self.assertAllClose(worst.b, exact, atol=1e-6)

    def test_keras_normalization_layers_inherit_it(self):
        # LayerNormalization always; BatchNormalization in training (batch statistics): first
        # order right, second order wrong, the Dense kernel below the normalization failing.
        mse = keras.losses.MeanSquaredError()
        for layer, training in (
            (keras.layers.LayerNormalization, False),
            (keras.layers.BatchNormalization, True),
        ):
            with self.subTest(layer=layer.__name__):
                keras.utils.set_random_seed(0)
                model = keras.Sequential(
                    [keras.Input((4,)), keras.layers.Dense(4), layer(), keras.layers.Dense(2)]
                )
                x, y = RNG.standard_normal((8, 4)), RNG.standard_normal((8, 2))
                self.assertEqual(gradcheck.check_model(model, x, y, mse, training=training).verdict, "PASS")
                report = gradcheck.check_model(model, x, y, mse, training=training, order=2)
                self.assertEqual(report.verdict, "FAIL", report.to_text())
                self.assertFalse(report.entries[0].passed)
        # BatchNormalization in inference: moving statistics, an affine map, right to second order.
        self.assertEqual(gradcheck.check_model(model, x, y, mse, order=2).verdict, "PASS")


class ForwardModeFaultsTest(tf.test.TestCase):
    def test_wrong_in_forward_mode_only(self):
        report = gradcheck.gradcheck(square_forward_wrong, X, check_forward=True)
        verdicts = {c.label: c.verdict for _, c in report.comparisons}
        self.assertEqual(
            verdicts, {"analytic ↔ numeric": "ok", "forward ↔ numeric": "FAIL", "forward ↔ analytic": "FAIL"}
        )
        worst = report.entry("x").comparisons[1].worst
        self.assertAllClose(worst.b, 2.0 * X[worst.location.index[0]], rtol=1e-6)  # numeric 2x
        self.assertAllClose(worst.a, X[worst.location.index[0]])  # forward mode's x
        self.assertTrue(gradcheck.gradcheck(square_forward_wrong, X).passed)  # reverse alone passes

    def test_forward_mode_without_a_tangent(self):
        report = gradcheck.gradcheck(sin_through_numpy, X, check_forward=True, mode="fast")
        self.assertEqual(report.verdict, "FAIL", report.to_text())
        self.assertEqual(report.entry("x").comparisons[0].verdict, "ok")  # reverse: the custom gradient

    def test_forward_mode_that_raises_gets_a_verdict_naming_why(self):
        for mode in ("full", "fast"):
            report = gradcheck.gradcheck(identity_through_adjust_hue, X, check_forward=True, mode=mode)
            self.assertEqual(report.verdict, "FAIL")
            comparisons = {c.label: c for _, c in report.comparisons}
            self.assertEqual(comparisons["analytic ↔ numeric"].verdict, "ok")
            self.assertIn("forward mode failed: ", comparisons["forward ↔ numeric"].error)
            self.assertIn("AdjustHue", comparisons["forward ↔ numeric"].error)
            self.assertIn("FAIL x forward ↔ numeric: forward mode failed", report.to_text())
            json.loads(report.to_json())


class KerasAndAssertionTest(GradientCheckMixin, tf.test.TestCase):
    def test_check_model_to_second_order_with_forward_mode(self):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
        )
        x, y = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 2))
        report = gradcheck.check_model(
            model, x, y, keras.losses.MeanSquaredError(), order=2, check_forward=True
        )
        self.assertEqual(report.verdict, "PASS", report.to_text())
        self.assertEqual(report.dtype, "float64")
        self.assertEqual(
            [c.label for c in report.entries[0].comparisons],
            ["tape ↔ numeric", "forward ↔ numeric", "forward ↔ tape"],
        )
        self.assertIn("second order", report.title)

    def test_check_model_catches_a_layer_with_a_wrong_second_derivative(self):
        class Cube(keras.layers.Layer):
            def call(self, x):
                return cube_with(cube_stop_gradient)(x)

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), Cube()])
        x, y = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2))
        loss = keras.losses.MeanSquaredError()
        self.assertEqual(gradcheck.check_model(model, x, y, loss).verdict, "PASS")
        report = gradcheck.check_model(model, x, y, loss, order=2)
        self.assertEqual(report.verdict, "FAIL", report.to_text())

    def test_assertion_to_second_order_names_input_element_and_values(self):
        fn = lambda x: tf.reduce_sum(cube_with(cube_numpy_constant)(x))  # noqa: E731
        self.assertGradientsCorrect(fn, X)
        with self.assertRaises(self.failureException) as caught:
            self.assertGradientsCorrect(fn, X, order=2, check_forward=True, names=["x"])
        message = str(caught.exception)
        self.assertRegex(
            message, r"FAIL x analytic ↔ numeric: 4 of 16 exceed rtol; worst at in\[\d\] grad x\[\d\]"
        )
        self.assertIn("analytic 0, numeric", message)  # the second derivative through numpy: none

    def test_bad_arguments(self):
        for kwargs, message in (
            ({"order": 3}, r"^order: expected 1 or 2"),
            ({"order": True}, r"^order: expected 1 or 2"),
            ({"check_forward": "yes"}, r"^check_forward: expected True or False"),
        ):
            with self.assertRaisesRegex(ValueError, message):
                gradcheck.gradcheck(tf.tanh, X, **kwargs)
        with self.assertRaisesRegex(ValueError, r"^order: 2 in full mode checks one Hessian per output"):
            gradcheck.gradcheck(tf.tanh, np.zeros(65), order=2)


if __name__ == "__main__":
    tf.test.main()
