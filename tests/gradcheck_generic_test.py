"""gradcheck.gradcheck / check_model / testing mixin: any TensorFlow function or Keras model.

Passes on TensorFlow's own ops; fails, naming the input and the element, on hand-written
`tf.custom_gradient` backward functions with planted mistakes.
"""

import contextlib
import io
import json
import pathlib
import re

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import gradcheck
from tf_backprop.testing import GradientCheckMixin

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((4, 5))
SQUARE = RNG.standard_normal((4, 4))
LABELS = (RNG.random((3, 4)) > 0.5).astype(np.float64)


def _layer_norm(x, gamma, beta):
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + 1e-5) * gamma + beta


def _stable_logsumexp(x):
    """log Σ exp(x) over the last axis with its hand-written gradient, softmax(x) ⊙ dy."""
    return _logsumexp_with(lambda x, dy: dy[..., None] * tf.nn.softmax(x))(x)


def _logsumexp_with(backward):
    @tf.custom_gradient
    def logsumexp(x):
        top = tf.reduce_max(x, axis=-1, keepdims=True)
        value = tf.squeeze(top, -1) + tf.math.log(tf.reduce_sum(tf.exp(x - top), axis=-1))  # [...]

        def grad(dy):
            return backward(x, dy)

        return value, grad

    return logsumexp


def _square_with(backward):
    """y = x² elementwise; dy/dx = 2x."""

    @tf.custom_gradient
    def square(x):
        return x * x, lambda dy: backward(x, dy)

    return square


def _matmul_with(backward):
    """y = x @ w with a hand-written backward (grad_x, grad_w)."""

    @tf.custom_gradient
    def matmul(x, w):
        return x @ w, lambda dy: backward(x, w, dy)

    return matmul


def _wrong_at_one_element(x, dy):
    """2x ⊙ dy, but 2x + 0.1 at element [1, 2]."""
    mistake = tf.scatter_nd(tf.constant([[1, 2]]), tf.constant([0.1], x.dtype), tf.shape(x))
    return (2.0 * x + mistake) * dy


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
        ("custom_gradient_logsumexp", _stable_logsumexp, [A]),
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
        report = gradcheck.gradcheck(_stable_logsumexp, x, mode="fast", directions=4, samples=4)
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.entries[0].comparisons[0].checked, 8)

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
        report = self._failing(_logsumexp_with(lambda x, dy: -dy[..., None] * tf.nn.softmax(x)), A, mode=mode)
        worst = report.entries[0].comparisons[0].worst
        self.assertAllClose(worst.a, -worst.b, rtol=1e-5)

    def test_missing_factor(self):
        report = self._failing(_square_with(lambda x, dy: x * dy), A)  # forgot the 2
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

    def test_wrong_at_one_element_names_it(self):
        report = self._failing(_square_with(_wrong_at_one_element), A)
        comparison = report.entries[0].comparisons[0]
        self.assertEqual(comparison.failures, 1)
        self.assertEqual(comparison.worst.location.index, (1, 2))
        self.assertEqual(comparison.worst.location.output_index, (1, 2))
        self.assertAllClose(comparison.worst.abs_error, 0.1)
        self.assertIn("in[1, 2] out[1, 2]", report.to_text())

    def test_fast_mode_catches_one_wrong_element(self):
        x = RNG.standard_normal((50, 60))
        report = self._failing(_square_with(_wrong_at_one_element), x, mode="fast")
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
        wrong_relu = _square_with(
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
        ("no_path", lambda x, w: tf.tanh(x), [A, B], {}, r"^inputs\[1\]: fn's output does not depend on it"),
        ("stopped_gradient", lambda x: tf.stop_gradient(x) * 2.0, A, {}, r"^x: fn's output does not depend"),
        (
            "integer_output",
            lambda x: tf.cast(x > 0, tf.int32),
            A,
            {},
            r"^fn: expected a floating-point output",
        ),
        ("tuple_output", lambda x: (x, x), A, {}, r"^fn: expected one tensor"),
        ("nan_output", tf.math.log, np.array([-1.0]), {}, r"^fn: the output contains NaN"),
        ("empty_input", tf.tanh, np.zeros((0, 3)), {}, r"^x: expected a non-empty"),
        ("bad_mode", tf.tanh, A, {"mode": "exact"}, r"^mode: expected one of 'full', 'fast'"),
        ("bad_eps", tf.tanh, A, {"eps": -1.0}, r"^eps: expected a positive"),
        ("bad_names", tf.tanh, A, {"names": ["a", "b"]}, r"^names: expected 1 names"),
        ("not_callable", "tanh", A, {}, r"^fn: expected a callable"),
        ("too_big_for_full", lambda x: x * 2.0, np.zeros(10_000), {}, r"^mode: 'full' would compare"),
        (
            "misshapen_gradient",
            _square_with(lambda x, dy: dy[0]),
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

    def test_json_names_input_and_output_elements(self):
        report = gradcheck.gradcheck(_square_with(_wrong_at_one_element), A)
        data = json.loads(report.to_json())
        worst = data["entries"][0]["comparisons"][0]["worst"]
        self.assertEqual((worst["index"], worst["output_index"]), ([1, 2], [1, 2]))
        self.assertEqual(set(worst) >= {"analytic", "numeric", "abs_error", "rel_error"}, True)
        self.assertFalse(data["passed"])


@keras.saving.register_keras_serializable("gradcheck_test")
class ClippedLinear(keras.layers.Layer):
    """x @ w, clipped to [-1, 1], with a hand-written gradient (wrong if `mistake`)."""

    def __init__(self, units=3, mistake=False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.mistake = units, mistake

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="w")

    def call(self, x):
        return self._clipped_matmul(x, tf.convert_to_tensor(self.w))  # a tensor: no variable inside

    def _clipped_matmul(self, x, w):
        mistake = self.mistake

        @tf.custom_gradient
        def forward(x, w):
            z = x @ w
            inside = tf.cast(tf.abs(z) < 1.0, z.dtype)

            def grad(dy):
                dz = dy * inside
                grad_w = tf.transpose(x) @ dz
                return dz @ tf.transpose(w), (2.0 * grad_w if mistake else grad_w)

            return tf.clip_by_value(z, -1.0, 1.0), grad

        return forward(x, w)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "mistake": self.mistake}


class CheckModelTest(tf.test.TestCase):
    def _model(self, mistake=False):
        return keras.Sequential([keras.Input((4,)), ClippedLinear(3, mistake), keras.layers.Dense(2)])

    def test_custom_layer_passes_in_float64(self):
        x, y = RNG.standard_normal((5, 4)) * 0.3, RNG.standard_normal((5, 2))
        report = gradcheck.check_model(self._model(), x, y, keras.losses.MeanSquaredError())
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.dtype, "float64")
        self.assertIn("float64 clone", report.notes[0])
        self.assertEqual(report.entries[0].comparisons[0].label, "tape ↔ numeric")
        self.assertLen(report.entries, 3)

    def test_planted_mistake_names_the_variable(self):
        x, y = RNG.standard_normal((5, 4)) * 0.3, RNG.standard_normal((5, 2))
        report = gradcheck.check_model(
            self._model(mistake=True), x, y, keras.losses.MeanSquaredError(), mode="fast"
        )
        self.assertFalse(report.passed)
        self.assertEqual([e.passed for e in report.entries], [False, True, True])
        self.assertIn("clipped_linear", report.entries[0].name)

    def test_float32_fallback_when_the_model_cannot_be_cloned(self):
        class Unclonable(keras.Model):
            def __init__(self, layer):  # a layer argument: no config to rebuild from
                super().__init__()
                self.inner = layer

            def call(self, x):
                return self.inner(x)

        model = Unclonable(keras.layers.Dense(2, activation="tanh"))
        x, y = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2))
        model(x)
        report = gradcheck.check_model(model, x, y, keras.losses.MeanSquaredError())
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(report.dtype, "float32")
        self.assertIn("could not clone", report.notes[0])

    def test_bad_arguments(self):
        x, y = RNG.standard_normal((5, 4)), RNG.standard_normal((5, 2))
        with self.assertRaisesRegex(ValueError, "^model: "):
            gradcheck.check_model(lambda t: t, x, y, keras.losses.MeanSquaredError())
        with self.assertRaisesRegex(ValueError, "^loss_fn: "):
            gradcheck.check_model(self._model(), x, y, "mse")
        x[0, 0] = np.nan
        with self.assertRaisesRegex(ValueError, "^x: expected finite"):
            gradcheck.check_model(self._model(), x, y, keras.losses.MeanSquaredError())


