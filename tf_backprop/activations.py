"""Activations: each forward next to its hand-written backward (micrograd style).

Every activation is an `Activation` with

* ``forward(z) -> h``,
* ``backward(z, h, grad_h) -> grad_z``: the vector-Jacobian product, written by hand, and
* ``backward_tangent(z, h, grad_h, dz)``: how that product moves when z moves by dz (grad_h
  held fixed), for the hand-written Hessian-vector product (`backprop.manual_hvp`).

For elementwise activations ``grad_z = grad_h * f'(z)`` and its tangent is
``grad_h * f''(z) * dz``; softmax (an output activation only) couples the units of a row, so
its backward is the full Jacobian-vector form.  Every Jacobian here is symmetric (diagonal, or
softmax's diag(s) − s sᵀ), so the forward tangent dh = J dz is ``backward(z, h, dz)``.
Nothing here uses automatic differentiation.  The derivatives at kinks (z == 0) follow
TensorFlow's own gradient kernels, so the hand-written path matches ``tf.GradientTape``
bit for bit at those points too.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tf_backprop import names

# tf.nn.leaky_relu's default; TF stores the attribute as float32, so use that exact value.
LEAKY_RELU_ALPHA = float(np.float32(0.2))


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation's forward and its hand-written backward.

    Attributes:
      name: the name used in configs and flags.
      forward: z -> h.
      backward: (z, h, grad_h) -> grad_z, the vector-Jacobian product.
      backward_tangent: (z, h, grad_h, dz) -> the directional derivative of backward(z, h,
        grad_h) along dz with grad_h fixed (grad_h ⊙ f''(z) ⊙ dz when elementwise); None if
        not written, and then the activation has no hand-written Hessian-vector product.
      has_kink: True when f' jumps (ReLU-type); finite differences across such a point
        are not a valid check, and the gradient checker reports them as kinks.
      elementwise: False for softmax, whose Jacobian is not diagonal.
    """

    name: str
    forward: Callable[[tf.Tensor], tf.Tensor]
    backward: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]
    backward_tangent: Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor] | None = None
    has_kink: bool = False
    elementwise: bool = True

    def tangent(self, z: tf.Tensor, h: tf.Tensor, dz: tf.Tensor) -> tf.Tensor:
        """dh = J dz, the forward (Jacobian-vector) product: J is symmetric, so it is backward's."""
        return self.backward(z, h, dz)


def _linear_forward(z):
    return z


def _linear_backward(z, h, grad_h):
    return grad_h


def _zero_tangent(z, h, grad_h, dz):
    # f'' = 0: linear, and ReLU-type away from 0 (at 0 f' jumps; TF's second derivative is 0 too).
    return tf.zeros_like(grad_h)


def _relu_forward(z):
    return tf.nn.relu(z)


def _relu_backward(z, h, grad_h):
    # f'(z) = 1 for z > 0 else 0 (TF's ReluGrad also uses 0 at z == 0).
    return tf.where(z > 0, grad_h, tf.zeros_like(grad_h))


def _leaky_relu_forward(z):
    return tf.nn.leaky_relu(z, alpha=LEAKY_RELU_ALPHA)


def _leaky_relu_backward(z, h, grad_h):
    # f'(z) = 1 for z > 0 else alpha.
    return tf.where(z > 0, grad_h, LEAKY_RELU_ALPHA * grad_h)


def _elu_forward(z):
    return tf.nn.elu(z)


def _elu_backward(z, h, grad_h):
    # f'(z) = 1 for z > 0 else exp(z) = h + 1.
    return tf.where(z > 0, grad_h, grad_h * (h + 1))


def _elu_backward_tangent(z, h, grad_h, dz):
    # f''(z) = exp(z) = h + 1 for z < 0, else 0 (TF's EluGradGrad: 0 at z == 0 as well).
    return tf.where(z < 0, grad_h * (h + 1) * dz, tf.zeros_like(grad_h))


def _gelu_forward(z):
    # Exact GELU, z Φ(z).  Not tf.nn.gelu: in TF 2.21 it multiplies by a float32-rounded
    # 1/√2 even for float64 inputs, which is off by ~1e-8 relative.
    return 0.5 * z * tf.math.erfc(-z * math.sqrt(0.5))


def _gelu_backward(z, h, grad_h):
    # f(z) = z Φ(z)  =>  f'(z) = Φ(z) + z φ(z), with Φ, φ the standard normal cdf and pdf.
    # Φ(z) = erfc(−z/√2)/2, as tf.nn.gelu writes it (1 + erf loses digits for z ≪ 0).
    cdf = 0.5 * tf.math.erfc(-z * math.sqrt(0.5))
    pdf = tf.exp(-0.5 * tf.square(z)) * (1.0 / math.sqrt(2.0 * math.pi))
    return grad_h * (cdf + z * pdf)


