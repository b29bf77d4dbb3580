"""Losses: values against Keras, hand-written deltas against the tape and the closed forms, bad targets."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import activations, backprop, losses
from tf_backprop.model import MLP

GRADIENT_FUNCTIONS = (("manual", backprop.manual_gradients), ("tape", backprop.tape_gradients))
M, K = 5, 3  # batch, outputs


def logits_and_targets(seed: int = 0):
    """z [M, K] float64, regression targets [M, K], binary targets [M, K], labels [M] and one-hot."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(M, K)) * 2.0
    labels = rng.integers(0, K, size=M)
    return z, rng.normal(size=(M, K)), rng.uniform(size=(M, K)), labels, np.eye(K)[labels]


def value_and_delta(loss_name: str, output: str, z, y):
    """The loss's value and hand-written δ = ∂L/∂z on logits z through the output activation."""
    loss, activation = losses.get(loss_name), activations.ACTIVATIONS[output]
    z, y = tf.constant(z), tf.convert_to_tensor(y)
    h = activation.forward(z)
    return loss.value(z, h, y), loss.delta(z, h, y, activation)


def tape_delta(loss_name: str, output: str, z, y):
    """∂L/∂z by tf.GradientTape, the independent reference for `value_and_delta`."""
    loss, activation = losses.get(loss_name), activations.ACTIVATIONS[output]
    z, y = tf.Variable(z), tf.convert_to_tensor(y)
    with tf.GradientTape() as tape:
        value = loss.value(z, activation.forward(z), y)
    return tape.gradient(value, z)


class LossValueTest(tf.test.TestCase):
    """Values against Keras's own losses (and the article's formula for half_mse)."""

    def test_mse_is_keras_mean_over_all_elements(self):
        z, y, *_ = logits_and_targets()
        value, _ = value_and_delta("mse", "linear", z, y)
        self.assertAllClose(value, keras.losses.MeanSquaredError()(y, z), rtol=1e-14)
        self.assertAllClose(value, np.mean((z - y) ** 2), rtol=1e-14)

    def test_half_mse_is_the_article_formula(self):
        z, y, *_ = logits_and_targets()
        value, _ = value_and_delta("half_mse", "linear", z, y)
        self.assertAllClose(value, np.sum((y - z) ** 2) / (2 * M), rtol=1e-14)

    def test_binary_crossentropy_is_keras_from_logits(self):
        z, _, y, *_ = logits_and_targets()
        value, _ = value_and_delta("binary_crossentropy", "linear", z, y)
        expected = keras.losses.BinaryCrossentropy(from_logits=True)(y, z)
        self.assertAllClose(value, expected, rtol=1e-12)

    def test_categorical_crossentropy_labels_and_onehot(self):
        z, _, _, labels, onehot = logits_and_targets()
        from_labels, _ = value_and_delta("categorical_crossentropy", "linear", z, labels)
        from_onehot, _ = value_and_delta("categorical_crossentropy", "linear", z, onehot)
        expected = keras.losses.CategoricalCrossentropy(from_logits=True)(onehot, z)
        self.assertAllClose(from_onehot, expected, rtol=1e-12)
        self.assertAllClose(from_labels, from_onehot, rtol=1e-15)
        sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, z)
        self.assertAllClose(from_labels, sparse, rtol=1e-12)


