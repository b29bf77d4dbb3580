"""docs/backprop.md's worked examples print what the code computes.

The first example lives in a fenced block after the marker comment `EXAMPLE_MARKER`, one
`name = <Python literal>` per line (`#` lines are comments).  The inputs (x, y, W1..W3,
b1..b3) are read from the block; every other name is a result, printed to `DECIMALS`
decimals, and must match both gradient paths to that precision.  The second-order example
(`HVP_MARKER`, §8) reads the direction (V1..vb3) and the softmax logits from its block and
checks the R-operator's pieces, and Hv against tape over tape.  The TensorFlow facts the page
quotes (leaky_relu's α, tf.nn.gelu's float64 error) are checked too.
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
HVP_MARKER = "<!-- worked-example-hvp: checked by tests/docs_backprop_test.py -->"
DIRECTION_NAMES = ("V1", "vb1", "V2", "vb2", "V3", "vb3")  # trainable_variables order
HVP_NAMES = ("HW1", "Hb1", "HW2", "Hb2", "HW3", "Hb3")
HVP_RESULT_NAMES = (
    *("Rz1", "Rh1", "Rz2", "Rh2", "Rz3", "Rdelta3", "Rdh2", "Rdelta2", "Rdh1", "Rdelta1"),
    *HVP_NAMES,
    *("s_ce", "H_ce", "Hdz_ce"),
)
DECIMALS = 6
TOLERANCE = 0.5 * 10.0**-DECIMALS + 1e-12  # half a unit in the last printed digit
INPUT_NAMES = ("x", "y", "W1", "b1", "W2", "b2", "W3", "b3")
RESULT_NAMES = (
    *("z1", "h1", "z2", "h2", "z3", "loss"),
    *("delta3", "dW3", "db3", "dh2", "delta2", "dW2", "db2", "dh1", "delta1", "dW1", "db1"),
)
GRADIENT_NAMES = ("dW1", "db1", "dW2", "db2", "dW3", "db3")  # trainable_variables order
LOSS = "half_mse"


def example_block(text: str, marker: str = EXAMPLE_MARKER) -> str:
    """The body of the first fenced block after the marker."""
    start = text.index(marker)
    match = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M).search(text, start)
    if match is None:
        raise AssertionError(f"no fenced block after {marker!r}")
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


def example_prose_numbers(text: str, start: str = "## 5.", stop: str | None = "## 6.") -> list[float]:
    """Decimal numbers in a worked-example section outside `name = ...` lines (prose, comments)."""
    section = text[text.index(start) : text.index(stop) if stop else len(text)]
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


def hvp_results(model: MLP, x, y, direction: list[np.ndarray], printed: dict) -> dict[str, np.ndarray]:
    """§8's results: the R-operator's pieces, Hv by manual_hvp, the softmax Hessian lines."""
    forward = model.forward(x, keep_intermediates=True)
    (z1, z2, z3), (h1, h2, h3) = forward.zs, forward.hs
    relu, kernels, y = activations.ACTIVATIONS["relu"], model.kernels, tf.constant(y)
    v_kernels, v_biases = direction[0::2], direction[1::2]
    loss = losses.get(LOSS)
    rz1 = x @ v_kernels[0] + v_biases[0]
    rh1 = relu.tangent(z1, h1, rz1)
    rz2 = rh1 @ kernels[1] + h1 @ v_kernels[1] + v_biases[1]
    rh2 = relu.tangent(z2, h2, rz2)
    rz3 = rh2 @ kernels[2] + h2 @ v_kernels[2] + v_biases[2]
    delta3 = loss.delta(z3, h3, y, model.output_activation)
    r_delta3 = loss.delta_tangent(z3, h3, y, model.output_activation, rz3)
    rdh2 = r_delta3 @ tf.transpose(kernels[2]) + delta3 @ v_kernels[2].T
    delta2 = relu.backward(z2, h2, delta3 @ tf.transpose(kernels[2]))
    r_delta2 = relu.backward(z2, h2, rdh2) + relu.backward_tangent(
        z2, h2, delta3 @ tf.transpose(kernels[2]), rz2
    )
    rdh1 = r_delta2 @ tf.transpose(kernels[1]) + delta2 @ v_kernels[1].T
    r_delta1 = relu.backward(z1, h1, rdh1) + relu.backward_tangent(
        z1, h1, delta2 @ tf.transpose(kernels[1]), rz1
    )
    results = dict(zip(HVP_NAMES, backprop.manual_hvp(model, x, y, LOSS, direction)))
    results.update(Rz1=rz1, Rh1=rh1, Rz2=rz2, Rh2=rh2, Rz3=rz3, Rdelta3=r_delta3, Rdh2=rdh2)
    results.update(Rdelta2=r_delta2, Rdh1=rdh1, Rdelta1=r_delta1)
    results.update(softmax_results(printed["z_ce"], printed["dz_ce"]))
    return {name: np.asarray(value) for name, value in results.items()}


def softmax_results(z, dz) -> dict[str, np.ndarray]:
    """softmax(z), the categorical cross-entropy's Hessian in z (by tapes) and its product with dz."""
    z, labels = tf.constant(z), tf.constant([0])
    cce, linear = losses.get("categorical_crossentropy"), activations.ACTIVATIONS["linear"]
    with tf.GradientTape() as outer:
        outer.watch(z)
        with tf.GradientTape() as inner:
            inner.watch(z)
            value = cce.value(z, z, labels)
        gradient = inner.gradient(value, z)
    hessian = outer.jacobian(gradient, z)[0, :, 0, :]  # [k, k]
    return {
        "s_ce": tf.nn.softmax(z),
        "H_ce": hessian,
        "Hdz_ce": cce.delta_tangent(z, z, labels, linear, tf.constant(dz)),
    }