def _gelu_backward_tangent(z, h, grad_h, dz):
    # f''(z) = 2φ(z) + z φ'(z) = φ(z) (2 − z²), since φ'(z) = −z φ(z).
    pdf = tf.exp(-0.5 * tf.square(z)) * (1.0 / math.sqrt(2.0 * math.pi))
    return grad_h * pdf * (2.0 - tf.square(z)) * dz


def _sigmoid_forward(z):
    return tf.sigmoid(z)


def _sigmoid_backward(z, h, grad_h):
    # σ'(z) = σ(z)(1 − σ(z)).
    return grad_h * h * (1 - h)


def _sigmoid_backward_tangent(z, h, grad_h, dz):
    # σ''(z) = σ'(z)(1 − 2σ(z)) = h (1 − h)(1 − 2h).
    return grad_h * h * (1 - h) * (1 - 2 * h) * dz


def _tanh_forward(z):
    return tf.tanh(z)


def _tanh_backward(z, h, grad_h):
    # tanh'(z) = 1 − tanh²(z).
    return grad_h * (1 - tf.square(h))


def _tanh_backward_tangent(z, h, grad_h, dz):
    # tanh''(z) = −2 tanh(z)(1 − tanh²(z)) = −2h (1 − h²).
    return grad_h * (-2.0 * h * (1 - tf.square(h))) * dz


def _softplus_forward(z):
    return tf.nn.softplus(z)


def _softplus_backward(z, h, grad_h):
    # softplus'(z) = σ(z).
    return grad_h * tf.sigmoid(z)


def _softplus_backward_tangent(z, h, grad_h, dz):
    # softplus''(z) = σ'(z) = σ(z)(1 − σ(z)).
    s = tf.sigmoid(z)
    return grad_h * s * (1 - s) * dz


def _softmax_forward(z):
    return tf.nn.softmax(z, axis=-1)


def _softmax_backward(z, h, grad_h):
    # ∂h_i/∂z_j = h_i (δ_ij − h_j)  =>  grad_z = h ⊙ (grad_h − Σ_j grad_h_j h_j).   # [m, k]
    return h * (grad_h - tf.reduce_sum(grad_h * h, axis=-1, keepdims=True))


def _softmax_backward_tangent(z, h, grad_h, dz):
    # backward = h ⊙ (g − g·h); z moving by dz moves h by dh = h ⊙ (dz − dz·h), so its
    # derivative is dh ⊙ (g − g·h) − h ⊙ (g·dh), each dot product per row.      # [m, k]
    dh = _softmax_backward(z, h, dz)
    return dh * (grad_h - tf.reduce_sum(grad_h * h, axis=-1, keepdims=True)) - h * tf.reduce_sum(
        grad_h * dh, axis=-1, keepdims=True
    )


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("linear", _linear_forward, _linear_backward, _zero_tangent),
        Activation("relu", _relu_forward, _relu_backward, _zero_tangent, has_kink=True),
        Activation("leaky_relu", _leaky_relu_forward, _leaky_relu_backward, _zero_tangent, has_kink=True),
        Activation("elu", _elu_forward, _elu_backward, _elu_backward_tangent),  # C¹ at 0 for alpha = 1
        Activation("gelu", _gelu_forward, _gelu_backward, _gelu_backward_tangent),
        Activation("sigmoid", _sigmoid_forward, _sigmoid_backward, _sigmoid_backward_tangent),
        Activation("tanh", _tanh_forward, _tanh_backward, _tanh_backward_tangent),
        Activation("softplus", _softplus_forward, _softplus_backward, _softplus_backward_tangent),
        Activation(
            "softmax", _softmax_forward, _softmax_backward, _softmax_backward_tangent, elementwise=False
        ),
    )
}

HIDDEN_ACTIVATIONS = names.HIDDEN_ACTIVATIONS
OUTPUT_ACTIVATIONS = names.OUTPUT_ACTIVATIONS


def get(name: str, allowed: tuple[str, ...] = HIDDEN_ACTIVATIONS, what: str = "activation") -> Activation:
    """Returns the activation called `name`; ValueError listing the valid names otherwise."""
    if name not in allowed:
        raise ValueError(f"{what}: unknown name {name!r}; expected one of {', '.join(allowed)}")
    return ACTIVATIONS[name]
