"""Gradient paths with planted faults, for tests that a checker catches them.

Also functions with a hand-written `tf.custom_gradient`: the `*_with(backward)` builders take
the backward function, correct or with a planted mistake.
"""

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
