"""explaining.errata: the article's formulas as written, checked against the test's own arithmetic."""

import dataclasses

import numpy as np
import tensorflow as tf
from explain_examples import article_net, random_case

from tf_backprop import activations, explaining
from tf_backprop.explaining import errata

LIVE = ([-0.8, -0.5], 0.8)  # seed 3: the ReLU output is on, layer 1 unit 2 and layer 2 unit 3 off
DEAD = ([0.5, -1.2], 0.3)  # seed 0: z3 < 0, the ReLU output is off


def _explain(x, y, seed=3, output_activation="relu", loss="half_mse"):
    trace = explaining.explain(article_net(seed, output_activation), x, y, loss)
    return trace, {erratum.key: erratum for erratum in trace.errata}


def _values(trace):
    """The trace's own numbers the article's formulas take: W, b, z, h, δ per layer."""
    layers = trace.layers
    w = [layer.kernel for layer in layers]
    z = [layer.term("z").value for layer in layers]
    h = [layer.term("h").value for layer in layers]
    delta = [layer.term("delta").value for layer in layers]
    return w, z, h, delta


def _loss_after(trace, grads, rate):
    """half_mse after θ ← θ − rate·g, by NumPy (ReLU on every layer)."""
    h = trace.x
    for layer, (gw, gb) in zip(trace.layers, zip(grads[::2], grads[1::2])):
        h = np.maximum(h @ (layer.kernel - rate * gw) + (layer.bias - rate * gb), 0.0)
    return float(np.sum((trace.y - h) ** 2) / (2 * len(trace.x)))


class ErrataValuesTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.trace, self.errata = _explain(*LIVE)
        self.w, self.z, self.h, self.delta = _values(self.trace)

    def test_all_six_in_order(self):
        keys = [erratum.key for erratum in self.trace.errata]
        expected = ["output_sign", "output_derivative", "weight_derivative", "chain_index_2", "chain_index_1"]
        self.assertEqual(keys, expected + ["numerical_methods"])

    def test_output_sign(self):
        erratum, y, y_hat = self.errata["output_sign"], self.trace.y, self.trace.output
        self.assertAllEqual(erratum.wrong.value, y - y_hat)  # the article's (y − ŷ)
        self.assertAllEqual(erratum.right.value, (y_hat - y) / 1)  # ∂/∂ŷ of 1/(2m) Σ (y − ŷ)², m = 1
        self.assertAllEqual(erratum.wrong_gradient.value, self.h[1].T @ ((y - y_hat) * (self.z[2] > 0)))
        self.assertAllEqual(erratum.right_gradient.value, self.trace.layers[2].term("dL_dW").value)
        self.assertLess(erratum.wrong.value[0, 0], 0)
        self.assertGreater(erratum.right.value[0, 0], 0)

    def test_output_sign_makes_descent_climb(self):
        step = self.errata["output_sign"].step
        right = [layer.term(k).value for layer in self.trace.layers for k in ("dL_dW", "dL_db")]
        self.assertAllClose(step.after_right, _loss_after(self.trace, right, step.rate), rtol=1e-12)
        wrong = [-g for g in right]  # (y − ŷ) = −m (ŷ − y)/m with m = 1: every gradient flips
        self.assertAllClose(step.after_wrong, _loss_after(self.trace, wrong, step.rate), rtol=1e-12)
        self.assertLess(step.after_right, step.before)
        self.assertGreater(step.after_wrong, step.before)
        self.assertEqual(step.before, self.trace.loss_value)

    def test_output_derivative(self):
        erratum = self.errata["output_derivative"]
        self.assertAllEqual(erratum.wrong.value, [[1.0]])
        self.assertAllEqual(erratum.right.value, (self.z[2] > 0).astype(float))
        self.assertEqual(erratum.right.formula, "[z⁽³⁾ > 0]")
        upstream = self.trace.layers[2].term("dL_dh").value
        self.assertAllEqual(erratum.wrong_gradient.value, self.h[1].T @ upstream)
        self.assertIn("z⁽³⁾ > 0: the relu output is on", erratum.notes[0])

    def test_weight_derivative(self):
        erratum = self.errata["weight_derivative"]
        self.assertAllEqual(erratum.wrong.value, self.w[2])  # the article's ∂z⁽³⁾/∂θ⁽³⁾ = W₃
        self.assertAllEqual(erratum.right.value, self.h[1])
        self.assertAllEqual(erratum.wrong_gradient.value, self.w[2] * self.delta[2].sum(axis=0))
        self.assertAllEqual(erratum.right_gradient.value, self.h[1].T @ self.delta[2])
        self.assertNotAllClose(erratum.wrong_gradient.value, erratum.right_gradient.value)
        self.assertEqual(
            erratum.notes, ("h⁽²⁾ unit 3 is 0 (the unit is off): it adds 0 to row 3 of the right ∂L/∂W₃",)
        )

    def test_chain_indices(self):
        second, first = self.errata["chain_index_2"], self.errata["chain_index_1"]
        self.assertAllEqual(second.wrong.value, self.w[1])  # ∂z⁽²⁾/∂h⁽²⁾ "= W₂"
        self.assertAllEqual(second.right.value, self.w[2])  # ∂z⁽³⁾/∂h⁽²⁾ = W₃
        self.assertIsNone(second.wrong_gradient.value)  # δ⁽³⁾ [1, 1] @ W₂ᵀ [3, 3] is undefined
        self.assertIn("δ⁽³⁾ [1, 1] @ W₂ᵀ [3, 3]: the shapes do not multiply", second.notes)
        self.assertAllEqual(second.right_gradient.value, self.delta[2] @ self.w[2].T)
        self.assertAllEqual(first.wrong.value, self.w[0])
        self.assertAllEqual(first.right.value, self.w[1])
        self.assertAllEqual(first.wrong_gradient.value, self.delta[1] @ self.w[0].T)  # [1, 2]: h⁽¹⁾ has 3
        self.assertEqual(first.wrong_gradient.value.shape, (1, 2))
        self.assertAllEqual(first.right_gradient.value, self.delta[1] @ self.w[1].T)
        self.assertIn("δ⁽¹⁾ unit 2 is 0 (the unit is off) whatever ∂L/∂h⁽¹⁾ is", first.notes)

    def test_numerical_methods_claim(self):
        erratum = self.errata["numerical_methods"]
        self.assertIsNone(erratum.wrong.value)
        self.assertAllEqual(erratum.right.value, self.trace.layers[0].term("dL_dW").value)
        self.assertAllEqual(erratum.right_gradient.value, self.trace.layers[0].term("dL_dW").check.tape)
        self.assertIn("max |Δ| = 0, agreed", erratum.notes[0])
        self.assertIn("42 forward passes for these 21 parameters", erratum.notes[1])
        self.assertIn("layer 1 unit 2 is off", erratum.notes[2])

    def test_a_wrong_hidden_backward_makes_the_claim_check_fail(self):
        model = article_net()
        relu = activations.ACTIVATIONS["relu"]
        model.hidden_activation = dataclasses.replace(relu, backward=lambda z, h, g: g)
        trace = explaining.explain(model, *LIVE, "half_mse")
        notes = {erratum.key: erratum.notes for erratum in trace.errata}["numerical_methods"]
        self.assertIn("DISAGREED", notes[0])


