"""explaining.render: the text and Markdown tables carry the trace's numbers; JSON is strict and complete."""

import dataclasses
import json

import numpy as np
import tensorflow as tf
from explain_examples import article_net, default_trace, random_case

from tf_backprop import explaining
from tf_backprop.explaining import render


class NumbersTest(tf.test.TestCase):
    def test_number_format(self):
        cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (1.23456789, "1.23457"),
            (-2.5e-17, "-2.5e-17"),
            (float("nan"), "nan"),
        ]
        for value, text in cases:
            self.assertEqual(render.number(value), text)
        self.assertEqual(render.number(float("-inf")), "-inf")
        self.assertEqual(render.number(0.123456, 2), "0.12")

    def test_matrix_lines_align_columns(self):
        lines = render.matrix_lines(np.array([[1.0, -0.5], [10.0, 0.0]]))
        self.assertEqual(lines, ["[  1  -0.5 ]", "[ 10     0 ]"])
        self.assertEqual(render.inline(np.array([[1.0, -0.5], [10.0, 0.0]])), "[[1, -0.5], [10, 0]]")


class TextTest(tf.test.TestCase):
    def test_every_term_with_its_formula_value_and_check(self):
        trace = default_trace()
        text = render.to_text(trace, "a title")
        lines = text.splitlines()
        self.assertEqual(lines[0], "a title")
        self.assertIn("MLP 2-3-3-1 (relu → relu), loss half_mse, float64, 1 sample", lines[1])
        for layer in trace.layers:
            self.assertIn(f"layer {layer.index}: {layer.kernel.shape[0]} → {layer.units}, relu", text)
            for term in layer.terms:
                row = next(line for line in lines if line.startswith(f"  {term.symbol} "))
                self.assertIn(term.formula, row)
                self.assertIn(render.matrix_lines(term.value)[0], row)
                self.assertEqual("agreed, max |Δ| 0" in row, term.check is not None)

    def test_logits_are_labelled_with_their_probabilities_and_l2_is_split(self):
        """For a classifier ŷ is the logits (0.09 read as 'predicted 0.09'); with --l2, L held the
        penalty with no breakdown (new-user review)."""
        model, x, _ = random_case((2, 3, 2), "tanh", "linear", "binary_crossentropy", 1)
        trace = explaining.explain(model, x, [[1.0, 0.0]], "binary_crossentropy", l2=0.1)
        header = render.to_text(trace).splitlines()[1]
        logits = trace.output[0]
        sigma = ", ".join(render.number(v) for v in 1 / (1 + np.exp(-logits)))
        self.assertIn(f"(logits; σ(ŷ) = [[{sigma}]])", header)
        penalty = 0.05 * sum(float(np.sum(layer.kernel**2)) for layer in trace.layers)
        data = trace.loss_value - penalty
        self.assertIn(
            f"L = {render.number(trace.loss_value)} (data {render.number(data)} + L2 {render.number(penalty)})",
            header,
        )
        bce = -np.mean([np.log(1 / (1 + np.exp(-logits[0]))), np.log(1 - 1 / (1 + np.exp(-logits[1])))])
        self.assertAllClose(data, bce, rtol=1e-12)  # the split is the loss's own data term
        model, x, _ = random_case((2, 3, 3), "tanh", "linear", "categorical_crossentropy", 1)
        trace = explaining.explain(model, x[0], 2, "categorical_crossentropy")
        softmax = np.exp(trace.output[0]) / np.exp(trace.output[0]).sum()
        probabilities = ", ".join(render.number(v) for v in softmax)
        self.assertIn(f"(logits; softmax(ŷ) = [[{probabilities}]])   L = ", render.to_text(trace))
        self.assertNotIn("logits", render.to_text(default_trace()))

    def test_errata_section(self):
        text = render.to_text(default_trace())
        self.assertIn("The article's errata on these numbers (docs/backprop.md §7):", text)
        for erratum in default_trace().errata:
            self.assertIn(erratum.title, text)
            self.assertIn(f"{erratum.wrong.symbol} = {erratum.wrong.formula}", text)
        self.assertIn("θ − 0.01·g: L 0.317032 → ", text)

    def test_a_disagreement_is_shouted(self):
        trace = default_trace()
        layer = trace.layers[0]
        bad = layer.terms[2].check.__class__(layer.terms[2].check.tape, 1.0, False)
        terms = (*layer.terms[:2], layer.terms[2].__class__(**{**layer.terms[2].__dict__, "check": bad}))
        broken = trace.__class__(
            **{**trace.__dict__, "layers": (layer.__class__(**{**layer.__dict__, "terms": terms}),)}
        )
        text = render.to_text(broken)
        self.assertIn("SOME GRADIENTS DISAGREE", text)
        self.assertIn("DISAGREED, max |Δ| 1", text)

    def test_per_row_terms_of_a_batch(self):
        model, x, y = random_case((2, 3, 1), "relu", "linear", "mse", 2)
        trace = explaining.explain(model, x, y, "mse")
        text = render.to_text(trace, per_row=True)
        self.assertIn("2 samples (gradients summed over the rows)", text)
        self.assertIn("row 2  x[2]ᵀ δ_1[2]", text)
        self.assertIn(render.matrix_lines(trace.layers[0].term("dL_dW").per_row[1])[0], text)
        self.assertNotIn("row 2", render.to_text(trace))


