"""The MLP: defaults, seeding, initializers, dtypes, intermediates, Keras training, bad arguments."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tf_backprop import activations
from tf_backprop import model as model_lib
from tf_backprop.model import MLP


def weights(model: MLP) -> list[np.ndarray]:
    """The model's variables as NumPy arrays, in trainable_variables order."""
    return [v.numpy() for v in model.trainable_variables]


class MLPTest(tf.test.TestCase, parameterized.TestCase):
    """Construction and the forward pass."""

    def test_defaults_are_the_article_net(self):
        model = MLP()
        self.assertEqual(model.layer_sizes, (2, 3, 3, 1))
        self.assertEqual(model.hidden_activation.name, "relu")
        self.assertEqual(model.output_activation.name, "linear")
        self.assertEqual([k.shape for k in model.kernels], [(2, 3), (3, 3), (3, 1)])
        self.assertEqual(model.compute_dtype, "float32")

    def test_trainable_variables_are_w1_b1_w2_b2_w3_b3(self):
        model = MLP()
        expected = []
        for layer in model.dense_layers:
            expected += [layer.kernel, layer.bias]
        self.assertEqual([v.path for v in model.trainable_variables], [v.path for v in expected])
        shapes = [tuple(v.shape) for v in model.trainable_variables]
        self.assertEqual(shapes, [(2, 3), (3,), (3, 3), (3,), (3, 1), (1,)])

    def test_same_seed_same_weights(self):
        for a, b in zip(weights(MLP(seed=3)), weights(MLP(seed=3))):
            self.assertAllEqual(a, b)

    def test_different_seed_different_weights(self):
        for a, b in zip(MLP(seed=3).kernels, MLP(seed=4).kernels):
            self.assertNotAllClose(a, b)

    def test_layers_of_one_shape_start_different(self):
        model = MLP((3, 3, 3, 3), seed=0)
        self.assertNotAllClose(model.kernels[1], model.kernels[2])

    @parameterized.named_parameters((name, name) for name in model_lib.INITIALIZERS)
    def test_each_initializer(self, name):
        model = MLP((4, 8, 2), kernel_initializer=name, seed=1)
        for kernel in model.kernels:
            self.assertTrue(np.all(np.isfinite(kernel.numpy())))
            self.assertGreater(np.std(kernel.numpy()), 0.0)
        for layer in model.dense_layers:
            self.assertAllEqual(layer.bias, np.zeros(layer.units))

    def test_random_normal_is_standard_normal(self):
        # 120,000 draws: the sample std is within ±0.005 of σ with overwhelming probability.
        kernel = MLP((400, 300, 1), kernel_initializer="random_normal", seed=2).kernels[0].numpy()
        self.assertAllClose(np.std(kernel), 1.0, atol=0.02)
        self.assertAllClose(np.mean(kernel), 0.0, atol=0.02)

    def test_float64_variables_and_outputs(self):
        model = MLP(dtype="float64")
        for variable in model.trainable_variables:
            self.assertEqual(variable.dtype, "float64")
        forward = model.forward(np.ones((2, 2), np.float32), keep_intermediates=True)
        for tensor in [forward.inputs, *forward.zs, *forward.hs]:
            self.assertEqual(tensor.dtype, tf.float64)
        self.assertEqual(model(np.ones((2, 2))).dtype, tf.float64)

    def test_keep_intermediates_shapes(self):
        model = MLP((3, 5, 1, 4, 2), activation="tanh")
        x = np.random.default_rng(0).normal(size=(7, 3))
        forward = model.forward(x, keep_intermediates=True)
        self.assertEqual(forward.inputs.shape, (7, 3))
        self.assertEqual([z.shape for z in forward.zs], [(7, 5), (7, 1), (7, 4), (7, 2)])
        self.assertEqual([h.shape for h in forward.hs], [(7, 5), (7, 1), (7, 4), (7, 2)])
        self.assertAllClose(forward.hs[0], np.tanh(forward.zs[0]))
        self.assertAllEqual(forward.output, model.forward(x))
        self.assertAllEqual(model(x), model.forward(x))

    def test_forward_is_the_layer_formula(self):
        model = MLP((2, 3, 1), dtype="float64", seed=5)
        x = np.array([[1.0, -2.0], [0.5, 0.25]])
        w1, b1, w2, b2 = weights(model)
        expected = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2  # batch-major z = h @ W + b
        self.assertAllClose(model(x), expected, rtol=1e-14, atol=0)

    def test_compile_fit_predict(self):
        model = MLP(seed=0)
        model.compile(optimizer="adam", loss="mse")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 2)).astype(np.float32)
        y = x[:, :1] - x[:, 1:]
        before = weights(model)
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        self.assertLen(history.history["loss"], 2)
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        self.assertNotAllClose(before[0], weights(model)[0])
        self.assertEqual(model.predict(x, verbose=0).shape, (16, 1))

    def test_config_rebuilds_the_same_model(self):
        model = MLP((3, 4, 2), activation="gelu", output_activation="softmax", dtype="float64", seed=9)
        clone = MLP(**model.get_config())
        for a, b in zip(weights(model), weights(clone)):
            self.assertAllEqual(a, b)

    def test_tf_train_checkpoint_saves_and_restores_the_weights(self):
        # Keras 3 hides layers kept only in a Python list from tf.train.Checkpoint.
        model = MLP(seed=0)
        path = tf.train.Checkpoint(model=model).save(self.create_tempdir().full_path + "/ckpt")
        other = MLP(seed=1)
        tf.train.Checkpoint(model=other).restore(path).assert_consumed()
        for a, b in zip(weights(model), weights(other)):
            self.assertAllEqual(a, b)
        self.assertLen(other.layers, 3)  # tracked once, not once per reference
        self.assertLen(other.weights, 6)


