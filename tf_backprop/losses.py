"""Losses: each value next to its hand-written gradient w.r.t. the output pre-activation.

Shapes: the model's output pre-activation z_L and activation h_L are [m, k]; m is the batch.
Each `Loss` gives

* ``value(z, h, y)``: the scalar loss (mean over the batch), and
* ``delta(z, h, y, output_activation)``: δ_L = ∂L/∂z_L, [m, k], in a numerically stable form, and
* ``delta_tangent(z, h, y, output_activation, dz)``: R{δ_L}, how δ_L moves when z_L moves by dz
  (the loss's Hessian with respect to z_L times dz), for `backprop.manual_hvp`.

The cross-entropy losses take logits: they require a linear output activation and fuse
softmax/sigmoid with the log (docs/backprop.md).  The L2 penalty λ/2 Σ‖W‖² is added by
`backprop`, not here, because it depends on the kernels rather than on the output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tf_backprop import activations


def _batch_size(z: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.shape(z)[0], z.dtype)


def _element_count(z: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.size(z), z.dtype)


# --- mse: Keras's convention, mean over all m·k elements -------------------------------------
def _mse_value(z, h, y):
    return tf.reduce_mean(tf.square(h - y))


def _mse_grad_h(z, h, y):
    return 2.0 * (h - y) / _element_count(h)  # [m, k]


def _mse_grad_h_tangent(z, h, y, dh):
    return 2.0 * dh / _element_count(h)  # ∂²L/∂h² = 2/(m·k) on the diagonal


# --- half_mse: the article's 1/(2m) Σ (y − ŷ)² ----------------------------------------------
def _half_mse_value(z, h, y):
    return tf.reduce_sum(tf.square(y - h)) / (2.0 * _batch_size(h))


def _half_mse_grad_h(z, h, y):
    # ∂/∂ŷ of 1/(2m) Σ (y − ŷ)² is (ŷ − y)/m: the article's (y − ŷ) has the wrong sign.
    return (h - y) / _batch_size(h)  # [m, k]


def _half_mse_grad_h_tangent(z, h, y, dh):
    return dh / _batch_size(h)  # ∂²L/∂h² = 1/m on the diagonal


# --- binary cross-entropy on logits, mean over all m·k elements ------------------------------
def _bce_value(z, h, y):
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z))


def _bce_delta(z, h, y):
    return (tf.sigmoid(z) - y) / _element_count(z)  # [m, k]


def _bce_delta_tangent(z, h, y, dz):
    s = tf.sigmoid(z)
    return s * (1 - s) * dz / _element_count(z)  # ∂²L/∂z² = σ(1 − σ)/(m·k) on the diagonal


# --- categorical cross-entropy on logits, mean over m -----------------------------------------
def _onehot(y, z):
    """Integer labels [m] become one-hot [m, k]; one-hot labels pass through."""
    if y.shape.rank == 1:
        return tf.one_hot(tf.cast(y, tf.int32), tf.shape(z)[-1], dtype=z.dtype)
    return tf.cast(y, z.dtype)


def _cce_value(z, h, y):
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=_onehot(y, z), logits=z))


def _cce_delta(z, h, y):
    return (tf.nn.softmax(z, axis=-1) - _onehot(y, z)) / _batch_size(z)  # [m, k]


def _cce_delta_tangent(z, h, y, dz):
    # Per row, ∂²L/∂z² = (diag(s) − s sᵀ)/m: times dz, s ⊙ (dz − s·dz)/m.   # [m, k]
    s = tf.nn.softmax(z, axis=-1)
    return s * (dz - tf.reduce_sum(s * dz, axis=-1, keepdims=True)) / _batch_size(z)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss's value and its gradient, side by side.

    Exactly one of `grad_h` (∂L/∂h_L, chained through the output activation's backward) or
    `fused_delta` (∂L/∂z_L directly, for losses on logits) is set; `grad_h_tangent` (dh ->
    ∂²L/∂h² dh) or `fused_delta_tangent` (dz -> ∂²L/∂z² dz) is its second derivative, for the
    hand-written Hessian-vector product (None: not written).
    """

    name: str
    value_fn: Callable
    task: str  # the task whose targets it takes: regression, binary or multiclass
    grad_h: Callable | None = None
    fused_delta: Callable | None = None
    on_logits: bool = False
    sparse_labels: bool = False  # accepts integer class labels [m]
    grad_h_tangent: Callable | None = None
    fused_delta_tangent: Callable | None = None

    def value(self, z: tf.Tensor, h: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Scalar loss for output pre-activation z, activation h [m, k] and targets y."""
        return self.value_fn(z, h, y)

    def delta(self, z: tf.Tensor, h: tf.Tensor, y: tf.Tensor, output: activations.Activation) -> tf.Tensor:
        """δ_L = ∂L/∂z_L, [m, k]."""
        if self.fused_delta is not None:
            return self.fused_delta(z, h, y)
        return output.backward(z, h, self.grad_h(z, h, y))

    @property
    def has_second_derivative(self) -> bool:
        return (self.fused_delta_tangent if self.fused_delta is not None else self.grad_h_tangent) is not None

    def delta_tangent(
        self, z: tf.Tensor, h: tf.Tensor, y: tf.Tensor, output: activations.Activation, dz: tf.Tensor
    ) -> tf.Tensor:
        """R{δ_L}: the derivative of δ_L along dz, [m, k] (∂²L/∂z_L² dz, by the chain rule)."""
        if self.fused_delta is not None:
            return self.fused_delta_tangent(z, h, y, dz)
        grad_h = self.grad_h(z, h, y)  # δ_L = J_fᵀ g(h): its derivative has a term per factor
        dh = output.tangent(z, h, dz)
        return output.backward(z, h, self.grad_h_tangent(z, h, y, dh)) + output.backward_tangent(
            z, h, grad_h, dz
        )

    def prepare_targets(self, y, n_outputs: int, dtype: tf.DType) -> tf.Tensor:
        """Validates y against the loss and the output width; returns it as a tensor.

        Regression and binary targets become [m, k] in the model's dtype; integer class labels
        stay integer [m]; binary targets must lie in [0, 1].  Value checks run only on
        eager/NumPy input.
        """
        y = tf.convert_to_tensor(y)
        is_label_column = y.shape.rank == 2 and y.shape[-1] == 1 and n_outputs > 1
        if self.sparse_labels and (y.shape.rank == 1 or is_label_column):
            return _check_class_labels(tf.reshape(y, [-1]), n_outputs)
        if y.shape.rank == 1 and n_outputs == 1:
            y = tf.reshape(y, [-1, 1])
        if y.shape.rank != 2 or y.shape[-1] != n_outputs:
            raise ValueError(
                f"y: shape {y.shape.as_list()} is incompatible with loss {self.name!r} and "
                f"{n_outputs} output(s); expected [batch, {n_outputs}]"
                + (" or integer labels [batch]" if self.sparse_labels else "")
            )
        if self.name == "binary_crossentropy" and tf.executing_eagerly() and tf.size(y) > 0:
            low, high = float(tf.reduce_min(y)), float(tf.reduce_max(y))
            if not (0.0 <= low and high <= 1.0):  # also catches NaN
                raise ValueError(
                    f"y: binary_crossentropy targets must lie in [0, 1] (labels or probabilities), "
                    f"got values in [{low:g}, {high:g}]"
                )
        return tf.cast(y, dtype)


def _check_class_labels(y: tf.Tensor, n_classes: int) -> tf.Tensor:
    if y.dtype.is_floating and tf.executing_eagerly():
        values = y.numpy()
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise ValueError("y: class labels must be integers for categorical_crossentropy")
    if not (y.dtype.is_integer or y.dtype.is_floating):
        raise ValueError(f"y: class labels must be integers, got dtype {y.dtype.name}")
    labels = tf.cast(y, tf.int32)
    if tf.executing_eagerly() and tf.size(labels) > 0:
        low, high = int(tf.reduce_min(y)), int(tf.reduce_max(y))  # y: before the int32 cast wraps it
        if low < 0 or high >= n_classes:
            raise ValueError(
                f"y: class labels must lie in [0, {n_classes - 1}] for {n_classes} outputs; "
                + (f"got {low}" if low == high else f"got values from {low} to {high}")
            )
    return labels


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("mse", _mse_value, "regression", grad_h=_mse_grad_h, grad_h_tangent=_mse_grad_h_tangent),
        Loss(
            "half_mse",
            _half_mse_value,
            "regression",
            grad_h=_half_mse_grad_h,
            grad_h_tangent=_half_mse_grad_h_tangent,
        ),
        Loss(
            "binary_crossentropy",
            _bce_value,
            "binary",
            fused_delta=_bce_delta,
            on_logits=True,
            fused_delta_tangent=_bce_delta_tangent,
        ),
        Loss(
            "categorical_crossentropy",
            _cce_value,
            "multiclass",
            fused_delta=_cce_delta,
            on_logits=True,
            sparse_labels=True,
            fused_delta_tangent=_cce_delta_tangent,
        ),
    )
}


LOSS_NAMES = tuple(LOSSES)


def get(loss: str | Loss) -> Loss:
    """Returns the loss called `loss` (or `loss` itself); ValueError listing valid names."""
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown name {loss!r}; expected one of {', '.join(LOSSES)}")
    return LOSSES[loss]


def l2_penalty(kernels: list[tf.Tensor], l2: float) -> tf.Tensor:
    """λ/2 Σ‖W‖² over the kernels (biases are not penalized)."""
    return 0.5 * l2 * tf.add_n([tf.reduce_sum(tf.square(w)) for w in kernels])