class OffUnitsTest(tf.test.TestCase):
    def test_a_dead_output_is_named(self):
        trace, errata_ = _explain(*DEAD, seed=0)
        self.assertLess(trace.layers[2].term("z").value[0, 0], 0)
        for key in ("output_sign", "output_derivative"):
            self.assertIn("the output unit is off", errata_[key].notes[0])
        derivative = errata_["output_derivative"]
        self.assertAllEqual(derivative.right.value, [[0.0]])
        self.assertNotAllClose(derivative.wrong_gradient.value, np.zeros((3, 1)))  # the article's passes one
        self.assertAllEqual(derivative.right_gradient.value, np.zeros((3, 1)))
        step = errata_["output_sign"].step
        self.assertEqual((step.after_right, step.after_wrong), (step.before, step.before))

    def test_a_linear_output_makes_the_derivative_right(self):
        _, errata_ = _explain(*LIVE, output_activation="linear")
        erratum = errata_["output_derivative"]
        self.assertAllEqual(erratum.wrong.value, erratum.right.value)
        self.assertIn("this net's output is linear", erratum.notes[0])

    def test_a_sigmoid_output_is_never_said_to_have_derivative_1(self):
        """Every non-linear, non-ReLU output got the ReLU's 'on, so its derivative is 1' note,
        beside a right value of 0.14 (new-user review)."""
        trace, errata_ = _explain(*LIVE, output_activation="sigmoid")
        erratum = errata_["output_derivative"]
        output = trace.output[0, 0]
        self.assertAllClose(erratum.right.value, [[output * (1 - output)]], rtol=1e-15)
        self.assertEqual(erratum.title, "∂ŷ/∂z⁽³⁾ = 1 under a sigmoid output")
        self.assertEqual(erratum.notes, (f"sigmoid'(z⁽³⁾) = {output * (1 - output):.6g} here, not 1: the "
                                         "article's factor is wrong wherever f₃' ≠ 1",))  # fmt: skip
        self.assertEqual(errata_["output_derivative"].breaks, "every update where f₃'(z⁽³⁾) ≠ 1")
        relu = _explain(*LIVE)[1]["output_derivative"]
        self.assertEqual(relu.title, "∂ŷ/∂z⁽³⁾ = 1 under a ReLU output")
        self.assertIn("the relu output is on, so its derivative is 1 here", relu.notes[0])

    def test_a_row_with_its_output_off_adds_0_the_others_do_not(self):
        """In a batch, one dead row was said to make every gradient 0, beside a nonzero one."""
        x, y = [[0.5, -1.2], [-0.8, -0.5]], [[0.3], [0.8]]  # seed 3: off for the first, on for the second
        trace, errata_ = _explain(x, y)
        z = trace.layers[2].term("z").value[:, 0]
        self.assertEqual(list(z <= 0), [True, False])  # row 0 off, row 1 on
        self.assertEqual(
            errata_["output_sign"].notes,
            ("z⁽³⁾ ≤ 0 in row 0: the output unit is off, so δ⁽³⁾ = 0 there and that row adds 0 to every "
             "gradient with either sign",),
        )  # fmt: skip
        self.assertNotAllClose(errata_["output_sign"].right_gradient.value, np.zeros((3, 1)))
        dead, errata_ = _explain(*DEAD, seed=0)
        self.assertIn("so δ⁽³⁾ = 0 and every gradient is 0 with either sign", errata_["output_sign"].notes[0])

    def test_batches_name_the_row(self):
        # Rows count from 0, as --row and the batch tables do (the notes counted from 1).
        trace, errata_ = _explain([[0.1, 0.2], [-0.8, -0.5]], [[0.3], [0.8]])
        self.assertEqual(trace.batch_size, 2)
        self.assertIn(
            "δ⁽²⁾ unit 3 of row 1 is 0 (the unit is off) whatever ∂L/∂h⁽²⁾ is", errata_["chain_index_2"].notes
        )
        self.assertIn("δ⁽³⁾ [2, 1] @ W₂ᵀ [3, 3]: the shapes do not multiply", errata_["chain_index_2"].notes)
        mse = explaining.explain(article_net(), [[0.1, 0.2], [-0.8, -0.5]], [[0.3], [0.8]], "mse")
        sign = mse.errata[0]
        self.assertAllClose(sign.right.value, 2 * (mse.output - mse.y) / 2, rtol=1e-15)  # 2(ŷ − y)/(m·k)
        self.assertIn("(and lacks the 2/m)", sign.breaks)  # not the 1/m of half_mse
        self.assertIn("(and lacks the 1/m)", trace.errata[0].breaks)


class ApplicabilityTest(tf.test.TestCase):
    def test_only_the_article_shape_with_a_squared_error(self):
        cases = {
            "three weight layers and one output": random_case((2, 4, 1), "relu", "linear", "mse", 1),
            "squared-error loss": random_case((2, 3, 3, 1), "relu", "linear", "binary_crossentropy", 1),
        }
        for reason, (model, x, y) in cases.items():
            loss = "binary_crossentropy" if "squared" in reason else "mse"
            with self.subTest(reason=reason):
                self.assertEqual(explaining.explain(model, x, y, loss).errata, ())
                with self.assertRaisesRegex(ValueError, f"errata: .*{reason}"):
                    explaining.explain(model, x, y, loss, errata="on")
        with self.assertRaisesRegex(ValueError, "without an L2 term, got l2=0.1"):
            explaining.explain(article_net(), *LIVE, "half_mse", l2=0.1, errata="on")
        self.assertEqual(explaining.explain(article_net(), *LIVE, "half_mse", errata="off").errata, ())
        trace = explaining.explain(article_net(), *LIVE, "half_mse", errata="off")
        self.assertIsNone(errata.not_applicable(trace))


if __name__ == "__main__":
    tf.test.main()
