"""explaining.svg: parses, one node per unit, one edge per weight, labels that are the trace's numbers."""

import xml.etree.ElementTree as ET

import numpy as np
import tensorflow as tf
from explain_examples import article_net, default_trace, random_case

from tf_backprop import explaining
from tf_backprop.explaining import render, svg

NS = {"s": "http://www.w3.org/2000/svg"}


def _parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def _units(root):
    return root.findall(".//s:g[@class='unit']", NS)


def _edges(root):
    return root.findall(".//s:line[@class='edge']", NS)


class PictureTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.trace = default_trace()
        self.text = svg.render(self.trace, "title")
        self.root = _parse(self.text)

    def test_one_node_per_unit_and_one_edge_per_weight(self):
        self.assertEqual(self.root.tag, "{http://www.w3.org/2000/svg}svg")
        self.assertLen(self.root.findall(".//s:g[@class='input']", NS), 2)
        self.assertLen(_units(self.root), 3 + 3 + 1)
        self.assertLen(_edges(self.root), 2 * 3 + 3 * 3 + 3 * 1)
        pairs = {(e.get("data-layer"), e.get("data-from"), e.get("data-to")) for e in _edges(self.root)}
        self.assertLen(pairs, 18)
        self.assertLen(self.root.findall(".//s:g[@class='loss']", NS), 1)

    def test_units_carry_the_traces_numbers(self):
        for node in _units(self.root):
            layer = self.trace.layers[int(node.get("data-layer")) - 1]
            j = int(node.get("data-unit")) - 1
            for key, name in (("z", "z"), ("h", "h"), ("delta", "δ")):
                value = layer.term(key).value[0, j]
                self.assertEqual(float(node.get(f"data-{key}")), value)  # exact (repr)
                label = node.find(f"s:text[@class='{key}']", NS).text
                self.assertEqual(label, f"{name} {render.number(value, svg.DIGITS)}")
            self.assertEqual(node.get("data-off"), "true" if layer.term("z").value[0, j] <= 0 else "false")

    def test_edges_carry_the_weight_gradients(self):
        for edge in _edges(self.root):
            layer = self.trace.layers[int(edge.get("data-layer")) - 1]
            k, j = int(edge.get("data-from")) - 1, int(edge.get("data-to")) - 1
            grad = layer.term("dL_dW").value[k, j]
            self.assertEqual(float(edge.get("data-grad")), grad)
            self.assertEqual(float(edge.get("data-weight")), layer.kernel[k, j])
            colour = svg.POSITIVE if grad > 0 else svg.NEGATIVE if grad < 0 else svg.ZERO
            self.assertEqual(edge.get("stroke"), colour)
            self.assertIn(render.number(grad), edge.find("s:title", NS).text)

    def test_edge_width_grows_with_the_gradient(self):
        sized = sorted(
            (abs(float(e.get("data-grad"))), float(e.get("stroke-width"))) for e in _edges(self.root)
        )
        widths = [width for _, width in sized]
        self.assertEqual(widths, sorted(widths))
        self.assertEqual(widths[-1], 6.0)  # 0.8 + 5.2 at the largest |∂L/∂W|

    def test_loss_and_output_gradient(self):
        loss = self.root.find(".//s:g[@class='loss']", NS)
        self.assertEqual(float(loss.get("data-loss")), self.trace.loss_value)
        label = self.root.find(".//s:text[@class='loss-gradient']", NS)
        value = self.trace.layers[-1].term("dL_dh").value[0, 0]
        self.assertEqual(label.text, f"∂L/∂ŷ = {render.number(value, svg.DIGITS)}")

    def test_self_contained_and_deterministic(self):
        self.assertEqual(svg.render(default_trace(), "title"), self.text)
        for forbidden in ("<script", "href", "@import", "url(", "@font-face", "<image"):
            self.assertNotIn(forbidden, self.text)
        self.assertIn("MLP 2-3-3-1 (relu → relu), loss half_mse · title", self.root.find("s:title", NS).text)


class LargeNetsTest(tf.test.TestCase):
    def test_wide_layers_are_summarized(self):
        model, x, y = random_case((20, 17, 16, 1), "relu", "linear", "mse", 1)
        trace = explaining.explain(model, x[0], y[0], "mse")
        root = _parse(svg.render(trace))
        shown = svg.MAX_UNITS - 1
        self.assertLen(root.findall(".//s:g[@class='input']", NS), shown)
        self.assertLen(_units(root), shown + 16 + 1)
        summaries = [int(g.get("data-hidden")) for g in root.findall(".//s:g[@class='summary']", NS)]
        self.assertEqual(summaries, [5, 2])
        self.assertLen(_edges(root), shown * shown + shown * 16 + 16 * 1)
        delta = np.abs(trace.layers[0].term("delta").value[0])
        kept = sorted(int(g.get("data-unit")) - 1 for g in _units(root) if g.get("data-layer") == "1")
        dropped = sorted(set(range(17)) - set(kept))
        self.assertLessEqual(delta[dropped].max(), delta[kept].min())

    def test_one_sample_only(self):
        model, x, y = random_case((2, 3, 1), "relu", "linear", "mse", 2)
        with self.assertRaisesRegex(ValueError, "svg: the picture shows one sample, got a batch of 2 rows"):
            svg.render(explaining.explain(model, x, y, "mse"))

    def test_a_dead_output_is_drawn_off(self):
        trace = explaining.explain(article_net(0), [0.5, -1.2], 0.3, "half_mse")
        output = [g for g in _units(_parse(svg.render(trace))) if g.get("data-layer") == "3"][0]
        self.assertEqual(output.get("data-off"), "true")
        self.assertIn('stroke-dasharray="4 3"', ET.tostring(output, encoding="unicode"))


if __name__ == "__main__":
    tf.test.main()