class LossDeltaTest(tf.test.TestCase, parameterized.TestCase):
    """δ_L = ∂L/∂z_L: hand-written against the tape and against the closed forms of docs/backprop.md."""

    @parameterized.named_parameters(
        ("mse_linear", "mse", "linear"),
        ("mse_sigmoid", "mse", "sigmoid"),
        ("mse_softmax", "mse", "softmax"),
        ("mse_relu", "mse", "relu"),
        ("half_mse_linear", "half_mse", "linear"),
        ("half_mse_sigmoid", "half_mse", "sigmoid"),
        ("half_mse_softmax", "half_mse", "softmax"),
    )
    def test_regression_delta_matches_tape(self, loss_name, output):
        z, y, *_ = logits_and_targets(1)
        _, delta = value_and_delta(loss_name, output, z, y)
        self.assertAllClose(delta, tape_delta(loss_name, output, z, y), rtol=1e-13, atol=1e-17)

    def test_cross_entropy_deltas_match_tape(self):
        z, _, binary, labels, onehot = logits_and_targets(2)
        for name, y in [("binary_crossentropy", binary), ("categorical_crossentropy", onehot)]:
            _, delta = value_and_delta(name, "linear", z, y)
            self.assertAllClose(delta, tape_delta(name, "linear", z, y), rtol=1e-13, atol=1e-17)
        _, delta = value_and_delta("categorical_crossentropy", "linear", z, labels)
        self.assertAllClose(delta, tape_delta("categorical_crossentropy", "linear", z, onehot), rtol=1e-13)

    def test_closed_forms(self):
        z, y, binary, _, onehot = logits_and_targets(3)
        sigmoid = 1 / (1 + np.exp(-z))
        softmax = np.exp(z) / np.sum(np.exp(z), axis=1, keepdims=True)
        cases = [
            ("mse", "linear", y, 2 * (z - y) / (M * K)),
            ("mse", "sigmoid", y, 2 * (sigmoid - y) / (M * K) * sigmoid * (1 - sigmoid)),
            ("mse", "relu", y, 2 * (np.maximum(z, 0) - y) / (M * K) * (z > 0)),
            ("half_mse", "linear", y, (z - y) / M),
            ("binary_crossentropy", "linear", binary, (sigmoid - binary) / (M * K)),
            ("categorical_crossentropy", "linear", onehot, (softmax - onehot) / M),
        ]
        for loss_name, output, targets, expected in cases:
            _, delta = value_and_delta(loss_name, output, z, targets)
            self.assertAllClose(delta, expected, rtol=1e-12, atol=1e-16, msg=f"{loss_name}/{output}")

    def test_softmax_mse_uses_the_full_jacobian(self):
        z, y, *_ = logits_and_targets(4)
        softmax = np.exp(z) / np.sum(np.exp(z), axis=1, keepdims=True)
        grad_h = 2 * (softmax - y) / (M * K)
        # J_i = diag(s_i) − s_i s_iᵀ for row i; δ_i = J_iᵀ grad_h_i (J is symmetric).
        expected = np.stack([(np.diag(s) - np.outer(s, s)) @ g for s, g in zip(softmax, grad_h)])
        _, delta = value_and_delta("mse", "softmax", z, y)
        self.assertAllClose(delta, expected, rtol=1e-12, atol=1e-17)


