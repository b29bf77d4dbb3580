"""gradcheck.check_model: any Keras model's tape gradients against central differences of the loss.

Per trainable variable, custom layers included; a float32 model is checked on a float64 clone.
"""

from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from tf_backprop import gradcheck
from tf_backprop.gradcheck import perturb

RNG = np.random.default_rng(0)


@keras.saving.register_keras_serializable("gradcheck_keras_model_test")
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

    def test_a_long_check_is_warned_of_with_its_estimate(self):
        x, y = RNG.standard_normal((5, 4)) * 0.3, RNG.standard_normal((5, 2))
        loss = keras.losses.MeanSquaredError()
        with (
            mock.patch.object(perturb, "ROW_BUDGET", 1),
            mock.patch.object(perturb, "LONG_CHECK_SECONDS", 0.0),
        ):
            with self.assertLogs("absl", "WARNING") as logged:
                gradcheck.check_model(self._model(), x, y, loss)
        self.assertRegex(logged.output[0], r"have \d+ perturbations left, about \d+ s .*; mode 'fast' checks")
        with mock.patch.object(perturb, "ROW_BUDGET", 1), self.assertNoLogs("absl", "WARNING"):
            gradcheck.check_model(self._model(), x, y, loss)

    def test_planted_mistake_names_the_variable(self):
        x, y = RNG.standard_normal((5, 4)) * 0.3, RNG.standard_normal((5, 2))
        report = gradcheck.check_model(
            self._model(mistake=True), x, y, keras.losses.MeanSquaredError(), mode="fast"
        )
        self.assertFalse(report.passed)
        self.assertEqual([e.passed for e in report.entries], [False, True, True])
        self.assertIn("clipped_linear", report.entries[0].name)

    def test_a_float64_container_is_checked_in_float64(self):
        """Sequential and functional models of float64 layers keep float32 as their own compute
        dtype: the check cast x and y to it, ran the Keras loss in float32 (rtol 1e-2, so a
        gradient 0.5% off PASSed) and a plain loss raised on float32 − float64."""
        x, y = RNG.standard_normal((5, 4)) * 0.3, RNG.standard_normal((5, 2))
        losses = (keras.losses.MeanSquaredError(), lambda t, p: tf.reduce_mean((t - p) ** 2))
        for mistake in (False, True):
            inputs = keras.Input((4,), dtype="float64")
            outputs = keras.layers.Dense(2, dtype="float64")(
                ClippedLinear(3, mistake, dtype="float64")(inputs)
            )
            sequential = keras.Sequential(
                [
                    keras.Input((4,), dtype="float64"),
                    ClippedLinear(3, mistake, dtype="float64"),
                    keras.layers.Dense(2, dtype="float64"),
                ]
            )
            for model in (sequential, keras.Model(inputs, outputs)):
                for loss in losses:
                    report = gradcheck.check_model(model, x, y, loss)
                    self.assertEqual((report.dtype, report.notes), ("float64", ()))
                    self.assertEqual(report.passed, not mistake, report.to_text())

    def test_a_float32_functional_model_is_checked_on_a_float64_clone(self):
        # Keras 3 has no _is_graph_network: these were rebuilt from config in float32 and checked
        # at float32 tolerances.
        x, y = RNG.standard_normal((5, 4)) * 0.3, RNG.standard_normal((5, 2))
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2)(ClippedLinear(3)(inputs)))
        report = gradcheck.check_model(model, x, y, keras.losses.MeanSquaredError())
        self.assertEqual((report.verdict, report.dtype), ("PASS", "float64"), report.to_text())
        self.assertIn("float64 clone", report.notes[0])

    def test_several_inputs_and_outputs(self):
        a, b = keras.Input((3,), name="a"), keras.Input((4,), name="b")
        hidden = keras.layers.Concatenate()(
            [keras.layers.Dense(4, activation="tanh")(a), ClippedLinear(3)(b)]
        )
        first, second = keras.layers.Dense(2)(hidden), keras.layers.Dense(1)(hidden)
        x = [RNG.standard_normal((6, 3)), RNG.standard_normal((6, 4)) * 0.3]
        y = [RNG.standard_normal((6, 2)), RNG.standard_normal((6, 1))]

        def both(targets, outputs):
            return sum(tf.reduce_mean((t - o) ** 2) for t, o in zip(targets, outputs))

        report = gradcheck.check_model(keras.Model([a, b], [first, second]), x, y, both)
        self.assertEqual((report.verdict, report.dtype), ("PASS", "float64"), report.to_text())
        self.assertLen(report.entries, 7)  # 3 dense layers, the clipped one without a bias
        one = keras.Model({"a": a, "b": b}, first)
        named = gradcheck.check_model(one, {"a": x[0], "b": x[1]}, y[0], keras.losses.MeanSquaredError())
        self.assertEqual(named.verdict, "PASS", named.to_text())
        with self.assertRaisesRegex(
            ValueError, r"^x: its arrays have different numbers of rows \(\[4, 6\]\)$"
        ):
            gradcheck.check_model(one, {"a": x[0], "b": x[1][:4]}, y[0], keras.losses.MeanSquaredError())
        with self.assertRaisesRegex(ValueError, r"^x\[1\]: expected finite values"):
            gradcheck.check_model(one, [x[0], x[1] * np.nan], y[0], keras.losses.MeanSquaredError())
        nested = keras.Model([a, b], [first, [second]])  # outputs and targets nested a level more

        def nested_loss(targets, outputs):
            return both([targets[0], targets[1][0]], [outputs[0], outputs[1][0]])

        self.assertEqual(gradcheck.check_model(nested, x, [y[0], [y[1]]], nested_loss).verdict, "PASS")
        plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])  # rows as plain lists
        mse = keras.losses.MeanSquaredError()
        self.assertEqual(
            gradcheck.check_model(plain, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], [[1.0], [2.0]], mse).verdict,
            "PASS",
        )

    def test_a_clone_whose_gradients_differ_is_not_what_is_checked(self):
        """A layer whose hand-written backward is chosen by an argument get_config leaves out:
        the clone (same outputs, autodiff backward) PASSed the model's wrong gradient."""

        class Softsign(keras.layers.Layer):
            def __init__(self, fused=False, **kwargs):
                super().__init__(**kwargs)
                self.fused = fused

            def call(self, x):
                if not self.fused:
                    return x / (1 + tf.abs(x))

                @tf.custom_gradient
                def forward(x):  # the backward is wrong: dy / (1 + |x|) for dy / (1 + |x|)²
                    return x / (1 + tf.abs(x)), lambda dy: dy / (1 + tf.abs(x))

                return forward(x)

            def get_config(self):  # the slip: `fused` left out (Keras adds it only without this)
                return super().get_config()

        x, y = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 1))
        layers = [keras.Input((3,)), keras.layers.Dense(4), Softsign(fused=True), keras.layers.Dense(1)]
        report = gradcheck.check_model(keras.Sequential(layers), x, y, keras.losses.MeanSquaredError())
        self.assertEqual((report.verdict, report.dtype), ("FAIL", "float32"), report.to_text())
        self.assertIn("the float64 clone computes different gradients", report.notes[0])

    def test_a_layer_frozen_after_it_was_built_is_not_a_crash(self):
        # The clone, rebuilt from config, trained both layers: its 4 values against the model's
        # 2 names raised, blamed on loss_fn.  Now the model itself is checked, in float32.
        class Two(keras.Model):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.first, self.second = keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)

            def call(self, x):
                return self.second(self.first(x))

        model, x = Two(), RNG.standard_normal((5, 3))
        model(x)
        model.first.trainable = False
        report = gradcheck.check_model(model, x, np.zeros((5, 1)), keras.losses.MeanSquaredError())
        self.assertEqual((report.verdict, report.dtype), ("PASS", "float32"), report.to_text())
        self.assertIn("the clone trains other variables", report.notes[0])
        self.assertLen(report.entries, 2)

    def test_variables_the_loss_does_not_reach_are_named_not_a_crash(self):
        # An auxiliary head this loss skips raised "does not depend on it" for the whole model.
        inputs = keras.Input((3,), dtype="float64")
        hidden = keras.layers.Dense(4, activation="tanh", dtype="float64", name="body")(inputs)
        outputs = [
            keras.layers.Dense(1, dtype="float64", name="main")(hidden),
            keras.layers.Dense(2, dtype="float64", name="aux")(hidden),
        ]
        model, x = keras.Model(inputs, outputs), RNG.standard_normal((5, 3))
        mse = keras.losses.MeanSquaredError(dtype="float64")
        report = gradcheck.check_model(model, x, np.zeros((5, 1)), lambda y, out: mse(y, out[0]))
        self.assertTrue(report.passed, report.to_text())
        self.assertEqual(
            [e.name for e in report.entries], ["body/kernel", "body/bias", "main/kernel", "main/bias"]
        )
        self.assertIn(
            "not checked: aux/kernel, aux/bias (loss_fn(y, model(x)) does not depend on them)", report.notes
        )

    def test_a_variable_cut_off_by_stop_gradient_is_refused_not_left_out(self):
        # Its loss moves with it, but the tape sees no path: a bug, not an unused variable.
        class Cut(keras.layers.Layer):
            def build(self, shape):
                self.w = self.add_weight(shape=(shape[-1], 1), initializer="ones", dtype="float64")

            def call(self, x):
                return tf.matmul(x, tf.stop_gradient(self.w))

        inputs = keras.Input((3,), dtype="float64")
        outputs = keras.layers.Dense(1, dtype="float64")(inputs) + Cut(dtype="float64", name="cut")(inputs)
        model, mse = keras.Model(inputs, outputs), keras.losses.MeanSquaredError(dtype="float64")
        with self.assertRaisesRegex(
            ValueError, r"^cut/variable: .* changes with it, but its tape gradient is None"
        ):
            gradcheck.check_model(model, RNG.standard_normal((5, 3)), np.zeros((5, 1)), mse)

    def test_an_adapted_normalization_layer_is_cloned_in_float64(self):
        # Its mean and variance are cached apart from its variables: the clone computed other
        # outputs and every such model was checked in float32.
        x = RNG.standard_normal((8, 3)) * 5 + 2
        normalization = keras.layers.Normalization()
        normalization.adapt(x)
        model = keras.Sequential([keras.Input((3,)), normalization, keras.layers.Dense(2)])
        report = gradcheck.check_model(model, x, RNG.standard_normal((8, 2)), keras.losses.MeanSquaredError())
        self.assertEqual((report.verdict, report.dtype), ("PASS", "float64"), report.to_text())

    def test_a_mixed_precision_model_is_checked_on_its_float64_clone(self):
        """A float16 or bfloat16 model's clone differs from it by that rounding: a float32
        tolerance refused every clone, and the float32 fallback FAILed right gradients."""
        x, y = RNG.standard_normal((8, 4)), RNG.standard_normal((8, 2))
        for policy, half in (("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")):
            for mistake in (False, True):
                keras.utils.set_random_seed(1)
                keras.config.set_dtype_policy(policy)
                try:
                    model = keras.Sequential(
                        [keras.Input((4,)), keras.layers.Dense(16, activation="tanh"), ClippedLinear(3, mistake),
                         keras.layers.Dense(2)]
                    )  # fmt: skip
                finally:
                    keras.config.set_dtype_policy("float32")
                report = gradcheck.check_model(model, x * 0.3, y, keras.losses.MeanSquaredError())
                self.assertEqual((report.verdict, report.dtype), ("FAIL" if mistake else "PASS", "float64"))
                self.assertIn(f"float64 clone of the model, which computes in {half}", report.notes[0])

    def test_a_half_precision_model_that_cannot_be_cloned_is_refused(self):
        class Unclonable(keras.Model):
            def __init__(self, layer):
                super().__init__()
                self.inner = layer

            def call(self, x):
                return self.inner(x)

        model = Unclonable(keras.layers.Dense(2, activation="tanh", dtype="mixed_float16"))
        x, y = RNG.standard_normal((5, 3)), RNG.standard_normal((5, 2))
        model(x)
        with self.assertRaisesRegex(ValueError, r"^loss_fn\(y, model\(x\)\): computes in float16 inside"):
            gradcheck.check_model(model, x, y, keras.losses.MeanSquaredError())

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

    def test_targets_the_loss_pairs_as_they_are(self):
        x = RNG.standard_normal((5, 4))
        one_output = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        for y in (RNG.standard_normal(5), RNG.standard_normal((5, 1))):
            report = gradcheck.check_model(one_output, x, y, keras.losses.MeanSquaredError())
            self.assertTrue(report.passed, report.to_text())
        classes = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        for labels in (np.array([0, 2, 1, 1, 0]), np.array([[0], [2], [1], [1], [0]])):
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            self.assertTrue(gradcheck.check_model(classes, x, labels, loss).passed)

    def test_bad_arguments(self):
        x, y = RNG.standard_normal((5, 4)), RNG.standard_normal((5, 2))
        with self.assertRaisesRegex(ValueError, "^model: "):
            gradcheck.check_model(lambda t: t, x, y, keras.losses.MeanSquaredError())
        model = self._model()
        named = gradcheck.check_model(model, x * 0.3, y, "mse")  # as compile takes it
        self.assertTrue(named.passed)
        built = gradcheck.check_model(model, x * 0.3, y, keras.losses.MeanSquaredError())
        for by_name, by_loss in zip(named.entries, built.entries):  # the same loss: its batch mean
            self.assertAllClose(by_name.norms["tape"], by_loss.norms["tape"], rtol=1e-12, atol=0)
        with self.assertRaisesRegex(ValueError, r"^loss_fn: unknown Keras loss name 'half_mse'$"):
            gradcheck.check_model(self._model(), x, y, "half_mse")
        with self.assertRaisesRegex(ValueError, "^loss_fn: expected a callable"):
            gradcheck.check_model(self._model(), x, y, None)
        with self.assertRaisesRegex(
            ValueError,
            r"^model\(x\): raised ValueError: Input 0 .* expected axis -1 of input shape to have value 4",
        ):
            gradcheck.check_model(
                keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), x[:, :3], y, "mse"
            )
        with self.assertRaisesRegex(  # a custom layer's op fails: Keras's wrapper and TF's frame dropped
            ValueError,
            r"^model\(x\): raised InvalidArgumentError: Matrix size-incompatible: In\[0\]: \[5,3\], "
            r"In\[1\]: \[4,3\] \[Op:MatMul\]$",
        ):
            gradcheck.check_model(self._model(), x[:, :3], y, "mse")
        with self.assertRaisesRegex(
            ValueError,
            r"^loss_fn\(y, model\(x\)\): raised InvalidArgumentError: Incompatible shapes: \[5,3\] vs. \[5,2\] \[Op:Sub\]$",
        ):
            gradcheck.check_model(self._model(), x, np.zeros((5, 3)), "mse")
        one_output = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        with self.assertRaisesRegex(ValueError, r"^y: shape \[5, 6\] does not fit .* \[5, 1\]; .* \[5, 6\]$"):
            gradcheck.check_model(one_output, x, np.zeros((5, 6)), keras.losses.MeanSquaredError())
        with self.assertRaisesRegex(ValueError, r"^y: shape \[5, 1, 2\] does not fit"):
            gradcheck.check_model(self._model(), x, y[:, None], keras.losses.MeanSquaredError())
        with self.assertRaisesRegex(ValueError, r"^y: expected one target per row of x \(5\), got 3$"):
            gradcheck.check_model(self._model(), x, y[:3], keras.losses.MeanSquaredError())
        with self.assertRaisesRegex(ValueError, r"^loss_fn\(y, model\(x\)\): expected one tensor as output"):
            gradcheck.check_model(self._model(), x, y, lambda t, p: (t, p))
        with self.assertRaisesRegex(ValueError, r"^x: expected a non-empty batch, got 0 rows$"):
            gradcheck.check_model(one_output, x[:0], y[:0, :1], keras.losses.MeanSquaredError())
        frozen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        frozen.trainable = False
        with self.assertRaisesRegex(ValueError, r"^model: has no trainable variables \(all frozen, or none"):
            gradcheck.check_model(frozen, x, y, keras.losses.MeanSquaredError())
        x[0, 0] = np.nan
        with self.assertRaisesRegex(ValueError, "^x: expected finite"):
            gradcheck.check_model(self._model(), x, y, keras.losses.MeanSquaredError())


if __name__ == "__main__":
    tf.test.main()