class MarkdownTest(tf.test.TestCase):
    def test_one_table_per_layer(self):
        trace = default_trace()
        markdown = render.to_markdown(trace, "title")
        self.assertEqual(markdown.count("| term | formula | value | tape |"), 3)
        self.assertIn(
            "| ∂L/∂W_1 | `xᵀ @ δ_1` | `[  -0.61865  0  -0.364311 ]`<br>`[ -0.386656  0  -0.227694 ]` |",
            markdown,
        )
        self.assertIn("agreed, max \\|Δ\\| 0", markdown)
        self.assertEqual(
            markdown.count("   | article |"), 11
        )  # errata 1-5: factor and gradient; 6: the claim


class JsonTest(tf.test.TestCase):
    def test_strict_and_complete(self):
        trace = default_trace()
        data = json.loads(render.to_json(trace, "t"))
        self.assertEqual(data["title"], "t")
        self.assertEqual(data["net"]["layer_sizes"], [2, 3, 3, 1])
        self.assertEqual(data["loss"], trace.loss_value)
        self.assertTrue(data["tape_check"]["agreed"])
        for layer, layer_data in zip(trace.layers, data["layers"]):
            self.assertEqual(layer_data["kernel"], layer.kernel.tolist())
            for term, term_data in zip(layer.terms, layer_data["terms"]):
                self.assertEqual(term_data["value"], term.value.tolist())  # full precision
                self.assertEqual(term_data["agreed"], None if term.check is None else True)
        self.assertEqual([e["key"] for e in data["errata"]], [e.key for e in trace.errata])
        self.assertIsNone(data["errata"][3]["wrong_gradient"]["value"])
        self.assertEqual(data["errata"][0]["step"]["rate"], 0.01)

    def test_non_finite_values_are_null_and_listed(self):
        # explain refuses a pass that overflows; an erratum's wrong formula, or a trace built by
        # hand, can still hold inf and NaN.
        model = article_net(output_activation="linear")
        trace = explaining.explain(model, [1.0, 1.0], 0.0, "half_mse", errata="off")
        layer = trace.layers[0]
        term = layer.terms[4]
        bad = dataclasses.replace(
            term,
            value=np.where(term.value == 0, np.nan, np.inf),
            per_row=np.full_like(term.per_row, np.inf),
            check=dataclasses.replace(term.check, tape=np.full_like(term.check.tape, np.nan), agreed=False),
        )
        terms = (*layer.terms[:4], bad, *layer.terms[5:])
        layers = (dataclasses.replace(layer, terms=terms), *trace.layers[1:])
        trace = dataclasses.replace(trace, loss_value=float("inf"), layers=layers)
        text = render.to_json(trace)  # allow_nan=False: would raise on a NaN left in
        data = json.loads(text)
        self.assertIn("loss", data["non_finite"])
        self.assertIsNone(data["loss"])
        self.assertFalse(data["tape_check"]["agreed"])
        gradient = data["layers"][0]["terms"][4]  # ∂L/∂W_1: inf · 0 somewhere
        self.assertEqual(gradient["key"], "dL_dW")
        self.assertEqual(gradient["non_finite"], ["value", "per_row", "tape"])
        self.assertIn(None, np.ravel(np.array(gradient["value"], dtype=object)).tolist())
        self.assertFalse(gradient["agreed"])


if __name__ == "__main__":
    tf.test.main()