class BadArgumentTest(tf.test.TestCase, parameterized.TestCase):
    """Every bad argument raises ValueError whose message names it."""

    @parameterized.named_parameters(
        ("empty", []),
        ("one_size", [2]),
        ("zero", [2, 0, 1]),
        ("negative", [2, -1, 1]),
        ("fraction", [2, 1.5, 1]),
        ("bool", [2, True, 1]),
    )
    def test_layer_sizes(self, sizes):
        with self.assertRaisesRegex(ValueError, r"^layer_sizes:"):
            MLP(sizes)

    def test_layer_sizes_as_text_are_named_as_such(self):  # not as the characters '2', ',', ...
        with self.assertRaisesRegex(
            ValueError, r"^layer_sizes: expected a list .* like \(2, 3, 1\), got '2,3,1'$"
        ):
            MLP("2,3,1")

    def test_seed(self):
        """A negative seed reached NumPy ('expected non-negative integer', no argument named)."""
        for seed in (-1, 1.5, True, "3"):
            with (
                self.subTest(seed=seed),
                self.assertRaisesRegex(ValueError, r"^seed: expected a non-negative integer"),
            ):
                MLP((2, 3, 1), seed=seed)
        self.assertIsNone(MLP((2, 3, 1), seed=None).seed)

    def test_softmax_over_one_output_is_refused(self):
        with self.assertRaisesRegex(ValueError, r"^output_activation: 'softmax' over one output unit is 1"):
            MLP((2, 3, 1), output_activation="softmax")
        self.assertEqual(MLP((2, 3, 2), output_activation="softmax").layer_sizes, (2, 3, 2))

    @parameterized.named_parameters(
        ("activation", {"activation": "swish"}, "activation", activations.HIDDEN_ACTIVATIONS),
        ("softmax_hidden", {"activation": "softmax"}, "activation", activations.HIDDEN_ACTIVATIONS),
        ("output", {"output_activation": "tanh"}, "output_activation", activations.OUTPUT_ACTIVATIONS),
        ("initializer", {"kernel_initializer": "ones"}, "kernel_initializer", model_lib.INITIALIZERS),
        ("dtype", {"dtype": "float16"}, "dtype", model_lib.DTYPES),
    )
    def test_unknown_name_lists_valid_names(self, kwargs, argument, valid):
        with self.assertRaisesRegex(ValueError, rf"^{argument}: unknown name") as caught:
            MLP(**kwargs)
        for name in valid:
            self.assertIn(name, str(caught.exception))

    @parameterized.named_parameters(
        ("too_few_features", np.ones((4, 1))),
        ("too_many_features", np.ones((4, 3))),
        ("rank_1", np.ones(2)),
        ("rank_3", np.ones((4, 2, 1))),
    )
    def test_x_feature_count(self, x):
        model = MLP()
        with self.assertRaisesRegex(ValueError, r"^x: expected shape \[batch, 2\]"):
            model.forward(x)
        # Keras wraps errors from call() in a longer message; the ValueError and its text remain.
        with self.assertRaisesRegex(ValueError, r"x: expected shape \[batch, 2\]"):
            model(x)


if __name__ == "__main__":
    tf.test.main()
