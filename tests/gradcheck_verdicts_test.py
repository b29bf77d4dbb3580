"""Honest verdicts: a kink must be shown, eps must be small, and too little checked is INCONCLUSIVE.

Each case here passed (wrongly) before the kink rule of `gradcheck.kinks`: a planted fault on a
variable whose differences all crossed a ReLU kink, a gradient wrong by a constant under a large
eps, any fault at eps = 1e10.  The planted faults run at eps from 1e-6 to 1e10 and must never
PASS: they FAIL, or the eps is refused.
"""

import json

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from planted_faults import flipped_gradient, square_off_by, square_with

from tf_backprop import backprop, gradcheck
from tf_backprop.gradcheck import kinks
from tf_backprop.model import MLPSpec
from tf_backprop.testing import GradientCheckMixin

RNG_50 = np.random.default_rng(0).standard_normal(50)
EPS_RANGE = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0, 1e10)
X = np.array([0.3, -1.2, 2.0, 0.7])


def _article_batch():
    model = MLPSpec().build()  # the article's net: zero biases put dense_2's ReLUs on their kink
    x, y = gradcheck.random_batch(model, "half_mse", 10, 0)
    return model, x, y


def _never_passes(test, run):
    """run() raises ValueError naming eps, or returns a report that is not PASS (returned)."""
    try:
        report = run()
    except ValueError as error:
        test.assertRegex(str(error), r"^eps: ")
        return None
    test.assertNotEqual(report.verdict, "PASS", report.to_text())
    test.assertFalse(report.passed)
    return report


class PlantedFaultsNeverPassTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*EPS_RANGE)
    def test_mlp_fault_on_the_kinked_variable(self, eps):
        # Tape and manual flipped alike (so they agree): only the differences can catch it, and
        # every difference of dense_2/bias crosses a kink.  Passed at every eps before.
        model, x, y = _article_batch()
        tape = flipped_gradient(backprop.tape_gradients, 3)
        manual = flipped_gradient(backprop.manual_gradients, 3)
        report = _never_passes(
            self, lambda: gradcheck.check(model, x, y, "half_mse", eps=eps, tape_fn=tape, manual_fn=manual)
        )
        if report is not None:
            self.assertFalse(report.entry("dense_2/bias").passed)

    @parameterized.parameters(*EPS_RANGE)
    def test_mlp_flipped_manual_gradient(self, eps):
        model, x, y = _article_batch()
        manual = flipped_gradient(backprop.manual_gradients, 0)
        _never_passes(self, lambda: gradcheck.check(model, x, y, "half_mse", eps=eps, manual_fn=manual))

    @parameterized.parameters(*EPS_RANGE)
    def test_function_gradient_off_by_a_constant(self, eps):
        # x² with gradient 2x + 1e-3: passed from eps = 1e-3 on, every element "a kink".
        _never_passes(self, lambda: gradcheck.gradcheck(square_off_by(1e-3), X, eps=eps))

    @parameterized.parameters(*EPS_RANGE)
    def test_function_fault_at_relu_kinks(self, eps):
        wrong_relu = square_with(lambda x, dy: tf.where(x > 0, 2.0 * dy, tf.zeros_like(dy)))  # slope 2
        fn = lambda x: wrong_relu(tf.nn.relu(x)) / 2.0  # noqa: E731 - relu(x)²/2 with a wrong gradient
        _never_passes(self, lambda: gradcheck.gradcheck(fn, np.array([0.0, 1.5, -2.0, 3e-7]), eps=eps))

    @parameterized.parameters(*EPS_RANGE)
    def test_keras_model_fault(self, eps):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu")])
        x, y = np.random.default_rng(0).standard_normal((5, 3)), np.zeros((5, 2))
        scaled = lambda y_true, y_pred: keras.losses.MeanSquaredError()(y_true, square_off_by(0.1)(y_pred))  # noqa: E731
        _never_passes(self, lambda: gradcheck.check_model(model, x, y, scaled, eps=eps))

    @parameterized.parameters(1e-6, 1e-3, 1e10)
    def test_assertion(self, eps):
        class Case(GradientCheckMixin, tf.test.TestCase):
            def runTest(self):  # noqa: N802
                self.assertGradientsCorrect(square_off_by(1e-3), X, eps=eps)

        result = Case().run()
        self.assertEqual(len(result.failures) + len(result.errors), 1)


