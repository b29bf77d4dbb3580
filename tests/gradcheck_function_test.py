"""gradcheck.gradcheck: any TensorFlow function's tape gradients against central differences.

Passes on TensorFlow's own ops; fails, naming the input and the element, on hand-written
`tf.custom_gradient` backward functions with planted mistakes.
"""

import json
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from planted_faults import logsumexp_with, square_off_by, square_with, stable_logsumexp, wrong_at_one_element

from tf_backprop import gradcheck
from tf_backprop.gradcheck import perturb
from tf_backprop.model import MLP

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((4, 5))
SQUARE = RNG.standard_normal((4, 4))
LABELS = (RNG.random((3, 4)) > 0.5).astype(np.float64)


def _layer_norm(x, gamma, beta):
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + 1e-5) * gamma + beta


def _matmul_with(backward):
    """y = x @ w with a hand-written backward (grad_x, grad_w)."""

    @tf.custom_gradient
    def matmul(x, w):
        return x @ w, lambda dy: backward(x, w, dy)

    return matmul


def _sum_of_sines(t):
    return tf.reduce_sum(tf.sin(t))


class TensorFlowOpsPassTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("matmul", tf.matmul, [A, B]),
        ("softmax", tf.nn.softmax, [A]),
        ("logsumexp", lambda x: tf.reduce_logsumexp(x, axis=-1), [A]),
        (
            "conv1d",
            lambda x, f: tf.nn.conv1d(x, f, stride=1, padding="SAME"),
            [A.reshape(1, 6, 2), B.reshape(2, 2, 5)],
        ),
        ("layer_norm", _layer_norm, [A, RNG.standard_normal(4), RNG.standard_normal(4)]),
        (
            "sigmoid_cross_entropy",
            lambda z: tf.nn.sigmoid_cross_entropy_with_logits(labels=LABELS, logits=z),
            [A],
        ),
        ("einsum_tanh", lambda x, w: tf.tanh(tf.einsum("ij,jk->ik", x, w)), [A, B]),
        ("solve", tf.linalg.solve, [SQUARE + 4 * np.eye(4), B]),
        ("cumprod_scalar", lambda x: tf.reduce_sum(tf.math.cumprod(x, axis=1)), [A]),
        ("custom_gradient_logsumexp", stable_logsumexp, [A]),
    )
    def test_full_mode_passes(self, fn, inputs):
        report = gradcheck.gradcheck(fn, inputs)
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.dtype, "float64")
        self.assertEqual(report.kinks, 0)
        self.assertLen(report.entries, len(inputs))
        for entry, x in zip(report.entries, inputs):
            self.assertEqual(entry.shape, x.shape)
            self.assertEqual(entry.comparisons[0].label, "analytic ↔ numeric")

    def test_fast_mode_on_a_large_input(self):
        x = RNG.standard_normal((300, 400))
        report = gradcheck.gradcheck(stable_logsumexp, x, mode="fast", directions=4, samples=4)
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.entries[0].comparisons[0].checked, 8)

    def test_large_inputs_divide_by_the_step_really_taken(self):
        # At 3e5, x ± 1e-6 moves x by 1e-6 ± 2.9e-11: dividing by 2e-6 was ~1e-5 off, rtol's size.
        x = np.array([1e5, -3e5, 2e5, 0.3])
        wide = np.linspace(1e5, 2e5, 40)  # fast mode's random directions too
        for fn, inputs, mode in ((tf.sin, x, "full"), (tf.sin, x, "fast"), (_sum_of_sines, wide, "fast")):
            report = gradcheck.gradcheck(fn, inputs, mode=mode, check_forward=True)
            self.assertEqual(report.verdict, "PASS", report.to_text())
            for comparison in report.entries[0].comparisons:
                self.assertLess(comparison.max_abs, 1e-8, report.to_text())

    def test_rounding_inside_fn_at_large_inputs_is_inconclusive_not_a_failure(self):
        # t/7 and t² round by ~u·|t|·|f'| at 1e8, about 1% of the slope over eps = 1e-6.
        for fn in (lambda t: tf.sin(t / 7.0), lambda t: t * t - 1e16):
            report = gradcheck.gradcheck(fn, np.array([1e8, 1.2e8]))
            self.assertEqual(report.verdict, "INCONCLUSIVE", report.to_text())
            self.assertIn("eps too small for the dtype", report.to_text())
        self.assertEqual(
            gradcheck.gradcheck(lambda t: tf.sin(t / 7.0), np.array([1e8]), eps=1e-2).verdict, "PASS"
        )

    def test_names_label_the_inputs(self):
        report = gradcheck.gradcheck(tf.matmul, [A, B], names=["x", "w"])
        self.assertEqual([e.name for e in report.entries], ["x", "w"])


