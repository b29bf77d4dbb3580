"""gradcheck.check: the MLP's tape and hand-written gradients against float64 finite differences.

A checker that cannot fail is a defect, so half of these tests plant a fault (a flipped sign, a
missing 1/m, a wrong activation derivative, one wrong element) and require the report to fail
on the right variable, comparison and element.
"""

import dataclasses
import json
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import activations, backprop, gradcheck
from tf_backprop.gradcheck import perturb
from tf_backprop.model import MLP

SIZES = (3, 4, 3, 2)
VARIABLES = [
    "dense_1/kernel",
    "dense_1/bias",
    "dense_2/kernel",
    "dense_2/bias",
    "dense_3/kernel",
    "dense_3/bias",
]


def _batch(model, loss, batch_size=6, seed=1):
    return gradcheck.random_batch(model, loss, batch_size, seed)


def _verdicts(entry):
    """{comparison label: passed} for one entry."""
    return {c.label: c.passed for c in entry.comparisons}


def _flipped_sign(model, x, y, loss, l2=0.0):
    value, grads = backprop.manual_gradients(model, x, y, loss, l2)
    return value, [-g for g in grads]


def _missing_one_over_m(model, x, y, loss, l2=0.0):
    # δ_L without its 1/m: every gradient comes out m times too large.
    value, grads = backprop.manual_gradients(model, x, y, loss, l2)
    return value, [g * tf.cast(tf.shape(x)[0], g.dtype) for g in grads]


def _one_wrong_element(model, x, y, loss, l2=0.0):
    value, grads = backprop.manual_gradients(model, x, y, loss, l2)
    wrong = tf.tensor_scatter_nd_add(grads[2], [[1, 2]], tf.constant([1e-3], grads[2].dtype))
    return value, grads[:2] + [wrong] + grads[3:]


def _tanh_backward_missing_square(z, h, grad_h):
    return grad_h * (1 - h)  # should be 1 − h²


class CheckPassesTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("relu_half_mse", "relu", "linear", "half_mse", 0.0, "float32"),
        ("tanh_mse_l2", "tanh", "linear", "mse", 0.03, "float64"),
        ("gelu_categorical", "gelu", "linear", "categorical_crossentropy", 0.0, "float32"),
        ("softplus_binary_l2", "softplus", "linear", "binary_crossentropy", 0.01, "float64"),
        ("sigmoid_sigmoid_mse", "sigmoid", "sigmoid", "mse", 0.0, "float32"),
        ("elu_softmax_mse", "elu", "softmax", "mse", 0.0, "float64"),
        ("leaky_relu_relu_out", "leaky_relu", "relu", "half_mse", 0.0, "float32"),
    )
    def test_full_mode_passes(self, activation, output_activation, loss, l2, dtype):
        model = MLP(SIZES, activation=activation, output_activation=output_activation, dtype=dtype, seed=3)
        x, y = _batch(model, loss)
        report = gradcheck.check(model, x, y, loss, l2=l2)
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual([e.name for e in report.entries], VARIABLES)
        for entry, variable in zip(report.entries, model.trainable_variables):
            self.assertEqual(entry.shape, tuple(variable.shape))
            self.assertEqual(
                [c.label for c in entry.comparisons], ["tape ↔ manual", "tape ↔ numeric", "manual ↔ numeric"]
            )
            self.assertEqual({c.checked for c in entry.comparisons}, {int(np.prod(entry.shape))})
            self.assertAllClose(entry.norms["tape"], entry.norms["manual"], rtol=1e-9)

    def test_article_net_passes(self):
        model = MLP()  # 2-3-3-1, ReLU, float32
        x, y = _batch(model, "half_mse", batch_size=10, seed=0)
        report = gradcheck.check(model, x, y, "half_mse")
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.dtype, "float64")
        self.assertIn("float64 copy of the float32 model", report.notes[0])

    def test_a_long_check_is_warned_of_with_its_estimate(self):
        """Full mode's time grows with the square of the size: a projected long run says so."""
        model = MLP()  # 25 parameters: 25 rows, one per chunk with the budget at 1
        x, y = _batch(model, "half_mse")
        with (
            mock.patch.object(perturb, "ROW_BUDGET", 1),
            mock.patch.object(perturb, "LONG_CHECK_SECONDS", 0.0),
        ):
            with self.assertLogs("absl", "WARNING") as logged:
                report = gradcheck.check(model, x, y, "half_mse")
            self.assertTrue(report.passed, report.to_text())
            self.assertLen(logged.output, 1)
            self.assertRegex(
                logged.output[0],
                r"the finite differences have \d+ perturbations left, about \d+ s at the rate so far; "
                r"mode 'fast' checks",
            )
            with self.assertLogs("absl", "WARNING") as logged:  # order 2 goes through the same rows
                gradcheck.check(model, x, y, "half_mse", order=2)
            self.assertIn("mode 'fast' checks", logged.output[0])
        with mock.patch.object(perturb, "ROW_BUDGET", 1), self.assertNoLogs("absl", "WARNING"):
            gradcheck.check(model, x, y, "half_mse")

    def test_float32_model_is_left_untouched(self):
        model = MLP(SIZES, activation="tanh", dtype="float32")
        before = [v.numpy().copy() for v in model.weights]
        x, y = _batch(model, "mse")
        gradcheck.check(model, x, y, "mse")
        for old, variable in zip(before, model.weights):
            self.assertEqual(variable.dtype, "float32")
            self.assertAllEqual(old, variable.numpy())

    def test_fast_mode_passes_and_samples(self):
        model = MLP((16, 32, 32, 4), activation="gelu", seed=5)
        x, y = _batch(model, "categorical_crossentropy", batch_size=16)
        report = gradcheck.check(
            model, x, y, "categorical_crossentropy", mode="fast", l2=0.01, directions=3, samples=2
        )
        self.assertTrue(report.passed, report.to_text())
        kernel, bias_3 = report.entry("dense_1/kernel"), report.entry("dense_3/bias")
        self.assertEqual(kernel.comparisons[0].checked, 16 * 32)  # tape ↔ manual: every element
        self.assertEqual(kernel.comparisons[1].checked, 3 + 2)  # 3 directions, 2 elements
        self.assertIsNone(kernel.norms["numeric"])
        self.assertEqual(bias_3.comparisons[1].checked, 4)  # 4 ≤ 3 + 2: every element
        self.assertIsNotNone(bias_3.norms["numeric"])

    def test_fast_mode_is_seeded(self):
        model = MLP((8, 16, 3), activation="tanh")
        x, y = _batch(model, "mse")
        first, second = (gradcheck.check(model, x, y, "mse", mode="fast", seed=4) for _ in range(2))
        self.assertEqual(first.to_dict(), second.to_dict())

    def test_text_and_json(self):
        model = MLP(SIZES, activation="tanh")
        x, y = _batch(model, "mse")
        report = gradcheck.check(model, x, y, "mse")
        text = report.to_text()
        for expected in [
            "tape ↔ manual",
            "manual ↔ numeric",
            "dense_2/kernel",
            "max rel",
            "worst at",
            "PASS",
        ]:
            self.assertIn(expected, text)
        data = json.loads(report.to_json())
        self.assertEqual(data, report.to_dict())
        self.assertTrue(data["passed"])
        self.assertEqual(len(data["entries"]), 6)
        comparison = data["entries"][2]["comparisons"][1]
        self.assertEqual(comparison["sources"], ["tape", "numeric"])
        self.assertEqual(
            set(comparison["worst"]),
            {"index", "output_index", "direction", "tape", "numeric", "abs_error", "rel_error"},
        )
        self.assertLessEqual(comparison["max_rel"], comparison["rtol"])