class MixinTest(GradientCheckMixin, tf.test.TestCase):
    def test_passing_assertion_returns_the_report(self):
        report = self.assertGradientsCorrect(_stable_logsumexp, [A])
        self.assertTrue(report.passed)

    def test_failure_message_is_the_report(self):
        with self.assertRaises(self.failureException) as caught:
            self.assertGradientsCorrect(_square_with(_wrong_at_one_element), [A], names=["x"])
        message = str(caught.exception)
        for expected in ["FAIL x analytic ↔ numeric", "in[1, 2] out[1, 2]", "analytic", "numeric"]:
            self.assertIn(expected, message)

    def test_model_assertion(self):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh")])
        self.assertModelGradientsCorrect(model, A[:, :3], A[:, :2], keras.losses.MeanSquaredError())


DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "gradcheck.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# Lines of a pasted output that must come out the same: verdicts, and the failing or kinked
# element's location (values are left out: their last digits depend on the machine).
CHECKED_LINE = re.compile(r"^(PASS: .*|FAIL: .*|(FAIL|kink) .*? at [^:]*:)")


class DocsTest(tf.test.TestCase):
    """docs/gradcheck.md's Python blocks run, and print the verdicts and elements shown."""

    def test_python_blocks_print_what_the_page_shows(self):
        blocks = FENCE.findall(DOC.read_text(encoding="utf-8"))
        namespace, checked = {"__name__": "docs_gradcheck"}, 0
        for (language, code), following in zip(blocks, [*blocks[1:], ("", "")]):
            if language != "python":
                continue
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the page's own code
            if following[0] == "text" and output.getvalue():
                printed = output.getvalue().splitlines()
                for line in following[1].splitlines():
                    expected = CHECKED_LINE.match(line)
                    if expected:
                        checked += 1
                        self.assertTrue(any(p.startswith(expected.group(0)) for p in printed), line)
        self.assertGreaterEqual(checked, 8)  # every verdict and failing element on the page


if __name__ == "__main__":
    tf.test.main()