class PlantedMistakesTest(tf.test.TestCase, parameterized.TestCase):
    def _failing(self, fn, inputs, **kwargs):
        report = gradcheck.gradcheck(fn, inputs, **kwargs)
        self.assertFalse(report.passed)
        self.assertIn("FAIL", report.to_text())
        return report

    @parameterized.parameters("full", "fast")
    def test_wrong_sign(self, mode):
        report = self._failing(logsumexp_with(lambda x, dy: -dy[..., None] * tf.nn.softmax(x)), A, mode=mode)
        worst = report.entries[0].comparisons[0].worst
        self.assertAllClose(worst.a, -worst.b, rtol=1e-5)

    def test_tiny_gradients_below_atol_say_so_and_fail_with_a_smaller_atol(self):
        # Gradients of ~1e-9 passed a 2x error unremarked: atol (1e-8) is absolute.
        tiny = lambda t: 1e-9 * tf.reduce_sum(square_with(lambda x, dy: 4.0 * x * dy)(t))  # noqa: E731
        report = gradcheck.gradcheck(tiny, [A], names=["x"])
        self.assertEqual(report.verdict, "PASS")
        self.assertIn(
            "x: every value compared is below 10× atol (largest 5.2e-09, atol 1e-08): an error smaller "
            "than atol passes; pass a smaller atol to check it",
            report.notes,
        )
        self._failing(tiny, [A], atol=1e-15)
        right = gradcheck.gradcheck(lambda t: tf.reduce_sum(t * t), [A], names=["x"])
        self.assertEqual(right.notes, ())  # values of ~1 get no such note
        # The note judged by the gradient's norm: 10⁴ values of ~1e-9 (norm 2e-7) passed the 2x
        # error without it, and so did fast mode's every-element plan of a small input (no norm).
        many = np.random.default_rng(0).standard_normal((100, 100))
        for inputs, mode in (([many], "full"), ([A], "fast")):
            with self.subTest(mode=mode, size=inputs[0].size):
                report = gradcheck.gradcheck(tiny, inputs, names=["x"], mode=mode)
                self.assertEqual(report.verdict, "PASS")
                self.assertTrue(
                    report.notes and report.notes[0].startswith("x: every value compared is below")
                )
        # Fast mode's directions sum 10⁴ such values, well above atol: they FAIL it, no note.
        self.assertEqual(gradcheck.gradcheck(tiny, [many], mode="fast").verdict, "FAIL")

    def test_the_mlp_checker_says_so_too(self):
        # Inputs of ~1e-8 make every activation, so every kernel's gradient, ~1e-8 (the biases'
        # stay ~1): a 2x error in the kernels passes.
        model = MLP((2, 3, 3, 1), activation="tanh", seed=0)
        x = 1e-8 * np.random.default_rng(0).standard_normal((10, 2))
        y = np.random.default_rng(1).standard_normal((10, 1))
        report = gradcheck.check(model, x, y, "mse")
        self.assertEqual(report.verdict, "PASS")
        self.assertEqual(
            [note.split(":")[0] for note in report.notes if "10× atol" in note],
            ["dense_1/kernel", "dense_2/kernel", "dense_3/kernel"],
        )
        second = gradcheck.check(model, x, y, "mse", order=2)  # Hessian rows of the first kernel ∝ x
        self.assertEqual(
            [note.split(":")[0] for note in second.notes if "10× atol" in note], ["dense_1/kernel"]
        )

    def test_missing_factor(self):
        report = self._failing(square_with(lambda x, dy: x * dy), A)  # forgot the 2
        comparison = report.entries[0].comparisons[0]
        self.assertEqual(comparison.failures, A.size)  # every diagonal element; off-diagonal ones are 0
        self.assertAllClose(comparison.worst.b, 2 * comparison.worst.a)

    def test_transposed(self):
        transposed = _matmul_with(lambda x, w, dy: (dy @ tf.transpose(w), tf.transpose(dy) @ x))  # (xᵀdy)ᵀ
        report = self._failing(transposed, [SQUARE.T, SQUARE])
        self.assertEqual([e.passed for e in report.entries], [True, False])  # only w's backward is wrong
        comparison = report.entries[1].comparisons[0]
        self.assertGreater(comparison.failures, 0)
        worst = comparison.worst.location
        self.assertLen(worst.index, 2)  # an element of w [4, 4]
        self.assertLen(worst.output_index, 2)  # and of the output [4, 4]

    def testwrong_at_one_element_names_it(self):
        report = self._failing(square_with(wrong_at_one_element), A)
        comparison = report.entries[0].comparisons[0]
        self.assertEqual(comparison.failures, 1)
        self.assertEqual(comparison.worst.location.index, (1, 2))
        self.assertEqual(comparison.worst.location.output_index, (1, 2))
        self.assertAllClose(comparison.worst.abs_error, 0.1)
        self.assertIn("in[1, 2] out[1, 2]", report.to_text())

    def test_fast_mode_catches_one_wrong_element(self):
        x = RNG.standard_normal((50, 60))
        report = self._failing(square_with(wrong_at_one_element), x, mode="fast")
        self.assertGreater(report.entries[0].comparisons[0].failures, 0)

    def test_wrong_in_float32_only_function(self):
        w32 = tf.constant(B, tf.float32)  # its backward uses a float32 constant: no float64 gradient
        report = self._failing(
            _matmul_with(lambda x, w, dy: (-dy @ tf.transpose(w32), tf.transpose(x) @ dy)), [A, B]
        )
        self.assertEqual(report.dtype, "float32")
        self.assertIn("fn raised InvalidArgumentError on float64 inputs", report.notes[0])
        self.assertEqual([e.passed for e in report.entries], [False, True])


