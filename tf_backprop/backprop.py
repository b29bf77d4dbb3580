"""Two ways to the same gradients: `tf.GradientTape` and the chain rule written by hand.

Both functions take ``(model, x, y, loss, l2=0.0)`` and return ``(loss_value, grads)`` with
grads in ``model.trainable_variables`` order: [W_1, b_1, ..., W_L, b_L].

The hand-written path (docs/backprop.md derives it), with δ_l = ∂L/∂z_l of shape [m, n_l]:

    δ_L = loss.delta(z_L, h_L, y)                       (through f_L' or fused on logits)
    ∂L/∂W_l = h_{l-1}ᵀ @ δ_l  (+ λ W_l)                  [n_{l-1}, n_l]
    ∂L/∂b_l = Σ_rows δ_l                                 [n_l]
    δ_{l-1} = f_{l-1}.backward(z_{l-1}, h_{l-1}, δ_l @ W_lᵀ)

It uses no GradientTape, tf.gradients, tf.custom_gradient or any other autodiff, and runs
eagerly, inside tf.function and under jit_compile=True.
"""

from __future__ import annotations

import tensorflow as tf

from tf_backprop import losses as losses_lib
from tf_backprop.model import MLP


def check_loss_fits(model: MLP, loss: str | losses_lib.Loss) -> losses_lib.Loss:
    """The loss object; ValueError if the model's output activation cannot feed it."""
    loss = losses_lib.get(loss)
    if loss.on_logits and model.output_activation.name != "linear":
        raise ValueError(
            f"output_activation: {loss.name!r} takes logits, so the output activation must be "
            f"'linear', got {model.output_activation.name!r}"
        )
    return loss


def prepare(model: MLP, x, y, loss: str | losses_lib.Loss):
    """Validates and converts the inputs shared by both paths: (x, y, loss)."""
    loss = check_loss_fits(model, loss)
    x = model.cast_inputs(x)
    y = loss.prepare_targets(y, model.layer_sizes[-1], model.compute_dtype)
    if x.shape[0] is not None and y.shape[0] is not None and x.shape[0] != y.shape[0]:
        raise ValueError(f"y: batch size {y.shape[0]} differs from x's {x.shape[0]}")
    return x, y, loss


def total_loss(model: MLP, forward, y, loss: losses_lib.Loss, l2: float, loss_scale: float = 1.0):
    """The data loss plus λ/2 Σ‖W‖², times loss_scale (1/replicas under a strategy)."""
    value = loss.value(forward.zs[-1], forward.hs[-1], y)
    if l2:
        value += losses_lib.l2_penalty(model.kernels, l2)
    return value * loss_scale if loss_scale != 1.0 else value


def tape_gradients(model: MLP, x, y, loss, l2: float = 0.0, loss_scale: float = 1.0):
    """Loss and gradients by automatic differentiation (`tf.GradientTape`)."""
    x, y, loss = prepare(model, x, y, loss)
    value, grads, _ = tape_step(model, x, y, loss, l2, loss_scale)
    return value, grads


def manual_gradients(model: MLP, x, y, loss, l2: float = 0.0, loss_scale: float = 1.0):
    """Loss and gradients by the chain rule, written out layer by layer in plain TF ops."""
    x, y, loss = prepare(model, x, y, loss)
    value, grads, _ = manual_step(model, x, y, loss, l2, loss_scale)
    return value, grads


def tape_step(model: MLP, x, y, loss: losses_lib.Loss, l2: float = 0.0, loss_scale: float = 1.0):
    """tape_gradients on prepared inputs; also returns the output h_L (for metrics)."""
    with tf.GradientTape() as tape:
        forward = model.forward(x, keep_intermediates=True)
        value = total_loss(model, forward, y, loss, l2, loss_scale)
    return value, tape.gradient(value, model.trainable_variables), forward.output


def manual_step(model: MLP, x, y, loss: losses_lib.Loss, l2: float = 0.0, loss_scale: float = 1.0):
    """manual_gradients on prepared inputs; also returns the output h_L (for metrics)."""
    forward = model.forward(x, keep_intermediates=True)
    value = total_loss(model, forward, y, loss, l2, loss_scale)
    delta = loss.delta(forward.zs[-1], forward.hs[-1], y, model.output_activation)  # [m, n_L]
    if loss_scale != 1.0:
        delta = delta * loss_scale
    return value, backward(model, forward, delta, l2 * loss_scale), forward.output


def backward(model: MLP, forward, delta: tf.Tensor, l2: float = 0.0) -> list[tf.Tensor]:
    """Backpropagates δ_L through every layer; returns [∂W_1, ∂b_1, ..., ∂W_L, ∂b_L]."""
    grads = []
    layer_inputs = [forward.inputs] + forward.hs[:-1]  # h_0 .. h_{L-1}
    for index in reversed(range(len(model.dense_layers))):
        kernel = model.dense_layers[index].kernel
        grad_kernel = tf.matmul(layer_inputs[index], delta, transpose_a=True)  # [n_{l-1}, n_l]
        if l2:
            grad_kernel += l2 * kernel
        grads[:0] = [grad_kernel, tf.reduce_sum(delta, axis=0)]  # bias: [n_l]
        if index > 0:
            upstream = tf.matmul(delta, kernel, transpose_b=True)  # ∂L/∂h_{l-1}: [m, n_{l-1}]
            activation = model.activations_per_layer[index - 1]
            delta = activation.backward(forward.zs[index - 1], forward.hs[index - 1], upstream)
    return grads


# The training engine's view: prepared inputs in, (loss, grads, output) out.
STEP_FUNCTIONS = {"tape": tape_step, "manual": manual_step}
