"""The hand-written gradients equal the tape's: every activation × loss × depth, eager and under XLA.

Comparisons use the relative error |a − b| / max(|a|, |b|, floor), elementwise, maximum over all
elements of all variables.  Why the floor is not always `tiny` is explained at
`FLOOR_FRACTION`.
"""

import ast
import inspect
import itertools
import textwrap
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import activations, backprop, losses
from tf_backprop import model as model_lib
from tf_backprop.model import MLP

TINY = np.finfo(np.float64).tiny
RTOL = {"float64": 1e-12, "float32": 1e-5}
# The floor, as a fraction of the largest gradient element over all variables.
#
# The two paths round differently (e.g. the tape computes (1/N)·2(ŷ − y), the manual path
# 2(ŷ − y)/N), so their δ's differ by an ulp or so.  Every sum of the backward pass (hᵀδ, δWᵀ,
# Σ_rows δ) turns that into an *absolute* error of order ε × (size of the summed terms), which is
# large relative to an element — or a whole small layer's gradient — that comes out of a sum that
# cancels.  Measured on this file's cases: in float64 one element, 1e-5 of its variable's largest,
# differed by 5e-12 relative with a `tiny` floor; in float32 a bias gradient of a softmax-output net
# at batch 1 is all cancellation residue (a floor of 5× its own largest element would be needed),
# and the worst case needed a floor of 1.1e-2 of the largest element overall.  With these floors an
# element at least that fraction of the gradient's scale is judged relatively, and one below it
# absolutely: error ≤ RTOL · floor, i.e. 1e-15 (float64) or 1e-6 (float32, ≈ 10 ulps) of the scale.
FLOOR_FRACTION = {"float64": 1e-3, "float32": 1e-1}
L2 = 0.03
DEPTHS = (1, 2, 3, 4)
# Hidden widths per depth; each deeper net has a width-1 layer.
HIDDEN_WIDTHS = {1: (4,), 2: (1, 5), 3: (5, 1, 3), 4: (4, 3, 1, 2)}
N_INPUTS = 3
N_CLASSES = 3
# (output activation, loss, target kind).
LOSS_CASES = (
    ("linear", "mse", "regression"),
    ("linear", "half_mse", "regression"),
    ("linear", "binary_crossentropy", "binary"),
    ("linear", "categorical_crossentropy", "labels"),
    ("linear", "categorical_crossentropy", "onehot"),
    ("sigmoid", "mse", "regression"),
    ("softmax", "mse", "regression"),
    ("relu", "mse", "regression"),
)
# Op types that only autodiff emits (TF's *Grad kernels and the tape's shape bookkeeping).
GRADIENT_OP_TYPES = {
    "ReluGrad",
    "LeakyReluGrad",
    "EluGrad",
    "SeluGrad",
    "SigmoidGrad",
    "TanhGrad",
    "SoftplusGrad",
    "SoftsignGrad",
    "SoftmaxGrad",
    "BiasAddGrad",
    "BroadcastGradientArgs",
    "SymbolicGradient",
}
# Ops that can hide a gradient override or a nested function (whose body this check would not see).
WRAPPER_OP_TYPES = {"IdentityN", "PartitionedCall", "StatefulPartitionedCall"}
AUTODIFF_NAMES = {"GradientTape", "gradients", "gradient", "custom_gradient", "jacobian", "batch_jacobian"}
AUTODIFF_NAMES |= {"ForwardAccumulator", "RegisterGradient", "stop_recording", "watch"}


def output_width(case, depth: int) -> int:
    """Classes for softmax/categorical cases; otherwise 1 or 2 outputs (alternating by depth)."""
    output_activation, _, targets = case
    if output_activation == "softmax" or targets in ("labels", "onehot"):
        return N_CLASSES
    return 1 if depth % 2 else 2


