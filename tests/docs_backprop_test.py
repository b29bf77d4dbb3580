"""docs/backprop.md's worked example prints what the code computes.

The example lives in a fenced block after the marker comment `EXAMPLE_MARKER`, one
`name = <Python literal>` per line (`#` lines are comments).  The inputs (x, y, W1..W3,
b1..b3) are read from the block; every other name is a result, printed to `DECIMALS`
decimals, and must match both gradient paths to that precision.  The TensorFlow facts the
page quotes (leaky_relu's α, tf.nn.gelu's float64 error) are checked too.
"""

import ast
import pathlib
import re

import numpy as np
import tensorflow as tf

from tf_backprop import activations, backprop, losses
from tf_backprop.model import MLP

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "backprop.md"
EXAMPLE_MARKER = "<!-- worked-example: checked by tests/docs_backprop_test.py -->"
DECIMALS = 6
TOLERANCE = 0.5 * 10.0**-DECIMALS + 1e-12  # half a unit in the last printed digit
INPUT_NAMES = ("x", "y", "W1", "b1", "W2", "b2", "W3", "b3")
RESULT_NAMES = (
    *("z1", "h1", "z2", "h2", "z3", "loss"),
    *("delta3", "dW3", "db3", "dh2", "delta2", "dW2", "db2", "dh1", "delta1", "dW1", "db1"),
)
GRADIENT_NAMES = ("dW1", "db1", "dW2", "db2", "dW3", "db3")  # trainable_variables order
LOSS = "half_mse"


def example_block(text: str) -> str:
    """The body of the first fenced block after EXAMPLE_MARKER."""
    start = text.index(EXAMPLE_MARKER)
    match = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M).search(text, start)
    if match is None:
        raise AssertionError(f"no fenced block after {EXAMPLE_MARKER!r}")
    return match.group(1)


def parse_block(block: str) -> dict[str, np.ndarray]:
    """{name: float64 array} from `name = literal` lines; ValueError on anything else."""
    values = {}
    for line in block.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, literal = line.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"not a `name = literal` line: {line!r}")
        values[name.strip()] = np.array(ast.literal_eval(literal.strip()), dtype=np.float64)
    return values


def build_model(values) -> MLP:
    """The article's 2-3-3-1 ReLU net in float64 with the example's weights."""
    model = MLP(dtype="float64")
    for index, layer in enumerate(model.dense_layers, start=1):
        layer.kernel.assign(values[f"W{index}"])
        layer.bias.assign(values[f"b{index}"])
    return model


def manual_results(model: MLP, x, y) -> dict[str, np.ndarray]:
    """Every result name, by the forward pass and the hand-written backward pieces."""
    forward = model.forward(x, keep_intermediates=True)
    (z1, z2, z3), (h1, h2, h3) = forward.zs, forward.hs
    relu = activations.ACTIVATIONS["relu"]
    delta3 = losses.get(LOSS).delta(z3, h3, tf.constant(y), model.output_activation)
    dh2 = tf.matmul(delta3, model.kernels[2], transpose_b=True)
    delta2 = relu.backward(z2, h2, dh2)
    dh1 = tf.matmul(delta2, model.kernels[1], transpose_b=True)
    delta1 = relu.backward(z1, h1, dh1)
    loss, grads = backprop.manual_gradients(model, x, y, LOSS)
    results = dict(zip(GRADIENT_NAMES, grads))
    results.update(z1=z1, h1=h1, z2=z2, h2=h2, z3=z3, loss=loss, delta3=delta3, dh2=dh2)
    results.update(delta2=delta2, dh1=dh1, delta1=delta1)
    return {name: np.asarray(value) for name, value in results.items()}


def tape_results(model: MLP, x, y) -> dict[str, np.ndarray]:
    """The backward-pass results again, by tf.GradientTape (δ_l = ∂L/∂z_l, dh_l = ∂L/∂h_l)."""
    with tf.GradientTape() as tape:
        forward = model.forward(x, keep_intermediates=True)
        loss = losses.get(LOSS).value(forward.zs[-1], forward.hs[-1], tf.constant(y))
    (z1, z2, z3), (h1, h2, _) = forward.zs, forward.hs
    delta1, delta2, delta3, dh1, dh2 = tape.gradient(loss, [z1, z2, z3, h1, h2])
    _, grads = backprop.tape_gradients(model, x, y, LOSS)
    results = dict(zip(GRADIENT_NAMES, grads))
    results.update(loss=loss, delta1=delta1, delta2=delta2, delta3=delta3, dh1=dh1, dh2=dh2)
    return {name: np.asarray(value) for name, value in results.items()}


