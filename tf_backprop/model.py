"""The MLP: a keras.Model whose forward pass can keep every layer's z and h.

Layer l computes ``z_l = h_{l-1} @ W_l + b_l`` (W_l: [n_{l-1}, n_l]) and ``h_l = f_l(z_l)``,
batch-major as TensorFlow stores it; h_0 = x.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import keras
import tensorflow as tf

from tf_backprop import activations, names
from tf_backprop.arguments import validate_layer_sizes

ARTICLE_LAYER_SIZES = (2, 3, 3, 1)

INITIALIZERS = {
    "glorot_uniform": keras.initializers.GlorotUniform,
    "glorot_normal": keras.initializers.GlorotNormal,
    "he_normal": keras.initializers.HeNormal,
    "he_uniform": keras.initializers.HeUniform,
    # The article's N(0, 1).
    "random_normal": lambda seed: keras.initializers.RandomNormal(mean=0.0, stddev=1.0, seed=seed),
}
DTYPES = names.DTYPES


class Forward(NamedTuple):
    """A forward pass that kept its intermediates.

    zs[l] and hs[l] are layer l+1's pre-activation and activation, each [m, n_{l+1}];
    hs[-1] is the output.  inputs is h_0 = x, [m, n_0], in the model's dtype.
    """

    inputs: tf.Tensor
    zs: list[tf.Tensor]
    hs: list[tf.Tensor]

    @property
    def output(self) -> tf.Tensor:
        return self.hs[-1]


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    """Everything that defines an MLP before training: the one way to build one from settings.

    The training config, a run folder, the gradcheck and inspect CLIs all describe their net as
    an MLPSpec and call `build()`.
    """

    layer_sizes: tuple[int, ...] = ARTICLE_LAYER_SIZES  # [n_0, ..., n_L]
    activation: str = "relu"  # hidden activation, one of activations.HIDDEN_ACTIVATIONS
    output_activation: str = "linear"  # linear for regression and the losses on logits
    initializer: str = "glorot_uniform"  # kernel initializer, one of INITIALIZERS
    dtype: str = "float32"
    seed: int | None = 0  # the same seed gives the same initial weights

    def __post_init__(self):
        object.__setattr__(self, "layer_sizes", validate_layer_sizes(self.layer_sizes))

    def build(self) -> MLP:
        """A freshly initialized MLP."""
        return MLP(
            self.layer_sizes,
            activation=self.activation,
            output_activation=self.output_activation,
            kernel_initializer=self.initializer,
            dtype=self.dtype,
            seed=self.seed,
        )


class MLP(keras.Model):
    """A fully connected network with hand-checkable gradients.

    Args:
      layer_sizes: widths [n_0, n_1, ..., n_L]; n_0 inputs, n_L outputs.  Default: the
        article's 2-3-3-1.
      activation: hidden activation, one of `activations.HIDDEN_ACTIVATIONS`.
      output_activation: one of `activations.OUTPUT_ACTIVATIONS`.  Keep it linear for the
        cross-entropy losses, which take logits.
      kernel_initializer: one of `INITIALIZERS`; biases start at zero.
      dtype: "float32" or "float64".
      seed: the same seed gives the same initial weights.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int] = ARTICLE_LAYER_SIZES,
        activation: str = "relu",
        output_activation: str = "linear",
        kernel_initializer: str = "glorot_uniform",
        dtype: str = "float32",
        seed: int | None = 0,
        name: str = "mlp",
        **kwargs,
    ):
        super().__init__(name=name, dtype=_check_dtype(dtype), **kwargs)
        self.layer_sizes = validate_layer_sizes(layer_sizes)
        self.hidden_activation = activations.get(activation)
        self.output_activation = activations.get(
            output_activation, activations.OUTPUT_ACTIVATIONS, what="output_activation"
        )
        if self.output_activation.name == "softmax" and self.layer_sizes[-1] == 1:
            # softmax(z) = e^z / e^z: the net's output would be 1 whatever its input and weights.
            raise ValueError(
                "output_activation: 'softmax' over one output unit is 1 whatever the input (every "
                "gradient 0); use it with 2 or more outputs, or 'sigmoid' or 'linear' for one"
            )
        if kernel_initializer not in INITIALIZERS:
            raise ValueError(
                f"kernel_initializer: unknown name {kernel_initializer!r}; "
                f"expected one of {', '.join(INITIALIZERS)}"
            )
        self.kernel_initializer_name = kernel_initializer
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        self.seed = seed
        self.dense_layers = [
            keras.layers.Dense(
                width,
                kernel_initializer=INITIALIZERS[kernel_initializer](seed=_layer_seed(seed, index)),
                bias_initializer="zeros",
                dtype=dtype,
                name=f"dense_{index + 1}",
            )
            for index, width in enumerate(self.layer_sizes[1:])
        ]
        # Keras 3 hides layers held in a list from tf.train.Checkpoint; as attributes they are
        # tracked, so tf.train.Checkpoint(model=mlp) saves and restores the weights.
        for layer in self.dense_layers:
            setattr(self, layer.name, layer)
        self.build((None, self.layer_sizes[0]))

    def build(self, input_shape):
        width = input_shape[-1]
        for layer in self.dense_layers:
            layer.build((None, width))
            width = layer.units
        self.built = True

    @property
    def kernels(self) -> list[tf.Variable]:
        """W_1 .. W_L, each [n_{l-1}, n_l]."""
        return [layer.kernel for layer in self.dense_layers]

    @property
    def variable_names(self) -> list[str]:
        """'dense_1/kernel', 'dense_1/bias', ...: trainable_variables' names without the model's."""
        return [f"{layer.name}/{part}" for layer in self.dense_layers for part in ("kernel", "bias")]

    @property
    def activations_per_layer(self) -> list[activations.Activation]:
        """f_1 .. f_L: the hidden activation for each hidden layer, then the output one."""
        return [self.hidden_activation] * (len(self.dense_layers) - 1) + [self.output_activation]

    def layer_parameters(self, params=None) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """[(W_1, b_1), ..., (W_L, b_L)]: the layers' variables, or `params` paired up.

        params: tensors in `trainable_variables` order [W_1, b_1, ..., W_L, b_L] standing in for
        the variables (the gradient checker evaluates the net at perturbed parameters this way).
        """
        if params is None:
            return [(layer.kernel, layer.bias) for layer in self.dense_layers]
        params = list(params)
        if len(params) != 2 * len(self.dense_layers):
            raise ValueError(f"params: expected {2 * len(self.dense_layers)} tensors, got {len(params)}")
        return list(zip(params[0::2], params[1::2]))

    def forward(self, x, keep_intermediates: bool = False, params=None) -> tf.Tensor | Forward:
        """Runs the net on x [m, n_0] (with `params` in place of the variables, if given).

        Returns the output h_L [m, n_L], or with keep_intermediates=True a `Forward` holding
        every layer's z and h (what the hand-written backward pass needs).
        """
        h = self.cast_inputs(x)
        inputs, zs, hs = h, [], []
        for (kernel, bias), activation in zip(self.layer_parameters(params), self.activations_per_layer):
            z = tf.matmul(h, kernel) + bias  # [m, n_l]
            h = activation.forward(z)
            zs.append(z)
            hs.append(h)
        return Forward(inputs, zs, hs) if keep_intermediates else h

    def call(self, x, training=None):
        return self.forward(x)

    def cast_inputs(self, x) -> tf.Tensor:
        """x as a tensor of the model's dtype; ValueError if its feature count is wrong."""
        x = tf.cast(tf.convert_to_tensor(x), self.compute_dtype)
        if x.shape.rank != 2 or (x.shape[-1] is not None and x.shape[-1] != self.layer_sizes[0]):
            raise ValueError(
                f"x: expected shape [batch, {self.layer_sizes[0]}] (layer_sizes[0] features), "
                f"got {x.shape.as_list() if x.shape.rank is not None else 'unknown'}"
            )
        return x

    @property
    def spec(self) -> MLPSpec:
        """The settings this net was built from (its weights aside)."""
        return MLPSpec(
            self.layer_sizes,
            self.hidden_activation.name,
            self.output_activation.name,
            self.kernel_initializer_name,
            self.compute_dtype,
            self.seed,
        )

    def get_config(self):
        return {
            "layer_sizes": list(self.layer_sizes),
            "activation": self.hidden_activation.name,
            "output_activation": self.output_activation.name,
            "kernel_initializer": self.kernel_initializer_name,
            "dtype": self.compute_dtype,
            "seed": self.seed,
            "name": self.name,
        }


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype: unknown name {dtype!r}; expected one of {', '.join(DTYPES)}")
    return dtype


def _layer_seed(seed: int | None, index: int) -> int | None:
    # Distinct per layer, so two layers of the same shape do not start identical.
    return None if seed is None else seed * 1000 + index