class StepTest(tf.test.TestCase):
    """An eps that moves an input by more than 1% of its scale max(1, max |x|) is refused."""

    def test_refused_with_the_input_named(self):
        with self.assertRaisesRegex(ValueError, r"^eps: 0\.5 would move x by up to 0\.5, more than 0\.01"):
            gradcheck.gradcheck(tf.tanh, X, eps=0.5)
        model, x, y = _article_batch()
        with self.assertRaisesRegex(ValueError, r"^eps: 1e\+10 would move dense_1/kernel"):
            gradcheck.check(model, x, y, "half_mse", eps=1e10)

    def test_scale_grows_with_the_input(self):
        report = gradcheck.gradcheck(lambda t: t * t, X * 1000.0, eps=5.0)  # 5 ≤ 0.01 · 2000
        self.assertTrue(report.passed, report.to_text())

    def test_default_and_float32_steps_are_allowed(self):
        w32 = tf.constant(np.ones((4, 2)), tf.float32)
        report = gradcheck.gradcheck(lambda t: tf.tanh(t @ w32), X[None, :] / 10.0)
        self.assertEqual((report.dtype, report.eps), ("float32", 1e-3))


class TruncationTest(tf.test.TestCase):
    """A central difference is off by ~(ε/x)² beside a pole or a log's edge, or with a large eps:
    right derivatives FAILed (new-user review).  The half step shows truncation, and the
    Richardson extrapolation from ε and ε/2 is what a is compared with."""

    CASES = (
        ("tanh, eps 1e-2", tf.tanh, np.array([0.5, 1.0, -1.5]), 1e-2),
        ("1/t at 1e-4", lambda t: 1.0 / t, np.array([1e-4, 1.0]), None),
        ("log at 3e-5", tf.math.log, np.array([3e-5, 1.0]), None),
        ("summed log at 3e-5", lambda t: tf.reduce_sum(tf.math.log(t)), np.array([3e-5, 1.0, 2.0]), None),
    )

    def test_right_derivatives_pass_in_both_modes(self):
        for name, fn, x, eps in self.CASES:
            for mode in ("full", "fast"):
                with self.subTest(name=name, mode=mode):
                    report = gradcheck.gradcheck(fn, x, eps=eps, mode=mode)
                    self.assertEqual(report.verdict, "PASS", report.to_text())
                    self.assertEqual(report.entries[0].comparisons[0].kinks, 0)  # no kink in a smooth fn

    def test_an_error_of_a_tenth_of_a_percent_there_still_fails(self):
        for name, fn, x, eps in self.CASES:
            wrong = _scaled_gradient(fn, 1.001)
            for mode in ("full", "fast"):
                with self.subTest(name=name, mode=mode):
                    self.assertEqual(gradcheck.gradcheck(wrong, x, eps=eps, mode=mode).verdict, "FAIL")