def check_hvp(text: str) -> list[str]:
    """All mismatches between §8's block and the R-operator (and tape over tape for Hv)."""
    printed = {**parse_block(example_block(text)), **parse_block(example_block(text, HVP_MARKER))}
    model = build_model(printed)
    direction = [printed[name] for name in DIRECTION_NAMES]
    computed = hvp_results(model, printed["x"], printed["y"], direction, printed)
    tape = dict(zip(HVP_NAMES, backprop.tape_hvp(model, printed["x"], printed["y"], LOSS, direction)))
    tape = {name: np.asarray(value) for name, value in tape.items()}
    return mismatches(printed, computed, "manual") + mismatches(printed, tape, "tape")


class HvpWorkedExampleTest(tf.test.TestCase):
    """The numbers of §8 (second order) are the code's numbers."""

    def setUp(self):
        super().setUp()
        self.text = DOC.read_text(encoding="utf-8")

    def test_block_has_every_input_and_result(self):
        printed = parse_block(example_block(self.text, HVP_MARKER))
        self.assertEqual(set(printed), {*DIRECTION_NAMES, "z_ce", "dz_ce", *HVP_RESULT_NAMES})

    def test_numbers_match_the_r_operator_and_the_tape(self):
        self.assertEqual(check_hvp(self.text), [])

    def test_an_edited_number_is_caught(self):
        line = next(
            line for line in example_block(self.text, HVP_MARKER).splitlines() if line.startswith("Hb3")
        )
        edited = self.text.replace(line, "Hb3 = [-0.136501]", 1)
        self.assertNotEqual(edited, self.text)
        self.assertLen([m for m in check_hvp(edited) if m.startswith("Hb3:")], 2)

    def test_numbers_quoted_in_the_prose_are_in_the_block(self):
        block = parse_block(example_block(self.text, HVP_MARKER))
        printed = np.concatenate([value.ravel() for value in block.values()])
        quoted = example_prose_numbers(self.text, "## 8.", None)
        self.assertNotEmpty(quoted)
        for number in quoted:
            self.assertTrue(np.any(np.abs(np.abs(printed) - abs(number)) < 1e-12), number)


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