def make_model(activation: str, case, depth: int, dtype: str, seed: int) -> MLP:
    """An MLP for `case` with random (not zero) biases, so no z sits exactly on a kink."""
    sizes = (N_INPUTS, *HIDDEN_WIDTHS[depth], output_width(case, depth))
    model = MLP(sizes, activation=activation, output_activation=case[0], dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.dense_layers:
        layer.bias.assign(rng.normal(scale=0.5, size=layer.bias.shape).astype(dtype))
    return model


def make_batch(case, batch: int, width: int, dtype: str, seed: int):
    """(x [batch, N_INPUTS], y) with targets of the case's kind."""
    rng = np.random.default_rng(seed + 1000)
    x = rng.normal(size=(batch, N_INPUTS)).astype(dtype)
    kind = case[2]
    if kind == "labels":
        y = rng.integers(0, width, size=batch)
    elif kind == "onehot":
        y = np.eye(width, dtype=dtype)[rng.integers(0, width, size=batch)]
    elif kind == "binary":
        y = rng.integers(0, 2, size=(batch, width)).astype(dtype)
    else:
        y = rng.normal(size=(batch, width)).astype(dtype)
    return x, y


def relative_error(a, b, floor: float = TINY) -> float:
    """max over elements of |a − b| / max(|a|, |b|, floor); 0 for empty tensors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return float(np.max(np.abs(a - b) / scale)) if a.size else 0.0


def gradient_error(grads_a, grads_b, floor_fraction: float) -> float:
    """Worst relative_error over variables; floor = floor_fraction · largest |g| of all of them."""
    largest = max(max(np.max(np.abs(a)), np.max(np.abs(b))) for a, b in zip(grads_a, grads_b))
    floor = max(floor_fraction * largest, TINY)
    return max(relative_error(a, b, floor) for a, b in zip(grads_a, grads_b))


def compare(result_a, result_b, dtype: str) -> tuple[float, float]:
    """(loss relative error with a tiny floor, gradient error) of two (loss, grads) results."""
    (loss_a, grads_a), (loss_b, grads_b) = result_a, result_b
    if len(grads_a) != len(grads_b):
        raise AssertionError(f"{len(grads_a)} vs {len(grads_b)} gradients")
    return relative_error(loss_a, loss_b), gradient_error(grads_a, grads_b, FLOOR_FRACTION[dtype])


class PathAgreementMixin:
    """Runs both gradient paths on many cases and reports every case that disagrees."""

    def assert_agree(self, failures: list[str], dtype: str):
        self.assertEqual(failures, [], f"manual ≠ tape beyond {RTOL[dtype]:g} ({dtype})")

    def check_case(self, failures, label, result_a, result_b, dtype):
        loss_error, grad_error = compare(result_a, result_b, dtype)
        if not (loss_error <= RTOL[dtype] and grad_error <= RTOL[dtype]):
            failures.append(f"{label}: loss {loss_error:.2e}, gradients {grad_error:.2e}")

    def check_matrix(self, activation: str, dtype: str, settings) -> list[str]:
        """Every loss case × depth × settings(depth), a list of (batch, l2); returns the failures."""
        failures = []
        for depth, case in itertools.product(DEPTHS, LOSS_CASES):
            seed = depth + 10 * LOSS_CASES.index(case)
            model = make_model(activation, case, depth, dtype, seed)
            for batch, l2 in settings(depth):
                x, y = make_batch(case, batch, model.layer_sizes[-1], dtype, seed + batch)
                manual = backprop.manual_gradients(model, x, y, case[1], l2=l2)
                tape = backprop.tape_gradients(model, x, y, case[1], l2=l2)
                label = f"{activation}/{case[0]}/{case[1]}/{case[2]} depth {depth} batch {batch} l2 {l2}"
                self.check_case(failures, label, manual, tape, dtype)
        return failures


class ManualMatchesTapeTest(PathAgreementMixin, tf.test.TestCase, parameterized.TestCase):
    """Eager comparisons of the two paths."""

    @parameterized.named_parameters((name, name) for name in activations.HIDDEN_ACTIVATIONS)
    def test_float64_every_loss_depth_batch_and_l2(self, activation):
        every = list(itertools.product((1, 7), (0.0, L2)))
        failures = self.check_matrix(activation, "float64", lambda depth: every)
        self.assert_agree(failures, "float64")

    @parameterized.named_parameters((name, name) for name in activations.HIDDEN_ACTIVATIONS)
    def test_float32_every_loss_depth_and_batch(self, activation):
        # Half the float64 matrix, for time: one (batch, l2) per depth, and across the four
        # depths every loss case still runs at batch 1 and 7, each with and without l2.
        settings = {1: (1, 0.0), 2: (7, L2), 3: (1, L2), 4: (7, 0.0)}
        failures = self.check_matrix(activation, "float32", lambda depth: [settings[depth]])
        self.assert_agree(failures, "float32")

    def test_article_net_half_mse(self):
        model = MLP(dtype="float64", kernel_initializer="random_normal", seed=7)
        x, y = make_batch(LOSS_CASES[1], 10, 1, "float64", 7)
        x = x[:, :2]
        manual = backprop.manual_gradients(model, x, y, "half_mse")
        tape = backprop.tape_gradients(model, x, y, "half_mse")
        loss_error, grad_error = compare(manual, tape, "float64")
        self.assertLessEqual(loss_error, RTOL["float64"])
        self.assertLessEqual(grad_error, RTOL["float64"])
        self.assertLen(manual[1], 6)

    @parameterized.named_parameters(("relu", "relu"), ("leaky_relu", "leaky_relu"), ("elu", "elu"))
    def test_kinks_follow_tf_kernels(self, activation):
        # x = 0 and zero biases put every z exactly on the kink at 0.
        model = MLP((2, 3, 2), activation=activation, output_activation="relu", dtype="float64", seed=1)
        x, y = np.zeros((4, 2)), np.ones((4, 2))
        manual = backprop.manual_gradients(model, x, y, "mse")
        tape = backprop.tape_gradients(model, x, y, "mse")
        for got, want in zip(manual[1], tape[1]):
            self.assertAllEqual(got, want)

    def test_loss_scale_scales_loss_and_gradients(self):
        model = make_model("tanh", LOSS_CASES[0], 2, "float64", 3)
        x, y = make_batch(LOSS_CASES[0], 7, 2, "float64", 3)
        full = backprop.manual_gradients(model, x, y, "mse", l2=L2)
        for fn in (backprop.manual_gradients, backprop.tape_gradients):
            loss, grads = fn(model, x, y, "mse", l2=L2, loss_scale=0.25)
            self.assertAllClose(loss, 0.25 * full[0], rtol=1e-14, atol=0)
            for got, want in zip(grads, full[1]):
                self.assertAllClose(got, 0.25 * want, rtol=1e-12, atol=1e-17)

    def test_l2_adds_lambda_w(self):
        model = make_model("gelu", LOSS_CASES[2], 3, "float64", 4)
        x, y = make_batch(LOSS_CASES[2], 7, 1, "float64", 4)
        _, plain = backprop.manual_gradients(model, x, y, "binary_crossentropy")
        _, penalized = backprop.manual_gradients(model, x, y, "binary_crossentropy", l2=L2)
        for variable, a, b in zip(model.trainable_variables, plain, penalized):
            extra = L2 * variable if "kernel" in variable.path else tf.zeros_like(variable)
            self.assertAllClose(b - a, extra, rtol=1e-12, atol=1e-15)


def jit_both_paths(model: MLP, loss: str, l2: float):
    """One XLA program returning (manual result, tape result)."""

    def both(x, y):
        return (
            backprop.manual_gradients(model, x, y, loss, l2=l2),
            backprop.tape_gradients(model, x, y, loss, l2=l2),
        )

    return tf.function(both, jit_compile=True)


class JitTest(PathAgreementMixin, tf.test.TestCase, parameterized.TestCase):
    """The manual path compiles with XLA and still matches the tape, jitted and eager."""

    @parameterized.named_parameters(("float32", "float32", 0), ("float64", "float64", 1))
    def test_manual_matches_tape_under_xla(self, dtype, offset):
        # Each loss case once, each with a different hidden activation, depth and batch size; an
        # XLA compilation costs ~0.3–1.5 s, so the dtypes split batch 1 and 7 between them.
        failures = []
        for index, (case, activation) in enumerate(zip(LOSS_CASES, activations.HIDDEN_ACTIVATIONS)):
            depth, l2, batch = DEPTHS[index % 4], L2 * (index % 2), (1, 7)[(index // 2 + offset) % 2]
            model = make_model(activation, case, depth, dtype, seed=index)
            x, y = make_batch(case, batch, model.layer_sizes[-1], dtype, seed=index + batch)
            manual_jit, tape_jit = jit_both_paths(model, case[1], l2)(tf.constant(x), tf.constant(y))
            tape_eager = backprop.tape_gradients(model, x, y, case[1], l2=l2)
            label = f"{activation}/{case[0]}/{case[1]}/{case[2]} depth {depth} batch {batch} l2 {l2}"
            self.check_case(failures, label + " vs jit tape", manual_jit, tape_jit, dtype)
            self.check_case(failures, label + " vs eager tape", manual_jit, tape_eager, dtype)
        self.assert_agree(failures, dtype)


def concrete_graph(gradient_fn, activation: str, case) -> tf.Graph:
    """The traced graph of gradient_fn on a small float32 model for a loss case (any batch size)."""
    output_activation, loss, targets = case
    model = MLP((2, 3, 3), activation=activation, output_activation=output_activation, seed=0)
    y_spec = tf.TensorSpec([None], tf.int32) if targets == "labels" else tf.TensorSpec([None, 3], tf.float32)
    fn = tf.function(lambda x, y: gradient_fn(model, x, y, loss, l2=0.1))
    return fn.get_concrete_function(tf.TensorSpec([None, 2], tf.float32), y_spec).graph


def autodiff_ops(graph: tf.Graph) -> list[str]:
    """Ops in graph (and its function library) that only automatic differentiation creates."""
    found = [f"library function {f.signature.name}" for f in graph.as_graph_def().library.function]
    for op in graph.get_operations():
        gradient_type = op.type in GRADIENT_OP_TYPES or op.type.endswith(("Grad", "GradV2"))
        if gradient_type or op.type in WRAPPER_OP_TYPES or "gradient" in op.name.lower():
            found.append(f"{op.type} ({op.name})")
    return found


def parse(source_of) -> ast.AST:
    """The syntax tree of a function's or module's source."""
    return ast.parse(textwrap.dedent(inspect.getsource(source_of)))


def names_used(source_of) -> set[str]:
    """Every identifier and attribute name in a function's or module's code (not docstrings or comments)."""
    tree = parse(source_of)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return names | {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


def resolve(node: ast.AST, namespace: dict):
    """The object a Name or `module.attr` node refers to in namespace, else None."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        owner = namespace.get(node.value.id)
        return getattr(owner, node.attr, None) if inspect.ismodule(owner) else None
    return None


def package_functions_reached(function) -> list:
    """function and every tf_backprop function it names, transitively (by static names)."""
    reached, pending = [], [function]
    while pending:
        current = pending.pop()
        if current in reached:
            continue
        reached.append(current)
        for node in ast.walk(parse(current)):
            target = resolve(node, current.__globals__)
            if inspect.isfunction(target) and target.__module__.startswith("tf_backprop"):
                pending.append(target)
    return reached


class NoAutodiffTest(tf.test.TestCase, parameterized.TestCase):
    """manual_gradients really is written by hand: no autodiff in its code or in its graph."""

    def test_checks_flag_the_tape_path(self):
        # The checks below can fail: they flag the tape path for every activation.
        tape_names = set().union(*map(names_used, package_functions_reached(backprop.tape_gradients)))
        self.assertIn("GradientTape", tape_names)
        for name in activations.HIDDEN_ACTIVATIONS:
            graph = concrete_graph(backprop.tape_gradients, name, LOSS_CASES[0])
            self.assertNotEmpty(autodiff_ops(graph), name)

    def test_manual_path_source_names_no_autodiff(self):
        # Methods reached through objects (model.forward, loss.delta, activation.backward) are
        # not resolved statically: their whole modules are scanned instead.
        reached = package_functions_reached(backprop.manual_gradients)
        self.assertIn(backprop.backward, reached)
        for source_of in reached + [activations, losses, model_lib]:
            used = names_used(source_of) & AUTODIFF_NAMES
            self.assertEmpty(used, f"{source_of.__name__} uses {sorted(used)}")

    @parameterized.named_parameters(
        ("_".join((name, *case)), name, case)
        for name, case in zip(activations.HIDDEN_ACTIVATIONS, LOSS_CASES)
    )
    def test_graph_has_no_gradient_ops(self, activation, case):
        graph = concrete_graph(backprop.manual_gradients, activation, case)
        self.assertEmpty(autodiff_ops(graph))
        # The backward pass is in the graph: 2 forward matmuls, 2 for ∂W, 1 for ∂h_1.
        matmuls = [op for op in graph.get_operations() if op.type == "MatMul"]
        self.assertGreaterEqual(len(matmuls), 5)

    def test_runs_with_autodiff_apis_disabled(self):
        def forbidden(*args, **kwargs):
            raise AssertionError("autodiff API called")

        model = make_model("softplus", LOSS_CASES[6], 2, "float64", 5)
        x, y = make_batch(LOSS_CASES[6], 7, N_CLASSES, "float64", 5)
        patches = [mock.patch.object(tf, name, forbidden) for name in ("GradientTape", "gradients")]
        patches.append(mock.patch.object(tf.autodiff, "ForwardAccumulator", forbidden))
        with patches[0], patches[1], patches[2]:
            manual = backprop.manual_gradients(model, x, y, "mse")
            with self.assertRaisesRegex(AssertionError, "autodiff API called"):
                backprop.tape_gradients(model, x, y, "mse")
        self.assertLen(manual[1], 2 * len(model.dense_layers))


if __name__ == "__main__":
    tf.test.main()
