"""explaining.trace: the hand-written path's numbers, the tape's check, the formulas; the check can fail."""

import dataclasses

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from explain_examples import article_net, random_case

import tf_backprop
from tf_backprop import activations, backprop, explaining, losses
from tf_backprop.explaining import trace as trace_lib
from tf_backprop.model import MLPSpec

CASES = (
    ("article", (2, 3, 3, 1), "relu", "relu", "half_mse", 1, 0.0),
    ("batch", (2, 3, 3, 1), "relu", "linear", "half_mse", 3, 0.0),
    ("tanh_mse_l2", (3, 4, 2), "tanh", "linear", "mse", 5, 0.1),
    ("bce", (3, 4, 1), "sigmoid", "linear", "binary_crossentropy", 4, 0.0),
    ("cce_labels", (3, 5, 3), "gelu", "linear", "categorical_crossentropy", 4, 0.0),
    ("softmax_output", (3, 5, 3), "elu", "softmax", "mse", 3, 0.0),
)


def _gradients(trace) -> list[np.ndarray]:
    """[∂W_1, ∂b_1, ...] of the trace, in trainable_variables order."""
    return [layer.term(key).value for layer in trace.layers for key in ("dL_dW", "dL_db")]


def _tape_wrt_z_and_h(model, x, y, loss, l2):
    """∂L/∂z_l and ∂L/∂h_l by a tape of the test's own."""
    x, y, loss = backprop.prepare(model, x, y, loss)
    with tf.GradientTape(persistent=True) as tape:
        forward = model.forward(x, keep_intermediates=True)
        value = backprop.total_loss(model, forward, y, loss, l2)
    return tape.gradient(value, forward.zs), tape.gradient(value, forward.hs), forward


class TraceNumbersTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*CASES)
    def test_gradients_are_the_manual_path_and_the_tape(self, sizes, act, out, loss, rows, l2):
        model, x, y = random_case(sizes, act, out, loss, rows)
        trace = explaining.explain(model, x, y, loss, l2)
        _, manual = backprop.manual_gradients(model, x, y, loss, l2)
        _, tape = backprop.tape_gradients(model, x, y, loss, l2)
        checks = [layer.term(key).check.tape for layer in trace.layers for key in ("dL_dW", "dL_db")]
        for ours, by_hand, by_tape, checked in zip(_gradients(trace), manual, tape, checks):
            self.assertAllEqual(ours, by_hand)  # the same ops in the same order
            self.assertAllEqual(checked, by_tape)
            self.assertAllClose(ours, by_tape, rtol=1e-12, atol=1e-15)
        self.assertTrue(trace.agreed)

    def test_article_net_agrees_with_the_tape_bit_for_bit(self):
        trace = explaining.explain(article_net(), [-0.8, -0.5], 0.8, "half_mse")
        for _, term in trace.checked:
            self.assertAllEqual(term.value, term.check.tape)
            self.assertEqual(term.check.max_abs_difference, 0.0)

    @parameterized.named_parameters(*CASES)
    def test_deltas_and_upstreams_are_the_tape_gradients_wrt_z_and_h(self, sizes, act, out, loss, rows, l2):
        model, x, y = random_case(sizes, act, out, loss, rows)
        trace = explaining.explain(model, x, y, loss, l2)
        dz, dh, forward = _tape_wrt_z_and_h(model, x, y, loss, l2)
        for index, layer in enumerate(trace.layers):
            self.assertAllEqual(layer.term("z").value, forward.zs[index])
            self.assertAllEqual(layer.term("h").value, forward.hs[index])
            self.assertAllClose(layer.term("delta").value, dz[index], rtol=1e-12, atol=1e-15)
            self.assertAllEqual(layer.term("delta").check.tape, dz[index])
            if layer.term("dL_dh") is not None:
                self.assertAllClose(layer.term("dL_dh").value, dh[index], rtol=1e-12, atol=1e-15)

    def test_forward_is_the_formula(self):
        model, x, y = random_case((3, 4, 2), "tanh", "linear", "mse", 3)
        trace = explaining.explain(model, x, y, "mse")
        h = x
        for layer in trace.layers:
            z = h @ layer.kernel + layer.bias
            self.assertAllClose(layer.term("z").value, z, rtol=1e-14, atol=1e-15)
            h = layer.term("h").value
        self.assertAllClose(trace.layers[0].term("h").value, np.tanh(trace.layers[0].term("z").value))

    def test_per_row_terms_are_each_rows_contribution(self):
        model, x, y = random_case((2, 3, 3, 1), "relu", "linear", "half_mse", 4)
        trace = explaining.explain(model, x, y, "half_mse")
        for layer in trace.layers:
            below = x if layer.index == 1 else trace.layers[layer.index - 2].term("h").value
            delta = layer.term("delta").value
            rows = layer.term("dL_dW").per_row  # [m, n_{l-1}, n_l]
            for i in range(len(x)):
                self.assertAllEqual(rows[i], np.outer(below[i], delta[i]))
            self.assertAllClose(rows.sum(axis=0), layer.term("dL_dW").value, rtol=1e-13, atol=1e-16)
            self.assertAllEqual(layer.term("dL_db").per_row, delta)
            self.assertIsNone(layer.term("z").per_row)

    def test_one_sample_may_be_given_as_vectors(self):
        model = article_net()
        as_vectors = explaining.explain(model, [-0.8, -0.5], 0.8, "half_mse")
        as_batch = explaining.explain(model, [[-0.8, -0.5]], [[0.8]], "half_mse")
        self.assertEqual(as_vectors.batch_size, 1)
        for a, b in zip(_gradients(as_vectors), _gradients(as_batch)):
            self.assertAllEqual(a, b)
        labels = random_case((3, 5, 3), "relu", "linear", "categorical_crossentropy", 1)[0]
        self.assertAllEqual(explaining.explain(labels, [0.1, 0.2, 0.3], 2, "categorical_crossentropy").y, [2])
        rows = explaining.explain(
            random_case((3, 4, 2), "tanh", "linear", "mse", 1)[0], [1, 2, 3], [0.5, 1], "mse"
        )
        self.assertAllEqual(rows.y, [[0.5, 1.0]])

    def test_float32_models_and_their_float64_copy(self):
        model = MLPSpec((2, 3, 3, 1), "relu", "linear", "glorot_uniform", "float32", 0).build()
        trace32 = explaining.explain(model, [0.5, -1.2], 0.3, "half_mse")
        self.assertEqual((trace32.dtype, trace32.tolerance), ("float32", trace_lib.AGREEMENT["float32"]))
        self.assertTrue(trace32.agreed)
        copy = explaining.float64_copy(model)
        self.assertEqual(copy.compute_dtype, "float64")
        for a, b in zip(copy.weights, model.weights):
            self.assertAllEqual(a, tf.cast(b, tf.float64))
        self.assertIs(explaining.float64_copy(copy), copy)

    def test_the_top_level_explain_is_the_function(self):
        self.assertIs(tf_backprop.explain, explaining.explain)
        self.assertTrue(callable(tf_backprop.explain))


class FormulasTest(tf.test.TestCase):
    def test_the_article_nets_formulas(self):
        trace = explaining.explain(article_net(), [-0.8, -0.5], 0.8, "half_mse")
        formulas = [{term.symbol: term.formula for term in layer.terms} for layer in trace.layers]
        self.assertEqual(
            formulas[0],
            {
                "z_1": "x @ W_1 + b_1",
                "h_1": "relu(z_1)",
                "∂L/∂h_1": "δ_2 @ W_2ᵀ",
                "δ_1": "∂L/∂h_1 ⊙ [z_1 > 0]",
                "∂L/∂W_1": "xᵀ @ δ_1",
                "∂L/∂b_1": "Σ_rows δ_1",
            },
        )
        self.assertEqual(formulas[1]["∂L/∂W_2"], "h_1ᵀ @ δ_2")
        self.assertEqual(formulas[2]["∂L/∂h_3"], "(ŷ − y) / m")

    def test_l2_losses_on_logits_and_linear_outputs(self):
        model, x, y = random_case((3, 5, 3), "tanh", "linear", "categorical_crossentropy", 2)
        last = explaining.explain(model, x, y, "categorical_crossentropy", l2=0.1).layers[-1]
        self.assertIsNone(last.term("dL_dh"))  # fused with the loss: δ_L directly
        self.assertEqual(last.term("delta").formula, "(softmax(z_2) − onehot(y)) / m")
        self.assertEqual(last.term("dL_dW").formula, "h_1ᵀ @ δ_2 + λ W_2")
        model, x, y = random_case((3, 4, 2), "sigmoid", "linear", "mse", 2)
        first, last = explaining.explain(model, x, y, "mse").layers
        self.assertEqual(first.term("delta").formula, "∂L/∂h_1 ⊙ h_1 ⊙ (1 − h_1)")
        self.assertEqual((last.term("h").formula, last.term("delta").formula), ("z_2", "∂L/∂h_2"))
        self.assertEqual(last.term("dL_dh").formula, "2 (ŷ − y) / (m·k)")

    def test_every_hidden_activation_has_its_derivative_written_out(self):
        written = set(trace_lib.DERIVATIVES) | {"linear"}
        self.assertEqual(written, set(activations.HIDDEN_ACTIVATIONS))
        self.assertEqual(set(trace_lib.LOSS_GRADIENTS) | set(trace_lib.FUSED_DELTAS), set(losses.LOSSES))