class KinkTest(tf.test.TestCase):
    def test_relu_at_zero_is_a_kink(self):
        x = np.array([0.0, 2.0, -1.0, 3e-7, -0.5])
        report = gradcheck.gradcheck(tf.nn.relu, x)
        self.assertTrue(report.passed, report.to_text())
        comparison = report.entries[0].comparisons[0]
        self.assertEqual(comparison.kinks, 2)  # at 0 and at 3e-7 (within eps)
        self.assertIn(comparison.worst_kink.location.index, [(0,), (3,)])
        self.assertAllClose(comparison.worst_kink.b, 0.5, atol=0.2)  # the central difference straddles

    def test_abs_near_zero(self):
        x = RNG.standard_normal(40)
        x[[3, 17]] = [4e-7, 0.0]  # at exactly 0 the central difference of |x| is 0 = sign(0): no mismatch
        report = gradcheck.gradcheck(tf.abs, x)
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.kinks, 1)
        self.assertEqual(report.entries[0].comparisons[0].worst_kink.location.index, (3,))

    def test_a_kink_does_not_hide_a_wrong_gradient_elsewhere(self):
        wrong_relu = square_with(
            lambda x, dy: tf.where(x > 0, 2.0 * dy, tf.zeros_like(dy))
        )  # x² with x>0 only
        x = np.array([0.0, 1.5, -2.0])
        report = gradcheck.gradcheck(wrong_relu, x)
        self.assertFalse(report.passed)  # at −2 the derivative is −4, not 0


class BadInputsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        (
            "integer_input",
            tf.matmul,
            [A, np.ones((4, 2), np.int32)],
            {},
            r"^inputs\[1\]: expected a floating-point",
        ),
        ("nan_input", tf.tanh, [np.array([1.0, np.nan])], {}, r"^inputs\[0\]: expected finite values"),
        ("inf_input", tf.tanh, np.array([np.inf]), {}, r"^x: expected finite values"),
        (
            "no_path",
            lambda x, w: tf.tanh(x),
            [A, B],
            {},
            r"^inputs\[1\]: the output of fn does not depend on it",
        ),
        (
            "stopped_gradient",
            lambda x: tf.stop_gradient(x) * 2.0,
            A,
            {},
            r"^x: the output of fn does not depend",
        ),
        (
            "integer_output",
            lambda x: tf.cast(x > 0, tf.int32),
            A,
            {},
            r"^fn: expected a floating-point output",
        ),
        ("tuple_output", lambda x: (x, x), A, {}, r"^fn: expected one tensor"),
        ("no_return", lambda x: None, A, {}, r"^fn: expected one tensor as output, got None$"),
        ("none_input", tf.tanh, [None], {}, r"^inputs\[0\]: expected an array of numbers, got None$"),
        (
            "ragged_input",
            tf.tanh,
            [[[1.0, 2.0], [3.0]]],
            {},
            r"^inputs\[0\]: expected an array of numbers, got a list that is not one \(rows of different",
        ),
        (
            "random_fn",
            lambda x: tf.nn.dropout(x, 0.5),
            A,
            {},
            r"^fn: gave another output for the same inputs",
        ),
        (
            "list_of_numbers",
            lambda x: x * x,
            [0.1, 0.2, 0.3],
            {},
            r"takes 1 positional argument .*\(a list of 3 numbers is 3 inputs; pass np\.array\(\[\.\.\.\]\) for one input\)$",
        ),
        ("nan_output", tf.math.log, np.array([-1.0]), {}, r"^fn: the output contains NaN"),
        ("empty_input", tf.tanh, np.zeros((0, 3)), {}, r"^x: expected a non-empty"),
        ("bad_mode", tf.tanh, A, {"mode": "exact"}, r"^mode: expected one of 'full', 'fast'"),
        ("bad_eps", tf.tanh, A, {"eps": -1.0}, r"^eps: expected a positive"),
        (
            "eps_lost_to_rounding",
            tf.sin,
            np.array([1.0, 1e12]),
            {},
            r"^eps: 1e-06 does not move x\[1\] = 1e\+12 in float64, whose values there are 0\.000122 apart; "
            r"use eps ≥ 0\.000488$",
        ),
        ("bad_names", tf.tanh, A, {"names": ["a", "b"]}, r"^names: expected 1 names"),
        ("not_callable", "tanh", A, {}, r"^fn: expected a callable"),
        ("too_big_for_full", lambda x: x * 2.0, np.zeros(10_000), {}, r"^mode: 'full' would compare"),
        (
            "misshapen_gradient",
            square_with(lambda x, dy: dy[0]),
            A,
            {},
            r"^x: its gradient has shape \[4\], expected \[3, 4\]",
        ),
    )
    def test_clear_errors(self, fn, inputs, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            gradcheck.gradcheck(fn, inputs, **kwargs)

    def test_fn_failing_in_both_dtypes(self):
        with self.assertRaisesRegex(ValueError, r"^fn: raised InvalidArgumentError"):
            gradcheck.gradcheck(lambda x: tf.reshape(x, [7]), A)


class ReportTest(tf.test.TestCase):
    def test_float32_only_function_is_checked_in_float32(self):
        w32 = tf.constant(B, tf.float32)
        report = gradcheck.gradcheck(lambda x: tf.tanh(x @ w32), A)
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual((report.dtype, report.eps), ("float32", 1e-3))
        self.assertIn("checked in float32", report.notes[0])
        self.assertEqual(report.entries[0].comparisons[0].tolerance.rtol, gradcheck.FLOAT32.rtol)

    def test_a_function_that_casts_to_float32_inside_is_checked_in_float32(self):
        """float64 in and out, float32 inside: differences at eps 1e-6 are ~5% float32 noise,
        which FAILed a right gradient; its outputs being all float32 values gives it away."""

        def through_float32(fn):
            return lambda t: tf.cast(fn(tf.cast(t, tf.float32)), tf.float64)

        report = gradcheck.gradcheck(through_float32(tf.sin), A)
        self.assertEqual((report.verdict, report.dtype, report.eps), ("PASS", "float32", 1e-3))
        self.assertIn(
            "fn returned only float32 values on float64 inputs: checked in float32", report.notes[0]
        )
        wrong = gradcheck.gradcheck(through_float32(square_off_by(0.5)), A)
        self.assertEqual((wrong.verdict, wrong.dtype), ("FAIL", "float32"))
        for exact in (lambda t: 0.5 * t, lambda t: tf.reduce_sum(tf.nn.relu(t))):  # dyadic outputs
            self.assertEqual(gradcheck.gradcheck(exact, np.array([1.0, 2.0, -1.0])).dtype, "float64")
        float32_data = A.astype(np.float32)  # 2t of float32 data: float32 values, exactly
        self.assertEqual(gradcheck.gradcheck(lambda t: 2.0 * t, float32_data).dtype, "float64")
        float32_inside = gradcheck.gradcheck(through_float32(tf.sin), float32_data.astype(np.float64))
        self.assertEqual((float32_inside.verdict, float32_inside.dtype), ("PASS", "float32"))

    def test_a_function_that_computes_in_half_precision_is_refused_not_failed(self):
        """float16 or bfloat16 inside (a cast, a mixed-precision layer) FAILed a right gradient:
        numeric 0, as its rounding swallows a step of 1e-6.  No eps can check it: say so."""
        for half in (tf.float16, tf.bfloat16):

            def through_half(t, half=half):
                looped = tf.while_loop(  # inside a loop's body: found in the functions it calls
                    lambda i, s: i < 1, lambda i, s: (i + 1, s + tf.cast(tf.sin(tf.cast(t, half)), t.dtype)),
                    (0, tf.zeros_like(t)),
                )  # fmt: skip
                return tf.reduce_sum(looped[1])

            with self.assertRaisesRegex(
                ValueError, f"^fn: computes in {half.name} inside .* float32 or float64$"
            ):
                gradcheck.gradcheck(through_half, A)
        # A check that passes is not traced; a float64 one that fails keeps its FAIL.
        self.assertEqual(gradcheck.gradcheck(tf.sin, A).verdict, "PASS")
        self.assertEqual(gradcheck.gradcheck(square_off_by(0.5), A).verdict, "FAIL")

    def test_a_float64_function_that_selects_float32_data_stays_in_float64(self):
        """max(a, b) of float32 data gives float32 values: taken for a float32 computation, a
        planted 0.5% error in ∂/∂b PASSed at float32 tolerances, and a float64-only fn raised in
        the float32 rerun (adversarial review).  Inputs moved by 1e-9 tell them apart."""
        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal(6).astype(np.float32).astype(np.float64) for _ in range(2))
        a[0] += 1e-12

        @tf.custom_gradient
        def max_off_in_b(x, y):
            take = tf.cast(x >= y, x.dtype)
            return tf.maximum(x, y), lambda dy: (dy * take, dy * (1 - take) * 1.005)

        report = gradcheck.gradcheck(max_off_in_b, [a, b])
        self.assertEqual((report.verdict, report.dtype), ("FAIL", "float64"), report.to_text())
        float64_only = gradcheck.gradcheck(
            lambda x, y: tf.maximum(x * tf.constant(0.5, tf.float64), y), [a, b]
        )
        self.assertEqual((float64_only.verdict, float64_only.dtype), ("PASS", "float64"))

    def test_float32_inputs_checked_in_float64_say_so(self):
        report = gradcheck.gradcheck(tf.sin, A.astype(np.float32))
        self.assertEqual(report.dtype, "float64")
        self.assertIn("float32 inputs checked in float64", " ".join(report.notes))
        self.assertEqual(gradcheck.gradcheck(tf.sin, A).notes, ())

    def test_json_names_input_and_output_elements(self):
        report = gradcheck.gradcheck(square_with(wrong_at_one_element), A)
        data = json.loads(report.to_json())
        worst = data["entries"][0]["comparisons"][0]["worst"]
        self.assertEqual((worst["index"], worst["output_index"]), ([1, 2], [1, 2]))
        self.assertEqual(set(worst) >= {"analytic", "numeric", "abs_error", "rel_error"}, True)
        self.assertFalse(data["passed"])


