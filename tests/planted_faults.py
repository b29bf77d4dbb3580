"""Gradient paths with planted faults, for tests that a checker catches them.

Also functions with a hand-written `tf.custom_gradient`: the `*_with(backward)` builders take
the backward function, correct or with a planted mistake.
"""

import numpy as np
import tensorflow as tf


def flipped_sign(step_fn, variable_index: int):
    """step_fn (as backprop.tape_step) with one variable's gradient of the wrong sign."""

    def faulty(model, x, y, loss, l2=0.0, loss_scale=1.0):
        value, grads, output = step_fn(model, x, y, loss, l2, loss_scale)
        grads = list(grads)
        grads[variable_index] = -grads[variable_index]
        return value, grads, output

    return faulty


def stable_logsumexp(x):
    """log Σ exp(x) over the last axis with its hand-written gradient, softmax(x) ⊙ dy."""
    return logsumexp_with(lambda x, dy: dy[..., None] * tf.nn.softmax(x))(x)


def logsumexp_with(backward):
    """log Σ exp(x) over the last axis, stable for large x, with backward(x, dy) as its gradient."""

    @tf.custom_gradient
    def logsumexp(x):
        top = tf.reduce_max(x, axis=-1, keepdims=True)
        value = tf.squeeze(top, -1) + tf.math.log(tf.reduce_sum(tf.exp(x - top), axis=-1))  # [...]

        def grad(dy):
            return backward(x, dy)

        return value, grad

    return logsumexp


def square_with(backward):
    """y = x² elementwise; dy/dx = 2x."""

    @tf.custom_gradient
    def square(x):
        return x * x, lambda dy: backward(x, dy)

    return square


def wrong_at_one_element(x, dy):
    """2x ⊙ dy, but 2x + 0.1 at element [1, 2]."""
    mistake = tf.scatter_nd(tf.constant([[1, 2]]), tf.constant([0.1], x.dtype), tf.shape(x))
    return (2.0 * x + mistake) * dy


def flipped_gradient(gradient_fn, variable_index: int):
    """gradient_fn (as backprop.manual_gradients) with one variable's gradient of the wrong sign."""

    def faulty(model, x, y, loss, l2=0.0):
        value, grads = gradient_fn(model, x, y, loss, l2)
        grads = list(grads)
        grads[variable_index] = -grads[variable_index]
        return value, grads

    return faulty


def square_off_by(offset: float):
    """y = x², with the gradient 2x + offset: wrong by a constant."""
    return square_with(lambda x, dy: (2.0 * x + offset) * dy)


def cube_with(backward):
    """y = x³ elementwise with backward(x, dy) as its gradient (3x² dy when right)."""

    @tf.custom_gradient
    def cube(x):
        return x * x * x, lambda dy: backward(x, dy)

    return cube


def cube_numpy_constant(x, dy):
    """3x² dy, but 3x² computed by tf.numpy_function: right values, no second derivative."""
    three_x2 = tf.numpy_function(lambda a: 3.0 * a * a, [x], x.dtype)
    return tf.reshape(three_x2, tf.shape(x)) * dy


def cube_stop_gradient(x, dy):
    """3x² dy, one factor x behind tf.stop_gradient: second derivative 3x², not 6x."""
    return 3.0 * tf.stop_gradient(x) * x * dy


def cube_wrong_second_formula(x, dy):
    """3x² dy, 3x² a custom gradient itself whose derivative is written 3x (should be 6x)."""

    @tf.custom_gradient
    def three_x2(x):
        return 3.0 * x * x, lambda d: d * 3.0 * x

    return three_x2(x) * dy


@tf.custom_gradient
def square_forward_wrong(x):
    """x², computed as stop_gradient(x)·x (forward mode sees x), with the right custom gradient 2x."""
    return tf.stop_gradient(x) * x, lambda dy: 2.0 * x * dy


@tf.custom_gradient
def sin_through_numpy(x):
    """sin x computed by tf.numpy_function, with the right custom gradient cos x.

    Reverse mode uses the custom gradient; forward mode inside tf.function sees an op with no
    tangent and gives 0.
    """
    y = tf.reshape(tf.numpy_function(np.sin, [x], x.dtype), tf.shape(x))
    return y, lambda dy: dy * tf.cos(x)


@tf.custom_gradient
def identity_through_adjust_hue(x):
    """x (exactly), with tf.image.adjust_hue in its forward pass: forward mode raises LookupError.

    The hue shift is multiplied by 0, so the value is x; its custom gradient (dy) is right.
    """
    rgb = tf.cast(tf.reshape(x, [1, -1, 1]) * tf.ones([1, 1, 3], x.dtype), tf.float32)
    shifted = tf.cast(tf.image.adjust_hue(rgb, 0.1)[..., 0], x.dtype)
    return x + 0.0 * tf.reshape(shifted, tf.shape(x)), lambda dy: dy


def flipped_hvp(hvp_fn, variable_index: int):
    """hvp_fn (as backprop.manual_hvp) with one variable's Hv of the wrong sign."""

    def faulty(model, x, y, loss, v, l2=0.0, params=None):
        hv = list(hvp_fn(model, x, y, loss, v, l2, params=params))
        hv[variable_index] = -hv[variable_index]
        return hv

    return faulty


def cube_numpy_value(x, dy):
    """3x² dy with 3x² a NumPy constant (eager only): right values, no second derivative."""
    return tf.constant(3.0 * x.numpy() ** 2) * dy
