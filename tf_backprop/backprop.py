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

Second order, the same two ways: `tape_hvp` (tf.GradientTape over tf.GradientTape) and
`manual_hvp`, Pearlmutter's R-operator written by hand (docs/backprop.md §8): for a direction v
over the parameters, R{·} = d/dt (·)(θ + t v) at t = 0, a forward pass of R{z_l}, R{h_l} and a
backward pass of R{δ_l}, giving the Hessian-vector product Hv = R{∂L/∂θ}:

    R{z_l} = R{h_{l-1}} @ W_l + h_{l-1} @ V_l + v_bl,   R{h_l} = f_l'(z_l) ⊙ R{z_l}   (R{h_0} = 0)
    R{δ_L} = loss.delta_tangent(z_L, h_L, y, f_L, R{z_L})
    R{∂L/∂W_l} = R{h_{l-1}}ᵀ @ δ_l + h_{l-1}ᵀ @ R{δ_l}  (+ λ V_l)
    R{∂L/∂b_l} = Σ_rows R{δ_l}
    R{δ_{l-1}} = f_{l-1}.backward(z, h, R{δ_l} @ W_lᵀ + δ_l @ V_lᵀ)
                 + f_{l-1}.backward_tangent(z, h, δ_l @ W_lᵀ, R{z_{l-1}})