class CheckFailsTest(tf.test.TestCase, parameterized.TestCase):
    """Planted faults: the report fails, on the manual side only."""

    def _check_manual_fault(self, manual_fn, mode="full"):
        model = MLP(SIZES, activation="tanh", seed=2)
        x, y = _batch(model, "mse")
        report = gradcheck.check(model, x, y, "mse", mode=mode, manual_fn=manual_fn)
        self.assertFalse(report.passed)
        self.assertIn("FAIL", report.to_text())
        for entry in report.entries:
            verdicts = _verdicts(entry)
            self.assertTrue(verdicts["tape ↔ numeric"], entry.name)  # the reference still agrees
            self.assertFalse(verdicts["tape ↔ manual"], entry.name)
            self.assertFalse(verdicts["manual ↔ numeric"], entry.name)
        return report

    def test_flipped_sign(self):
        report = self._check_manual_fault(_flipped_sign)
        worst = report.entry("dense_1/kernel").comparisons[2].worst
        self.assertAllClose(worst.a, -worst.b, rtol=1e-6)

    def test_missing_one_over_m(self):
        report = self._check_manual_fault(_missing_one_over_m)
        worst = report.entry("dense_3/bias").comparisons[0].worst
        self.assertAllClose(worst.b / worst.a, 6.0)  # batch 6

    def test_fast_mode_detects_a_fault(self):
        self._check_manual_fault(_flipped_sign, mode="fast")

    def test_one_wrong_element_is_named(self):
        model = MLP(SIZES, activation="tanh", seed=2)
        x, y = _batch(model, "mse")
        report = gradcheck.check(model, x, y, "mse", manual_fn=_one_wrong_element)
        self.assertFalse(report.passed)
        failing = [(e.name, c.label) for e, c in report.comparisons if not c.passed]
        self.assertEqual(
            failing, [("dense_2/kernel", "tape ↔ manual"), ("dense_2/kernel", "manual ↔ numeric")]
        )
        for comparison in report.entry("dense_2/kernel").comparisons[::2]:
            self.assertEqual(comparison.failures, 1)
            self.assertEqual(comparison.worst.location.index, (1, 2))
            self.assertAllClose(comparison.worst.abs_error, 1e-3)
        self.assertIn("worst at [1, 2]", report.to_text())

    @parameterized.parameters("float32", "float64")
    def test_wrong_activation_derivative(self, dtype):
        model = MLP(SIZES, activation="tanh", dtype=dtype, seed=2)
        tanh = activations.get("tanh")
        model.hidden_activation = dataclasses.replace(tanh, backward=_tanh_backward_missing_square)
        x, y = _batch(model, "mse")
        report = gradcheck.check(model, x, y, "mse")
        self.assertFalse(report.passed)
        for name in VARIABLES:
            verdicts = _verdicts(report.entry(name))
            # The hidden activations' derivative is wrong, so only the output layer survives.
            self.assertEqual(verdicts["manual ↔ numeric"], name.startswith("dense_3"), name)
            self.assertTrue(verdicts["tape ↔ numeric"], name)

    def test_faulty_tape_is_caught_by_the_numeric_reference(self):
        def slightly_off_tape(model, x, y, loss, l2=0.0):
            value, grads = backprop.tape_gradients(model, x, y, loss, l2)
            return value, [g * 1.001 for g in grads]

        model = MLP(SIZES, activation="sigmoid")
        x, y = _batch(model, "mse")
        report = gradcheck.check(model, x, y, "mse", tape_fn=slightly_off_tape)
        self.assertFalse(report.passed)
        self.assertTrue(all(_verdicts(e)["manual ↔ numeric"] for e in report.entries))
        self.assertFalse(any(_verdicts(e)["tape ↔ numeric"] for e in report.entries))

    def test_a_large_step_is_extrapolated_not_failed(self):
        """At eps 1e-2 the central differences' truncation error is ≫ rtol: right gradients
        FAILed.  The half step shows truncation (the Richardson value agrees); a 0.1% error
        still fails there."""
        model = MLP(SIZES, activation="tanh")
        x, y = _batch(model, "mse")
        report = gradcheck.check(model, x, y, "mse", eps=1e-2)
        self.assertTrue(report.passed, report.to_text())

        def slightly_off_tape(model, x, y, loss, l2=0.0):
            value, grads = backprop.tape_gradients(model, x, y, loss, l2)
            return value, [g * 1.001 for g in grads]

        report = gradcheck.check(model, x, y, "mse", eps=1e-2, tape_fn=slightly_off_tape)
        self.assertTrue(all(_verdicts(e)["manual ↔ numeric"] for e in report.entries))
        self.assertFalse(any(_verdicts(e)["tape ↔ numeric"] for e in report.entries))
        with self.assertRaisesRegex(ValueError, r"^eps: 0\.3 would move dense_1/kernel"):
            gradcheck.check(model, x, y, "mse", eps=0.3)  # a step beyond 1% of the weights' scale