class PlantedFaultsTest(tf.test.TestCase):
    """The tape check says "disagreed" when the hand-written path is wrong."""

    def test_a_wrong_activation_derivative_is_caught(self):
        model = article_net(output_activation="linear")
        relu = activations.ACTIVATIONS["relu"]
        # ReLU whose backward forgets the mask: f'(z) = 1 everywhere.
        model.hidden_activation = dataclasses.replace(relu, backward=lambda z, h, g: g)
        trace = explaining.explain(model, [-0.8, -0.5], 0.8, "half_mse")
        self.assertFalse(trace.agreed)
        failed = {(layer.index, term.key) for layer, term in trace.checked if not term.check.agreed}
        self.assertIn((2, "delta"), failed)  # z_2 has a unit that is off
        self.assertNotIn((3, "dL_dW"), failed)  # the output layer is still right

    def test_a_flipped_loss_gradient_is_caught(self):
        half_mse = losses.get("half_mse")
        flipped = dataclasses.replace(
            half_mse, grad_h=lambda z, h, y: (y - h) / tf.cast(tf.shape(h)[0], h.dtype)
        )
        model = article_net()
        trace = explaining.explain(model, [-0.8, -0.5], 0.8, flipped)
        last = trace.layers[-1]
        self.assertFalse(last.term("dL_dh").check.agreed)
        self.assertAllClose(
            last.term("dL_dh").check.max_abs_difference, 2 * abs(last.term("dL_dh").value[0, 0])
        )
        self.assertFalse(trace.agreed)


class InputErrorsTest(tf.test.TestCase):
    def test_bad_arguments_name_themselves(self):
        model = article_net()
        cases = {
            "model: expected a tf_backprop MLP": lambda: explaining.explain(object(), [0, 0], 0, "mse"),
            "l2: expected a finite number ≥ 0": lambda: explaining.explain(model, [0, 0], 0, "mse", l2=-1.0),
            "x: expected shape [batch, 2]": lambda: explaining.explain(model, [0, 0, 0], 0, "mse"),
            "y: one sample takes 1 target": lambda: explaining.explain(model, [0, 0], [0, 1], "mse"),
            "y: expected the target.* got None$": lambda: explaining.explain(model, [0, 0], None, "mse"),
            "loss: unknown name 'nope'": lambda: explaining.explain(model, [0, 0], 0, "nope"),
            "errata: expected one of auto, on, off": lambda: explaining.explain(
                model, [0, 0], 0, "mse", errata="x"
            ),
            "x, y: the loss L is not finite in float64": lambda: explaining.explain(
                model, [0.5, 0.5], 1e308, "mse"
            ),
            "x, y: z_1 is not finite in float32": lambda: explaining.explain(
                MLPSpec((2, 3, 1), "relu", "linear", "random_normal", "float32", 0).build(),
                [1e300, 0],
                0,
                "mse",
            ),
        }
        for message, call in cases.items():
            with self.subTest(message=message):
                with self.assertRaisesRegex(ValueError, message.replace("[", r"\[")):
                    call()


if __name__ == "__main__":
    tf.test.main()