def _scaled_gradient(fn, factor):
    @tf.custom_gradient
    def scaled(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = fn(t)
        return y, lambda dy: factor * tape.gradient(y, t, output_gradients=dy)

    return scaled


class RoundoffTest(tf.test.TestCase):
    def test_an_eps_too_small_for_the_values_is_inconclusive(self):
        # f ≈ 1e8: a step of 1e-9 leaves differences with a round-off of ~0.35, more than 10% of
        # the gradient 2x: a gradient wrong by 0.1 would pass such a check unseen.
        report = gradcheck.gradcheck(lambda t: square_off_by(0.1)(t) + 1e8, X, eps=1e-9)
        self.assertEqual(report.verdict, "INCONCLUSIVE", report.to_text())
        self.assertTrue(report.entries[0].comparisons[0].unresolved)
        self.assertIn("round-off floor", report.to_text())
        self.assertEqual(
            gradcheck.gradcheck(lambda t: square_off_by(0.1)(t) + 1e8, X, eps=1e-3).verdict, "FAIL"
        )

    def test_one_large_input_does_not_loosen_the_check_of_the_small_ones(self):
        """x²/2 with its gradient doubled where |x| < 1, beside an element of 10⁴: the floor
        sized by that element (atol 0.53) once let the 100% errors at 0.1, 0.2, −0.3 PASS."""

        @tf.custom_gradient
        def half_square(t):
            return 0.5 * t * t, lambda dy: dy * tf.where(tf.abs(t) < 1, 2 * t, t)

        x = np.array([1e4, 0.1, 0.2, -0.3])
        for fn in (half_square, lambda t: tf.reduce_sum(half_square(t))):
            for mode in ("full", "fast"):
                report = gradcheck.gradcheck(fn, x, mode=mode)
                self.assertEqual(report.verdict, "FAIL", report.to_text())
                self.assertIn("(each value's round-off floor)", report.to_text())
                self.assertTrue(
                    json.loads(report.to_json())["entries"][0]["comparisons"][0]["atol_per_value"]
                )
        for fn in (lambda t: 0.5 * t * t, lambda t: tf.reduce_sum(0.5 * t * t)):
            for mode in ("full", "fast"):
                self.assertEqual(gradcheck.gradcheck(fn, x, mode=mode).verdict, "PASS")

    def test_a_large_output_does_not_loosen_the_kinks_beside_it(self):
        """A 0.01·relu whose gradient is 20% off (1.2e-2 at and above 0), beside an output of
        1e6: its floor (~3.5e-3) showed the wrong value at 0 as a kink, and the check PASSed."""

        @tf.custom_gradient
        def small_relu(t):
            return 1e-2 * tf.nn.relu(t), lambda dy: dy * 1.2e-2 * tf.cast(t >= 0, t.dtype)

        x = np.array([0.0, -0.4])
        report = gradcheck.gradcheck(
            lambda t: tf.stack([1e6 + tf.reduce_sum(t), tf.reduce_sum(small_relu(t))]), x
        )
        self.assertEqual((report.verdict, report.kinks), ("FAIL", 0), report.to_text())
        right = lambda t: tf.stack([1e6 + tf.reduce_sum(t), 1e-2 * tf.reduce_sum(tf.nn.relu(t))])  # noqa: E731
        report = gradcheck.gradcheck(right, x)
        self.assertEqual((report.verdict, report.kinks), ("PASS", 1), report.to_text())


class WrongSlopeAtAKinkTest(tf.test.TestCase):
    """A ReLU written with slope 2 (or 1.1) for x > 0, checked at x = 0, PASSed with every value
    a kink: its difference 1 lay between a = 0 and a(x + ε) = 2.  f is linear over the step, so
    the kink is at x, and a(x + ε) must be that side's slope (new-user review)."""

    def test_a_wrong_slope_beside_the_kink_fails_and_a_right_one_passes(self):
        def relu_with_slope(slope):
            @tf.custom_gradient
            def relu(t):
                return tf.nn.relu(t), lambda dy: dy * tf.where(t > 0, tf.constant(slope, t.dtype), 0.0 * t)

            return relu

        zeros = np.zeros((3, 4))
        for mode in ("full", "fast"):
            for fn in (
                relu_with_slope(2.0),
                relu_with_slope(1.1),
                lambda t: tf.reduce_sum(relu_with_slope(2.0)(t)),
            ):
                with self.subTest(mode=mode):
                    self.assertEqual(gradcheck.gradcheck(fn, zeros, mode=mode).verdict, "FAIL")
            for fn in (relu_with_slope(1.0), tf.nn.relu, lambda t: tf.reduce_sum(tf.nn.relu(t))):
                with self.subTest(mode=mode):
                    report = gradcheck.gradcheck(fn, zeros, mode=mode)
                    self.assertEqual(report.verdict, "PASS", report.to_text())


class WrongSlopeBesideAnAgreeingKinkTest(tf.test.TestCase):
    """|x| at 0: a = sign(0) = 0 and the central difference is 0 whatever the slopes, so an abs
    written with slope 2 for x > 0 PASSed at x = 0.  The one-sided differences disagree there
    (a kink at x): the slopes beside it are compared, and the failure shows them."""

    @staticmethod
    def _abs_with_slopes(right, left):
        @tf.custom_gradient
        def absolute(t):
            slope = tf.where(t > 0, right * tf.ones_like(t), tf.where(t < 0, -left * tf.ones_like(t), 0 * t))
            return tf.abs(t), lambda dy: dy * slope

        return absolute

    def test_wrong_slopes_fail_and_right_ones_pass(self):
        zeros = np.zeros(6)
        for mode in ("full", "fast"):
            for right, left in ((2.0, 1.0), (1.1, 1.0), (1.0, 1.5)):
                with self.subTest(mode=mode, right=right, left=left):
                    report = gradcheck.gradcheck(self._abs_with_slopes(right, left), zeros, mode=mode)
                    self.assertEqual(report.verdict, "FAIL", report.to_text())
            report = gradcheck.gradcheck(self._abs_with_slopes(1.0, 1.0), zeros, mode=mode)
            self.assertEqual(report.verdict, "PASS", report.to_text())
            self.assertEqual(gradcheck.gradcheck(tf.abs, zeros, mode=mode).verdict, "PASS")
        worst = gradcheck.gradcheck(self._abs_with_slopes(2.0, 1.0), zeros).entries[0].comparisons[0].worst
        self.assertAllClose((worst.a, worst.b), (2.0, 1.0), rtol=1e-6)  # the slope beside x = 0


class KinkRuleTest(tf.test.TestCase):
    """`kinks.examine` on hand-made one-sided values."""

    TOL = gradcheck.Tolerance(atol=1e-8, rtol=1e-5)

    def _examine(self, a, d_plus, d_minus, a_plus, a_minus, continuous=True):
        sides = kinks.Sides(
            np.array([0]), *(np.array([v], float) for v in (d_plus, d_minus, a_plus, a_minus))
        )
        kink, unchecked, beyond = kinks.examine(np.array([a]), 1, sides, self.TOL, continuous)
        self.assertFalse(beyond[0])  # only rule 2 finds values beyond the slopes
        return bool(kink[0]), bool(unchecked[0])

    def test_relu_at_its_kink(self):
        # a = 0 (TF's ReLU'(0)), left side smooth (D− = 0), right side jumps to 1.
        self.assertEqual(self._examine(0.0, 1.0, 0.0, 1.0, 0.0), (True, False))

    def test_kink_crossed_inside_the_step(self):
        # relu at 3e-7, eps 1e-6: right side smooth with slope a = 1, left difference 0.3 ∈ [0, 1].
        self.assertEqual(self._examine(1.0, 1.0, 0.3, 1.0, 0.0), (True, False))

    def test_neither_side_smooth_is_a_failure(self):
        self.assertEqual(self._examine(0.5, 1.0, 0.0, 1.0, 0.0), (False, False))

    def test_no_jump_in_the_derivative_is_a_failure(self):
        # Both sides agree with a: nothing jumps, so a central mismatch has no kink to explain it.
        self.assertEqual(self._examine(1.0, 1.0, 0.9, 1.0, 1.0), (False, False))

    def test_difference_outside_the_two_slopes_is_a_failure(self):
        self.assertEqual(self._examine(0.0, 3.0, 0.0, 1.0, 0.0), (False, False))
        self.assertEqual(
            self._examine(0.0, 3.0, 0.0, 1.0, 0.0, continuous=False), (True, False)
        )  # a jump of G

    def test_a_smooth_side_must_agree_with_its_midpoint_too(self):
        # a = 1, a− = −1: the trapezoid 0 matches D− = 0, the midpoint −1 does not; the right
        # side's a₊ = 1.0001 "jumps" and its D₊ lies within the slack: a kink by trapezoids alone.
        sides = kinks.Sides(np.array([0]), *(np.array([v], float) for v in (1e-4, 0.0, 1.0001, -1.0)))
        midpoint = lambda at, t: np.array([1.00005 if t > 0 else -1.00005])  # noqa: E731
        kink, unchecked, _ = kinks.examine(np.array([1.0]), 1, sides, self.TOL, True, midpoint)
        self.assertEqual((bool(kink[0]), bool(unchecked[0])), (False, False))

    def test_unavailable_side_is_unchecked(self):
        self.assertEqual(self._examine(0.0, 1.0, 0.0, np.nan, 0.0), (False, True))

    def _examine_at_the_point(self, a, d_plus, d_minus, m_plus, m_minus):
        # Rule 1 fails (both ends' slopes differ from a), rule 2 uses the midpoints.
        sides = kinks.Sides(np.array([0]), *(np.array([v], float) for v in (d_plus, d_minus, 5.0, -5.0)))
        midpoint = lambda at, t: np.array([m_plus if t > 0 else m_minus])  # noqa: E731
        kink, unchecked, beyond = kinks.examine(np.array([a]), 1, sides, self.TOL, True, midpoint)
        return bool(kink[0]), bool(unchecked[0]), bool(beyond[0])

    def test_kink_at_the_point_shown_by_midpoints(self):
        at_the_point = self._examine_at_the_point
        self.assertEqual(at_the_point(1.0, 1.0, -1.0, 1.0, -1.0), (True, False, False))  # a: one side
        self.assertEqual(at_the_point(0.0, 1.0, -1.0, 1.0, -1.0), (False, True, False))  # a: between
        self.assertEqual(at_the_point(0.0, 1.0, -0.5, 1.0, -1.0), (False, False, False))  # not clean
        self.assertEqual(at_the_point(1.0, 1.0, 1.0, 1.0, 1.0), (False, False, False))  # no jump

    def test_value_at_the_point_beyond_the_slopes(self):
        at_the_point = self._examine_at_the_point
        self.assertEqual(at_the_point(1.5, 1.0, -1.0, 1.0, -1.0), (False, True, True))
        self.assertEqual(at_the_point(-1.5, 1.0, -1.0, 1.0, -1.0), (False, True, True))
        self.assertEqual(at_the_point(np.nan, 1.0, -1.0, 1.0, -1.0), (False, True, True))
        self.assertEqual(at_the_point(-1.0 - 1e-9, 1.0, -1.0, 1.0, -1.0), (True, False, False))  # agrees


class InconclusiveTest(GradientCheckMixin, tf.test.TestCase):
    """A disagreement whose one-sided values cannot be computed is unchecked; too many: INCONCLUSIVE."""

    TOL = gradcheck.Tolerance(atol=1e-8, rtol=1e-5)

    @staticmethod
    def _relu_nan_off_the_points(points):
        """relu whose custom gradient is right at `points` and NaN anywhere else."""

        @tf.custom_gradient
        def relu(x):
            at_points = tf.reduce_any(tf.equal(x[..., None], tf.constant(points, x.dtype)), axis=-1)
            slope = tf.where(x > 0, tf.ones_like(x), tf.zeros_like(x))
            return tf.nn.relu(x), lambda dy: dy * tf.where(at_points, slope, np.nan * tf.ones_like(x))

        return relu

    def test_unchecked_kink_makes_the_verdict_inconclusive(self):
        x = np.array([0.0, 2.0])  # the kink at 0 is 1 of 4 Jacobian values: 25% unchecked
        report = gradcheck.gradcheck(self._relu_nan_off_the_points(x), x)
        self.assertEqual(report.verdict, "INCONCLUSIVE", report.to_text())
        self.assertFalse(report.passed)
        comparison = report.entries[0].comparisons[0]
        self.assertEqual((comparison.unchecked, comparison.failures), (1, 0))
        self.assertEqual(comparison.worst_unchecked.location.index, (0,))
        text = report.to_text()
        self.assertIn("INCONCLUSIVE x analytic ↔ numeric: 1 of 4 unchecked", text)
        self.assertTrue(text.splitlines()[-1].startswith("INCONCLUSIVE: 1 comparisons, 0 failed elements"))
        self.assertIn('"verdict": "INCONCLUSIVE"', report.to_json())
        with self.assertRaisesRegex(self.failureException, r"could not be verified \(INCONCLUSIVE\)"):
            self.assertGradientsCorrect(self._relu_nan_off_the_points(x), x)

    def test_projections_through_several_kinks_at_the_point(self):
        # Three ReLUs exactly at 0, moved different ways by each random direction: both sides'
        # differences are their midpoint slopes (the kinks are shown), but the tape's value at
        # the point (ReLU'(0) = 0 for all three) is neither side's: unchecked, 8 of 16.
        x = RNG_50.copy()
        x[[4, 17, 30]] = 0.0
        weighted = lambda t: tf.reduce_sum(tf.nn.relu(t) * tf.range(1.0, 51.0, dtype=t.dtype))  # noqa: E731
        report = gradcheck.gradcheck(weighted, x, mode="fast")
        comparison = report.entries[0].comparisons[0]
        self.assertEqual(report.verdict, "INCONCLUSIVE", report.to_text())
        self.assertEqual((comparison.unchecked, comparison.failures), (8, 0))
        self.assertIsNotNone(comparison.worst_unchecked.location.direction)
        self.assertEqual(gradcheck.gradcheck(weighted, x).verdict, "PASS")  # element by element
        x[[17, 30]] = RNG_50[[17, 30]]
        self.assertEqual(gradcheck.gradcheck(weighted, x, mode="fast").verdict, "PASS")  # one kink

    def test_few_unchecked_values_still_pass(self):
        x = np.concatenate([[0.0], np.linspace(1.0, 2.0, 4)])  # 1 of 25 Jacobian values: 4%
        report = gradcheck.gradcheck(self._relu_nan_off_the_points(x), x)
        self.assertEqual(report.verdict, "PASS", report.to_text())
        self.assertEqual(report.unchecked, 1)

    def test_a_wrong_value_at_a_single_kink_is_never_a_pass(self):
        """A custom ReLU gradient of 1e6 at 0: 1 of 25 Jacobian values, outside the slopes 0 and 1."""

        @tf.custom_gradient
        def relu_wrong_at_zero(t):
            slope = tf.where(t > 0, tf.ones_like(t), tf.zeros_like(t))
            return tf.nn.relu(t), lambda dy: dy * tf.where(tf.equal(t, 0.0), 1e6 * tf.ones_like(t), slope)

        x = np.array([-1.0, 0.5, 2.0, 0.0, 1.5])
        report = gradcheck.gradcheck(relu_wrong_at_zero, x)
        comparison = report.entries[0].comparisons[0]
        self.assertEqual(report.verdict, "INCONCLUSIVE", report.to_text())
        self.assertEqual((comparison.unchecked, comparison.beyond_slopes, comparison.failures), (1, 1, 0))
        self.assertEqual(
            comparison.reason, "1 of 25 unchecked, 1 of them outside the slopes on either side of their kink"
        )
        self.assertEqual(
            (comparison.worst_unchecked.a, comparison.worst_unchecked.location.index), (1e6, (3,))
        )
        self.assertIn("1 of them outside the slopes on either side of their kink", report.to_text())
        self.assertEqual(json.loads(report.to_json())["entries"][0]["comparisons"][0]["beyond_slopes"], 1)

    def test_a_wrong_gradient_whose_error_flips_sign_is_no_kink(self):
        """50t² with its gradient written 100t ± 1 (sign of t): at and near 0 the trapezoid of
        the smooth-looking side cancels the error ((1 + −1)/2 = 0 = D−); its midpoint does not."""

        @tf.custom_gradient
        def off_by_its_sign(t):
            sign = tf.where(t >= 0, tf.ones_like(t), -tf.ones_like(t))
            return 50.0 * t * t, lambda dy: dy * (100.0 * t + sign)

        for point in (0.0, 2e-7):
            for mode in ("full", "fast"):
                x = np.array([point, 1.0, 2.0, 3.0, -1.5, 0.7])
                report = gradcheck.gradcheck(off_by_its_sign, x, mode=mode)
                self.assertEqual(report.verdict, "FAIL", report.to_text())
                self.assertEqual(report.kinks, 0)

    def test_a_convention_between_the_slopes_still_passes(self):
        # relu(t) + relu(−t)/2: at 0 the tape gives 0 + 0, between the slopes −1/2 and 1.
        x = np.array([0.0, 1.0, 2.0, 3.0, -4.0])
        report = gradcheck.gradcheck(lambda t: tf.nn.relu(t) + tf.nn.relu(-t) / 2, x)
        self.assertEqual(report.verdict, "PASS", report.to_text())
        comparison = report.entries[0].comparisons[0]
        self.assertEqual((comparison.unchecked, comparison.beyond_slopes), (1, 0))

    def test_an_infinite_derivative_at_one_element_hides_no_other(self):
        """sqrt at [0, 1, 4, 9]: the derivative at 0 is inf (and x − ε has no square root), so
        that value is unchecked, and every other is still compared at the usual tolerance (inf
        once made the tolerance NaN, and inf · 0 every sampled element's analytic value)."""

        @tf.custom_gradient
        def sqrt_off_by_a_fifth(t):  # also NaN where dy = 0 at t = 0: 0 · inf
            return tf.sqrt(t), lambda dy: dy * 0.6 / tf.sqrt(t)

        x = np.array([0.0, 1.0, 4.0, 9.0])
        for mode in ("full", "fast"):
            report = gradcheck.gradcheck(tf.sqrt, x, mode=mode)
            self.assertEqual((report.failures, report.unchecked), (0, 1), report.to_text())
            report = gradcheck.gradcheck(sqrt_off_by_a_fifth, x, mode=mode)
            self.assertEqual(report.verdict, "FAIL", report.to_text())
            self.assertLess(report.entries[0].comparisons[0].tolerance.atol, 1e-6)
        # full: the three wrong diagonal values, and out[1..3] ← in[0], NaN against differences of 0
        self.assertEqual((report.failures, report.unchecked), (3, 1), report.to_text())  # fast
        report = gradcheck.gradcheck(sqrt_off_by_a_fifth, x)
        self.assertEqual((report.failures, report.unchecked), (6, 1), report.to_text())

    def test_a_nan_derivative_of_a_smooth_function_always_fails(self):
        """NaN is never a derivative: one NaN element of 30 (where the differences are finite) was
        an unchecked value under the 10% allowance, and PASSed."""

        @tf.custom_gradient
        def identity_nan_below_zero(t):
            return t * 1.0, lambda dy: tf.where(t < 0, np.nan * tf.ones_like(t), dy)

        x = np.linspace(0.5, 3.0, 30)
        x[4] = -0.3
        for fn in (identity_nan_below_zero, lambda t: tf.reduce_sum(identity_nan_below_zero(t))):
            for mode in ("full", "fast"):
                report = gradcheck.gradcheck(fn, x, mode=mode)
                self.assertEqual(report.verdict, "FAIL", report.to_text())
                self.assertEqual(report.unchecked, 0)
        worst = report.entries[0].comparisons[0].worst
        self.assertTrue(np.isnan(worst.a))
        self.assertEqual(gradcheck.compare([np.nan], [1.0], self.TOL, unchecked=[True]).failures, 1)
        self.assertEqual(gradcheck.compare([1.0], [np.nan], self.TOL, unchecked=[True]).unchecked, 1)

    def test_a_step_out_of_the_domain_is_unchecked_never_a_pass(self):
        """log at 1e-8 with eps 1e-6: log(x − ε) is NaN, so there is no difference to check the
        (right) derivative 1e8 against.  It was a FAIL; then, as 1 unchecked value of 121, a
        PASS, which a "safe" gradient clamped there (wrong by 1e5) got too.  Now such a value
        makes the verdict INCONCLUSIVE, however few; a smaller eps checks it."""

        @tf.custom_gradient
        def log_clamped(t):  # dy / max(t, 1e-3): right above 1e-3, wrong at 1e-8
            return tf.math.log(t), lambda dy: dy / tf.maximum(t, 1e-3)

        @tf.custom_gradient
        def log_off_by_two(t):
            return tf.math.log(t), lambda dy: dy * 2.0 / t

        for mode in ("full", "fast"):
            report = gradcheck.gradcheck(tf.math.log, np.full(3, 1e-8), mode=mode)
            self.assertEqual(report.verdict, "INCONCLUSIVE", report.to_text())
            self.assertEqual((report.failures, report.unchecked), (0, 3))
            self.assertIn("3 of them where f is not finite at x ± ε", report.to_text())
        x = np.array([1e-8, 1.0, 2.0, 3.0, 0.5, 0.7, 1.1, 1.3, 1.7, 2.2, 2.9])
        for fn in (tf.math.log, log_clamped):
            for mode in ("full", "fast"):
                report = gradcheck.gradcheck(fn, x, mode=mode)
                self.assertEqual((report.verdict, report.failures), ("INCONCLUSIVE", 0), report.to_text())
                comparison = report.entries[0].comparisons[0]
                self.assertEqual((comparison.unchecked, comparison.undefined), (1, 1))
        self.assertEqual(gradcheck.gradcheck(tf.math.log, x, eps=1e-12).verdict, "PASS")
        self.assertEqual(gradcheck.gradcheck(log_clamped, x, eps=1e-12).verdict, "FAIL")
        self.assertEqual(gradcheck.gradcheck(log_off_by_two, x).verdict, "FAIL")  # the others still count

    def test_compare_counts_unchecked_apart(self):
        result = gradcheck.compare([1.0, 0.0], [1.0, 0.5], self.TOL, unchecked=[False, True])
        self.assertEqual((result.failures, result.unchecked, result.verdict), (0, 1, "INCONCLUSIVE"))
        self.assertEqual(result.reason, "1 of 2 unchecked (more than 10%)")


class ShownKinksStillPassTest(tf.test.TestCase):
    def test_article_net_kinks_are_shown_at_several_eps(self):
        model, x, y = _article_batch()
        for eps in (1e-6, 1e-4, 1e-3):
            report = gradcheck.check(model, x, y, "half_mse", eps=eps)
            self.assertEqual(report.verdict, "PASS", report.to_text())
            self.assertEqual(report.kinks, 6)


if __name__ == "__main__":
    tf.test.main()