Every function takes `params=None`: tensors in `trainable_variables` order standing in for the
variables (how the gradient checker evaluates them at perturbed parameters).
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
    if loss.task == "multiclass" and model.layer_sizes[-1] < 2:
        # A softmax over one unit is 1 whatever the logit: the loss is 0, every gradient 0.
        raise ValueError(
            f"loss: {loss.name!r} is a softmax over the output units, constant with one "
            f"(every gradient 0); give at least 2 outputs, or binary_crossentropy for one"
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


def total_loss(
    model: MLP, forward, y, loss: losses_lib.Loss, l2: float, loss_scale: float = 1.0, params=None
):
    """The data loss plus λ/2 Σ‖W‖², times loss_scale (1/replicas under a strategy)."""
    value = loss.value(forward.zs[-1], forward.hs[-1], y)
    if l2:
        value += losses_lib.l2_penalty([w for w, _ in model.layer_parameters(params)], l2)
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


def manual_step(
    model: MLP,
    x,
    y,
    loss: losses_lib.Loss,
    l2: float = 0.0,
    loss_scale: float = 1.0,
    params=None,
):
    """manual_gradients on prepared inputs; also returns the output h_L (for metrics)."""
    forward = model.forward(x, keep_intermediates=True, params=params)
    value = total_loss(model, forward, y, loss, l2, loss_scale, params)
    delta = loss.delta(forward.zs[-1], forward.hs[-1], y, model.output_activation)  # [m, n_L]
    if loss_scale != 1.0:
        delta = delta * loss_scale
    return value, backward(model, forward, delta, l2 * loss_scale, params), forward.output


def backward(model: MLP, forward, delta: tf.Tensor, l2: float = 0.0, params=None) -> list[tf.Tensor]:
    """Backpropagates δ_L through every layer; returns [∂W_1, ∂b_1, ..., ∂W_L, ∂b_L]."""
    grads = []
    kernels = [w for w, _ in model.layer_parameters(params)]
    layer_inputs = [forward.inputs] + forward.hs[:-1]  # h_0 .. h_{L-1}
    for index in reversed(range(len(model.dense_layers))):
        kernel = kernels[index]
        grad_kernel = tf.matmul(layer_inputs[index], delta, transpose_a=True)  # [n_{l-1}, n_l]
        if l2:
            grad_kernel += l2 * kernel
        grads[:0] = [grad_kernel, tf.reduce_sum(delta, axis=0)]  # bias: [n_l]
        if index > 0:
            upstream = tf.matmul(delta, kernel, transpose_b=True)  # ∂L/∂h_{l-1}: [m, n_{l-1}]
            activation = model.activations_per_layer[index - 1]
            delta = activation.backward(forward.zs[index - 1], forward.hs[index - 1], upstream)
    return grads


# --- second order -----------------------------------------------------------------------------
def tape_hvp(model: MLP, x, y, loss, v, l2: float = 0.0, params=None) -> list[tf.Tensor]:
    """The Hessian of the loss times v, by tf.GradientTape over tf.GradientTape.

    v: one tensor per trainable variable, of its shape.  Returns Hv in the same layout.
    """
    x, y, loss = prepare(model, x, y, loss)
    return tape_hvp_step(model, x, y, loss, check_direction(model, v), l2, params)


def manual_hvp(model: MLP, x, y, loss, v, l2: float = 0.0, params=None) -> list[tf.Tensor]:
    """The Hessian of the loss times v, by the R-operator written out in plain TF ops.

    v: one tensor per trainable variable, of its shape.  Returns Hv in the same layout.
    ValueError if an activation or the loss has no hand-written second derivative.
    """
    x, y, loss = prepare(model, x, y, loss)
    return manual_hvp_step(model, x, y, loss, check_direction(model, v), l2, params)


def check_direction(model: MLP, v) -> list[tf.Tensor]:
    """v as tensors of the model's dtype; ValueError unless one per variable, each of its shape."""
    v = [tf.cast(tf.convert_to_tensor(t), model.compute_dtype) for t in v]
    want = [tuple(w.shape) for w in model.trainable_variables]
    got = [tuple(t.shape) for t in v]
    if got != want:
        raise ValueError(f"v: expected one tensor per trainable variable, of shapes {want}, got {got}")
    return v


def tape_hvp_step(model: MLP, x, y, loss: losses_lib.Loss, v, l2: float = 0.0, params=None):
    """tape_hvp on prepared inputs."""
    params = [tf.convert_to_tensor(p) for p in (model.trainable_variables if params is None else params)]
    with tf.GradientTape() as outer:
        outer.watch(params)
        with tf.GradientTape() as inner:
            inner.watch(params)
            forward = model.forward(x, keep_intermediates=True, params=params)
            value = total_loss(model, forward, y, loss, l2, params=params)
        grads = inner.gradient(value, params)
    # The gradient of v·∇L is Hᵀv = Hv (H is symmetric).
    return outer.gradient(grads, params, output_gradients=list(v), unconnected_gradients="zero")


def manual_hvp_step(model: MLP, x, y, loss: losses_lib.Loss, v, l2: float = 0.0, params=None):
    """manual_hvp on prepared inputs: the R-operator's forward, then its backward pass."""
    _check_second_derivatives(model, loss)
    layers = model.layer_parameters(params)
    directions = list(zip(v[0::2], v[1::2]))  # [(V_l, v_bl)]
    forward = model.forward(x, keep_intermediates=True, params=params)
    r_forward = _r_forward(model, forward, layers, directions)
    z_out, h_out, f_out = forward.zs[-1], forward.hs[-1], model.output_activation
    delta = loss.delta(z_out, h_out, y, f_out)  # [m, n_L]
    r_delta = loss.delta_tangent(z_out, h_out, y, f_out, r_forward[0][-1])
    return _r_backward(model, forward, layers, directions, r_forward, delta, r_delta, l2)


def _check_second_derivatives(model: MLP, loss: losses_lib.Loss) -> None:
    for activation in (model.hidden_activation, model.output_activation):
        if activation.backward_tangent is None:
            raise ValueError(f"activation: {activation.name!r} has no hand-written second derivative")
    if not loss.has_second_derivative:
        raise ValueError(f"loss: {loss.name!r} has no hand-written second derivative")


def _r_forward(model: MLP, forward, layers, directions) -> tuple[list, list]:
    """(R{z_l}, R{h_l}) for every layer, [m, n_l] each."""
    r_zs, r_hs, h = [], [], forward.inputs  # R{h_0} = 0: the data do not move
    for index, ((kernel, _), (d_kernel, d_bias)) in enumerate(zip(layers, directions)):
        r_z = tf.matmul(h, d_kernel) + d_bias  # [m, n_l]
        if r_hs:
            r_z += tf.matmul(r_hs[-1], kernel)
        activation = model.activations_per_layer[index]
        r_zs.append(r_z)
        r_hs.append(activation.tangent(forward.zs[index], forward.hs[index], r_z))  # f'(z) ⊙ R{z}
        h = forward.hs[index]
    return r_zs, r_hs


def _r_backward(model: MLP, forward, layers, directions, r_forward, delta, r_delta, l2: float):
    """R{∂L/∂W_l}, R{∂L/∂b_l} for every layer, from R{δ_L} down."""
    (r_zs, r_hs), hvp = r_forward, []
    layer_inputs = [forward.inputs] + forward.hs[:-1]  # h_0 .. h_{L-1}
    for index in reversed(range(len(layers))):
        kernel, d_kernel = layers[index][0], directions[index][0]
        r_kernel = tf.matmul(layer_inputs[index], r_delta, transpose_a=True)  # [n_{l-1}, n_l]
        if index > 0:
            r_kernel += tf.matmul(r_hs[index - 1], delta, transpose_a=True)
        if l2:
            r_kernel += l2 * d_kernel
        hvp[:0] = [r_kernel, tf.reduce_sum(r_delta, axis=0)]  # bias: [n_l]
        if index > 0:
            activation = model.activations_per_layer[index - 1]
            z, h = forward.zs[index - 1], forward.hs[index - 1]
            upstream = tf.matmul(delta, kernel, transpose_b=True)  # ∂L/∂h_{l-1}: [m, n_{l-1}]
            r_upstream = tf.matmul(r_delta, kernel, transpose_b=True)
            r_upstream += tf.matmul(delta, d_kernel, transpose_b=True)
            r_delta = activation.backward(z, h, r_upstream)
            r_delta += activation.backward_tangent(z, h, upstream, r_zs[index - 1])
            delta = activation.backward(z, h, upstream)
    return hvp


# The training engine's view: prepared inputs in, (loss, grads, output) out.
STEP_FUNCTIONS = {"tape": tape_step, "manual": manual_step}