def mismatches(printed: dict, computed: dict, source: str) -> list[str]:
    """The names whose printed value differs from the computed one beyond TOLERANCE."""
    found = []
    for name, value in computed.items():
        if name not in printed:
            found.append(f"{name}: missing from the doc")
        elif printed[name].shape != value.shape or np.max(np.abs(printed[name] - value)) > TOLERANCE:
            rounded = np.round(value, DECIMALS).tolist()
            found.append(f"{name}: doc {printed[name].tolist()} vs {source} {rounded}")
    return found


def example_prose_numbers(text: str) -> list[float]:
    """Decimal numbers in the worked-example section outside `name = ...` lines (prose, comments)."""
    section = text[text.index("## 5.") : text.index("## 6.")]
    lines = [line for line in section.splitlines() if not re.match(r"^\w+ = ", line)]
    numbers = re.findall(r"[−-]?\d+\.\d+", "\n".join(lines))
    return [float(number.replace("−", "-")) for number in numbers]


def check(text: str) -> list[str]:
    """All mismatches between the doc text's example and both gradient paths."""
    printed = parse_block(example_block(text))
    model = build_model(printed)
    x, y = printed["x"], printed["y"]
    return mismatches(printed, manual_results(model, x, y), "manual") + mismatches(
        printed, tape_results(model, x, y), "tape"
    )


class WorkedExampleTest(tf.test.TestCase):
    """The numbers in docs/backprop.md are the code's numbers."""

    def setUp(self):
        super().setUp()
        self.text = DOC.read_text(encoding="utf-8")

    def test_block_has_every_input_and_result(self):
        printed = parse_block(example_block(self.text))
        self.assertEqual(set(printed), set(INPUT_NAMES) | set(RESULT_NAMES))
        self.assertEqual(printed["x"].shape, (2, 2))
        self.assertEqual(printed["W2"].shape, (3, 3))

    def test_numbers_match_manual_and_tape(self):
        self.assertEqual(check(self.text), [])

    def test_an_edited_number_is_caught(self):
        block = example_block(self.text)
        loss_line = next(line for line in block.splitlines() if line.startswith("loss"))
        value = float(loss_line.partition("=")[2])
        edited = self.text.replace(loss_line, f"loss = {value + 10.0**-DECIMALS:.{DECIMALS}f}", 1)
        self.assertNotEqual(edited, self.text)
        self.assertLen([m for m in check(edited) if m.startswith("loss:")], 2)

    def test_numbers_quoted_in_the_prose_are_in_the_block(self):
        printed = np.concatenate([value.ravel() for value in parse_block(example_block(self.text)).values()])
        quoted = example_prose_numbers(self.text)
        self.assertNotEmpty(quoted)
        for number in quoted:
            self.assertTrue(np.any(np.abs(np.abs(printed) - abs(number)) < 1e-12), number)

    def test_every_result_is_compared(self):
        printed = parse_block(example_block(self.text))
        model = build_model(printed)
        computed = manual_results(model, printed["x"], printed["y"])
        for name in RESULT_NAMES:
            edited = dict(printed)
            edited[name] = printed[name] + 2 * TOLERANCE
            self.assertLen(mismatches(edited, computed, "manual"), 1, name)


class DocumentedFactsTest(tf.test.TestCase):
    """The TensorFlow facts §4 states, so the page is updated if TensorFlow changes."""

    def test_leaky_relu_alpha_is_float32_point_two(self):
        self.assertIn("0.20000000298023224", DOC.read_text(encoding="utf-8"))
        self.assertEqual(activations.LEAKY_RELU_ALPHA, 0.20000000298023224)
        z = tf.constant([-1.0], tf.float64)
        self.assertAllEqual(tf.nn.leaky_relu(z), [-activations.LEAKY_RELU_ALPHA])

    def test_tf_gelu_float64_is_off_in_the_tail(self):
        z = tf.constant([-1.0, -3.0, -5.0], tf.float64)
        ours = activations.ACTIVATIONS["gelu"].forward(z)
        error = np.abs(tf.nn.gelu(z, approximate=False) - ours) / np.abs(ours)
        # §4 quotes 2.6e-8, 1.7e-7 and 4.4e-7.
        self.assertAllClose(error, [2.6e-8, 1.7e-7, 4.4e-7], rtol=0.05)


if __name__ == "__main__":
    tf.test.main()
