"""gradcheck.check(..., order=2): tape over tape vs the hand-written R-operator vs differences of the gradient.

Passes on every activation and loss; fails on the right variable and comparison with a planted
sign error in the hand-written HVP, or a wrong activation second derivative.
"""

import dataclasses
import json

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from planted_faults import flipped_hvp

from tf_backprop import activations, backprop, gradcheck
from tf_backprop.model import MLP, MLPSpec

SIZES = (3, 4, 3, 2)
LABELS = ["tape ↔ manual", "tape ↔ numeric", "manual ↔ numeric"]


def _batch(model, loss, batch_size=6, seed=1):
    return gradcheck.random_batch(model, loss, batch_size, seed)


def _tanh_wrong_second_derivative(z, h, grad_h, dz):
    return grad_h * (2.0 * h * (1 - tf.square(h))) * dz  # sign flipped: tanh'' = −2h(1 − h²)


class SecondOrderPassesTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("tanh_mse_l2", "tanh", "linear", "mse", 0.03),
        ("gelu_categorical", "gelu", "linear", "categorical_crossentropy", 0.0),
        ("softplus_binary", "softplus", "linear", "binary_crossentropy", 0.01),
        ("sigmoid_sigmoid_mse", "sigmoid", "sigmoid", "mse", 0.0),
        ("elu_softmax_half_mse", "elu", "softmax", "half_mse", 0.0),
        ("leaky_relu_relu_out", "leaky_relu", "relu", "half_mse", 0.0),
    )
    def test_full_mode(self, activation, output_activation, loss, l2):
        model = MLP(SIZES, activation=activation, output_activation=output_activation, seed=3)
        x, y = _batch(model, loss)
        report = gradcheck.check(model, x, y, loss, l2=l2, order=2, rtol=1e-7)
        self.assertEqual(report.verdict, "PASS", report.to_text())
        n = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        for entry in report.entries:
            self.assertEqual([c.label for c in entry.comparisons], LABELS)
            self.assertEqual({c.checked for c in entry.comparisons}, {n * int(np.prod(entry.shape))})

    def test_article_net_with_its_kinks(self):
        model = MLPSpec().build()  # zero biases: dense_2's ReLUs sit on their kink
        x, y = _batch(model, "half_mse", batch_size=10, seed=0)
        report = gradcheck.check(model, x, y, "half_mse", order=2)
        self.assertEqual(report.verdict, "PASS", report.to_text())
        self.assertGreater(report.entry("dense_2/bias").comparisons[1].kinks, 0)
        self.assertEqual(report.entry("dense_2/bias").comparisons[0].failures, 0)  # tape ↔ manual: exact
        self.assertIn("second order", report.title)

    def test_fast_mode(self):
        model = MLP((16, 32, 32, 4), activation="tanh", seed=5)
        x, y = _batch(model, "categorical_crossentropy", batch_size=16)
        report = gradcheck.check(
            model, x, y, "categorical_crossentropy", mode="fast", order=2, l2=0.01, directions=3, samples=2
        )
        self.assertEqual(report.verdict, "PASS", report.to_text())
        kernel = report.entry("dense_1/kernel")
        self.assertEqual({c.checked for c in kernel.comparisons}, {3 + 2})
        self.assertIsNone(kernel.norms["numeric"])
        self.assertEqual(
            report.to_dict(),
            gradcheck.check(
                model,
                x,
                y,
                "categorical_crossentropy",
                mode="fast",
                order=2,
                l2=0.01,
                directions=3,
                samples=2,
            ).to_dict(),
        )  # seeded


class SecondOrderFailsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters("full", "fast")
    def test_planted_sign_error_in_the_manual_hvp(self, mode):
        model = MLP(SIZES, activation="tanh", seed=2)
        x, y = _batch(model, "mse")
        faulty = flipped_hvp(backprop.manual_hvp, 2)  # dense_2/kernel's Hv of the wrong sign
        report = gradcheck.check(model, x, y, "mse", mode=mode, order=2, manual_hvp_fn=faulty)
        self.assertEqual(report.verdict, "FAIL")
        for entry in report.entries:
            verdicts = {c.label: c.passed for c in entry.comparisons}
            self.assertTrue(verdicts["tape ↔ numeric"], entry.name)  # the reference agrees
            if mode == "full":  # every block holds dense_2/kernel's rows of H e_j
                self.assertFalse(verdicts["manual ↔ numeric"], entry.name)
        worst = report.entry("dense_2/kernel").comparisons[2].worst
        if mode == "full":
            self.assertEqual(worst.location.gradient[0], "dense_2/kernel")
            self.assertAllClose(worst.a, -worst.b, rtol=1e-6)

    def test_wrong_activation_second_derivative(self):
        model = MLP(SIZES, activation="tanh", seed=2)
        model.hidden_activation = dataclasses.replace(
            activations.get("tanh"), backward_tangent=_tanh_wrong_second_derivative
        )
        x, y = _batch(model, "mse")
        first = gradcheck.check(model, x, y, "mse")
        self.assertEqual(first.verdict, "PASS", first.to_text())  # first derivatives are untouched
        report = gradcheck.check(model, x, y, "mse", order=2)
        self.assertEqual(report.verdict, "FAIL")
        self.assertFalse(report.entry("dense_1/kernel").comparisons[2].passed)
        self.assertTrue(all(e.comparisons[1].passed for e in report.entries))  # tape ↔ numeric

    def test_json_names_the_gradient_element(self):
        model = MLP((2, 3, 1), activation="tanh", seed=2)
        x, y = _batch(model, "mse")
        report = gradcheck.check(
            model, x, y, "mse", order=2, manual_hvp_fn=flipped_hvp(backprop.manual_hvp, 0)
        )
        worst = json.loads(report.to_json())["entries"][0]["comparisons"][2]["worst"]
        self.assertEqual(worst["gradient"]["of"], "dense_1/kernel")
        self.assertLen(worst["index"], 2)

    def test_bad_arguments(self):
        model = MLP((2, 3, 1), activation="tanh")
        x, y = _batch(model, "mse")
        with self.assertRaisesRegex(ValueError, r"^order: expected 1 or 2"):
            gradcheck.check(model, x, y, "mse", order=0)
        with self.assertRaisesRegex(ValueError, r"^eps: "):
            gradcheck.check(model, x, y, "mse", order=2, eps=1.0)


if __name__ == "__main__":
    tf.test.main()
