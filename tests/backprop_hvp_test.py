"""The hand-written Hessian-vector product (R-operator) equals tape over tape, piece by piece.

Each activation's `backward_tangent` and each loss's `delta_tangent` against nested tapes, then
`manual_hvp` against `tape_hvp` on every activation × loss case × depth in float64, at kinks
(bit for bit), under XLA, and with no autodiff in its code or its graph.
"""

import dataclasses
import itertools
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from backprop_test import (
    AUTODIFF_NAMES,
    DEPTHS,
    LOSS_CASES,
    N_CLASSES,
    autodiff_ops,
    gradient_error,
    make_batch,
    make_model,
    names_used,
    package_functions_reached,
)

from tf_backprop import activations, backprop, losses
from tf_backprop.model import MLP

RTOL = 1e-12  # float64, relative to a floor of 1e-3 of the largest element (backprop_test's)
FLOOR = 1e-3
L2 = 0.03
RNG = np.random.default_rng(0)


def random_direction(model: MLP, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=v.shape) for v in model.trainable_variables]


def tape_backward_tangent(activation, z, grad_h, dz):
    """d/dt backward(z + t dz, h(z + t dz), grad_h) at 0, by a tape: the reference."""
    z = tf.constant(z)
    with tf.autodiff.ForwardAccumulator(z, tf.constant(dz)) as accumulator:
        out = activation.backward(z, activation.forward(z), tf.constant(grad_h))
    return accumulator.jvp(out, unconnected_gradients="zero")


class ActivationSecondDerivativeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters((name, name) for name in activations.ACTIVATIONS)
    def test_backward_tangent_is_the_derivative_of_backward(self, name):
        activation = activations.ACTIVATIONS[name]
        z, g, dz = (RNG.normal(size=(4, 3)) for _ in range(3))
        got = activation.backward_tangent(z, activation.forward(z), g, dz)
        self.assertAllClose(got, tape_backward_tangent(activation, z, g, dz), rtol=1e-12, atol=1e-15)

    @parameterized.named_parameters((name, name) for name in activations.ACTIVATIONS)
    def test_tangent_is_the_jacobian_vector_product(self, name):
        activation = activations.ACTIVATIONS[name]
        z, dz = tf.constant(RNG.normal(size=(4, 3))), tf.constant(RNG.normal(size=(4, 3)))
        with tf.autodiff.ForwardAccumulator(z, dz) as accumulator:
            h = activation.forward(z)
        self.assertAllClose(activation.tangent(z, h, dz), accumulator.jvp(h), rtol=1e-12, atol=1e-15)

    def test_relu_type_second_derivative_is_zero(self):
        z = np.array([[-1.0, 0.0, 2.0]])
        for name in ("relu", "leaky_relu", "linear"):
            got = activations.ACTIVATIONS[name].backward_tangent(z, z, np.ones_like(z), np.ones_like(z))
            self.assertAllEqual(got, np.zeros_like(z))


class LossSecondDerivativeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("_".join(case), *case) for case in LOSS_CASES)
    def test_delta_tangent_is_the_derivative_of_delta(self, output, loss_name, targets):
        loss, activation = losses.get(loss_name), activations.ACTIVATIONS[output]
        _, y = make_batch((output, loss_name, targets), 5, N_CLASSES, "float64", 3)
        z, dz = tf.constant(RNG.normal(size=(5, 3))), tf.constant(RNG.normal(size=(5, 3)))
        y = tf.convert_to_tensor(y)
        with tf.autodiff.ForwardAccumulator(z, dz) as accumulator:
            delta = loss.delta(z, activation.forward(z), y, activation)
        got = loss.delta_tangent(z, activation.forward(z), y, activation, dz)
        self.assertAllClose(got, accumulator.jvp(delta), rtol=1e-12, atol=1e-15)


class ManualHvpMatchesTapeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters((name, name) for name in activations.HIDDEN_ACTIVATIONS)
    def test_every_loss_and_depth(self, activation):
        failures = []
        for depth, case in itertools.product(DEPTHS, LOSS_CASES):
            seed = depth + 10 * LOSS_CASES.index(case)
            model = make_model(activation, case, depth, "float64", seed)
            x, y = make_batch(case, 7, model.layer_sizes[-1], "float64", seed)
            v = random_direction(model, seed)
            for l2 in (0.0, L2):
                manual = backprop.manual_hvp(model, x, y, case[1], v, l2=l2)
                tape = backprop.tape_hvp(model, x, y, case[1], v, l2=l2)
                error = gradient_error(manual, tape, FLOOR)
                if not error <= RTOL:
                    failures.append(f"{activation}/{'/'.join(case)} depth {depth} l2 {l2}: {error:.2e}")
        self.assertEqual(failures, [])

    @parameterized.named_parameters(("relu", "relu"), ("leaky_relu", "leaky_relu"), ("elu", "elu"))
    def test_kinks_follow_tf_kernels(self, activation):
        # x = 0 and zero biases put every z exactly on the kink at 0.
        model = MLP((2, 3, 2), activation=activation, output_activation="relu", dtype="float64", seed=1)
        x, y = np.zeros((4, 2)), np.ones((4, 2))
        v = random_direction(model, 2)
        manual = backprop.manual_hvp(model, x, y, "mse", v)
        tape = backprop.tape_hvp(model, x, y, "mse", v)
        for got, want in zip(manual, tape):
            self.assertAllEqual(got, want)

    def test_hvp_is_linear_in_v_and_symmetric(self):
        model = make_model("tanh", LOSS_CASES[3], 2, "float64", 3)
        x, y = make_batch(LOSS_CASES[3], 7, N_CLASSES, "float64", 3)
        u, v = random_direction(model, 4), random_direction(model, 5)
        hu = backprop.manual_hvp(model, x, y, "categorical_crossentropy", u)
        hv = backprop.manual_hvp(model, x, y, "categorical_crossentropy", v)
        dot = lambda a, b: sum(float(np.sum(np.asarray(p) * np.asarray(q))) for p, q in zip(a, b))  # noqa: E731
        self.assertAllClose(dot(u, hv), dot(hu, v), rtol=1e-12)  # uᵀHv = vᵀHu
        h2v = backprop.manual_hvp(model, x, y, "categorical_crossentropy", [2.0 * t for t in v])
        for a, b in zip(h2v, hv):
            self.assertAllClose(a, 2.0 * np.asarray(b), rtol=1e-13)

    def test_under_xla(self):
        model = make_model("gelu", LOSS_CASES[2], 3, "float64", 6)
        x, y = make_batch(LOSS_CASES[2], 7, model.layer_sizes[-1], "float64", 6)
        v = random_direction(model, 6)
        jitted = tf.function(
            lambda x, y, v: backprop.manual_hvp(model, x, y, "binary_crossentropy", v, l2=L2),
            jit_compile=True,
        )
        got = jitted(tf.constant(x), tf.constant(y), [tf.constant(t) for t in v])
        want = backprop.tape_hvp(model, x, y, "binary_crossentropy", v, l2=L2)
        self.assertLessEqual(gradient_error(got, want, FLOOR), RTOL)

    def test_params_stand_in_for_the_variables(self):
        model = make_model("softplus", LOSS_CASES[0], 2, "float64", 7)
        x, y = make_batch(LOSS_CASES[0], 7, model.layer_sizes[-1], "float64", 7)
        params, v = random_direction(model, 8), random_direction(model, 9)
        at_params = backprop.manual_hvp(model, x, y, "mse", v, params=[tf.constant(p) for p in params])
        for variable, value in zip(model.trainable_variables, params):
            variable.assign(value)
        self.assertLessEqual(gradient_error(at_params, backprop.tape_hvp(model, x, y, "mse", v), FLOOR), RTOL)


class HvpInputsTest(tf.test.TestCase):
    def test_direction_of_the_wrong_shape(self):
        model = MLP((2, 3, 1), dtype="float64")
        v = random_direction(model, 0)
        for fn in (backprop.manual_hvp, backprop.tape_hvp):
            with self.assertRaisesRegex(ValueError, r"^v: expected one tensor per trainable variable"):
                fn(model, np.zeros((2, 2)), np.zeros((2, 1)), "mse", v[:3])

    def test_activation_without_second_derivative(self):
        model = MLP((2, 3, 1), activation="tanh", dtype="float64")
        model.hidden_activation = dataclasses.replace(model.hidden_activation, backward_tangent=None)
        with self.assertRaisesRegex(ValueError, r"^activation: 'tanh' has no hand-written second"):
            backprop.manual_hvp(model, np.zeros((2, 2)), np.zeros((2, 1)), "mse", random_direction(model, 0))


class NoAutodiffTest(tf.test.TestCase):
    def test_source_names_no_autodiff(self):
        reached = package_functions_reached(backprop.manual_hvp)
        self.assertIn(backprop.manual_hvp_step, reached)
        for source_of in reached + [activations, losses]:
            used = names_used(source_of) & AUTODIFF_NAMES
            self.assertEmpty(used, f"{source_of.__name__} uses {sorted(used)}")

    def test_graph_has_no_gradient_ops_and_the_tape_path_has(self):
        model = MLP((2, 3, 3), activation="tanh", output_activation="softmax", seed=0)
        v = [tf.ones_like(w) for w in model.trainable_variables]
        spec = [tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None, 3], tf.float32)]
        graphs = {
            fn.__name__: tf.function(lambda x, y, fn=fn: fn(model, x, y, "mse", v, l2=0.1))
            .get_concrete_function(*spec)
            .graph
            for fn in (backprop.manual_hvp, backprop.tape_hvp)
        }
        self.assertEmpty(autodiff_ops(graphs["manual_hvp"]))
        self.assertNotEmpty(autodiff_ops(graphs["tape_hvp"]))

    def test_runs_with_autodiff_apis_disabled(self):
        def forbidden(*args, **kwargs):
            raise AssertionError("autodiff API called")

        model = make_model("sigmoid", LOSS_CASES[5], 2, "float64", 5)
        x, y = make_batch(LOSS_CASES[5], 7, model.layer_sizes[-1], "float64", 5)
        v = random_direction(model, 5)
        with (
            mock.patch.object(tf, "GradientTape", forbidden),
            mock.patch.object(tf.autodiff, "ForwardAccumulator", forbidden),
        ):
            hvp = backprop.manual_hvp(model, x, y, "mse", v)
        self.assertLen(hvp, 2 * len(model.dense_layers))


if __name__ == "__main__":
    tf.test.main()