class KinkTest(tf.test.TestCase):
    """A ReLU pre-activation within eps of 0: its finite differences are kinks, not failures."""

    def _model(self, offset):
        model = MLP((2, 3, 1), activation="relu", dtype="float64")
        x = np.array([[1.0, 0.5], [-0.4, 1.2], [0.7, -0.9]])
        kernel = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8]])
        bias = np.array([offset - x[0] @ kernel[:, 0], 0.1, 0.2])  # z_1[0, 0] = offset
        model.set_weights([kernel, bias, np.array([[1.5], [-0.7], [0.9]]), np.array([0.1])])
        return model, x, np.array([[0.3], [-0.2], [0.5]])

    def test_kink_is_reported_not_failed(self):
        model, x, y = self._model(offset=2e-7)  # ±eps on b_1[0] crosses z = 0
        report = gradcheck.check(model, x, y, "mse")
        self.assertTrue(report.passed, report.to_text())
        self.assertGreater(report.kinks, 0)
        for label in ("tape ↔ numeric", "manual ↔ numeric"):
            comparison = {c.label: c for c in report.entry("dense_1/bias").comparisons}[label]
            self.assertEqual(comparison.kinks, 1)
            self.assertEqual(comparison.failures, 0)
            kink = comparison.worst_kink
            self.assertEqual(kink.location.index, (0,))
            self.assertGreater(kink.rel_error, comparison.tolerance.rtol)  # it would have failed
        self.assertIn("crossed a kink", report.to_text())

    def test_two_kinks_in_one_step_are_unchecked_not_failed(self):
        # z_1[0, 0] = 0 at θ and z_1[1, 0] = −ε/2: a step on b_1[0] crosses kinks at two places,
        # where the one-kink rules cannot show them (review: `--eps=1e-2` FAILed right gradients).
        model = MLP((2, 3, 1), activation="relu", dtype="float64")
        eps = 1e-6
        x = np.array([[1.0, 0.5], [1.0 - eps / 2, 0.5], [0.7, -0.9]])
        kernel = np.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8]])
        bias = np.array([-(x[0] @ kernel[:, 0]), 0.1, 0.2])
        model.set_weights([kernel, bias, np.array([[1.5], [-0.7], [0.9]]), np.array([0.1])])
        y = np.array([[1.3], [-1.2], [0.5]])
        report = gradcheck.check(model, x, y, "mse", eps=eps)
        self.assertEqual(report.verdict, "INCONCLUSIVE", report.to_text())
        for label in ("tape ↔ numeric", "manual ↔ numeric"):
            comparison = {c.label: c for c in report.entry("dense_1/bias").comparisons}[label]
            self.assertEqual((comparison.failures, comparison.unchecked), (0, 1))
            self.assertEqual(comparison.worst_unchecked.location.index, (0,))
        wrong = gradcheck.check(model, x, y, "mse", eps=eps, manual_fn=_flipped_sign)
        self.assertEqual(wrong.verdict, "FAIL")

    def test_no_kink_away_from_zero(self):
        model, x, y = self._model(offset=0.5)
        report = gradcheck.check(model, x, y, "mse")
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.kinks, 0)

    def test_fast_mode_reports_kinks_too(self):
        model, x, y = self._model(offset=2e-7)
        report = gradcheck.check(model, x, y, "mse", mode="fast", directions=2, samples=1)
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.entry("dense_1/bias").comparisons[1].kinks, 1)  # 3 ≤ 2 + 1: every element


class CheckInputsTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.model = MLP(SIZES, activation="tanh")
        self.x, self.y = _batch(self.model, "mse")

    def _with(self, **overrides):
        arguments = {"model": self.model, "x": self.x, "y": self.y, "loss": "mse", **overrides}
        return gradcheck.check(**arguments)

    @parameterized.named_parameters(
        ("nan_in_x", "x", lambda x, y: {"x": np.where(np.arange(x.size).reshape(x.shape) == 4, np.nan, x)}),
        ("inf_in_y", "y", lambda x, y: {"y": np.where(np.arange(y.size).reshape(y.shape) == 1, np.inf, y)}),
        ("wrong_feature_count", "x", lambda x, y: {"x": x[:, :2]}),
        ("wrong_batch_of_y", "y", lambda x, y: {"y": y[:3]}),
        ("no_x", "x", lambda x, y: {"x": None}),
        ("no_y", "y", lambda x, y: {"y": None}),
        ("text_x", "x", lambda x, y: {"x": x.astype(str)}),
        ("bad_mode", "mode", lambda x, y: {"mode": "quick"}),
        ("zero_eps", "eps", lambda x, y: {"eps": 0.0}),
        ("nan_eps", "eps", lambda x, y: {"eps": float("nan")}),
        ("negative_l2", "l2", lambda x, y: {"l2": -0.1}),
        ("unknown_loss", "loss", lambda x, y: {"loss": "hinge"}),
        ("no_directions", "directions", lambda x, y: {"directions": 0}),
        ("negative_seed", "seed", lambda x, y: {"seed": -1}),
        ("zero_atol", "atol", lambda x, y: {"atol": 0.0}),
        ("negative_rtol", "rtol", lambda x, y: {"rtol": -1e-5}),
        ("rtol_of_one", "rtol", lambda x, y: {"rtol": 1.0}),  # any gradient of the right sign passes
        ("not_an_mlp", "model", lambda x, y: {"model": tf.keras.Sequential([tf.keras.layers.Dense(2)])}),
    )
    def test_bad_input_names_the_argument(self, argument, change):
        with self.assertRaisesRegex(ValueError, f"^{argument}: "):
            self._with(**change(self.x, self.y))

    def test_rtol_must_leave_room_to_fail(self):
        for check in (
            lambda: self._with(rtol=2.0),
            lambda: gradcheck.gradcheck(tf.sin, np.array([0.5]), rtol=2.0),
        ):
            with self.assertRaisesRegex(ValueError, r"^rtol: expected a number below 1 .*, got 2\.0$"):
                check()
        self.assertTrue(self._with(rtol=0.5).passed)

    def test_nan_message_says_what_is_wrong(self):
        x = self.x.copy()
        x[2, 1] = np.nan
        with self.assertRaisesRegex(ValueError, r"x: expected finite values, found 1 NaN or inf"):
            self._with(x=x)

    def test_gradient_source_of_the_wrong_shape(self):
        def transposed(model, x, y, loss, l2=0.0):
            value, grads = backprop.manual_gradients(model, x, y, loss, l2)
            return value, [tf.transpose(grads[0])] + grads[1:]

        with self.assertRaisesRegex(ValueError, "^manual_fn: expected gradients of shapes"):
            self._with(manual_fn=transposed)

    def test_random_batch_targets_suit_the_loss(self):
        model = MLP((3, 5, 4))
        x, labels = gradcheck.random_batch(model, "categorical_crossentropy", 7)
        self.assertEqual(x.shape, (7, 3))
        self.assertEqual(labels.shape, (7,))
        self.assertTrue(np.all((labels >= 0) & (labels < 4)))
        _, binary = gradcheck.random_batch(model, "binary_crossentropy", 7)
        self.assertEqual(set(np.unique(binary)) <= {0.0, 1.0}, True)
        _, regression = gradcheck.random_batch(model, "mse", 7)
        self.assertEqual(regression.shape, (7, 4))
        with self.assertRaisesRegex(ValueError, "^batch_size: "):
            gradcheck.random_batch(model, "mse", 0)


if __name__ == "__main__":
    tf.test.main()