if __name__ == "__main__":
    tf.test.main()


class ProjectionRowsTest(tf.test.TestCase):
    """Fast mode's rows (k directions, then s elements) are made dense only where asked: the
    dense [k + s, n] rows cost more than the rest of a check of 10⁶ inputs."""

    def test_rows_at_are_the_plans_rows(self):
        plan = perturb.Plan(np.array([[1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, 1.0, -1.0]]), np.array([3, 0]))
        at = np.array([3, 0, 2, 1])
        self.assertAllEqual(plan.rows_at(at), plan.rows(0, plan.count, 1.0)[at])
        realized = np.array([[0.5, -1.0, 1.0, 1.0], [-1.0, -1.0, 1.0, 0.0]])
        self.assertAllEqual(plan.rows_at([1, 2], realized), [[-1.0, -1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])

    def test_a_non_finite_gradient_counts_only_where_a_direction_moves(self):
        # An element whose realized direction is 0 (|θ| huge) must not make its row inf · 0 = NaN:
        # the analytic value (along), nor its round-off scale (along_abs, which counts inf as 0).
        grads = np.array([[1.0, np.inf, 2.0], [1.0, np.inf, 2.0], [3.0, -4.0, 0.5]])
        directions = np.array([[1.0, 0.0, -1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
        self.assertAllEqual(perturb.along(grads, directions), [-1.0, np.inf, -0.5])
        self.assertAllEqual(perturb.along_abs(grads, directions), [3.0, 3.0, 7.5])


class LongCheckTest(tf.test.TestCase):
    """A check projected to run long says so, once, with its estimate, in every mode."""

    def test_full_and_fast_checks_warn_when_projected_long(self):
        x = RNG.standard_normal(30)  # 30 inputs: 30 rows in full mode, 8 + 8 in fast mode
        with (
            mock.patch.object(perturb, "ROW_BUDGET", 1),
            mock.patch.object(perturb, "LONG_CHECK_SECONDS", 0.0),
        ):
            with self.assertLogs("absl", "WARNING") as logged:
                self.assertTrue(gradcheck.gradcheck(_sum_of_sines, [x]).passed)
            self.assertLen(logged.output, 1)
            self.assertRegex(
                logged.output[0], r"have \d+ perturbations left, about \d+ s .*; mode 'fast' checks"
            )
            with self.assertLogs("absl", "WARNING") as logged:
                self.assertTrue(gradcheck.gradcheck(_sum_of_sines, [x], mode="fast").passed)
            self.assertNotIn("mode 'fast'", logged.output[0])  # it is the fast mode already
        with mock.patch.object(perturb, "ROW_BUDGET", 1), self.assertNoLogs("absl", "WARNING"):
            gradcheck.gradcheck(_sum_of_sines, [x])