class TargetsTest(tf.test.TestCase, parameterized.TestCase):
    """prepare_targets: accepted target forms, and ValueErrors naming `y` or `loss`."""

    def model_and_x(self, outputs: int = K, output_activation: str = "linear"):
        model = MLP((2, 4, outputs), output_activation=output_activation, dtype="float64", seed=0)
        return model, np.random.default_rng(0).normal(size=(M, 2))

    def assert_both_raise(self, regex, model, x, y, loss):
        for name, gradient_fn in GRADIENT_FUNCTIONS:
            with self.assertRaisesRegex(ValueError, regex, msg=name):
                gradient_fn(model, x, y, loss)

    def test_single_output_accepts_a_vector(self):
        model, x = self.model_and_x(outputs=1)
        y = np.arange(M, dtype=np.float64)
        for loss in ("mse", "half_mse"):
            vector = backprop.manual_gradients(model, x, y, loss)
            column = backprop.manual_gradients(model, x, y[:, None], loss)
            self.assertAllEqual(vector[0], column[0])

    def test_a_softmax_over_one_output_is_refused(self):
        # Constant: the loss is 0 and every gradient 0, so a gradient check would pass on nothing.
        model, x = self.model_and_x(outputs=1)
        regex = r"^loss: 'categorical_crossentropy' is a softmax over the output units, constant with one"
        self.assert_both_raise(regex, model, x, np.zeros(M, np.int64), "categorical_crossentropy")
        backprop.manual_gradients(model, x, np.zeros((M, 1)), "binary_crossentropy")  # one sigmoid: fine

    def test_label_column_is_read_as_labels(self):
        model, x = self.model_and_x()
        labels = np.array([0, 2, 1, 1, 0])
        column = backprop.manual_gradients(model, x, labels[:, None], "categorical_crossentropy")
        vector = backprop.manual_gradients(model, x, labels, "categorical_crossentropy")
        self.assertAllEqual(column[0], vector[0])

    def test_float_labels_that_are_integers_are_accepted(self):
        model, x = self.model_and_x()
        labels = np.array([0, 2, 1, 1, 0])
        as_float = backprop.manual_gradients(model, x, labels.astype(np.float64), "categorical_crossentropy")
        as_int = backprop.manual_gradients(model, x, labels, "categorical_crossentropy")
        self.assertAllEqual(as_float[0], as_int[0])

    @parameterized.named_parameters(("above", 2.0), ("below", -0.5), ("nan", np.nan))
    def test_binary_targets_outside_0_1_are_rejected(self, bad):
        model, x = self.model_and_x()
        y = np.full((M, K), 0.5)
        backprop.manual_gradients(model, x, y, "binary_crossentropy")  # probabilities are fine
        y[1, 2] = bad
        self.assert_both_raise(
            r"^y: binary_crossentropy targets must lie in \[0, 1\]", model, x, y, "binary_crossentropy"
        )

    def test_unknown_loss_lists_valid_names(self):
        model, x = self.model_and_x()
        with self.assertRaisesRegex(ValueError, r"^loss: unknown name 'hinge'") as caught:
            losses.get("hinge")
        for name in losses.LOSSES:
            self.assertIn(name, str(caught.exception))
        self.assert_both_raise(r"^loss: unknown name", model, x, np.zeros((M, K)), "hinge")

    @parameterized.named_parameters(
        ("mse_too_few_columns", "mse", np.zeros((M, K - 1))),
        ("mse_vector_for_three_outputs", "mse", np.zeros(M)),
        ("mse_rank_3", "mse", np.zeros((M, K, 1))),
        ("bce_vector", "binary_crossentropy", np.zeros(M)),
        ("cce_wrong_classes", "categorical_crossentropy", np.eye(K + 1)[:M]),
        ("cce_rank_3", "categorical_crossentropy", np.zeros((M, K, 1))),
        ("batch_mismatch", "mse", np.zeros((M + 1, K))),
    )
    def test_incompatible_shape(self, loss, y):
        model, x = self.model_and_x()
        self.assert_both_raise(r"^y:", model, x, y, loss)

    @parameterized.named_parameters(
        ("negative", np.array([0, 1, -1, 2, 0])),
        ("too_large", np.array([0, 1, 3, 2, 0])),
        ("too_large_column", np.array([[0], [1], [3], [2], [0]])),
        ("fraction", np.array([0.0, 1.5, 1.0, 2.0, 0.0])),
        ("nan", np.array([0.0, np.nan, 1.0, 2.0, 0.0])),
        ("bool", np.array([True, False, True, False, True])),
        # int64 labels beyond int32: a cast before the range check would wrap them into range.
        ("wraps_to_1_in_int32", np.array([0, 1, 2**32 + 1, 2, 0], np.int64)),
        ("wraps_to_0_in_int32", np.array([0, 1, -(2**32), 2, 0], np.int64)),
        ("float_beyond_int32", np.array([0.0, 1.0, 2.0**32 + 1, 2.0, 0.0])),
    )
    def test_bad_class_labels(self, labels):
        model, x = self.model_and_x()
        self.assert_both_raise(r"^y: class labels must", model, x, labels, "categorical_crossentropy")

    @parameterized.named_parameters(
        ("bce_sigmoid", "binary_crossentropy", "sigmoid"),
        ("bce_relu", "binary_crossentropy", "relu"),
        ("cce_softmax", "categorical_crossentropy", "softmax"),
        ("cce_sigmoid", "categorical_crossentropy", "sigmoid"),
    )
    def test_cross_entropy_needs_a_linear_output(self, loss, output_activation):
        model, x = self.model_and_x(output_activation=output_activation)
        self.assert_both_raise(r"^output_activation: .*'linear'", model, x, np.eye(K)[[0, 1, 2, 0, 1]], loss)


if __name__ == "__main__":
    tf.test.main()
